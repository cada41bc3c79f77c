//! A request body arriving in HTTP/2 DATA frames: the connection pushes
//! each frame's data here as it reads it, and the handler's body reads it
//! out. What the body has read is credited back to the client (WINDOW_UPDATE)
//! by the connection, so a request body is buffered at most one window deep
//! however slowly the handler reads it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

#[derive(Default)]
struct State {
    chunks: VecDeque<Bytes>,
    /// END_STREAM arrived: nothing follows the chunks.
    ended: bool,
    /// The stream was reset or the connection lost.
    failed: Option<&'static str>,
    /// Read by the body, not yet credited to the client.
    consumed: u32,
    /// The body was dropped: what arrives from now on is thrown away.
    dropped: bool,
    reader: Option<Waker>,
}

/// The side both halves share.
pub struct Shared {
    state: Mutex<State>,
    /// Wakes the connection to credit what was read.
    connection: Arc<AtomicWaker>,
}

impl Shared {
    pub fn new(connection: Arc<AtomicWaker>) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            connection,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A DATA frame's data; returns `false` when the body was dropped (the
    /// connection credits the data back at once).
    pub fn push(&self, data: Bytes, end: bool) -> bool {
        let mut s = self.lock();
        if end {
            s.ended = true;
        }
        if s.dropped {
            return false;
        }
        if !data.is_empty() {
            s.chunks.push_back(data);
        }
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        true
    }

    pub fn fail(&self, why: &'static str) {
        let mut s = self.lock();
        s.failed.get_or_insert(why);
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Takes what was read since the last call, to credit to the client.
    pub fn take_consumed(&self) -> u32 {
        std::mem::take(&mut self.lock().consumed)
    }

    pub fn is_dropped(&self) -> bool {
        self.lock().dropped
    }
}

/// The handler's end.
pub struct RecvBody {
    shared: Arc<Shared>,
    /// Declared Content-Length still to come, when there was one.
    remaining: Option<u64>,
}

impl RecvBody {
    pub fn new(shared: Arc<Shared>, content_length: Option<u64>) -> RecvBody {
        RecvBody {
            shared,
            remaining: content_length,
        }
    }
}

/// Credit is returned once this much has been read, not frame by frame.
const CREDIT_BATCH: u32 = 16 * 1024;

impl Body for RecvBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut s = self.shared.lock();
        if let Some(chunk) = s.chunks.pop_front() {
            let before = s.consumed;
            s.consumed = s.consumed.saturating_add(chunk.len() as u32);
            let wake = before < CREDIT_BATCH && s.consumed >= CREDIT_BATCH;
            drop(s);
            if wake {
                self.shared.connection.wake();
            }
            if let Some(r) = self.remaining.as_mut() {
                *r = r.saturating_sub(chunk.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(why) = s.failed {
            return Poll::Ready(Some(Err(why.into())));
        }
        if s.ended {
            // What is left to credit matters only to a stream that goes on.
            return Poll::Ready(None);
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock();
        s.ended && s.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.dropped = true;
        // Unread data is credited back so the connection's window recovers.
        let unread: usize = s.chunks.drain(..).map(|c| c.len()).sum();
        s.consumed = s.consumed.saturating_add(unread as u32);
        drop(s);
        self.shared.connection.wake();
    }
}
