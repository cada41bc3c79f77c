//! Live and VOD viewers' sleeps (the next playlist poll, the next segment
//! as playback needs it), ended at their own deadline to within a fraction
//! of a millisecond.
//!
//! Owns: [`Wakeups`], one per run: a queue of deadlines that every viewer
//! task shares, and one driver task that waits on an [`Alarm`] for the
//! earliest and wakes whoever is due.
//!
//! Why: tokio's timer rounds every deadline up to its next millisecond
//! tick, so a viewer's poll went out up to a millisecond late; latencies
//! run from the scheduled moment, so `live_playlist` read 1.1–1.4 ms at
//! the median from a cache answering in a few hundred microseconds. An
//! alarm (a `timerfd`) per viewer would be 100 000 descriptors; one shared
//! alarm costs a lock and a heap push per sleep, and wakes viewers due
//! within [`COALESCE`](super::alarm::COALESCE) of each other together.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::alarm::Alarm;

/// The run's shared sleep queue. Dropping it stops its driver.
pub struct Wakeups {
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    /// Deadlines by time; an entry whose sleep was dropped stays until it
    /// is due, then finds no waker.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    waiting: HashMap<u64, Waker>,
    next_id: u64,
    driver: Option<Waker>,
    /// What the driver's alarm is set for; `None` while the queue is empty.
    driver_at: Option<Instant>,
    closed: bool,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // Nothing in the queue is left half-changed by a panic.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Wakeups {
    /// Starts the driver on the current runtime.
    pub fn start() -> Wakeups {
        let queue = Arc::new(Mutex::new(Queue::default()));
        tokio::spawn(drive(queue.clone()));
        Wakeups { queue }
    }

    /// Ready at `at`, not before.
    pub fn sleep_until(&self, at: Instant) -> Sleep<'_> {
        Sleep {
            queue: &self.queue,
            at,
            id: None,
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.closed = true;
        if let Some(driver) = q.driver.take() {
            driver.wake();
        }
    }
}

/// A viewer's sleep; see [`Wakeups::sleep_until`].
pub struct Sleep<'a> {
    queue: &'a Mutex<Queue>,
    at: Instant,
    id: Option<u64>,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        let mut q = lock(self.queue);
        let registered = self.id.and_then(|id| q.waiting.get_mut(&id));
        match registered {
            Some(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
            }
            // New, or woken a moment before its deadline by a ring the
            // clock had not quite reached: (re-)queued.
            None => {
                let id = q.next_id;
                q.next_id += 1;
                q.due.push(Reverse((self.at, id)));
                q.waiting.insert(id, cx.waker().clone());
                self.id = Some(id);
                if q.driver_at.is_none_or(|armed| self.at < armed) {
                    if let Some(driver) = q.driver.take() {
                        driver.wake();
                    }
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(self.queue).waiting.remove(&id);
        }
    }
}

/// Wakes each sleep at its deadline until the [`Wakeups`] is dropped.
async fn drive(queue: Arc<Mutex<Queue>>) {
    let mut alarm = Alarm::new(Instant::now());
    let mut due = Vec::new();
    poll_fn(|cx| loop {
        let now = Instant::now();
        let next = {
            let mut q = lock(&queue);
            if q.closed {
                return Poll::Ready(());
            }
            while let Some(&Reverse((at, id))) = q.due.peek() {
                if at > now {
                    break;
                }
                q.due.pop();
                due.extend(q.waiting.remove(&id));
            }
            let next = q.due.peek().map(|&Reverse((at, _))| at);
            q.driver_at = next;
            if !q.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                q.driver = Some(cx.waker().clone());
            }
            next
        };
        // Outside the lock, which the woken viewers may want at once.
        due.drain(..).for_each(Waker::wake);
        match next {
            None => return Poll::Pending,
            Some(at) => {
                if alarm.poll_ring(cx, at, now).is_pending() {
                    return Poll::Pending;
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn poll_once(mut sleep: Pin<&mut Sleep<'_>>) -> Poll<()> {
        poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx))).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_sleep_ends_at_or_after_its_deadline() {
        let wakeups = Arc::new(Wakeups::start());
        let start = Instant::now();
        let sleepers: Vec<_> = (0..200u64)
            .map(|i| {
                let wakeups = wakeups.clone();
                // Deadlines spread over 20 ms, out of order.
                let at = start + Duration::from_micros((i * 7919) % 20_000);
                tokio::spawn(async move {
                    wakeups.sleep_until(at).await;
                    Instant::now() >= at
                })
            })
            .collect();
        for s in sleepers {
            assert!(s.await.unwrap(), "a sleep ended before its deadline");
        }
        let q = lock(&wakeups.queue);
        assert!(q.waiting.is_empty() && q.due.is_empty());
    }

    /// The driver, waiting for a far deadline, takes a nearer one that
    /// comes later.
    #[tokio::test]
    async fn a_nearer_deadline_is_not_held_behind_a_farther_one() {
        let wakeups = Wakeups::start();
        let far = Instant::now() + Duration::from_secs(30);
        let mut far_sleep = std::pin::pin!(wakeups.sleep_until(far));
        assert!(poll_once(far_sleep.as_mut()).await.is_pending());
        // Let the driver arm for the far deadline first.
        tokio::task::yield_now().await;
        let near = Instant::now() + Duration::from_millis(2);
        // Biased: polled at the same moment, the sleep would look at the
        // clock and end, whatever woke it.
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("held behind the far deadline"),
            _ = wakeups.sleep_until(near) => {}
        }
        assert!(Instant::now() < far, "woken for the near deadline");
        assert!(poll_once(far_sleep.as_mut()).await.is_pending());
    }

    #[tokio::test]
    async fn a_dropped_sleep_leaves_no_waker_and_dropping_the_queue_stops_the_driver() {
        let wakeups = Wakeups::start();
        {
            let mut sleep =
                std::pin::pin!(wakeups.sleep_until(Instant::now() + Duration::from_secs(30)));
            assert!(poll_once(sleep.as_mut()).await.is_pending());
            assert_eq!(lock(&wakeups.queue).waiting.len(), 1);
        }
        assert!(lock(&wakeups.queue).waiting.is_empty());
        let queue = wakeups.queue.clone();
        tokio::task::yield_now().await;
        drop(wakeups);
        // The driver holds the other reference until it returns.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&queue) > 1 {
            assert!(Instant::now() < deadline, "the driver did not stop");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
