//! The body of a request as every component's handler receives it: from
//! hyper's HTTP/1.1 connections, or from this crate's own HTTP/2 ones
//! ([`crate::h2`]). An enum rather than a box: the HTTP/1.1 path, which
//! carries most requests and nearly never a body, pays no allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::h2::RecvBody;
use crate::BoxError;

pub enum RequestBody {
    Http1(Incoming),
    Http2(RecvBody),
    /// No body at all (requests built in the process).
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Http2(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Http1(b) => b.is_end_stream(),
            RequestBody::Http2(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Http1(b) => b.size_hint(),
            RequestBody::Http2(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
