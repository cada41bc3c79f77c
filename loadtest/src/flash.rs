//! A flash crowd: many clients, each on a connection opened beforehand,
//! ask for one object within a short window, as viewers do when a new
//! live segment appears. Latency runs from each client's scheduled send
//! time to its last body byte, so a server that makes clients queue cannot
//! hide it (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct FlashCrowd {
    pub target: SocketAddr,
    pub host: String,
    pub path: String,
    pub clients: usize,
    /// Requests are spread evenly over this window.
    pub spread: Duration,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct FlashResult {
    /// Microseconds from scheduled send to last body byte, successes only.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub body_bytes: u64,
    /// Responses whose last `Cache-Status` entry said the request was collapsed.
    pub collapsed: u64,
    /// Responses whose last `Cache-Status` entry was a hit.
    pub hits: u64,
    /// Responses per cache (the name opening the last `Cache-Status` entry).
    pub caches: std::collections::BTreeMap<String, u64>,
}

impl FlashResult {
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not open connection {index} to {target}: {source}")]
pub struct ConnectError {
    index: usize,
    target: SocketAddr,
    source: std::io::Error,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// Opens every connection, then fires the crowd and waits for it.
pub async fn run(crowd: &FlashCrowd) -> Result<FlashResult, ConnectError> {
    let senders = connect_all(crowd).await?;
    // Start a little after the last connection is up, so the first
    // scheduled sends are not late already.
    let t0 = Instant::now() + Duration::from_millis(50);
    let mut tasks = JoinSet::new();
    let n = senders.len().max(1);
    for (i, mut sender) in senders.into_iter().enumerate() {
        let at = t0 + crowd.spread.mul_f64(i as f64 / n as f64);
        let (host, path, timeout) = (crowd.host.clone(), crowd.path.clone(), crowd.timeout);
        tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            let req = Request::get(path)
                .header(header::HOST, host)
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let exchange = async {
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let cache_status = resp
                    .headers()
                    .get_all("cache-status")
                    .iter()
                    .next_back()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                // Count the bytes and drop them: copying a thousand bodies
                // would make the generator, not the server, the bottleneck.
                let mut body = resp.into_body();
                let mut len = 0u64;
                while let Some(frame) = body.frame().await {
                    if let Some(data) = frame.map_err(|e| e.to_string())?.data_ref() {
                        len += data.len() as u64;
                    }
                }
                if !status.is_success() {
                    return Err(format!("status {status}"));
                }
                Ok((len, cache_status))
            };
            let result = tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| format!("timed out after {timeout:?}"))?;
            result.map(|(bytes, cache_status)| (at.elapsed(), bytes, cache_status))
        });
    }
    let mut result = FlashResult {
        latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
        ok: 0,
        errors: 0,
        first_error: None,
        body_bytes: 0,
        collapsed: 0,
        hits: 0,
        caches: Default::default(),
    };
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((latency, bytes, cache_status)) => {
                result.ok += 1;
                result.body_bytes += bytes;
                let mut params = cache_status.split(';').map(str::trim);
                if let Some(cache) = params.next().filter(|c| !c.is_empty()) {
                    *result.caches.entry(cache.to_string()).or_default() += 1;
                }
                for p in params {
                    result.collapsed += (p == "collapsed") as u64;
                    result.hits += (p == "hit") as u64;
                }
                let _ = result.latency.record((latency.as_micros() as u64).max(1));
            }
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert(e);
            }
        }
    }
    Ok(result)
}

async fn connect_all(crowd: &FlashCrowd) -> Result<Vec<Sender>, ConnectError> {
    // Not all at once: a burst of thousands of SYNs overflows the accept
    // backlog and measures the kernel, not the server.
    let limit = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for index in 0..crowd.clients {
        let (limit, target) = (limit.clone(), crowd.target);
        tasks.spawn(async move {
            let _permit = limit.acquire().await.expect("never closed");
            let err = |source| ConnectError {
                index,
                target,
                source,
            };
            let stream = TcpStream::connect(target).await.map_err(err)?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| err(std::io::Error::other(e)))?;
            tokio::spawn(conn);
            Ok::<_, ConnectError>(sender)
        });
    }
    let mut senders = Vec::with_capacity(crowd.clients);
    while let Some(r) = tasks.join_next().await {
        senders.push(r.expect("connect task does not panic")?);
    }
    Ok(senders)
}
