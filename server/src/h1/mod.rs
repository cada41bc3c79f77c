//! Fanout's own HTTP/1.1 server for the requests that make nearly all of a
//! CDN's traffic: GET and HEAD without a body. It reads heads straight off
//! the connection's buffer (httparse), hands each request to the component
//! and writes the answer, a stored body together with its head in one
//! `writev`, with no per-request timers or allocations beyond the request's
//! own.
//!
//! Anything else (a request with a body, `Expect`, an upgrade, HTTP/1.0, a
//! target that is not origin-form, a head that does not parse or is too
//! large) hands the connection, with every byte read so far, to hyper, which
//! serves it from then on: the rare and the malformed keep hyper's answers.
//!
//! Why: at 1 KiB a hot hit through hyper was level with HAProxy's cache and
//! no faster, and hyper's dispatch, encoding and per-request header-read
//! timer were most of the user-space time; with this server the proxy's
//! user time per hit fell from 4.0–4.5 µs to 3.4–3.8 µs on the same
//! machine (docs/performance.md).

mod request_head;
mod response;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::body::ResponseBody;
use crate::interim::{self, Interim};
use crate::listener::ConnInfo;
use crate::request_body::RequestBody;
use request_head::Parsed;

pub(crate) struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
}

/// How a connection ended here.
pub(crate) enum Ended<I> {
    /// Closed: by the client, a timeout, an error or shutdown.
    Closed,
    /// A request this server does not take: hyper goes on with the stream
    /// and what was read of it.
    Handoff(I, BytesMut),
}

/// Serves requests on `io` until the connection ends or a request for
/// hyper arrives. `buf` holds bytes already read from it.
pub(crate) async fn serve<H, F, I>(
    mut io: I,
    mut buf: BytesMut,
    info: ConnInfo,
    handler: &H,
    shutdown: &CancellationToken,
    limits: &Limits,
) -> Ended<I>
where
    H: Fn(Request<RequestBody>, ConnInfo) -> F,
    F: Future<Output = Response<ResponseBody>>,
    I: AsyncRead + AsyncWrite + Unpin,
{
    // One timer per connection, looked at four times per timeout, instead
    // of one armed per request: a head must be complete within
    // `header_read_timeout` of when the connection began waiting for it
    // (kept-alive connections included, as hyper did), and a quiet
    // connection closes after `idle_timeout`, whichever comes first.
    let wait_limit = limits.header_read_timeout.min(limits.idle_timeout);
    let check = (wait_limit / 4).max(Duration::from_millis(10));
    let tick = tokio::time::sleep(check);
    tokio::pin!(tick);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    // Requests answered; the tick that sees it change restarts the wait.
    let mut answered: u64 = 0;
    let mut seen = (answered, tokio::time::Instant::now());
    let mut out = BytesMut::with_capacity(1024);
    let hints = interim::Queue::new();
    loop {
        match request_head::parse(&mut buf, limits.max_header_bytes) {
            Parsed::Handoff => return Ended::Handoff(io, buf),
            Parsed::Request(req, client_close) => {
                let method = req.method().clone();
                let resp = match crate::framing::refuse(&req, limits.max_body_bytes) {
                    Some(refusal) => refusal,
                    None => {
                        let answer =
                            interim::scope(Interim::Queue(hints.clone(), 0), handler(req, info));
                        match with_early_hints(&mut io, &mut out, &hints, answer, limits).await {
                            Ok(resp) => resp,
                            Err(e) => {
                                tracing::debug!(peer = %info.peer, error = %e, "early hints cut short");
                                return Ended::Closed;
                            }
                        }
                    }
                };
                let close = client_close || shutdown.is_cancelled();
                match response::write(&mut io, &mut out, &method, resp, close, limits.idle_timeout)
                    .await
                {
                    Ok(asked_close) if !close && !asked_close => {}
                    Ok(_) => {
                        let _ = io.shutdown().await;
                        return Ended::Closed;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %info.peer, error = %e, "response cut short");
                        return Ended::Closed;
                    }
                }
                answered += 1;
                continue;
            }
            Parsed::Partial => {}
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8192);
        }
        tokio::select! {
            biased;
            r = io.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return Ended::Closed,
                Ok(_) => {}
            },
            _ = &mut tick => {
                let now = tokio::time::Instant::now();
                if seen.0 != answered {
                    seen = (answered, now);
                } else if now.duration_since(seen.1) >= wait_limit {
                    tracing::debug!(peer = %info.peer, "closing a connection that sent no complete request in time");
                    return Ended::Closed;
                }
                tick.as_mut().reset(now + check);
            }
            _ = &mut cancelled, if buf.is_empty() => return Ended::Closed,
        }
    }
}

/// Awaits a handler's response, writing each 103 Early Hints it sends
/// before it (see [`crate::interim`]). A response ready at its first poll,
/// a hit, costs one look at the queue.
async fn with_early_hints<F, I>(
    io: &mut I,
    out: &mut BytesMut,
    hints: &interim::Queue,
    answer: F,
    limits: &Limits,
) -> std::io::Result<Response<ResponseBody>>
where
    F: Future<Output = Response<ResponseBody>>,
    I: AsyncWrite + Unpin,
{
    let mut answer = std::pin::pin!(answer);
    loop {
        let step = std::future::poll_fn(|cx| match answer.as_mut().poll(cx) {
            Poll::Ready(resp) => Poll::Ready(Some(resp)),
            Poll::Pending if !hints.is_empty() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        // Hints sent as the final response became ready still go first.
        if !hints.is_empty() {
            for (_, fields) in hints.take() {
                response::write_early_hints(io, out, &fields, limits.idle_timeout).await?;
            }
        }
        if let Some(resp) = step {
            return Ok(resp);
        }
    }
}
