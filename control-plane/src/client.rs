//! A client of the control-plane API for `fanout ctl` and agents: tries
//! each server in turn, moving on when one cannot be reached or has no
//! leader, until one answers or the deadline passes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::network::{http_client, HttpClient};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no control-plane server answered within {deadline:?} (tried {servers}); last error: {last}")]
    Unreachable {
        servers: String,
        deadline: Duration,
        last: String,
    },
}

/// An answer from a server: its status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error` field of a JSON error body, or the body as text.
    pub fn error_text(&self) -> String {
        let j = self.json();
        let mut out = j["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string());
        if let Some(list) = j["errors"].as_array() {
            for e in list {
                out.push('\n');
                out.push_str(e.as_str().unwrap_or_default());
            }
        }
        out
    }
}

#[derive(Clone)]
pub struct ControlClient {
    servers: Vec<String>,
    token: Option<String>,
    http: HttpClient,
    /// Give up on everything after this long.
    pub deadline: Duration,
    /// Give up on one server after this long and try the next: a server
    /// cut off by a partition does not refuse, it just never answers.
    pub attempt_timeout: Duration,
}

impl ControlClient {
    pub fn new(servers: Vec<String>, token: Option<String>) -> ControlClient {
        ControlClient {
            servers,
            token,
            http: http_client(),
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
        }
    }

    /// The same client (token, pool) aimed at other servers.
    pub fn with_servers(mut self, servers: Vec<String>) -> ControlClient {
        self.servers = servers;
        self
    }

    /// Sends the request to each server in turn (starting over with a short
    /// pause) until one gives an answer that is not "no leader".
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Answer, ClientError> {
        let started = Instant::now();
        let mut last = String::from("nothing tried");
        let mut pause = Duration::from_millis(50);
        loop {
            for server in &self.servers {
                let mut req = Request::builder()
                    .method(method.clone())
                    .uri(format!("http://{server}{path_and_query}"));
                if let Some(t) = &self.token {
                    req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
                }
                let payload = match &body {
                    Some((bytes, content_type)) => {
                        req = req.header(header::CONTENT_TYPE, *content_type);
                        bytes.clone()
                    }
                    None => Bytes::new(),
                };
                let Ok(req) = req.body(Full::new(payload)) else {
                    last = format!("{server}: cannot build the request");
                    continue;
                };
                let left = self.deadline.saturating_sub(started.elapsed());
                let per_try = left
                    .min(self.attempt_timeout)
                    .max(Duration::from_millis(100));
                match tokio::time::timeout(per_try, self.http.request(req)).await {
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        let headers = resp.headers().clone();
                        let body = match resp.into_body().collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(e) => {
                                last = format!("{server}: {e}");
                                continue;
                            }
                        };
                        let answer = Answer {
                            status,
                            headers,
                            body,
                        };
                        if status == StatusCode::SERVICE_UNAVAILABLE {
                            last = format!("{server}: {}", answer.error_text());
                            continue;
                        }
                        return Ok(answer);
                    }
                    Ok(Err(e)) => last = format!("{server}: {e}"),
                    Err(_) => last = format!("{server}: no answer"),
                }
            }
            if started.elapsed() >= self.deadline {
                return Err(ClientError::Unreachable {
                    servers: self.servers.join(", "),
                    deadline: self.deadline,
                    last,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}
