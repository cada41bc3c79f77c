//! The audience's arrival schedule: a Poisson process whose rate follows
//! the scenario's phases, each arrival with its viewer model and its own
//! seed. A pure function of the scenario, so the same seed gives the same
//! audience, and `--shard i/n` keeps every n-th arrival so shards together
//! are exactly the whole.

use std::time::Duration;

use fanout_config::ScenarioConfig;

/// One viewer joining.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// From the start of the run.
    pub at: Duration,
    /// Position in the whole (unsharded) schedule.
    pub index: u64,
    pub phase: usize,
    /// Index into the scenario's `mix`.
    pub model: usize,
    /// Seeds the viewer's own choices (rendition, title, objects).
    pub seed: u64,
}

/// Which part of a schedule this process plays: arrivals whose index is
/// `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn owns(&self, arrival_index: u64) -> bool {
        arrival_index % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("invalid shard {s:?}; expected i/n with 0 <= i < n, like 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<u32>().map_err(|_| bad())?,
            n.trim().parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The arrivals of a whole scenario, in time order.
pub struct Arrivals {
    /// (start, end, start rate, end rate) per phase, in seconds.
    phases: Vec<(f64, f64, f64, f64)>,
    weights: Vec<u64>,
    rng: fastrand::Rng,
    t: f64,
    index: u64,
}

impl Arrivals {
    pub fn new(scenario: &ScenarioConfig) -> Arrivals {
        let mut start = 0.0;
        let phases = scenario
            .phases
            .iter()
            .map(|p| {
                let end = start + p.duration.get().as_secs_f64();
                let from = p.start_rate.unwrap_or(p.arrival_rate);
                let span = (start, end, from, p.arrival_rate);
                start = end;
                span
            })
            .collect();
        Arrivals {
            phases,
            weights: scenario.mix.iter().map(|m| u64::from(m.weight())).collect(),
            rng: fastrand::Rng::with_seed(scenario.seed),
            t: 0.0,
            index: 0,
        }
    }

    fn phase_at(&self, t: f64) -> Option<usize> {
        self.phases
            .iter()
            .position(|(s, e, _, _)| t >= *s && t < *e)
    }

    fn pick_model(&mut self) -> usize {
        let total: u64 = self.weights.iter().sum();
        let mut r = self.rng.u64(0..total.max(1));
        for (i, w) in self.weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        0
    }
}

impl Iterator for Arrivals {
    type Item = Arrival;

    fn next(&mut self) -> Option<Arrival> {
        // Thinning (Lewis and Shedler): candidates at the phase's highest
        // rate, each kept with probability rate(t) / highest.
        loop {
            let phase = self.phase_at(self.t)?;
            let (start, end, from, to) = self.phases[phase];
            let peak = from.max(to);
            if peak <= 0.0 {
                self.t = end;
                continue;
            }
            let gap = -(1.0 - self.rng.f64()).ln() / peak;
            let t = self.t + gap;
            if t >= end {
                self.t = end;
                continue;
            }
            self.t = t;
            let rate = from + (to - from) * (t - start) / (end - start);
            if self.rng.f64() * peak > rate {
                continue;
            }
            let model = self.pick_model();
            let seed = self.rng.u64(..);
            let index = self.index;
            self.index += 1;
            return Some(Arrival {
                at: Duration::from_secs_f64(t),
                index,
                phase,
                model,
                seed,
            });
        }
    }
}

/// Draws ranks 0..n with probability proportional to 1/(rank+1)^s.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u32, s: f64) -> Zipf {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n.max(1))
            .map(|k| {
                total += 1.0 / f64::from(k).powf(s);
                total
            })
            .collect();
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut fastrand::Rng) -> u32 {
        let u = rng.f64();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(extra: &str) -> ScenarioConfig {
        let text = format!(
            "kind: scenario\nname: t\nseed: 7\ntarget: {{ addresses: ['127.0.0.1:1'], host: h }}\n\
             phases:\n  - {{ name: ramp, duration: 10s, start_rate: 0, arrival_rate: 200, population: 100000 }}\n  \
             - {{ name: steady, duration: 10s, arrival_rate: 200, population: 100000 }}\n  \
             - {{ name: quiet, duration: 5s, arrival_rate: 0, population: 100000 }}\n\
             mix:\n  - {{ viewer: live, stream: main, weight: 3 }}\n  - {{ viewer: static, prefix: /s/, count: 10 }}\n{extra}"
        );
        match fanout_config::load_str(Path::new("t.yaml"), &text).unwrap() {
            fanout_config::AnyConfig::Scenario(s) => *s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn one_seed_gives_one_audience() {
        let a: Vec<_> = Arrivals::new(&scenario("")).collect();
        let b: Vec<_> = Arrivals::new(&scenario("")).collect();
        assert_eq!(a, b);
        let mut other = scenario("");
        other.seed = 8;
        let c: Vec<_> = Arrivals::new(&other).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn arrivals_follow_the_phase_rates() {
        let a: Vec<_> = Arrivals::new(&scenario("")).collect();
        let count = |from: f64, to: f64| {
            a.iter()
                .filter(|x| x.at.as_secs_f64() >= from && x.at.as_secs_f64() < to)
                .count() as f64
        };
        // Ramp 0 -> 200/s over 10 s: 1000 expected; steady 10 s: 2000.
        assert!(
            (850.0..1150.0).contains(&count(0.0, 10.0)),
            "{}",
            count(0.0, 10.0)
        );
        assert!((1800.0..2200.0).contains(&count(10.0, 20.0)));
        assert_eq!(count(20.0, 25.0), 0.0);
        // The ramp rises: its second half gets about three times the first.
        let ratio = count(5.0, 10.0) / count(0.0, 5.0);
        assert!((2.2..4.0).contains(&ratio), "{ratio}");
        // Weights 3:1.
        let live = a.iter().filter(|x| x.model == 0).count() as f64 / a.len() as f64;
        assert!((0.70..0.80).contains(&live), "{live}");
    }

    #[test]
    fn shards_partition_the_schedule() {
        let whole: Vec<_> = Arrivals::new(&scenario("")).collect();
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut joined: Vec<Arrival> = shards
            .iter()
            .flat_map(|s| {
                let s = *s;
                Arrivals::new(&scenario("")).filter(move |a| s.owns(a.index))
            })
            .collect();
        joined.sort_by_key(|a| a.index);
        assert_eq!(joined, whole);
        assert_eq!("1/4".parse(), Ok(Shard { index: 1, count: 4 }));
        assert!("4/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(100, 1.0);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        // P(0) = 1/H(100) ~ 0.193; P(1) about half of that.
        assert!((18_000..20_700).contains(&counts[0]), "{}", counts[0]);
        assert!((counts[0] as f64 / counts[1] as f64 - 2.0).abs() < 0.2);
        let uniform = Zipf::new(4, 0.0);
        let mut c = [0u32; 4];
        for _ in 0..40_000 {
            c[uniform.sample(&mut rng) as usize] += 1;
        }
        assert!(c.iter().all(|n| (9_000..11_000).contains(n)), "{c:?}");
    }
}
