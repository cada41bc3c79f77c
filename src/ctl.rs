//! `fanout ctl`: the operator's side of the control-plane API. Text for
//! people by default, the server's JSON with `--json`; exit 0 on success,
//! 1 on failure, 2 for a config that does not validate.

use std::process::ExitCode;

use bytes::Bytes;
use fanout_control_plane::client::{Answer, ControlClient};
use http::{Method, StatusCode};
use serde_json::json;

use crate::cli::{CtlArgs, CtlCommand, RaftChange};

pub async fn run(args: CtlArgs) -> ExitCode {
    let token = match &args.token_file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                eprintln!("fanout ctl: token file {}: {e}", f.display());
                return ExitCode::from(crate::EXIT_CONFIG);
            }
        },
        None => std::env::var("FANOUT_TOKEN").ok(),
    };
    let mut client = ControlClient::new(args.servers.clone(), token);
    client.deadline = args.timeout;
    match command(&client, &args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fanout ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn json_body(v: serde_json::Value) -> Option<(Bytes, &'static str)> {
    Some((Bytes::from(v.to_string()), "application/json"))
}

/// Prints a successful answer (as JSON with --json, else via `text`), or
/// the error, and picks the exit status.
fn report(args: &CtlArgs, answer: &Answer, text: impl FnOnce(&Answer) -> String) -> ExitCode {
    if answer.status.is_success() {
        if args.json {
            println!("{}", String::from_utf8_lossy(&answer.body).trim_end());
        } else {
            println!("{}", text(answer).trim_end());
        }
        return ExitCode::SUCCESS;
    }
    if args.json {
        println!("{}", String::from_utf8_lossy(&answer.body).trim_end());
    }
    eprintln!(
        "fanout ctl: {} {}",
        answer.status.as_u16(),
        answer.error_text()
    );
    if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
        ExitCode::from(crate::EXIT_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

async fn command(client: &ControlClient, args: &CtlArgs) -> anyhow::Result<ExitCode> {
    Ok(match &args.command {
        CtlCommand::Status => {
            // The node that answers merges in what its peers know.
            let a = client.request(Method::GET, "/v1/status", None).await?;
            report(args, &a, |a| {
                let j = a.json();
                let mut out = format!(
                    "leader: {}   term: {}   live config: v{}   revision: {}\n",
                    j["leader"]
                        .as_u64()
                        .map_or("none".into(), |l| l.to_string()),
                    j["term"],
                    j["config_version"],
                    j["revision"]
                );
                out += &format!(
                    "answered by node {} ({}), applied index {}\ncontrol nodes:\n",
                    j["id"],
                    j["role"].as_str().unwrap_or("?"),
                    j["applied_index"]
                );
                for m in j["control_nodes"].as_array().into_iter().flatten() {
                    out += &format!("  {}  {:<22}", m["id"], m["address"].as_str().unwrap_or(""));
                    out += &match m["reachable"].as_bool() {
                        Some(true) => format!(
                            "{:<10} term {}  applied index {}\n",
                            m["role"].as_str().unwrap_or("?"),
                            m["term"],
                            m["applied_index"]
                        ),
                        _ => "unreachable\n".to_string(),
                    };
                }
                let revision = j["revision"].as_u64().unwrap_or(0);
                let agents: Vec<(&str, u64, u64)> = j["agents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| {
                        Some((
                            a["id"].as_str()?,
                            a["applied_revision"].as_u64()?,
                            a["last_contact_unix_ms"].as_u64()?,
                        ))
                    })
                    .collect();
                if !agents.is_empty() {
                    out += "agents (applied revision, last contact):\n";
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                for (id, rev, at) in &agents {
                    let lag = revision.saturating_sub(*rev);
                    out += &format!(
                        "  {id:<20} r{rev:<6} {:>6.1} s ago{}\n",
                        now.saturating_sub(*at) as f64 / 1000.0,
                        if lag > 0 {
                            format!("   {lag} behind")
                        } else {
                            String::new()
                        }
                    );
                }
                out
            })
        }
        CtlCommand::Apply { file } => {
            // Validate here first, so errors name the operator's file; send
            // it with its environment references replaced, as validated.
            let checked = fanout_config::read_expanded(file)
                .and_then(|t| fanout_config::load_cluster(file).map(|_| t));
            let text = match checked {
                Ok(t) => t,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("fanout ctl: invalid configuration; nothing was sent");
                    return Ok(ExitCode::from(crate::EXIT_CONFIG));
                }
            };
            let a = client
                .request(
                    Method::PUT,
                    "/v1/config",
                    Some((Bytes::from(text), "application/yaml")),
                )
                .await?;
            report(args, &a, |a| {
                format!(
                    "applied: config version {} is live",
                    a.json()["config_version"]
                )
            })
        }
        CtlCommand::Get { version } => {
            let path = match version {
                Some(v) => format!("/v1/config?version={v}"),
                None => "/v1/config".into(),
            };
            let a = client.request(Method::GET, &path, None).await?;
            if a.status.is_success() {
                print!("{}", String::from_utf8_lossy(&a.body));
                ExitCode::SUCCESS
            } else {
                report(args, &a, |_| String::new())
            }
        }
        CtlCommand::Diff { file } => {
            let new = match fanout_config::read_expanded(file) {
                Ok(t) => t,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Ok(ExitCode::from(crate::EXIT_CONFIG));
                }
            };
            let a = client.request(Method::GET, "/v1/config", None).await?;
            let (old, version) = match a.status {
                s if s.is_success() => (
                    String::from_utf8_lossy(&a.body).into_owned(),
                    a.headers
                        .get("x-fanout-config-version")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_string(),
                ),
                StatusCode::NOT_FOUND => (String::new(), "none".into()),
                _ => return Ok(report(args, &a, |_| String::new())),
            };
            let diff = similar::TextDiff::from_lines(&old, &new);
            if old == new {
                println!("no change from live version {version}");
            } else {
                print!(
                    "{}",
                    diff.unified_diff()
                        .header(&format!("live (v{version})"), &file.display().to_string())
                );
            }
            ExitCode::SUCCESS
        }
        CtlCommand::Rollback { to } => {
            let body = json_body(json!({ "to": to }));
            let a = client
                .request(Method::POST, "/v1/config/rollback", body)
                .await?;
            report(args, &a, |a| {
                format!(
                    "rolled back: config version {} is live",
                    a.json()["config_version"]
                )
            })
        }
        CtlCommand::Members => {
            let a = client.request(Method::GET, "/v1/members", None).await?;
            report(args, &a, |a| {
                let list = a.json();
                let members = list.as_array().cloned().unwrap_or_default();
                if members.is_empty() {
                    return "no members registered".into();
                }
                let mut out = format!(
                    "{:<20} {:<6} {:<22} {:<8} {}\n",
                    "id", "kind", "address", "state", "weight"
                );
                for m in members {
                    out += &format!(
                        "{:<20} {:<6} {:<22} {:<8} {}\n",
                        m["id"].as_str().unwrap_or(""),
                        m["kind"].as_str().unwrap_or(""),
                        m["address"].as_str().unwrap_or(""),
                        m["state"].as_str().unwrap_or(""),
                        m["weight"]
                    );
                }
                out
            })
        }
        CtlCommand::Raft { change } => {
            let a = match change {
                RaftChange::Add { id, address } => {
                    client
                        .request(
                            Method::POST,
                            "/v1/raft/members",
                            json_body(json!({ "id": id, "address": address })),
                        )
                        .await?
                }
                RaftChange::Remove { id } => {
                    client
                        .request(Method::DELETE, &format!("/v1/raft/members/{id}"), None)
                        .await?
                }
            };
            report(args, &a, |a| {
                format!("control-plane voters now: {}", a.json()["voters"])
            })
        }
        CtlCommand::Drain { id } => {
            let a = client
                .request(Method::POST, &format!("/v1/members/{id}/drain"), None)
                .await?;
            report(args, &a, |_| format!("{id} is draining"))
        }
        CtlCommand::Remove { id } => {
            let a = client
                .request(Method::DELETE, &format!("/v1/members/{id}"), None)
                .await?;
            report(args, &a, |_| format!("{id} removed"))
        }
        CtlCommand::Purge {
            url,
            prefix,
            tag,
            soft,
            wait,
        } => {
            let body = match (url, prefix, tag) {
                (Some(u), _, _) => json!({ "host": u[0], "path": u[1], "soft": soft }),
                (_, Some(p), _) => json!({ "host": p[0], "prefix": p[1], "soft": soft }),
                (_, _, Some(t)) => json!({ "tag": t, "soft": soft }),
                _ => anyhow::bail!(
                    "say what to purge: --url HOST PATH, --prefix HOST PREFIX or --tag TAG"
                ),
            };
            let a = client
                .request(Method::POST, "/v1/purge", json_body(body))
                .await?;
            let revision = a.json()["revision"].as_u64();
            let (Some(revision), false) = (revision, wait.is_zero()) else {
                return Ok(report(args, &a, |a| {
                    format!("purge {} committed", a.json()["purge_seq"])
                }));
            };
            if !a.status.is_success() {
                return Ok(report(args, &a, |_| String::new()));
            }
            let seq = a.json()["purge_seq"].clone();
            match applied_everywhere(client, revision, *wait).await? {
                Ok(parts) => {
                    report(args, &a, |_| {
                        format!("purge {seq} committed and applied by all {parts} proxies and cache nodes")
                    })
                }
                Err(pending) => {
                    eprintln!(
                        "fanout ctl: purge {seq} committed, but after {} not yet applied by {}; they apply it when they next reach the control plane",
                        humantime::format_duration(*wait),
                        pending.join(", ")
                    );
                    ExitCode::FAILURE
                }
            }
        }
    })
}

/// Waits until every active proxy and cache node has applied the state at
/// `revision` (each agent's next watch says what it applied). `Ok(n)`: all
/// `n` have; `Err(ids)`: those that had not within `wait`.
async fn applied_everywhere(
    client: &ControlClient,
    revision: u64,
    wait: std::time::Duration,
) -> anyhow::Result<Result<usize, Vec<String>>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let members = client.request(Method::GET, "/v1/members", None).await?;
        let status = client.request(Method::GET, "/v1/status", None).await?;
        let (members, status) = (members.json(), status.json());
        let applied = |id: &str| {
            status["agents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["id"] == id)
                .filter_map(|a| a["applied_revision"].as_u64())
                .max()
                .unwrap_or(0)
        };
        let active: Vec<&str> = members
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["state"] == "active")
            .filter_map(|m| m["id"].as_str())
            .collect();
        let pending: Vec<String> = active
            .iter()
            .filter(|id| applied(id) < revision)
            .map(|id| id.to_string())
            .collect();
        if pending.is_empty() {
            return Ok(Ok(active.len()));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(Err(pending));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
