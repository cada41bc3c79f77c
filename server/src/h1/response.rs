//! Writing a response on an HTTP/1.1 connection: the head, framed by
//! Content-Length when the body's length is known and chunked otherwise
//! (RFC 9112 §6), and the body as it comes. A body that is ready at once
//! goes out with its head in one `writev`; a body that is not yet ready
//! (a fill still streaming from upstream) gets its head sent first, so the
//! client's first byte does not wait on the body's.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use http::{header, HeaderValue, Method, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::body::ResponseBody;

/// How the body is delimited on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body follows the head (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
}

/// Why the connection cannot go on after a response.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The client went away or stopped reading for the idle timeout.
    #[error("writing to the client: {0}")]
    Io(#[from] io::Error),
    /// The body failed or did not match its declared length: the
    /// response is cut short, and only closing tells the client.
    #[error("the response body failed or did not match its length")]
    Body,
}

/// Writes `resp` to a request made with `method`; `close` adds
/// `Connection: close`. `out` is the connection's scratch buffer. Returns
/// whether the response itself asked to close the connection.
pub async fn write<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut BytesMut,
    method: &Method,
    resp: Response<ResponseBody>,
    close: bool,
    idle_timeout: Duration,
) -> Result<bool, WriteError> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let exact = body.size_hint().exact();
    let no_body =
        method == Method::HEAD || status.is_informational() || matches!(status.as_u16(), 204 | 304);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let framing = match (no_body, exact, declared) {
        (true, _, _) => Framing::None,
        (false, Some(n), _) => Framing::Length(n),
        (false, None, Some(n)) => Framing::Length(n),
        (false, None, None) => Framing::Chunked,
    };
    let asked_close = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "close"));

    out.clear();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        // The framing is this writer's to say.
        if name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && framing != Framing::None)
        {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa::Buffer::new().format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None => {
            // A HEAD answer says how long the GET's body would be.
            if method == Method::HEAD && declared.is_none() {
                if let Some(n) = exact.filter(|&n| n > 0) {
                    out.put_slice(b"content-length: ");
                    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
                    out.put_slice(b"\r\n");
                }
            }
        }
    }
    if !parts.headers.contains_key(header::DATE) {
        out.put_slice(b"date: ");
        with_date(|d| out.put_slice(d));
        out.put_slice(b"\r\n");
    }
    if close && !asked_close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");

    if framing == Framing::None {
        write_all(io, &mut [IoSlice::new(out)], idle_timeout).await?;
        return Ok(asked_close);
    }
    let mut head_sent = false;
    let mut sent: u64 = 0;
    loop {
        let frame = match body.frame().now_or_never() {
            Some(f) => f,
            None => {
                // Not ready: the head goes now, the body when it comes.
                if !head_sent {
                    write_all(io, &mut [IoSlice::new(out)], idle_timeout).await?;
                    head_sent = true;
                }
                body.frame().await
            }
        };
        let (data, end) = match frame {
            None => (Bytes::new(), true),
            Some(Err(_)) => return Err(WriteError::Body),
            Some(Ok(frame)) => match frame.into_data() {
                // A body that knows it is done lets the last chunk go out
                // with its data, in the same write.
                Ok(data) => (data, body.is_end_stream()),
                // Trailers: HTTP/1.1 clients did not ask for them (TE).
                Err(_) => continue,
            },
        };
        sent += data.len() as u64;
        let head: &[u8] = if head_sent { &[] } else { out };
        head_sent = true;
        match framing {
            Framing::Length(n) => {
                if sent > n || (end && sent != n) {
                    return Err(WriteError::Body);
                }
                write_all(
                    io,
                    &mut [IoSlice::new(head), IoSlice::new(&data)],
                    idle_timeout,
                )
                .await?;
            }
            _ => {
                let mut size = [0u8; 20];
                let size = chunk_size_line(&mut size, data.len());
                let (size, crlf): (&[u8], &[u8]) = if data.is_empty() {
                    (&[], &[])
                } else {
                    (size, b"\r\n")
                };
                let last: &[u8] = if end { b"0\r\n\r\n" } else { &[] };
                write_all(
                    io,
                    &mut [
                        IoSlice::new(head),
                        IoSlice::new(size),
                        IoSlice::new(&data),
                        IoSlice::new(crlf),
                        IoSlice::new(last),
                    ],
                    idle_timeout,
                )
                .await?;
            }
        }
        if end {
            return Ok(asked_close);
        }
    }
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// `len` in hex and CRLF, as a chunk starts.
fn chunk_size_line(buf: &mut [u8; 20], mut len: usize) -> &[u8] {
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"\r\n");
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[len & 0xf];
        len >>= 4;
        if len == 0 {
            return &buf[at..];
        }
    }
}

/// Writes a `103 Early Hints` head with `fields` (RFC 8297), ahead of the
/// final response.
pub async fn write_early_hints<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut BytesMut,
    fields: &http::HeaderMap,
    idle_timeout: Duration,
) -> io::Result<()> {
    out.clear();
    out.put_slice(b"HTTP/1.1 103 Early Hints\r\n");
    for (name, value) in fields {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    write_all(io, &mut [IoSlice::new(out)], idle_timeout).await
}

/// Writes every slice, giving up when the client takes nothing for
/// `idle_timeout`. The timer is armed only when a write has to wait.
async fn write_all<I: AsyncWrite + Unpin>(
    io: &mut I,
    mut slices: &mut [IoSlice<'_>],
    idle_timeout: Duration,
) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = match io.write_vectored(slices).now_or_never() {
            Some(r) => r?,
            None => tokio::time::timeout(idle_timeout, io.write_vectored(slices))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??,
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The `Date` value for now, formatted once a second per thread.
fn with_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        f(d.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{empty, full};
    use http_body_util::StreamBody;

    async fn written(method: Method, resp: Response<ResponseBody>, close: bool) -> String {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let mut out = BytesMut::new();
        write(
            &mut server,
            &mut out,
            &method,
            resp,
            close,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        drop(server);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut got)
            .await
            .unwrap();
        String::from_utf8(got).unwrap()
    }

    fn without_date(s: &str) -> String {
        s.lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn a_known_length_gets_content_length_and_its_body() {
        let mut r = Response::new(full("hello"));
        r.headers_mut().insert("x-a", HeaderValue::from_static("1"));
        let s = written(Method::GET, r, false).await;
        assert!(s.contains("\r\ndate: "), "{s}");
        assert_eq!(
            without_date(&s),
            "HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 5\n\nhello"
        );
    }

    #[tokio::test]
    async fn head_keeps_the_length_and_sends_no_body() {
        let mut r = Response::new(empty());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
        let s = written(Method::HEAD, r, true).await;
        assert_eq!(
            without_date(&s),
            "HTTP/1.1 200 OK\ncontent-length: 1024\nconnection: close\n"
        );
        let s = written(Method::HEAD, Response::new(full("abc")), false).await;
        assert!(
            s.contains("content-length: 3\r\n") && s.ends_with("\r\n\r\n"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn an_unknown_length_is_chunked_and_ends_with_the_last_chunk() {
        let frames = futures_util::stream::iter(
            ["ab", "", "cdefghijklmnopq"]
                .map(|c| Ok::<_, crate::BoxError>(http_body::Frame::data(Bytes::from(c)))),
        );
        let r = Response::new(StreamBody::new(frames).boxed_unsync());
        let s = written(Method::GET, r, false).await;
        assert_eq!(
            without_date(&s),
            "HTTP/1.1 200 OK\ntransfer-encoding: chunked\n\n2\nab\nf\ncdefghijklmnopq\n0\n"
        );
        assert!(s.ends_with("0\r\n\r\n"), "{s:?}");
    }

    #[tokio::test]
    async fn no_body_for_204_and_304_and_a_short_body_is_an_error() {
        let mut r = Response::new(empty());
        *r.status_mut() = http::StatusCode::NOT_MODIFIED;
        r.headers_mut()
            .insert(header::ETAG, HeaderValue::from_static("\"x\""));
        let s = written(Method::GET, r, false).await;
        assert_eq!(without_date(&s), "HTTP/1.1 304 Not Modified\netag: \"x\"\n");

        let frames = futures_util::stream::iter(
            ["ab"].map(|c| Ok::<_, crate::BoxError>(http_body::Frame::data(Bytes::from(c)))),
        );
        let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        let (_client, mut server) = tokio::io::duplex(1 << 20);
        let got = write(
            &mut server,
            &mut BytesMut::new(),
            &Method::GET,
            r,
            false,
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(got, Err(WriteError::Body)));
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut b = [0u8; 20];
        assert_eq!(chunk_size_line(&mut b, 0), b"0\r\n");
        assert_eq!(chunk_size_line(&mut b, 255), b"ff\r\n");
        assert_eq!(chunk_size_line(&mut b, 1 << 20), b"100000\r\n");
    }
}
