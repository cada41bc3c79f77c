//! The proxy's HTTP/1.1 client to cache nodes for requests without a body
//! (nearly every GET and HEAD): the request is written into a pooled
//! connection by the request's own task, the response head parsed with
//! httparse, and the response body read from the socket by the body
//! itself as the client side of the proxy polls it, which hands the
//! connection back to the pool when the body ends.
//!
//! Why not hyper's pooled client for these: it runs each connection as a
//! task of its own, so a request is a pool lookup, a channel send to that
//! task, a wake-up, and a second channel for the response body; on a cache
//! hit that bookkeeping costs about as much as the proxy's own work. Requests
//! with a body (POST, PUT, a GET with a body) still go through hyper's
//! client, which streams request bodies.
//!
//! What the client does for a proxy: framing by Content-Length, chunked
//! coding (trailers dropped) or the connection's end (RFC 9112 §6.3);
//! 103 Early Hints passed on to the request's client
//! (`fanout_server::interim`), other interim 1xx responses skipped; a body
//! that ends early is an error, so the proxy aborts its own response
//! rather than send a short one that looks whole; a pooled connection the cache node had closed while idle is
//! replaced once, since nothing was sent to the node's application.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use fanout_config::HostPort;
use fanout_server::h1_body::{Framing, FramingFields, Malformed, Step};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Largest response head accepted, as hyper's client allows.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// How much room each socket read has; a 1 MiB body is sixteen reads.
const READ_CHUNK: usize = 64 * 1024;
/// Idle connections kept per cache node, beyond which they are closed.
const MAX_IDLE_PER_NODE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("connect to {address}: {error}")]
    Connect { address: String, error: io::Error },
    #[error("connect to {0}: timed out")]
    ConnectTimeout(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("the connection closed before a response")]
    NoResponse,
    #[error("the body ended before its declared end")]
    Truncated,
}

impl From<Malformed> for NodeError {
    fn from(m: Malformed) -> NodeError {
        NodeError::Malformed(m.0)
    }
}

/// Idle keep-alive connections to cache nodes, by address.
pub struct NodeClient {
    nodes: Mutex<HashMap<HostPort, Node>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

#[derive(Default)]
struct Node {
    idle: VecDeque<Idle>,
    /// Requests that found no idle connection and are connecting: a
    /// connection handed back meanwhile goes to the oldest of them, so a
    /// burst reuses connections as they free up instead of waiting on a
    /// connect each (which a full accept queue can delay by a second).
    waiting: VecDeque<oneshot::Sender<Conn>>,
}

/// An idle connection, or a place in line for the next one handed back.
enum Taken {
    Idle(Conn),
    Wait(oneshot::Receiver<Conn>),
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct Conn {
    stream: TcpStream,
    /// Bytes read past what has been consumed: the rest of a head, or the
    /// start of the body.
    buf: BytesMut,
    address: HostPort,
}

impl NodeClient {
    /// `idle_timeout` must be shorter than the cache nodes' own keep-alive
    /// timeout, so the proxy usually closes an idle connection first.
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<NodeClient> {
        Arc::new(NodeClient {
            nodes: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
        })
    }

    /// Sends a request without a body to the cache node at `address`.
    /// `target` is the origin-form target (path and query); `headers` go as
    /// they are and must include Host.
    pub async fn send(
        self: &Arc<Self>,
        address: &HostPort,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
    ) -> Result<Response<NodeBody>, NodeError> {
        let request = encode_request(method, target, headers);
        let head_only = method == Method::HEAD;
        let reused = match self.take(address) {
            Taken::Idle(conn) => Some(conn),
            Taken::Wait(mut handed_back) => {
                tokio::select! {
                    biased;
                    Ok(conn) = &mut handed_back => Some(conn),
                    connected = self.connect(address) => {
                        // Anything handed over from now on goes elsewhere.
                        handed_back.close();
                        if let Ok(conn) = handed_back.try_recv() {
                            self.put(conn);
                        }
                        let mut conn = connected?;
                        return match exchange(&mut conn, &request, head_only).await {
                            Ok((parts, framing)) => Ok(self.respond(conn, parts, framing)),
                            Err(Attempt::Stale) => Err(NodeError::NoResponse),
                            Err(Attempt::Failed(e)) => Err(e),
                        };
                    }
                }
            }
        };
        if let Some(mut conn) = reused {
            match exchange(&mut conn, &request, head_only).await {
                Ok((parts, framing)) => return Ok(self.respond(conn, parts, framing)),
                // Closed while idle: nothing reached the node's application.
                Err(Attempt::Stale) => {}
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        let mut conn = self.connect(address).await?;
        match exchange(&mut conn, &request, head_only).await {
            Ok((parts, framing)) => Ok(self.respond(conn, parts, framing)),
            Err(Attempt::Stale) => Err(NodeError::NoResponse),
            Err(Attempt::Failed(e)) => Err(e),
        }
    }

    fn respond(
        self: &Arc<Self>,
        conn: Conn,
        parts: http::response::Parts,
        framing: Framing,
    ) -> Response<NodeBody> {
        let mut body = NodeBody {
            conn: Some(conn),
            framing,
            client: self.clone(),
        };
        if body.framing.is_done() {
            body.finish();
        }
        Response::from_parts(parts, body)
    }

    fn take(&self, address: &HostPort) -> Taken {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let node = match nodes.get_mut(address) {
            Some(node) => node,
            None => nodes.entry(address.clone()).or_default(),
        };
        // Newest first: it is the least likely to have been closed.
        while let Some(i) = node.idle.pop_back() {
            if i.since.elapsed() < self.idle_timeout {
                return Taken::Idle(i.conn);
            }
        }
        // Requests that connected first left their places behind.
        while node.waiting.front().is_some_and(|w| w.is_closed()) {
            node.waiting.pop_front();
        }
        let (tx, rx) = oneshot::channel();
        node.waiting.push_back(tx);
        Taken::Wait(rx)
    }

    fn put(&self, mut conn: Conn) {
        let now = Instant::now();
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let node = match nodes.get_mut(&conn.address) {
            Some(node) => node,
            None => nodes.entry(conn.address.clone()).or_default(),
        };
        while let Some(waiter) = node.waiting.pop_front() {
            match waiter.send(conn) {
                Ok(()) => return,
                Err(back) => conn = back,
            }
        }
        while node.idle.front().is_some_and(|i| {
            node.idle.len() >= MAX_IDLE_PER_NODE || now - i.since >= self.idle_timeout
        }) {
            node.idle.pop_front();
        }
        node.idle.push_back(Idle { conn, since: now });
    }

    async fn connect(&self, address: &HostPort) -> Result<Conn, NodeError> {
        let connect = TcpStream::connect((address.host.as_str(), address.port));
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| NodeError::ConnectTimeout(address.to_string()))?
            .map_err(|error| NodeError::Connect {
                address: address.to_string(),
                error,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            address: address.clone(),
        })
    }
}

/// The request line and header block, in one buffer for one write.
fn encode_request(method: &Method, target: &str, headers: &HeaderMap) -> Vec<u8> {
    let size = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + method.as_str().len()
        + target.len()
        + 16;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

enum Attempt {
    /// Nothing came back on the connection: it had been closed.
    Stale,
    Failed(NodeError),
}

/// Writes the request and reads the final response head.
async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    head_only: bool,
) -> Result<(http::response::Parts, Framing), Attempt> {
    conn.buf.clear();
    if conn.stream.write_all(request).await.is_err() {
        return Err(Attempt::Stale);
    }
    let mut first = true;
    loop {
        if let Some(head) = parse_head(&mut conn.buf, head_only).map_err(Attempt::Failed)? {
            match head {
                Head::Interim(hints) => {
                    if let Some(fields) = hints {
                        fanout_server::interim::send_early_hints(fields);
                    }
                    first = false;
                    continue;
                }
                Head::Final(parts, framing) => return Ok((parts, framing)),
            }
        }
        if conn.buf.len() >= MAX_HEAD {
            return Err(Attempt::Failed(NodeError::Malformed(
                "response head over 64 KiB",
            )));
        }
        let nothing_yet = first && conn.buf.is_empty();
        conn.buf.reserve(READ_CHUNK);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) | Err(_) if nothing_yet => return Err(Attempt::Stale),
            Ok(0) => return Err(Attempt::Failed(NodeError::NoResponse)),
            Ok(_) => {}
            Err(e) => return Err(Attempt::Failed(NodeError::Io(e))),
        }
    }
}

enum Head {
    /// A 1xx response, consumed; the final one follows. A 103's fields,
    /// when the request's client can be given them.
    Interim(Option<HeaderMap>),
    Final(http::response::Parts, Framing),
}

/// Parses a response head from the front of `buf` and consumes it, or
/// returns `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Head>, NodeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(NodeError::Malformed("more than 100 header fields"))
        }
        Err(_) => return Err(NodeError::Malformed("unparsable response head")),
    };
    let code = parsed.code.ok_or(NodeError::Malformed("no status code"))?;
    let status =
        StatusCode::from_u16(code).map_err(|_| NodeError::Malformed("invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // The proxy removes Upgrade from what it forwards.
        return Err(NodeError::Malformed("unrequested protocol switch"));
    }
    if status.is_informational() {
        let hints =
            (status == StatusCode::EARLY_HINTS && fanout_server::interim::can_send()).then(|| {
                let mut fields = HeaderMap::new();
                for h in parsed.headers.iter() {
                    let name = HeaderName::from_bytes(h.name.as_bytes());
                    let value = HeaderValue::from_bytes(h.value);
                    if let (Ok(name), Ok(value)) = (name, value) {
                        fields.append(name, value);
                    }
                }
                fields
            });
        buf.advance(len);
        return Ok(Some(Head::Interim(hints)));
    }
    let http10 = parsed.version == Some(0);
    let base = buf.as_ptr() as usize;
    // Where each field sits in the head, so values can share its buffer.
    let mut framing = FramingFields::default();
    let fields: Vec<(HeaderName, std::ops::Range<usize>)> = parsed
        .headers
        .iter()
        .map(|h| {
            framing.see(h.name, h.value)?;
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| NodeError::Malformed("invalid header name"))?;
            let start = h.value.as_ptr() as usize - base;
            Ok((name, start..start + h.value.len()))
        })
        .collect::<Result<_, NodeError>>()?;
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(range))
            .map_err(|_| NodeError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *response.headers_mut() = headers;
    let (parts, ()) = response.into_parts();
    Ok(Some(Head::Final(
        parts,
        Framing::of(code, head_only, http10, &framing),
    )))
}

/// A response body read straight from the cache node's connection.
/// Dropped before its end, it closes the connection, which cannot carry
/// another response.
pub struct NodeBody {
    conn: Option<Conn>,
    framing: Framing,
    client: Arc<NodeClient>,
}

impl NodeBody {
    /// The body has ended: the connection goes back to the pool if it may
    /// carry another request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.framing.reusable() && conn.buf.is_empty() {
                self.client.put(conn);
            }
        }
    }
}

impl Body for NodeBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.buf) {
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(Step::Data(data)) => {
                    // Hand the connection back as soon as the last byte is
                    // in, so the next request can use it at once.
                    if this.framing.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => match ready!(poll_fill(conn, cx)) {
                    Ok(0) if this.framing == Framing::UntilClose => {
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    Ok(0) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(NodeError::Truncated.into())));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(NodeError::Io(e).into())));
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Reads what the socket has into the connection's buffer.
fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    loop {
        conn.buf.reserve(READ_CHUNK);
        match conn.stream.try_read_buf(&mut conn.buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready!(conn.stream.poll_read_ready(cx))?;
            }
            result => return Poll::Ready(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_server::h1_body::{Chunked, Inner};
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn head(text: &str, head_only: bool) -> Result<(http::response::Parts, Framing), NodeError> {
        let mut buf = BytesMut::from(text);
        match parse_head(&mut buf, head_only)? {
            Some(Head::Final(parts, framing)) => Ok((parts, framing)),
            Some(Head::Interim(_)) => panic!("interim"),
            None => panic!("partial"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |t: &str| head(t, false).map(|(_, f)| f);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap(),
            Framing::Length(5)
        );
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n").is_err());
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            Framing::Chunked(Chunked::Size)
        );
        // Both: chunked wins and the connection is not reused.
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap(),
            Framing::Closing(Inner::Chunked(Chunked::Size))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap(),
            Framing::UntilClose
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n").unwrap(), Framing::UntilClose);
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n").unwrap(),
            Framing::Length(0)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n").unwrap(),
            Framing::Closing(Inner::Length(5))
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap(),
            Framing::Closing(Inner::Length(5))
        );
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n").unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
                .unwrap()
                .1,
            Framing::Length(0),
            "a HEAD response has no body"
        );
        let (parts, _) = head(
            "HTTP/1.1 203 Whatever\r\nCache-Status: c; hit\r\nVary: a\r\nVary: b\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(parts.status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
        assert_eq!(parts.headers["cache-status"], "c; hit");
        assert_eq!(parts.headers.get_all("vary").iter().count(), 2);
    }

    /// A server that reads one request at a time on each connection it
    /// accepts and answers with the next of `responses`, closing the
    /// connection after any response marked with a leading `!`. Returns
    /// its address and how many connections it has accepted.
    async fn canned(
        responses: Vec<&'static str>,
    ) -> (HostPort, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = HostPort::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut responses = responses.into_iter();
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        break;
                    };
                    seen.drain(..end + 4);
                    let Some(r) = responses.next() else { return };
                    let (close, r) = match r.strip_prefix('!') {
                        Some(r) => (true, r),
                        None => (false, r),
                    };
                    s.write_all(r.as_bytes()).await.unwrap();
                    if close {
                        break;
                    }
                }
            }
        });
        (addr, accepted)
    }

    async fn get(
        client: &Arc<NodeClient>,
        addr: &HostPort,
        method: Method,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("h"));
        let resp = client
            .send(addr, &method, "/x?y", &headers)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body.to_vec()))
    }

    fn client() -> Arc<NodeClient> {
        NodeClient::new(Duration::from_secs(2), Duration::from_secs(30))
    }

    #[tokio::test]
    async fn responses_of_every_framing_share_one_connection() {
        let (addr, accepted) = canned(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let c = client();
        assert_eq!(
            get(&c, &addr, Method::GET).await.unwrap(),
            (StatusCode::OK, b"hello".to_vec())
        );
        assert_eq!(
            get(&c, &addr, Method::GET).await.unwrap(),
            (StatusCode::OK, b"abc".to_vec())
        );
        assert_eq!(
            get(&c, &addr, Method::HEAD).await.unwrap(),
            (StatusCode::OK, vec![])
        );
        assert_eq!(
            get(&c, &addr, Method::GET).await.unwrap(),
            (StatusCode::NO_CONTENT, vec![])
        );
        assert_eq!(
            get(&c, &addr, Method::GET).await.unwrap(),
            (StatusCode::OK, vec![])
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_and_close_is_honoured() {
        let (addr, accepted) = canned(vec![
            "!HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nb",
            "!HTTP/1.1 200 OK\r\n\r\nuntil the end",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd",
        ])
        .await;
        let c = client();
        // The server closes after this one; the client cannot know, pools
        // it, finds it dead on the next request and opens a new one.
        assert_eq!(get(&c, &addr, Method::GET).await.unwrap().1, b"a");
        assert_eq!(get(&c, &addr, Method::GET).await.unwrap().1, b"b");
        assert_eq!(
            get(&c, &addr, Method::GET).await.unwrap().1,
            b"until the end"
        );
        assert_eq!(get(&c, &addr, Method::GET).await.unwrap().1, b"d");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_short_body_is_an_error_not_a_complete_body() {
        let (addr, _) = canned(vec!["!HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]).await;
        let err = get(&client(), &addr, Method::GET).await.unwrap_err();
        assert!(err.contains("before its declared end"), "{err}");
        let (addr, _) = canned(vec![
            "!HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ])
        .await;
        let err = get(&client(), &addr, Method::GET).await.unwrap_err();
        assert!(err.contains("before its declared end"), "{err}");
    }

    #[tokio::test]
    async fn bad_heads_and_refused_connections_are_errors() {
        let (addr, _) = canned(vec!["!HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]).await;
        let err = get(&client(), &addr, Method::GET).await.unwrap_err();
        assert!(err.contains("Content-Length"), "{err}");
        let (addr, _) = canned(vec!["!"]).await;
        let err = get(&client(), &addr, Method::GET).await.unwrap_err();
        assert!(err.contains("closed before a response"), "{err}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = HostPort::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        drop(listener);
        let err = get(&client(), &addr, Method::GET).await.unwrap_err();
        assert!(err.starts_with("connect to"), "{err}");
    }

    #[tokio::test]
    async fn a_connection_handed_back_goes_to_the_oldest_request_still_waiting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = HostPort::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        let c = client();
        let (Taken::Wait(first), Taken::Wait(mut second)) = (c.take(&addr), c.take(&addr)) else {
            panic!("nothing is idle yet, so both must wait");
        };
        // The first request connected on its own and left.
        drop(first);
        let a = c.connect(&addr).await.unwrap();
        let a_port = a.stream.local_addr().unwrap().port();
        c.put(a);
        let got = second
            .try_recv()
            .expect("handed to the request still waiting");
        assert_eq!(got.stream.local_addr().unwrap().port(), a_port);
        // Nobody waits now: the next one handed back is kept idle.
        c.put(got);
        match c.take(&addr) {
            Taken::Idle(conn) => assert_eq!(conn.stream.local_addr().unwrap().port(), a_port),
            Taken::Wait(_) => panic!("the idle connection was not kept"),
        }
    }

    #[test]
    fn requests_carry_every_header() {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, HeaderValue::from_static("a.example"));
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        let wire = encode_request(&Method::GET, "/p?q=1", &h);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: a.example\r\nx-forwarded-for: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n\r\n"
        );
    }
}
