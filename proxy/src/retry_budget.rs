//! The retry budget: retries may add at most `ratio` of the request rate,
//! plus a small floor per second so a quiet proxy can still retry.
//!
//! Why: when a cache node is sick, every request to it fails once and is
//! retried on its neighbour. Unbounded, that doubles the load on a cluster
//! already short of a node; when most of the cluster is sick it turns into a
//! retry storm. Finagle's and Envoy's budgets are the model: a token bucket
//! that each request fills by `ratio` and each retry drains by one.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// Fixed-point scale of the bucket, so a ratio of 0.2 is exact.
const UNIT: i64 = 1000;

pub struct RetryBudget {
    /// Tokens × UNIT that each request deposits.
    deposit: i64,
    /// Most tokens × UNIT the bucket holds: ten seconds of floor, or 100
    /// retries, whichever is more, so a burst after a quiet spell is covered
    /// but a long quiet spell does not bank an unlimited storm.
    cap: i64,
    balance: AtomicI64,
    min_per_second: u64,
    epoch: Instant,
    /// The second (since `epoch`) the floor counter below belongs to.
    floor_second: AtomicU64,
    floor_used: AtomicU64,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        let cap = (min_per_second as i64 * 10).max(100) * UNIT;
        RetryBudget {
            deposit: (ratio * UNIT as f64).round() as i64,
            cap,
            balance: AtomicI64::new(0),
            min_per_second: min_per_second as u64,
            epoch: Instant::now(),
            floor_second: AtomicU64::new(0),
            floor_used: AtomicU64::new(0),
        }
    }

    /// Called once per client request.
    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < self.cap).then(|| (b + self.deposit).min(self.cap))
            });
    }

    /// Whether one retry may be sent now; takes its token if so.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let took = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= UNIT).then_some(b - UNIT)
            })
            .is_ok();
        took || self.take_floor(now)
    }

    fn take_floor(&self, now: Instant) -> bool {
        if self.min_per_second == 0 {
            return false;
        }
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let seen = self.floor_second.load(Ordering::Relaxed);
        if seen != second
            && self
                .floor_second
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.floor_used.store(0, Ordering::Relaxed);
        }
        self.floor_used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u < self.min_per_second).then_some(u + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_are_held_to_the_ratio_of_requests() {
        let budget = RetryBudget::new(0.2, 0);
        let now = Instant::now();
        for _ in 0..100 {
            budget.deposit();
        }
        let allowed = (0..100).filter(|_| budget.try_withdraw(now)).count();
        assert_eq!(allowed, 20, "100 requests at a ratio of 0.2 buy 20 retries");
    }

    #[test]
    fn the_floor_allows_a_few_retries_per_second_without_traffic() {
        let budget = RetryBudget::new(0.2, 3);
        let t = Instant::now();
        assert_eq!((0..10).filter(|_| budget.try_withdraw(t)).count(), 3);
        let next = t + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| budget.try_withdraw(next)).count(), 3);
    }

    #[test]
    fn a_quiet_spell_banks_only_a_bounded_burst() {
        let budget = RetryBudget::new(0.5, 0);
        for _ in 0..1_000_000 {
            budget.deposit();
        }
        let now = Instant::now();
        assert_eq!((0..1000).filter(|_| budget.try_withdraw(now)).count(), 100);
    }
}
