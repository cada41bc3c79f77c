//! How a response goes out: its head encoded at once, its body pulled a
//! frame at a time as the client's flow-control windows allow, and the
//! stream forgotten when both sides are done.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Connection;
use crate::h2::frame::{self, flag, kind, Head, Reason};
use crate::h2::response_headers;
use crate::{BoxError, ResponseBody};

impl<I: AsyncRead + AsyncWrite + Unpin> Connection<I> {
    pub(super) fn reset(&mut self, id: u32, reason: Reason) {
        if let Some(s) = self.streams.remove(&id) {
            s.abort.abort();
            if let Some(r) = &s.recv {
                r.fail("the stream was reset");
            }
        }
        self.out.put(|b| frame::rst_stream(id, reason, b));
    }

    /// Sends a response's head, and its body from then on.
    pub(super) fn start_response(&mut self, id: u32, response: Response<ResponseBody>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let (mut parts, body) = response.into_parts();
        if !parts.headers.contains_key(header::DATE) {
            parts.headers.insert(header::DATE, date());
        }
        let no_body = s.head
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
            || body.is_end_stream();
        s.responded = true;
        let mut block = BytesMut::with_capacity(256);
        response_headers::encode(parts.status, &parts.headers, &mut block);
        self.write_header_block(id, &block, no_body);
        if no_body {
            if let Some(s) = self.streams.get_mut(&id) {
                s.sent = true;
            }
            self.close_if_done(id);
            return;
        }
        self.poll_body(id, body);
    }

    /// Writes the 103 Early Hints handlers sent, each as a HEADERS frame
    /// without END_STREAM (RFC 9113 §8.1), for streams whose final
    /// response has not started; the rest are moot.
    pub(super) fn send_early_hints(&mut self) {
        if self.hints.is_empty() {
            return;
        }
        for (id, fields) in self.hints.take() {
            if self.streams.get(&id).is_none_or(|s| s.responded) {
                continue;
            }
            let mut block = BytesMut::with_capacity(128);
            response_headers::encode(StatusCode::EARLY_HINTS, &fields, &mut block);
            self.write_header_block(id, &block, false);
        }
    }

    /// Writes a header block as HEADERS and, past the peer's frame size,
    /// CONTINUATION frames.
    fn write_header_block(&mut self, id: u32, mut block: &[u8], end_stream: bool) {
        let max = self.peer_max_frame;
        self.out.put(|b| {
            let mut first = true;
            loop {
                let n = block.len().min(max);
                let last = n == block.len();
                let (kind, mut flags) = if first {
                    (kind::HEADERS, if end_stream { flag::END_STREAM } else { 0 })
                } else {
                    (kind::CONTINUATION, 0)
                };
                if last {
                    flags |= flag::END_HEADERS;
                }
                Head::write(kind, flags, id, n, b);
                b.extend_from_slice(&block[..n]);
                block = &block[n..];
                first = false;
                if last {
                    break;
                }
            }
        });
    }

    /// Asks `body` for its next frame (in `bodies`).
    pub(super) fn poll_body(&mut self, id: u32, body: ResponseBody) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let (abort, registration) = AbortHandle::new_pair();
        s.abort = abort;
        let next = Abortable::new(NextBodyFrame { body: Some(body) }, registration);
        self.bodies.push(Box::pin(async move { (id, next.await) }));
    }

    pub(super) fn body_frame(
        &mut self,
        id: u32,
        body: ResponseBody,
        frame: Option<Result<http_body::Frame<Bytes>, BoxError>>,
    ) {
        match frame {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    // Trailers are not sent; the body goes on.
                    self.poll_body(id, body);
                    return;
                };
                let end = body.is_end_stream();
                let Some(s) = self.streams.get_mut(&id) else {
                    return;
                };
                if !data.is_empty() {
                    s.pending.push_back(data);
                }
                s.end_after_pending = end;
                if !end {
                    s.parked = Some(body);
                }
                self.flush_stream(id);
            }
            None => {
                let Some(s) = self.streams.get_mut(&id) else {
                    return;
                };
                s.end_after_pending = true;
                self.flush_stream(id);
            }
            Some(Err(e)) => {
                // A body that breaks off must not look complete.
                tracing::debug!(stream = id, error = %e, "response body failed; resetting the stream");
                self.reset(id, Reason::InternalError);
            }
        }
    }

    /// Writes what the windows allow of a stream's pending data, its
    /// END_STREAM when owed, and goes back to its body once drained.
    pub(super) fn flush_stream(&mut self, id: u32) {
        loop {
            let Some(s) = self.streams.get_mut(&id) else {
                return;
            };
            let Some(front_len) = s.pending.front().map(Bytes::len) else {
                break;
            };
            let allowed = self
                .send_window
                .min(s.send_window)
                .min(self.peer_max_frame as i64);
            if allowed <= 0 {
                if self.send_window <= 0 && s.send_window > 0 && !self.blocked.contains(&id) {
                    self.blocked.push_back(id);
                }
                return;
            }
            let n = (allowed as usize).min(front_len);
            let chunk = if n == front_len {
                s.pending.pop_front().expect("front exists")
            } else {
                s.pending.front_mut().expect("front exists").split_to(n)
            };
            let last = s.pending.is_empty() && s.end_after_pending;
            s.send_window -= n as i64;
            s.sent = last;
            self.send_window -= n as i64;
            self.out.put(|b| {
                Head::write(
                    kind::DATA,
                    if last { flag::END_STREAM } else { 0 },
                    id,
                    n,
                    b,
                )
            });
            self.out.push(chunk);
            if last {
                self.close_if_done(id);
                return;
            }
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.end_after_pending && !s.sent {
            self.out
                .put(|b| Head::write(kind::DATA, flag::END_STREAM, id, 0, b));
            s.sent = true;
            self.close_if_done(id);
            return;
        }
        if let Some(body) = s.parked.take() {
            self.poll_body(id, body);
        }
    }

    /// Forgets a stream once both sides are done. A response that is
    /// complete while the request still streams in ends the request too
    /// (RST_STREAM NO_ERROR, §8.1).
    pub(super) fn close_if_done(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if !s.sent {
            return;
        }
        if !s.received {
            if let Some(r) = &s.recv {
                r.fail("the response ended before the request");
            }
            self.out.put(|b| frame::rst_stream(id, Reason::NoError, b));
        }
        self.streams.remove(&id);
    }
}

/// Polls a response body for its next frame and hands the body back.
struct NextBodyFrame {
    body: Option<ResponseBody>,
}

impl Future for NextBodyFrame {
    type Output = (
        ResponseBody,
        Option<Result<http_body::Frame<Bytes>, BoxError>>,
    );

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let body = self.body.as_mut().expect("polled after completion");
        let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
        Poll::Ready((self.body.take().expect("present"), frame))
    }
}

/// The `Date` of responses that lack one, formatted once per second.
fn date() -> HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if let Ok(v) = HeaderValue::from_str(&text) {
                *c = (secs, v);
            }
        }
        c.1.clone()
    })
}
