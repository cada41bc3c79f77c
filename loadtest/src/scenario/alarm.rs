//! The dispatcher's alarm: wakes it when the next arrival is due, to within
//! a fraction of a millisecond.
//!
//! Owns: [`Alarm`] and the rule for how often it may ring ([`ring_at`]).
//!
//! Why not tokio's timer: its wheel ticks each millisecond and rounds every
//! deadline up to the next tick, so arrivals went out 0.85 ms late at the
//! median (2.2 ms at p99, at 2 000 requests/s), and every latency, measured
//! from the intended send time, carried that lateness. A `timerfd` is
//! armed with the arrival's own deadline and wakes the runtime's epoll
//! like any socket. Arrivals closer together than [`COALESCE`] share a
//! wake-up: the alarm rings at most 5 000 times a second whatever the
//! rate, and at high rates the dispatcher is awake anyway, sending.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant as TokioInstant, Sleep};

/// The least time between two rings: the most an arrival waits for a
/// wake-up it shares with an earlier one.
pub const COALESCE: Duration = Duration::from_micros(200);

/// When to ring for an arrival due `at`, the last ring having been at
/// `last`: at its time, but not sooner than [`COALESCE`] after the last.
pub fn ring_at(at: Instant, last: Instant) -> Instant {
    at.max(last + COALESCE)
}

/// A one-shot alarm the dispatcher re-arms for each arrival not yet due.
pub struct Alarm {
    clock: Clock,
    /// The deadline armed now. One no later than the next arrival's is
    /// left alone: it rings early, the dispatcher looks at the clock and
    /// arms again. Re-arming for every arrival (the dispatcher, woken by
    /// responses, sends most arrivals before their ring) was a system call
    /// each, 15 % more CPU per request at 60 000 requests/s.
    armed: Option<Instant>,
    last_ring: Instant,
}

enum Clock {
    Precise(AsyncFd<OwnedFd>),
    /// Where no timerfd can be had (out of descriptors): tokio's timer,
    /// a millisecond coarse.
    Coarse(Pin<Box<Sleep>>),
}

impl Alarm {
    /// Must be called inside the runtime: the timer registers with its
    /// reactor.
    pub fn new(now: Instant) -> Alarm {
        let clock = match precise() {
            Ok(fd) => Clock::Precise(fd),
            Err(e) => {
                tracing::warn!(error = %e, "no timerfd; arrivals will be up to a millisecond late");
                coarse(now)
            }
        };
        Alarm {
            clock,
            armed: None,
            last_ring: now,
        }
    }

    /// Ready once it is time for an arrival due `at`, `now` being the
    /// clock as last read (before `at`). A ready alarm says only "look at
    /// the clock again": the caller re-checks its deadline.
    pub fn poll_ring(&mut self, cx: &mut Context<'_>, at: Instant, now: Instant) -> Poll<()> {
        let deadline = ring_at(at, self.last_ring);
        match &mut self.clock {
            Clock::Precise(fd) => {
                if self.armed.is_none_or(|armed| armed > deadline) {
                    let wait = deadline.saturating_duration_since(now);
                    if wait.is_zero() {
                        self.armed = None;
                        self.last_ring = now;
                        return Poll::Ready(());
                    }
                    if let Err(e) = arm(fd.get_ref(), wait) {
                        tracing::warn!(error = %e, "cannot arm the timerfd; arrivals will be up to a millisecond late");
                        self.clock = coarse(deadline);
                        return self.poll_ring(cx, at, now);
                    }
                    self.armed = Some(deadline);
                }
                loop {
                    let Ok(mut guard) = ready!(fd.poll_read_ready(cx)) else {
                        // The reactor is going away with the runtime.
                        return Poll::Ready(());
                    };
                    // Reading the expiry count re-arms readiness for the
                    // next deadline. Ready but nothing to read: an expiry
                    // overtaken by a re-arm; wait on.
                    let mut expiries = [0u8; 8];
                    let read = rustix::io::read(fd.get_ref(), &mut expiries);
                    guard.clear_ready();
                    if read != Err(rustix::io::Errno::AGAIN) {
                        break;
                    }
                }
                self.armed = None;
                self.last_ring = Instant::now();
                Poll::Ready(())
            }
            Clock::Coarse(sleep) => {
                let deadline = TokioInstant::from_std(deadline);
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                let ring = sleep.as_mut().poll(cx);
                if ring.is_ready() {
                    self.last_ring = Instant::now();
                }
                ring
            }
        }
    }
}

fn coarse(deadline: Instant) -> Clock {
    Clock::Coarse(Box::pin(tokio::time::sleep_until(TokioInstant::from_std(
        deadline,
    ))))
}

fn precise() -> io::Result<AsyncFd<OwnedFd>> {
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    // SAFETY: what tokio asks is that the descriptor stay open while
    // registered. The OwnedFd is moved into the AsyncFd, which deregisters
    // it before dropping (and so closing) it, and nothing here closes it
    // any other way.
    Ok(unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?)
}

/// Arms `fd` to expire once, `wait` from now.
fn arm(fd: &OwnedFd, wait: Duration) -> io::Result<()> {
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let value = Timespec {
        tv_sec: wait.as_secs() as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    timerfd_settime(
        fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: zero,
            it_value: value,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[test]
    fn an_arrival_rings_at_its_time_unless_the_last_ring_was_too_recent() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_millis(5);
        assert_eq!(ring_at(far, t0), far, "on time when rings are far apart");
        let near = t0 + Duration::from_micros(30);
        assert_eq!(ring_at(near, t0), t0 + COALESCE, "shares a wake-up");
    }

    /// Never early, and armed with the arrival's own deadline rather than
    /// one rounded to a millisecond tick.
    #[tokio::test]
    async fn the_alarm_rings_at_the_deadline_not_on_a_millisecond_tick() {
        let mut alarm = Alarm::new(Instant::now() - COALESCE);
        assert!(matches!(alarm.clock, Clock::Precise(_)), "a timerfd here");
        for _ in 0..20 {
            let now = Instant::now();
            let at = now + Duration::from_micros(300);
            poll_fn(|cx| {
                let ring = alarm.poll_ring(cx, at, now);
                if let (Clock::Precise(fd), Poll::Pending) = (&alarm.clock, &ring) {
                    let left = rustix::time::timerfd_gettime(fd.get_ref())
                        .unwrap()
                        .it_value;
                    let left = Duration::new(left.tv_sec as u64, left.tv_nsec as u32);
                    assert!(
                        left <= Duration::from_micros(300),
                        "armed for the deadline itself, {left:?} away"
                    );
                }
                ring
            })
            .await;
            let rang = Instant::now();
            assert!(rang >= at, "never before the deadline");
            // Past the coalescing window, so each wait is the full 300 µs.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
