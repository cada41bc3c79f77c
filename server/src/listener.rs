//! The accept loop: one task per connection, at most `max_connections` at
//! once, idle connections closed, and a drain on shutdown that lets
//! in-flight requests finish (HTTP/2 clients get GOAWAY). Each connection
//! speaks HTTP/2 (this crate's own server, [`crate::h2`]) when a TLS client
//! chose `h2` by ALPN or a cleartext one opens with the HTTP/2 preface, and
//! HTTP/1.1 otherwise: on cleartext connections this crate's own server
//! ([`crate::h1`]) takes bodiless GET and HEAD requests and hands anything
//! else to hyper; TLS connections that chose HTTP/1.1 are hyper's.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ResponseBody;
use crate::request_body::RequestBody;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_connections: usize,
    /// Time a client has to send complete request headers (slowloris).
    /// For HTTP/1.1 it also runs while a kept-alive connection waits for
    /// its next request.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this
    /// long (up to a quarter more) is closed (HTTP/2 with GOAWAY).
    pub idle_timeout: Duration,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// Request line and headers; beyond it hyper answers 431.
    pub max_header_bytes: usize,
    /// Largest request body a client may declare (413 beyond it).
    pub max_body_bytes: u64,
    /// Serve TLS with this configuration instead of plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A fixed `SO_SNDBUF` for every accepted connection. Unset, short
    /// paths get a fixed buffer and the rest the kernel's autotuning
    /// ([`crate::socket_tuning`]). A fixed buffer caps each connection at
    /// about twice its size per round trip.
    pub send_buffer: Option<usize>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024 * 1024,
            tls: None,
            send_buffer: None,
        }
    }
}

/// What a service knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection is TLS (the request came as https).
    pub secure: bool,
}

/// Connections the kernel may hold for a listener before they are accepted
/// (capped by `net.core.somaxconn`). The default of 128 drops SYNs when a
/// crowd arrives at once (a proxy opening hundreds of connections to a
/// cache node for one hot segment, say), and a dropped SYN costs the client
/// a one-second retransmission.
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds a listener, with the error naming what could not listen where.
pub async fn bind(what: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_BACKLOG)
    };
    listen()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{what}: cannot listen on {addr}: {e}")))
}

/// Serves `handler` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    options: ServeOptions,
) where
    H: Fn(Request<RequestBody>, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let tracker = TaskTracker::new();
    // HTTP/1.1 only: HTTP/2 is told apart before hyper sees a connection.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // The buffer bound alone is checked only while a head is still
        // incomplete, so a big head that arrives in one read would pass it;
        // the header size limit is checked on every parsed head.
        .max_header_size(options.max_header_bytes)
        // hyper's floor for this buffer is 8 KiB.
        .max_buf_size(options.max_header_bytes.max(8192));
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
        let info = ConnInfo {
            peer,
            local,
            secure: options.tls.is_some(),
        };
        let handler = handler.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let limits = ConnLimits {
            max_body_bytes: options.max_body_bytes,
            idle_timeout: options.idle_timeout,
            header_read_timeout: options.header_read_timeout,
            max_header_bytes: options.max_header_bytes,
            h2: crate::h2::Limits {
                max_header_list_size: options.max_header_bytes as u32,
                header_read_timeout: options.header_read_timeout,
                ..crate::h2::Limits::default()
            },
        };
        let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let handshake_timeout = options.header_read_timeout;
        let send_buffer = options.send_buffer;
        // The serving futures are boxed once the connection shows what it
        // speaks: inline, every connection's task (one that never sends a
        // byte included) would be the size of the largest of them.
        tracker.spawn(async move {
            crate::socket_tuning::tune_accepted(&stream, send_buffer);
            match tls {
                None => {
                    let mut stream = crate::memory_file::SendFileStream::new(stream);
                    match tokio::time::timeout(handshake_timeout, sniff_preface(&mut stream)).await {
                        Ok(Ok((true, read))) => {
                            Box::pin(serve_h2(stream, read, info, handler, shutdown, limits)).await
                        }
                        Ok(Ok((false, read))) => {
                            let own = crate::h1::Limits {
                                header_read_timeout: limits.header_read_timeout,
                                idle_timeout: limits.idle_timeout,
                                max_header_bytes: limits.max_header_bytes,
                                max_body_bytes: limits.max_body_bytes,
                            };
                            let ended = Box::pin(crate::h1::serve(
                                stream, read, info, &*handler, &shutdown, &own,
                            ))
                            .await;
                            if let crate::h1::Ended::Handoff(stream, read) = ended {
                                let stream = Rewind {
                                    prefix: read.freeze(),
                                    inner: stream,
                                };
                                Box::pin(serve_connection(
                                    stream, info, &builder, handler, shutdown, limits,
                                ))
                                .await
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(peer = %info.peer, error = %e, "connection failed before a request"),
                        Err(_) => tracing::debug!(peer = %info.peer, "no request before the header-read timeout"),
                    }
                }
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            if h2 {
                                Box::pin(serve_h2(
                                    tls_stream,
                                    BytesMut::new(),
                                    info,
                                    handler,
                                    shutdown,
                                    limits,
                                ))
                                .await
                            } else {
                                Box::pin(serve_connection(
                                    tls_stream, info, &builder, handler, shutdown, limits,
                                ))
                                .await
                            }
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

#[derive(Clone)]
struct ConnLimits {
    max_body_bytes: u64,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    h2: crate::h2::Limits,
}

/// Reads a cleartext connection's first bytes, enough to tell the HTTP/2
/// preface (prior knowledge) from an HTTP/1.1 request; returns which, and
/// what was read.
async fn sniff_preface<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<(bool, BytesMut)> {
    use tokio::io::AsyncReadExt;
    let preface = crate::h2::PREFACE;
    let mut read = BytesMut::with_capacity(8192);
    loop {
        let have = read.len().min(preface.len());
        if read[..have] != preface[..have] {
            return Ok((false, read));
        }
        if have == preface.len() {
            return Ok((true, read));
        }
        if io.read_buf(&mut read).await? == 0 {
            return Ok((false, read));
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTP/2 connection ([`crate::h2`]), with the same refusals, idle
/// timeout and drain as the HTTP/1.1 ones.
async fn serve_h2<H, F, I>(
    stream: I,
    read: BytesMut,
    info: ConnInfo,
    handler: Arc<H>,
    shutdown: CancellationToken,
    limits: ConnLimits,
) where
    H: Fn(Request<RequestBody>, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let stream = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    let max_body = limits.max_body_bytes;
    let call: crate::h2::Handler =
        Arc::new(
            move |req: Request<RequestBody>| match crate::framing::refuse(&req, max_body) {
                Some(refusal) => Box::pin(std::future::ready(refusal)),
                None => Box::pin(handler(req, info)),
            },
        );
    let busy_activity = activity.clone();
    let busy: Box<dyn Fn() -> crate::h2::BusyGuard + Send> =
        Box::new(move || Box::new(busy_activity.busy()));
    let conn = crate::h2::Connection::new(stream, read, call, limits.h2.clone(), busy);
    tokio::pin!(conn);
    let check = (limits.idle_timeout / 4).max(Duration::from_millis(10));
    let mut quiet_since = tokio::time::Instant::now();
    let idle = tokio::time::sleep(check);
    tokio::pin!(idle);
    let mut draining = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().get_mut().graceful_shutdown();
                draining = true;
            }
            _ = idle.as_mut(), if !draining => {
                let now = tokio::time::Instant::now();
                if activity.busy_since_last_look() {
                    quiet_since = now;
                }
                if now.duration_since(quiet_since) >= limits.idle_timeout {
                    tracing::debug!(peer = %info.peer, "closing idle HTTP/2 connection");
                    conn.as_mut().get_mut().graceful_shutdown();
                    draining = true;
                }
                idle.as_mut().reset(now + check);
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %info.peer, error = %e, "HTTP/2 connection ended with an error");
    }
}

async fn serve_connection<H, F, I>(
    stream: I,
    info: ConnInfo,
    builder: &http1::Builder,
    handler: Arc<H>,
    shutdown: CancellationToken,
    limits: ConnLimits,
) where
    H: Fn(Request<RequestBody>, ConnInfo) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let stream = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    let service_activity = activity.clone();
    let max_body_bytes = limits.max_body_bytes;
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let req = req.map(RequestBody::Http1);
        let handled = match crate::framing::refuse(&req, max_body_bytes) {
            Some(refusal) => Err(refusal),
            // Boxed at once: a component's handler future is kilobytes, and
            // hyper moves the service future more than once before polling
            // it; moving a pointer instead was 5 % of a cache hit's CPU.
            None => Ok(Box::pin(handler(req, info))),
        };
        let busy = service_activity.busy();
        async move {
            let response = match handled {
                Ok(fut) => fut.await,
                Err(refusal) => refusal,
            };
            drop(busy);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Looked at four times per idle timeout: an idle connection closes
    // between one and one and a quarter timeouts after it went quiet.
    let check = (limits.idle_timeout / 4).max(Duration::from_millis(10));
    let mut quiet_since = tokio::time::Instant::now();
    let idle = tokio::time::sleep(check);
    tokio::pin!(idle);
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            _ = idle.as_mut() => {
                let now = tokio::time::Instant::now();
                if activity.busy_since_last_look() {
                    quiet_since = now;
                }
                if now.duration_since(quiet_since) >= limits.idle_timeout {
                    tracing::debug!(peer = %info.peer, "closing idle connection");
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
                idle.as_mut().reset(now + check);
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
    }
}

/// What a connection is doing, for its idle timeout: requests in flight,
/// and whether bytes moved either way (a response body still streaming out
/// keeps the connection busy after its handler has returned).
///
/// A flag, not a timestamp: reading the clock on every read and write and
/// at the end of each request was three clock reads a request, about 1 %
/// of a cache hit's CPU, for a timeout counted in seconds.
struct Activity {
    in_flight: AtomicUsize,
    moved: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            moved: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Whether the connection did anything since the last call: a request
    /// is in flight or bytes moved.
    fn busy_since_last_look(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed) || self.in_flight.load(Ordering::Relaxed) > 0
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that notes in `activity` each time bytes move.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// A crowd of connections arriving before the server accepts any must
    /// all complete their handshakes: with the default backlog of 128 the
    /// kernel drops the rest of the SYNs and those clients hang.
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue() {
        // The kernel caps every backlog at somaxconn (4096 on current
        // kernels), so a crowd larger than that cannot be asked of it.
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let crowd = somaxconn.min(600);
        let listener = bind("test", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..crowd {
            connects.spawn(tokio::net::TcpStream::connect(addr));
        }
        // Far longer than a handshake into a free queue slot takes; a
        // dropped SYN is retried at 1 s and 3 s and would still find the
        // queue full, since nothing accepts.
        let streams = tokio::time::timeout(Duration::from_secs(10), connects.join_all())
            .await
            .expect("every connection completes its handshake");
        assert!(streams.iter().all(Result::is_ok));
        drop(listener);
    }

    /// Requests Fanout's own HTTP/1.1 server takes and ones it hands to
    /// hyper, pipelined on one connection and split at awkward places, are
    /// each answered once, in order, with their own bodies.
    #[tokio::test]
    async fn own_and_handed_off_requests_share_a_connection_in_order() {
        use http_body_util::BodyExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("test", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            |req: Request<RequestBody>, _| async move {
                let what = format!("{} {}", req.method(), req.uri());
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let text = format!("{what} {}", String::from_utf8_lossy(&body));
                Response::new(crate::full(text))
            },
            shutdown.clone(),
            ServeOptions::default(),
        ));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let requests = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
                        HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n\
                        POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                        GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        for piece in requests.as_bytes().chunks(7) {
            c.write_all(piece).await.unwrap();
            c.flush().await.unwrap();
        }
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut got))
            .await
            .expect("the server closes after the last response")
            .unwrap();
        let responses: Vec<(&str, &str)> = got
            .split("HTTP/1.1 200 OK\r\n")
            .skip(1)
            .map(|r| r.split_once("\r\n\r\n").unwrap())
            .collect();
        let bodies: Vec<&str> = responses.iter().map(|r| r.1).collect();
        assert_eq!(bodies, ["GET /a ", "", "POST /c hello", "GET /d "], "{got}");
        assert!(
            responses[1].0.contains("content-length: 8"),
            "HEAD has the GET's length: {got}"
        );
        shutdown.cancel();
        server.await.unwrap();
    }
}
