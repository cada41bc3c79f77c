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

/// The client's request body broke off or was malformed (a bad chunk
/// size, a connection closed mid-body). Carried through every error that
/// wraps it, so a forwarding component can tell the client's fault (400)
/// from its upstream's (502) with [`caused_by_client_body`].
#[derive(Debug)]
pub struct ClientBodyError(BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Whether `error`, or anything in its chain of sources, is a
/// [`ClientBodyError`].
pub fn caused_by_client_body(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<ClientBodyError>() {
            return true;
        }
        next = e.source();
    }
    false
}

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
        let polled = match self.get_mut() {
            RequestBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Http2(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        };
        polled.map_err(|e| Box::new(ClientBodyError(e)) as BoxError)
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
