//! Collapsed fills: concurrent misses for one key share one origin fetch,
//! and the body streams to every waiting client as it arrives
//! (read-while-fill). A client that joins mid-fill gets the bytes already
//! received, then the rest.
//!
//! The fetch runs in its own task, not in the request that started it, so
//! the first viewer hanging up does not break the response for the
//! thousands who joined behind it. The shared state is a chunk list behind
//! a mutex that is never held across an `.await`; a `watch` channel wakes
//! the readers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fanout_server::{interim, memory_file, BoxError, ResponseBody};
use futures_util::stream;
use http::{HeaderMap, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;

/// Whether this request started the fill or joined one in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

/// The origin's response head, as every waiter of a shared fill sends it.
#[derive(Debug)]
pub struct SharedHead {
    pub status: StatusCode,
    /// Hop-by-hop fields and `Age` removed.
    pub headers: HeaderMap,
    pub received_at: Instant,
    pub initial_age: Duration,
    /// `None`: shared with this fill's waiters but not stored.
    pub lifetime: Option<Duration>,
    /// What the response varies on, and the leader's values of it.
    pub vary: Option<VaryCheck>,
}

#[derive(Debug)]
pub struct VaryCheck {
    pub names: Vec<http::HeaderName>,
    pub secondary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Unreachable,
    /// The origin answered with this server error.
    Status(StatusCode),
}

/// What a fill turned out to be, once the origin's headers arrived.
#[derive(Debug, Clone)]
pub enum Head {
    /// Public: streamed to every waiter, and stored when complete if it
    /// has a lifetime.
    Shared(Arc<SharedHead>),
    /// Not storable: only the leader may see it (it may be private to that
    /// client); followers go to the origin on their own, in parallel.
    Private,
    /// No usable response from the origin.
    Failed(Failure),
    /// Answer from this stored response: refreshed by a 304, or stale
    /// standing in for an origin that failed.
    Stored(Arc<crate::store::StoredResponse>, Via),
}

/// How a fill came to answer from a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The origin confirmed the stored copy with 304.
    Revalidated,
    /// The origin failed (with this status, if it answered at all) and the
    /// stale copy may be served instead.
    StaleOnError(Option<StatusCode>),
}

#[derive(Default)]
struct State {
    head: Option<Head>,
    chunks: Vec<Bytes>,
    received: u64,
    /// `Some(true)` complete, `Some(false)` broken.
    done: Option<bool>,
    /// The fields of each 103 Early Hints that came before the response,
    /// for the waiters to pass on; never stored.
    hints: Vec<HeaderMap>,
    private: Option<Response<ResponseBody>>,
}

pub struct Fill {
    state: Mutex<State>,
    changed: watch::Sender<()>,
    /// A purge matched this fill while it ran: what it fetched may predate
    /// the purge, so it must not be stored (see [`Inflight::detach_matching`]).
    purged: AtomicBool,
    /// Who answered the fill, as the part running it numbers its upstreams
    /// (a proxy: the cache node's place on its ring), for the logs and
    /// metrics of every request that shares it.
    answered_by: std::sync::OnceLock<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("the origin response broke off mid-body")]
pub struct Broken;

impl Fill {
    fn new() -> Arc<Fill> {
        Arc::new(Fill {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(()),
            purged: AtomicBool::new(false),
            answered_by: std::sync::OnceLock::new(),
        })
    }

    /// Notes who answered the fill (see [`Fill::answered_by`]).
    pub fn set_answered_by(&self, upstream: usize) {
        let _ = self.answered_by.set(upstream);
    }

    /// Who answered the fill, once known.
    pub fn answered_by(&self) -> Option<usize> {
        self.answered_by.get().copied()
    }

    /// Whether a purge matched this fill after it started.
    pub fn is_purged(&self) -> bool {
        self.purged.load(Ordering::Acquire)
    }

    /// The response's headers, once they are known and shared.
    fn shared_headers(&self) -> Option<HeaderMap> {
        match &self.lock().head {
            Some(Head::Shared(h)) => Some(h.headers.clone()),
            _ => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        // Always bumps the version, even with no receiver yet: a reader
        // that subscribes later checks the state before it waits.
        self.changed.send_modify(|_| {});
    }

    /// Waits for the origin's headers (or the fill's failure).
    pub async fn head(&self) -> Head {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(h) = self.lock().head.clone() {
                return h;
            }
            // The sender lives as long as `self`, so this cannot fail.
            let _ = rx.changed().await;
        }
    }

    /// [`head`](Self::head), passing every 103 Early Hints the fill got
    /// before it on to this request's client (see
    /// `fanout_server::interim`) as they come, those that came before the
    /// request joined too.
    pub async fn head_passing_hints(&self) -> Head {
        if !interim::can_send() {
            return self.head().await;
        }
        let mut rx = self.changed.subscribe();
        let mut passed = 0;
        loop {
            let (new, head) = {
                let s = self.lock();
                (s.hints[passed..].to_vec(), s.head.clone())
            };
            passed += new.len();
            new.into_iter().for_each(interim::send_early_hints);
            if let Some(h) = head {
                return h;
            }
            let _ = rx.changed().await;
        }
    }

    /// Keeps a 103's fields for the requests waiting on this fill.
    pub fn push_hints(&self, fields: HeaderMap) {
        self.update(|s| {
            if s.head.is_none() {
                s.hints.push(fields);
            }
        });
    }

    /// The leader's private response, once.
    pub fn take_private(&self) -> Option<Response<ResponseBody>> {
        self.lock().private.take()
    }

    pub fn set_shared(&self, head: SharedHead) {
        self.update(|s| s.head = Some(Head::Shared(Arc::new(head))));
    }

    pub fn set_private(&self, response: Response<ResponseBody>) {
        self.update(|s| {
            s.private = Some(response);
            s.head = Some(Head::Private);
            s.done = Some(true);
        });
    }

    pub fn set_stored(&self, stored: Arc<crate::store::StoredResponse>, via: Via) {
        self.update(|s| {
            s.head = Some(Head::Stored(stored, via));
            s.done = Some(true);
        });
    }

    pub fn fail(&self, failure: Failure) {
        self.update(|s| {
            s.head.get_or_insert(Head::Failed(failure));
            s.done = Some(false);
        });
    }

    /// Appends body bytes; returns the total received so far.
    pub fn push(&self, chunk: Bytes) -> u64 {
        let mut total = 0;
        self.update(|s| {
            s.received += chunk.len() as u64;
            total = s.received;
            s.chunks.push(chunk);
        });
        total
    }

    pub fn finish(&self, complete: bool) {
        self.update(|s| {
            s.done.get_or_insert(complete);
        });
    }

    /// Waits until the fill has ended: true when it ran to completion.
    pub async fn finished(&self) -> bool {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(done) = self.lock().done {
                return done;
            }
            let _ = rx.changed().await;
        }
    }

    pub fn chunk_count(&self) -> usize {
        self.lock().chunks.len()
    }

    pub fn received(&self) -> u64 {
        self.lock().received
    }

    /// The whole body of a fill, in one buffer for the store: what was
    /// received so far followed by `last`, a chunk not pushed yet.
    pub fn body_bytes_with(&self, last: Option<&Bytes>) -> Bytes {
        let s = self.lock();
        // Copied in every case: a chunk is a slice of the origin
        // connection's read buffer, which a stored body must not keep alive.
        let parts = || s.chunks.iter().chain(last).map(|c| &c[..]);
        let len = parts().map(<[u8]>::len).sum();
        // One chunk that already lies in a memory file (a body handed over
        // by a cache node in this process) is shared, not copied.
        let mut whole = s.chunks.iter().chain(last);
        if let (Some(only), None) = (whole.next(), whole.next()) {
            if memory_file::is_in_memory_file(only) {
                return only.clone();
            }
        }
        // A large body goes to a memory file, which plain TCP connections
        // send without copying it again (see fanout_server::memory_file).
        if len >= memory_file::MIN_LEN {
            if let Some(body) = memory_file::body_in_memory_file(len, parts()) {
                return body;
            }
        }
        let mut buf = BytesMut::with_capacity(len);
        parts().for_each(|p| buf.extend_from_slice(p));
        buf.freeze()
    }

    /// A body that yields every chunk from the first, waits for more while
    /// the fill runs, and ends in an error if the fill breaks, so a client
    /// never mistakes a truncated body for a complete one.
    pub fn body(self: &Arc<Self>) -> ResponseBody {
        self.body_range(0, u64::MAX)
    }

    /// Bytes `[from, to)` of the body, as they arrive.
    pub fn body_range(self: &Arc<Self>, from: u64, to: u64) -> ResponseBody {
        enum Step {
            Chunk(Bytes),
            End,
            Broken,
            Wait,
        }
        /// Reader position: index of the next chunk and its byte offset.
        struct Cursor {
            next: usize,
            offset: u64,
        }
        let rx = self.changed.subscribe();
        let start = (self.clone(), rx, Cursor { next: 0, offset: 0 });
        let frames = stream::unfold(start, move |(fill, mut rx, mut at)| async move {
            loop {
                if at.offset >= to {
                    return None;
                }
                let step = {
                    let s = fill.lock();
                    match (s.chunks.get(at.next), s.done) {
                        (Some(c), _) => Step::Chunk(c.clone()),
                        (None, Some(true)) => Step::End,
                        (None, Some(false)) => Step::Broken,
                        (None, None) => Step::Wait,
                    }
                };
                match step {
                    Step::Chunk(c) => {
                        let (chunk_start, chunk_end) = (at.offset, at.offset + c.len() as u64);
                        at.next += 1;
                        at.offset = chunk_end;
                        let (lo, hi) = (from.max(chunk_start), to.min(chunk_end));
                        if lo < hi {
                            let piece =
                                c.slice((lo - chunk_start) as usize..(hi - chunk_start) as usize);
                            return Some((Ok(Frame::data(piece)), (fill, rx, at)));
                        }
                    }
                    Step::End => return None,
                    Step::Broken => {
                        return Some((Err(Box::new(Broken) as BoxError), (fill, rx, at)))
                    }
                    Step::Wait => {
                        let _ = rx.changed().await;
                    }
                }
            }
        });
        StreamBody::new(frames).boxed_unsync()
    }
}

/// How streaming a body into a fill ([`Fill::feed`]) ended.
pub enum Fed {
    /// The whole body arrived: in the fill, but for `last`, the final
    /// chunk of a body to be kept, held back for the caller to push once it
    /// has stored the body (so a client that has every byte and asks again
    /// finds it stored, and a purge after the last byte sees the entry).
    /// `too_large`: it outgrew the size limit, so nothing is to be kept.
    Complete {
        last: Option<Bytes>,
        too_large: bool,
    },
    /// The deadline passed first; the fill is marked broken.
    TimedOut,
    /// The body broke off; the fill is marked broken.
    Broken(BoxError),
}

impl Fill {
    /// Streams `body` into the fill until it ends, breaks, or `deadline`
    /// passes. With `keep`, the body is meant to be stored, at most `max`
    /// bytes of it: a body that outgrows that (possible only without
    /// Content-Length) keeps feeding the waiters, but `on_too_large` runs
    /// once and nothing is to be stored. `on_data` sees each chunk's size.
    pub async fn feed(
        &self,
        body: &mut ResponseBody,
        deadline: tokio::time::Instant,
        max: u64,
        keep: bool,
        mut on_data: impl FnMut(usize),
        mut on_too_large: impl FnMut(),
    ) -> Fed {
        let mut too_large = !keep;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
                self.finish(false);
                return Fed::TimedOut;
            };
            let Some(frame) = frame else {
                return Fed::Complete {
                    last: None,
                    too_large: keep && too_large,
                };
            };
            let data = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Err(e) => {
                    self.finish(false);
                    return Fed::Broken(e);
                }
            };
            on_data(data.len());
            if body.is_end_stream() && !too_large && self.received() + data.len() as u64 <= max {
                return Fed::Complete {
                    last: Some(data),
                    too_large: false,
                };
            }
            if self.push(data) > max && !too_large {
                too_large = true;
                on_too_large();
            }
        }
    }
}

/// Marks a fill broken if its task ends without finishing it (a panic, or
/// the runtime shutting down), so no waiter waits forever.
pub struct FinishGuard(pub Arc<Fill>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if self.0.lock().done.is_none() {
            self.0.fail(Failure::Unreachable);
        }
    }
}

/// The fills in flight, by cache key.
#[derive(Default)]
pub struct Inflight {
    fills: Mutex<HashMap<String, Arc<Fill>>>,
}

impl Inflight {
    /// Joins the fill for `key`, or starts one: the caller with
    /// `Role::Leader` must run it.
    pub fn join_or_lead(&self, key: &str) -> (Arc<Fill>, Role) {
        let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = fills.get(key) {
            return (f.clone(), Role::Follower);
        }
        let f = Fill::new();
        fills.insert(key.to_string(), f.clone());
        (f, Role::Leader)
    }

    /// Marks every fill in flight that `matches` (by key, and by the
    /// response's headers once they are known) as purged and stops new
    /// requests from joining it. A purge calls this before it walks the
    /// store: a fill that finishes afterwards stores nothing, and a request
    /// that arrives after the purge starts a fill of its own rather than
    /// receive a body fetched before it.
    pub fn detach_matching(&self, matches: impl Fn(&str, Option<&HeaderMap>) -> bool) -> usize {
        let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
        let before = fills.len();
        fills.retain(|key, fill| {
            let headers = fill.shared_headers();
            if matches(key, headers.as_ref()) {
                fill.purged.store(true, Ordering::Release);
                false
            } else {
                true
            }
        });
        before - fills.len()
    }

    /// Stops new requests from joining `fill` (they will look in the store
    /// or start a new fill).
    pub fn remove(&self, key: &str, fill: &Arc<Fill>) {
        let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
        if fills.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            fills.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(body: ResponseBody) -> Result<Vec<u8>, String> {
        body.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn late_joiners_get_earlier_bytes_then_the_rest() {
        let inflight = Inflight::default();
        let (fill, role) = inflight.join_or_lead("k");
        assert_eq!(role, Role::Leader);
        fill.push(Bytes::from_static(b"hello "));
        let (joined, role) = inflight.join_or_lead("k");
        assert_eq!(role, Role::Follower);
        assert!(Arc::ptr_eq(&fill, &joined));
        let early = tokio::spawn(drain(fill.body()));
        let late = joined.body();
        fill.push(Bytes::from_static(b"world"));
        fill.finish(true);
        assert_eq!(early.await.unwrap().unwrap(), b"hello world");
        assert_eq!(drain(late).await.unwrap(), b"hello world");
        assert_eq!(&fill.body_bytes_with(None)[..], b"hello world");
        assert_eq!(
            drain(fill.body_range(4, 8)).await.unwrap(),
            b"o wo",
            "a range across chunks"
        );
        assert_eq!(drain(fill.body_range(6, 11)).await.unwrap(), b"world");
    }

    #[tokio::test]
    async fn a_broken_fill_ends_every_body_in_an_error() {
        let inflight = Inflight::default();
        let (fill, _) = inflight.join_or_lead("k");
        let reader = tokio::spawn(drain(fill.body()));
        fill.push(Bytes::from_static(b"partial"));
        drop(FinishGuard(fill.clone()));
        assert_eq!(reader.await.unwrap().unwrap_err(), Broken.to_string());
    }

    #[tokio::test]
    async fn removed_fills_are_not_joined_again() {
        let inflight = Inflight::default();
        let (first, _) = inflight.join_or_lead("k");
        inflight.remove("k", &first);
        let (second, role) = inflight.join_or_lead("k");
        assert_eq!(role, Role::Leader);
        assert!(!Arc::ptr_eq(&first, &second));
        // Removing a stale fill must not remove its successor.
        inflight.remove("k", &first);
        assert_eq!(inflight.join_or_lead("k").1, Role::Follower);
    }
}
