//! The accept loop: one task per connection, HTTP/1.1 or h2c chosen per
//! connection, at most `max_connections` at once, and a drain on shutdown
//! that lets in-flight requests finish (HTTP/2 clients get GOAWAY).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ResponseBody;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    /// Time a client has to send complete request headers (slowloris).
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// Request line and headers; beyond it hyper answers 431.
    pub max_header_bytes: usize,
    /// Largest request body a client may declare (413 beyond it).
    pub max_body_bytes: u64,
    /// Serve TLS with this configuration instead of plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024 * 1024,
            tls: None,
        }
    }
}

/// What a service knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Binds a listener, with the error naming what could not listen where.
pub async fn bind(what: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{what}: cannot listen on {addr}: {e}")))
}

/// Serves `handler` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    options: ServeOptions,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let tracker = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // hyper's floor for this buffer is 8 KiB.
        .max_buf_size(options.max_header_bytes.max(8192));
    builder
        .http2()
        .max_header_list_size(options.max_header_bytes as u32);
    let builder = Arc::new(builder);
    let mut backoff = Duration::from_millis(5);

    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => { backoff = Duration::from_millis(5); s }
                Err(e) => {
                    // EMFILE and friends: wait rather than spin, the way
                    // mini-redis does, and keep serving the connections we have.
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let local = stream.local_addr().unwrap_or(peer);
        let info = ConnInfo { peer, local };
        let handler = handler.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let max_body = options.max_body_bytes;
        let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let handshake_timeout = options.header_read_timeout;
        tracker.spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, info, &builder, handler, shutdown, max_body).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(
                                tls_stream, info, &builder, handler, shutdown, max_body,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %info.peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %info.peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(options.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "drain deadline passed; closing the remaining connections"
        );
    }
}

async fn serve_connection<H, F, I>(
    stream: I,
    info: ConnInfo,
    builder: &auto::Builder<TokioExecutor>,
    handler: Arc<H>,
    shutdown: CancellationToken,
    max_body_bytes: u64,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let handled = match crate::framing::refuse(&req, max_body_bytes) {
            Some(refusal) => Err(refusal),
            None => Ok(handler(req, info)),
        };
        async move {
            Ok::<_, std::convert::Infallible>(match handled {
                Ok(fut) => fut.await,
                Err(refusal) => refusal,
            })
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
    }
}
