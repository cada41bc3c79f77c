//! The scenario viewers' HTTP/1.1 client: a GET written into the socket
//! by the viewer's own task, the response head parsed with httparse, the
//! body read by Content-Length, chunked coding or to the connection's end
//! (the framing rules the proxy's client uses too,
//! [`fanout_server::h1_body`]), and the connection kept per target for the
//! next viewer.
//!
//! Why not hyper's pooled client: it runs each connection as its own task
//! fed through a channel, so every request costs two task wake-ups and a
//! pool lookup; here a request is a write and a read, which halves the
//! generator's CPU per request (loadtest/bench/generator_efficiency.sh).

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::verdict;
use fanout_server::h1_body::{Framing, FramingFields, Malformed, Step};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("connect: timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("{0}")]
    Io(io::Error),
    /// The connection ended before the body's declared end.
    #[error("body ended after {0} bytes, before its declared length")]
    Truncated(u64),
    #[error("malformed response: {0}")]
    Malformed(String),
    /// A new connection was closed or reset before any response byte: the
    /// server went away (a restart, a drain) without answering.
    #[error("the connection closed before a response")]
    NoResponse,
}

impl H1Error {
    /// Nothing reached the server's application, or it answered nothing:
    /// a GET may go to another address of the same service.
    pub fn may_fail_over(&self) -> bool {
        matches!(
            self,
            H1Error::Connect(_) | H1Error::ConnectTimeout(_) | H1Error::NoResponse
        )
    }
}

/// What one GET saw.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub hit: Option<bool>,
    /// Whether any cache on the way had it stored (see
    /// `client::stored_anywhere`).
    pub stored: Option<bool>,
    /// The synthetic origin's publication time of a live segment, in ms
    /// since the Unix epoch (`x-origin-published-ms`).
    pub published_ms: Option<u64>,
    /// The body, when asked for; otherwise empty.
    pub body: Bytes,
    pub bytes: u64,
    /// From the call to the end of the response head.
    pub head_at: Instant,
    /// The last `Cache-Status` field, when asked for.
    pub cache_status: Option<String>,
    /// `Retry-After` in seconds, on a 503 or 429: the server refused the
    /// request for now.
    pub retry_after: Option<u32>,
}

/// What a caller wants kept of a response beyond its status and length.
#[derive(Clone, Copy, Default)]
pub struct Keep {
    pub body: bool,
    pub cache_status: bool,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// Idle keep-alive connections per target.
pub struct Pool {
    /// A scenario names a few targets: a scan is cheaper than hashing an
    /// address twice per request.
    idle: Vec<(SocketAddr, Mutex<Vec<Conn>>)>,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(targets: &[SocketAddr], connect_timeout: Duration) -> Pool {
        Pool {
            idle: targets
                .iter()
                .map(|t| (*t, Mutex::new(Vec::new())))
                .collect(),
            connect_timeout,
        }
    }

    fn idle(&self, target: SocketAddr) -> Option<&Mutex<Vec<Conn>>> {
        self.idle
            .iter()
            .find_map(|(t, idle)| (*t == target).then_some(idle))
    }

    fn take(&self, target: SocketAddr) -> Option<Conn> {
        self.idle(target)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put(&self, target: SocketAddr, conn: Conn) {
        if let Some(idle) = self.idle(target) {
            idle.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }

    async fn connect(&self, target: SocketAddr) -> Result<Conn, H1Error> {
        connect(target, self.connect_timeout).await
    }

    /// GETs `path` from `target`. A reused connection that the server had
    /// closed is replaced once, as browsers do.
    pub async fn get(
        &self,
        target: SocketAddr,
        host: &str,
        path: &str,
        keep_body: bool,
    ) -> Result<Response, H1Error> {
        let request = get_request(host, path);
        let keep = Keep {
            body: keep_body,
            cache_status: false,
        };
        if let Some(mut conn) = self.take(target) {
            match exchange(&mut conn, &request, keep).await {
                Ok((response, reusable)) => {
                    if reusable {
                        self.put(target, conn);
                    }
                    return Ok(response);
                }
                Err(Attempt::Stale) => {}
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        let mut conn = self.connect(target).await?;
        match exchange(&mut conn, &request, keep).await {
            Ok((response, reusable)) => {
                if reusable {
                    self.put(target, conn);
                }
                Ok(response)
            }
            Err(Attempt::Stale) => Err(H1Error::NoResponse),
            Err(Attempt::Failed(e)) => Err(e),
        }
    }
}

async fn connect(target: SocketAddr, timeout: Duration) -> Result<Conn, H1Error> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(target))
        .await
        .map_err(|_| H1Error::ConnectTimeout(timeout))?
        .map_err(H1Error::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(READ_CHUNK),
    })
}

fn get_request(host: &str, path: &str) -> Vec<u8> {
    let mut request = Vec::with_capacity(64 + path.len() + host.len());
    request.extend_from_slice(b"GET ");
    request.extend_from_slice(path.as_bytes());
    request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(b"\r\nUser-Agent: fanout-loadtest\r\n\r\n");
    request
}

/// One connection of its own, opened before it is used: for a crowd whose
/// requests must not wait on connection setup.
pub struct Connection(Conn);

impl Connection {
    pub async fn open(target: SocketAddr, timeout: Duration) -> Result<Connection, H1Error> {
        connect(target, timeout).await.map(Connection)
    }

    /// GETs `path`; the connection cannot be used again after an error.
    pub async fn get(&mut self, host: &str, path: &str, keep: Keep) -> Result<Response, H1Error> {
        match exchange(&mut self.0, &get_request(host, path), keep).await {
            Ok((response, _)) => Ok(response),
            Err(Attempt::Stale) => Err(H1Error::NoResponse),
            Err(Attempt::Failed(e)) => Err(e),
        }
    }
}

enum Attempt {
    /// Nothing came back on a connection: it was closed while idle.
    Stale,
    Failed(H1Error),
}

/// Most response heads have a dozen fields: parsing tries this many slots
/// first, since each is initialised for every response.
const FEW_HEADERS: usize = 24;
/// The most fields a response head may have.
const MAX_HEADERS: usize = 128;

/// Parses the response head at the front of `buf`; `None` while it is
/// incomplete. Not inline in [`exchange`]: the header slots would be part
/// of every request's future, copied each time one moves.
fn parse_head(buf: &[u8], cache_status: bool) -> Result<Option<Head>, H1Error> {
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    let mut parsed = httparse::Response::new(&mut few);
    match parsed.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut many = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut many);
            let status = parsed.parse(buf);
            head_of(&parsed, status, buf.len(), cache_status)
        }
        status => head_of(&parsed, status, buf.len(), cache_status),
    }
}

fn head_of(
    parsed: &httparse::Response<'_, '_>,
    status: httparse::Result<usize>,
    buffered: usize,
    cache_status: bool,
) -> Result<Option<Head>, H1Error> {
    match status {
        Ok(httparse::Status::Complete(len)) => Head::of(parsed, len, cache_status).map(Some),
        Ok(httparse::Status::Partial) if buffered < MAX_HEAD => Ok(None),
        Ok(httparse::Status::Partial) => {
            Err(H1Error::Malformed("response head over 64 KiB".into()))
        }
        Err(e) => Err(H1Error::Malformed(e.to_string())),
    }
}

/// One request and response on `conn`; whether it may carry another.
async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    want: Keep,
) -> Result<(Response, bool), Attempt> {
    conn.buf.clear();
    if conn.stream.write_all(request).await.is_err() {
        return Err(Attempt::Stale);
    }
    // The head, after any interim (1xx) ones.
    let mut answered = false;
    let head = loop {
        match parse_head(&conn.buf, want.cache_status).map_err(Attempt::Failed)? {
            Some(head) if head.interim => {
                conn.buf.advance(head.len);
                answered = true;
            }
            Some(head) => break head,
            None => {
                let empty = conn.buf.is_empty() && !answered;
                match read_more(conn).await {
                    Ok(0) | Err(_) if empty => return Err(Attempt::Stale),
                    Ok(0) => {
                        return Err(Attempt::Failed(H1Error::Malformed(
                            "the connection closed mid-head".into(),
                        )))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(Attempt::Failed(H1Error::Io(e))),
                }
            }
        }
    };
    let head_at = Instant::now();
    conn.buf.advance(head.len);
    let mut framing = head.framing;
    let mut kept = BytesMut::new();
    let mut bytes = 0u64;
    loop {
        match framing.step(&mut conn.buf).map_err(malformed)? {
            Step::Data(data) => {
                bytes += data.len() as u64;
                if want.body {
                    kept.extend_from_slice(&data);
                }
            }
            Step::Done => break,
            Step::More => match read_more(conn).await.map_err(io_failed)? {
                0 if framing == Framing::UntilClose => break,
                0 => return Err(Attempt::Failed(H1Error::Truncated(bytes))),
                _ => {}
            },
        }
    }
    let reusable = framing.reusable() && conn.buf.is_empty();
    Ok((
        Response {
            status: head.status,
            hit: head.hit,
            stored: head.stored,
            published_ms: head.published_ms,
            body: kept.freeze(),
            bytes,
            head_at,
            cache_status: head.cache_status,
            retry_after: head.retry_after,
        },
        reusable,
    ))
}

fn io_failed(e: io::Error) -> Attempt {
    Attempt::Failed(H1Error::Io(e))
}

fn malformed(m: Malformed) -> Attempt {
    Attempt::Failed(H1Error::Malformed(m.to_string()))
}

async fn read_more(conn: &mut Conn) -> io::Result<usize> {
    conn.buf.reserve(READ_CHUNK);
    conn.stream.read_buf(&mut conn.buf).await
}

struct Head {
    len: usize,
    status: u16,
    /// A 1xx response other than 101: the final one follows it.
    interim: bool,
    hit: Option<bool>,
    stored: Option<bool>,
    published_ms: Option<u64>,
    framing: Framing,
    cache_status: Option<String>,
    retry_after: Option<u32>,
}

impl Head {
    fn of(
        parsed: &httparse::Response<'_, '_>,
        len: usize,
        keep_cache_status: bool,
    ) -> Result<Head, H1Error> {
        let status = parsed
            .code
            .ok_or_else(|| H1Error::Malformed("no status code".into()))?;
        if status == 101 {
            return Err(H1Error::Malformed("unrequested protocol switch".into()));
        }
        let mut fields = FramingFields::default();
        // Every Cache-Status line, as one list (RFC 9110 §5.3): a cache
        // in front of another appends its own line.
        let (mut cache_status, mut x_cache) = (None::<std::borrow::Cow<'_, str>>, None);
        let mut retry_after = None;
        let mut published_ms = None;
        let refused = status == 503 || status == 429;
        for h in parsed.headers.iter() {
            fields
                .see(h.name, h.value)
                .map_err(|m| H1Error::Malformed(m.to_string()))?;
            // Decoded only for the fields read: most are not.
            let text = || std::str::from_utf8(h.value).unwrap_or("");
            if h.name.eq_ignore_ascii_case("cache-status") {
                cache_status = Some(match cache_status {
                    None => text().into(),
                    Some(before) => format!("{before}, {}", text()).into(),
                });
            } else if h.name.eq_ignore_ascii_case("x-cache") {
                x_cache = Some(text());
            } else if h.name.eq_ignore_ascii_case("x-origin-published-ms") {
                published_ms = text().trim().parse().ok();
            } else if refused && h.name.eq_ignore_ascii_case("retry-after") {
                // Only delta-seconds: an HTTP-date is left unread.
                retry_after = text().trim().parse().ok();
            }
        }
        Ok(Head {
            len,
            status,
            interim: (100..200).contains(&status),
            hit: verdict(cache_status.as_deref(), x_cache),
            stored: crate::client::stored_anywhere(cache_status.as_deref(), x_cache),
            published_ms,
            framing: Framing::of(status, false, parsed.version == Some(0), &fields),
            cache_status: cache_status
                .filter(|_| keep_cache_status)
                .map(std::borrow::Cow::into_owned),
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn an_exchange_future_holds_no_header_slots() {
        // A future is copied whole whenever it moves (every spawned
        // request moves once): parsing's 64 header slots (2 KiB) must not
        // be in it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut conn = Conn {
            stream,
            buf: BytesMut::new(),
        };
        let want = Keep {
            body: false,
            cache_status: false,
        };
        let size = std::mem::size_of_val(&exchange(&mut conn, b"", want));
        eprintln!("exchange future: {size} bytes");
        assert!(size < 1024, "exchange future is {size} bytes");
    }

    /// A server that answers each request on a connection with the next
    /// canned response, then closes.
    async fn canned(responses: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for r in responses {
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                s.write_all(r).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_every_framing_and_reuses_the_connection() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Status: c; hit\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        ])
        .await;
        let pool = Pool::new(&[addr], Duration::from_secs(1));
        let r = pool.get(addr, "h", "/a", true).await.unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.hit),
            (200, &b"hello"[..], Some(true))
        );
        let r = pool.get(addr, "h", "/b", true).await.unwrap();
        assert_eq!((&r.body[..], r.bytes, r.hit), (&b"abcde"[..], 5, None));
        let r = pool.get(addr, "h", "/c", false).await.unwrap();
        assert_eq!((r.status, r.bytes), (304, 0));
        let r = pool.get(addr, "h", "/d", false).await.unwrap();
        assert_eq!((r.bytes, r.body.len()), (13, 0));
        // All four on one connection: the canned server accepts only one.
    }

    #[test]
    fn heads_with_more_fields_than_the_first_try_holds_still_parse() {
        let head = |fields: usize| {
            let mut h = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..fields {
                h.push_str(&format!("X-Field-{i}: {i}\r\n"));
            }
            h.push_str("Cache-Status: edge; hit\r\nContent-Length: 7\r\n\r\n");
            h
        };
        let many = head(FEW_HEADERS * 3);
        let parsed = parse_head(many.as_bytes(), false).unwrap().unwrap();
        assert_eq!(parsed.len, many.len());
        assert!(matches!(parsed.framing, Framing::Length(7)));
        assert_eq!(
            parsed.hit,
            Some(true),
            "the fields after the first try's slots are read"
        );
        assert!(matches!(
            parse_head(head(MAX_HEADERS).as_bytes(), false),
            Err(H1Error::Malformed(_))
        ));
    }

    #[test]
    fn retry_after_is_read_from_refusals_only() {
        let retry = |head: &str| {
            parse_head(head.as_bytes(), false)
                .unwrap()
                .unwrap()
                .retry_after
        };
        let refused =
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(retry(refused), Some(2));
        assert_eq!(
            retry(
                "HTTP/1.1 429 Too Many Requests\r\nretry-after:  30 \r\nContent-Length: 0\r\n\r\n"
            ),
            Some(30)
        );
        // A date is not read; neither is the field on a response that
        // was answered.
        assert_eq!(
            retry("HTTP/1.1 503 Service Unavailable\r\nRetry-After: Fri, 04 Dec 2026 23:59:59 GMT\r\nContent-Length: 0\r\n\r\n"),
            None
        );
        assert_eq!(
            retry("HTTP/1.1 200 OK\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n"),
            None
        );
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let addr = canned(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes",
        ])
        .await;
        let pool = Pool::new(&[addr], Duration::from_secs(1));
        let r = pool.get(addr, "h", "/a", true).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
        // The same connection carries the next one: nothing was left over.
        let r = pool.get(addr, "h", "/b", true).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"yes"[..]));
    }

    #[tokio::test]
    async fn a_short_body_is_truncated_not_complete() {
        let addr = canned(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]).await;
        let pool = Pool::new(&[addr], Duration::from_secs(1));
        match pool.get(addr, "h", "/", false).await {
            Err(H1Error::Truncated(3)) => {}
            other => panic!("{other:?}"),
        }
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ])
        .await;
        let pool = Pool::new(&[addr], Duration::from_secs(1));
        assert!(matches!(
            pool.get(addr, "h", "/", false).await,
            Err(H1Error::Truncated(2))
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = Pool::new(&[addr], Duration::from_secs(1));
        assert!(matches!(
            pool.get(addr, "h", "/", false).await,
            Err(H1Error::Connect(_))
        ));
    }
}
