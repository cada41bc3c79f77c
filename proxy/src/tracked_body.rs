//! A response body that keeps its request's resources (a cache node's
//! in-flight count, an origin slot) until the last byte is sent or the
//! client goes away, and at that moment writes the access-log line and
//! counts the bytes sent. Responses that keep nothing alive and write no
//! log line, with a body of known length (hot-tier hits), skip it: their
//! bytes are counted when the response starts.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fanout_server::{BoxError, ResponseBody};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::metrics::BoundCounter;

use crate::access_log::{AccessLog, Entry};
use crate::forward::Hold;

pub struct Tracked {
    inner: ResponseBody,
    _hold: Option<Hold>,
    log: Option<(Entry, AccessLog)>,
    /// `fanout_proxy_response_body_bytes_total` for the request's site.
    sent: BoundCounter<u64>,
    bytes: u64,
    /// The body's declared length: a server stops polling a body once it
    /// has sent that many bytes, so the end is never seen as such.
    declared: Option<u64>,
    complete: bool,
}

impl Tracked {
    pub fn new(
        inner: ResponseBody,
        hold: Option<Hold>,
        log: Option<(Entry, AccessLog)>,
        sent: BoundCounter<u64>,
        declared: Option<u64>,
    ) -> Self {
        Tracked {
            inner,
            _hold: hold,
            log,
            sent,
            bytes: 0,
            declared,
            complete: false,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.sent.add(self.bytes);
        }
        if let Some((entry, log)) = self.log.take() {
            let complete = self.complete
                || self.inner.is_end_stream()
                || self.declared.is_some_and(|n| self.bytes >= n);
            log.write(entry.finished(self.bytes, complete));
        }
    }
}
