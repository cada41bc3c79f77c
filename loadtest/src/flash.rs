//! A flash crowd: many clients, each on a connection opened beforehand,
//! ask for one object within a short window, as viewers do when a new
//! live segment appears. Latency runs from each client's scheduled send
//! time to its last body byte, so a server that makes clients queue cannot
//! hide it (no coordinated omission).
//!
//! Each client is the scenario viewers' HTTP/1.1 client on its own
//! connection, reading and dropping the body in its own task: with hyper's
//! client (a task per connection and a channel per body) a thousand 1 MiB
//! bodies saturated the generator's core before the server's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::h1::{Connection, H1Error, Keep};

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
    /// Responses per cache nearest the origin (the name opening the first
    /// `Cache-Status` entry): which cache node held or fetched the object.
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
    source: H1Error,
}

/// Opens every connection, then fires the crowd and waits for it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(crowd: &FlashCrowd) -> Result<FlashResult, ConnectError> {
    let connections = connect_all(crowd).await?;
    // Start a little after the last connection is up, so the first
    // scheduled sends are not late already.
    let t0 = Instant::now() + Duration::from_millis(50);
    let mut tasks = JoinSet::new();
    let n = connections.len().max(1);
    for (i, mut conn) in connections.into_iter().enumerate() {
        let at = t0 + crowd.spread.mul_f64(i as f64 / n as f64);
        let (host, path, timeout) = (crowd.host.clone(), crowd.path.clone(), crowd.timeout);
        tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            // Count the bytes and drop them: copying a thousand bodies
            // would make the generator, not the server, the bottleneck.
            let keep = Keep {
                body: false,
                cache_status: true,
            };
            let exchange = async {
                let resp = conn
                    .get(&host, &path, keep)
                    .await
                    .map_err(|e| e.to_string())?;
                if !(200..300).contains(&resp.status) {
                    return Err(format!("status {}", resp.status));
                }
                Ok((resp.bytes, resp.cache_status.unwrap_or_default()))
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
                // RFC 9211 lists caches from the origin's side: the first
                // is the cache node that held or fetched the object, the
                // last says what the client got (a proxy's hot tier, when
                // one answered).
                let first = cache_status.split(',').next().unwrap_or("");
                if let Some(cache) = first
                    .split(';')
                    .next()
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                {
                    *result.caches.entry(cache.to_string()).or_default() += 1;
                }
                let last = cache_status.rsplit(',').next().unwrap_or("");
                for p in last.split(';').skip(1).map(str::trim) {
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

async fn connect_all(crowd: &FlashCrowd) -> Result<Vec<Connection>, ConnectError> {
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
            Connection::open(target, CONNECT_TIMEOUT).await.map_err(err)
        });
    }
    let mut connections = Vec::with_capacity(crowd.clients);
    while let Some(r) = tasks.join_next().await {
        connections.push(r.expect("connect task does not panic")?);
    }
    Ok(connections)
}
