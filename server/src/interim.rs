//! Interim responses (RFC 9110 §15.2): 103 Early Hints (RFC 8297) from an
//! origin, passed on to the client that waits for the final response.
//!
//! A component answering a request does not hold the connection it came
//! on, so the way back is a task-local: the servers run each request's
//! handler inside [`scope`], and code anywhere under it (a cache node
//! waiting on a fill, the proxy's client reading a node's answer) calls
//! [`send_early_hints`]. The server writes the hints out before the final
//! response: as a `103` head on HTTP/1.1, a HEADERS frame without
//! END_STREAM on HTTP/2. Where nothing can carry them (hyper's fallback
//! paths, HTTP/1.0 clients, a fill's own task) they are dropped, which
//! RFC 8297 allows: hints are advisory.
//!
//! The queue is one per connection (HTTP/1.1 answers one request at a
//! time; HTTP/2 tags each hint with its stream), so a request costs a
//! reference count, not an allocation. Hints are never stored: they live
//! as long as the request they were sent for.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::{header, HeaderMap};

tokio::task_local! {
    static INTERIM: Interim;
}

/// Where a request's interim responses go.
#[derive(Clone)]
pub enum Interim {
    /// The connection's queue, for this stream (0 on HTTP/1.1).
    Queue(Arc<Queue>, u32),
    /// A function that takes them (a proxy's hot-tier fill hands them to
    /// the requests waiting on it).
    Relay(Arc<dyn Fn(HeaderMap) + Send + Sync>),
}

/// Hints waiting to be written on one connection, by stream.
#[derive(Default)]
pub struct Queue {
    hints: Mutex<Vec<(u32, HeaderMap)>>,
    /// Whether `hints` may hold any: the server looks after every request,
    /// and nearly always finds none, without taking the lock.
    waiting: AtomicBool,
}

impl Queue {
    pub fn new() -> Arc<Queue> {
        Arc::default()
    }

    /// Takes what waits to be written, in the order it was sent.
    pub fn take(&self) -> Vec<(u32, HeaderMap)> {
        let mut hints = self.hints.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.store(false, Ordering::Relaxed);
        std::mem::take(&mut *hints)
    }

    pub fn is_empty(&self) -> bool {
        !self.waiting.load(Ordering::Acquire)
    }

    fn push(&self, stream: u32, fields: HeaderMap) {
        let mut hints = self.hints.lock().unwrap_or_else(PoisonError::into_inner);
        hints.push((stream, fields));
        self.waiting.store(true, Ordering::Release);
    }
}

/// Runs `future` (a request's handler) with `interim` as where its
/// interim responses go.
pub fn scope<F: Future>(interim: Interim, future: F) -> impl Future<Output = F::Output> {
    INTERIM.scope(interim, future)
}

/// Whether the request being answered can pass hints on at all: lets the
/// callers skip the work of collecting them.
pub fn can_send() -> bool {
    INTERIM.try_with(|_| ()).is_ok()
}

/// Sends a 103 Early Hints with `fields` to the client of the request
/// being answered, if its connection can carry one. Fields that describe
/// a message's framing or connection are not hints and are left out.
pub fn send_early_hints(mut fields: HeaderMap) {
    crate::remove_hop_by_hop(&mut fields);
    fields.remove(header::CONTENT_LENGTH);
    if fields.is_empty() {
        return;
    }
    let _ = INTERIM.try_with(|interim| match interim {
        Interim::Queue(queue, stream) => queue.push(*stream, fields),
        Interim::Relay(relay) => relay(fields),
    });
}

/// Takes the 103s an upstream sends while a request to it waits for its
/// final response (called on the upstream connection's task).
pub type HintSink = Arc<dyn Fn(HeaderMap) + Send + Sync>;

/// Runs `request`, handing it a sink for the 103s its upstream sends when
/// this request's client can be given them, and passes each on as it
/// arrives (hints after the final response are moot).
pub async fn relaying<F, Fut>(request: F) -> Fut::Output
where
    F: FnOnce(Option<HintSink>) -> Fut,
    Fut: Future,
{
    if !can_send() {
        return request(None).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink: HintSink = Arc::new(move |fields| {
        let _ = tx.send(fields);
    });
    let answer = request(Some(sink));
    let mut answer = std::pin::pin!(answer);
    loop {
        tokio::select! {
            biased;
            done = &mut answer => {
                // Those that came just before the final response still go.
                while let Ok(fields) = rx.try_recv() {
                    send_early_hints(fields);
                }
                return done;
            }
            Some(fields) = rx.recv() => send_early_hints(fields),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn link(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::LINK, HeaderValue::from_static(v));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        h
    }

    #[tokio::test]
    async fn hints_reach_the_queue_of_the_request_that_sent_them() {
        let queue = Queue::new();
        assert!(!can_send());
        send_early_hints(link("</outside>; rel=preload"));
        scope(Interim::Queue(queue.clone(), 3), async {
            assert!(can_send());
            send_early_hints(link("</a.css>; rel=preload"));
        })
        .await;
        let sent = queue.take();
        assert_eq!(sent.len(), 1, "nothing from outside a scope");
        assert_eq!(sent[0].0, 3);
        assert_eq!(sent[0].1[header::LINK], "</a.css>; rel=preload");
        assert!(!sent[0].1.contains_key(header::CONTENT_LENGTH));
        assert!(queue.is_empty());
    }
}
