//! The report of a run: a stable JSON document (schema
//! `fanout.loadtest.report/v1`, described in docs/loadtest.md), merged
//! exactly across shards because it carries its HdrHistograms, rendered as
//! a terminal summary, and checked against `--fail-if` thresholds.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use fanout_config::ScenarioConfig;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::arrivals::Shard;
use super::recorder::{latency_histogram, Class, ErrorKind, Inner};

pub const SCHEMA: &str = "fanout.loadtest.report/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub scenario: String,
    pub seed: u64,
    /// The shards this report covers (one, or all of a merge).
    pub shards: Vec<Shard>,
    pub started_at: String,
    pub duration_s: f64,
    pub totals: Totals,
    /// Failed requests by kind: connect, timeout, status_4xx, status_5xx,
    /// truncated, other.
    pub errors: BTreeMap<String, u64>,
    /// Per request class: master_playlist, live_playlist, live_segment,
    /// vod_playlist, vod_segment, static (only classes that were asked).
    pub classes: BTreeMap<String, ClassReport>,
    pub viewers: ViewerReport,
    pub origin: Option<OriginFigures>,
    /// What the cache nodes named in `target.metrics` prefetched during
    /// the run (absent without them, and from reports before 2026-12-08).
    #[serde(default)]
    pub prefetch: Option<super::cache_metrics::PrefetchFigures>,
    pub memory: MemoryFigures,
    /// How the generator kept to its schedule (absent from reports made
    /// before 2026-12).
    #[serde(default)]
    pub generator: GeneratorFigures,
    /// One entry per second of the run.
    pub timeline: Vec<Second>,
    pub faults: Vec<FaultRecord>,
    pub first_errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub error_ratio: f64,
    pub requests_per_s: f64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub no_cache_status: u64,
    /// Requests sent again to the next target address after the first
    /// refused the connection or closed it without answering (counted once
    /// each, whatever the second attempt's outcome).
    #[serde(default)]
    pub failovers: u64,
    /// Requests the target refused for now (503 or 429 with Retry-After:
    /// shed by an overloaded server). Not errors: the viewer waited as
    /// told and asked again, and the retry is counted as a request.
    #[serde(default)]
    pub refused: u64,
    /// Time from sending a refused request to its refusal, milliseconds.
    #[serde(default)]
    pub refusal_ms: Quantiles,
    #[serde(default)]
    pub refusal_hist: String,
    /// Hits among responses that carried a cache status.
    pub hit_ratio: Option<f64>,
    /// Total latency of every successful request, in milliseconds.
    pub latency_ms: Quantiles,
    pub latency_hist: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Quantiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassReport {
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    /// Intended send to response head.
    pub ttfb_ms: Quantiles,
    /// Intended send to last byte.
    pub total_ms: Quantiles,
    /// HdrHistogram V2, base64: microseconds.
    pub ttfb_hist: String,
    pub total_hist: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ViewerReport {
    pub arrived: u64,
    /// Arrivals not admitted because the phase's population was reached.
    pub turned_away: u64,
    pub peak_active: u64,
    /// Live viewers: join to first segment downloaded.
    pub startup_ms: Quantiles,
    pub startup_hist: String,
    /// Segments that arrived after the playhead needed them.
    pub stalls: u64,
    pub stall_s: f64,
    pub play_s: f64,
    /// Stalled time over stalled plus played time.
    pub stall_ratio: f64,
    pub rendition_switches: u64,
    /// Live segments viewers asked for (each counted at its first request
    /// in the run; per shard when the load is split), and those whose
    /// first request a cache answered from its store: new segments that
    /// were cached before anyone asked, as prefetch makes them.
    #[serde(default)]
    pub new_segments: u64,
    #[serde(default)]
    pub new_segments_stored: u64,
    #[serde(default)]
    pub new_segments_stored_ratio: Option<f64>,
    /// From the origin publishing a live segment to a viewer having it,
    /// milliseconds (segments from the synthetic origin, which stamps
    /// their publication time): how far behind live viewers play.
    #[serde(default)]
    pub live_edge_ms: Quantiles,
    #[serde(default)]
    pub live_edge_hist: String,
    /// Live segment (or part) requests, asking to having it whole, in
    /// milliseconds: those a cache answered from its store, and those it
    /// forwarded (a miss, or joined a fill in flight). A boundary crowd
    /// served at the speed of a hit has both tails alike, or no forwarded
    /// requests at all.
    #[serde(default)]
    pub segment_stored_ms: Quantiles,
    #[serde(default)]
    pub segment_stored_hist: String,
    #[serde(default)]
    pub segment_forwarded_ms: Quantiles,
    #[serde(default)]
    pub segment_forwarded_hist: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct OriginFigures {
    /// Requests the origin served during the run (all clients).
    pub requests: u64,
    /// Body bytes the origin sent.
    pub bytes: u64,
    /// Live segments (`/live/…/N.ts` on the synthetic origin) the origin
    /// served during the run, and its requests for them: one request per
    /// segment is what a cache cluster in front should cost it.
    #[serde(default)]
    pub live_segments: u64,
    #[serde(default)]
    pub live_segment_requests: u64,
}

impl OriginFigures {
    pub fn requests_per_live_segment(&self) -> Option<f64> {
        ratio(self.live_segment_requests, self.live_segments)
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct MemoryFigures {
    pub baseline_rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub peak_viewers: u64,
    /// (peak - baseline) / peak viewers: what a simulated viewer costs.
    pub bytes_per_viewer: Option<u64>,
}

/// How late the generator itself was: for every arrival, the time from its
/// scheduled moment to when the dispatcher started it, and for every later
/// request a live or VOD viewer scheduled (a playlist poll, a segment as
/// playback needs it), from that moment to when the viewer woke. Queueing for a
/// request slot or a connection is not in it (that is the target's doing,
/// and in the latencies); a high figure means the generator's own core
/// could not keep up, and its lateness is in every latency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GeneratorFigures {
    pub arrival_lateness_ms: Quantiles,
    pub arrival_lateness_hist: String,
    /// CPU time the generator used over the time its runtime's worker
    /// threads had (1.0: every worker busy all the run), when it ran in a
    /// process of its own; the highest shard's in a merge. A generator near
    /// 1.0 answers its responses late, and that wait is in the latencies.
    pub cpu_busy: Option<f64>,
}

/// Above this p99 lateness the summary warns that the generator fell behind.
pub const LATE_WARNING_MS: f64 = 1.0;
/// Above this share of its workers' time the summary warns likewise.
pub const BUSY_WARNING: f64 = 0.9;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    pub t: u64,
    pub requests: u64,
    pub errors: u64,
    pub hits: u64,
    pub with_cache_status: u64,
    pub bytes: u64,
    /// Viewers watching, as last sampled (the sampler may skip a second
    /// when its tick comes late: the audience is carried forward, not 0).
    pub active_viewers: u64,
    /// Origin requests in this second (fractional where a sample covered
    /// more than one second).
    pub origin_requests: f64,
    pub stall_s: f64,
    pub play_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub latency_hist: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    pub at_s: f64,
    pub name: String,
    pub ok: bool,
    pub outcome: String,
}

pub(crate) struct Inputs<'a> {
    pub scenario: &'a ScenarioConfig,
    pub shard: Shard,
    pub started_at: SystemTime,
    pub elapsed: Duration,
    pub recorder: &'a Inner,
    pub arrived: u64,
    pub turned_away: u64,
    pub memory: MemoryFigures,
    pub origin: Option<OriginFigures>,
    pub prefetch: Option<super::cache_metrics::PrefetchFigures>,
    pub faults: Vec<FaultRecord>,
    /// Microseconds from each arrival's time to its start.
    pub arrival_lateness: &'a Histogram<u64>,
    pub cpu_busy: Option<f64>,
}

pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec only fails on a histogram too large to encode.
    let _ = V2Serializer::new().serialize(h, &mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode(s: &str) -> Result<Histogram<u64>, String> {
    if s.is_empty() {
        return Ok(latency_histogram(3));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram does not decode: {e:?}"))
}

impl Report {
    pub(crate) fn build(i: Inputs<'_>) -> Report {
        let r = i.recorder;
        let mut all = latency_histogram(3);
        let mut classes = BTreeMap::new();
        for class in Class::ALL {
            let c = &r.classes[class as usize];
            if c.requests == 0 {
                continue;
            }
            let _ = all.add(&c.total);
            classes.insert(
                class.name().to_string(),
                ClassReport {
                    requests: c.requests,
                    errors: c.errors,
                    bytes: c.bytes,
                    ttfb_ms: Quantiles::of(&c.ttfb),
                    total_ms: Quantiles::of(&c.total),
                    ttfb_hist: encode(&c.ttfb),
                    total_hist: encode(&c.total),
                },
            );
        }
        let errors = ErrorKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), r.errors[*k as usize]))
            .collect();
        let mut audience = 0;
        let timeline = r
            .timeline
            .iter()
            .enumerate()
            .map(|(t, b)| Second {
                active_viewers: {
                    if b.sampled {
                        audience = b.active;
                    }
                    audience
                },
                t: t as u64,
                requests: b.requests,
                errors: b.errors,
                hits: b.hits,
                with_cache_status: b.with_status,
                bytes: b.bytes,
                origin_requests: b.origin_requests,
                stall_s: b.stall_s,
                play_s: b.play_s,
                p50_ms: Quantiles::of(&b.latency).p50,
                p99_ms: Quantiles::of(&b.latency).p99,
                latency_hist: encode(&b.latency),
            })
            .collect();
        let mut report = Report {
            schema: SCHEMA.into(),
            scenario: i.scenario.name.clone(),
            seed: i.scenario.seed,
            shards: vec![i.shard],
            started_at: humantime::format_rfc3339_seconds(i.started_at).to_string(),
            duration_s: i.elapsed.as_secs_f64(),
            totals: Totals {
                requests: r.classes.iter().map(|c| c.requests).sum(),
                errors: r.errors.iter().sum(),
                bytes: r.classes.iter().map(|c| c.bytes).sum(),
                hits: r.hits,
                misses: r.misses,
                no_cache_status: r.no_status,
                failovers: r.failovers,
                refused: r.refused,
                refusal_hist: encode(&r.refusal),
                latency_hist: encode(&all),
                ..Totals::default()
            },
            errors,
            classes,
            viewers: ViewerReport {
                arrived: i.arrived,
                turned_away: i.turned_away,
                peak_active: r.timeline.iter().map(|b| b.active).max().unwrap_or(0),
                startup_hist: encode(&r.startup),
                stalls: r.stalls,
                stall_s: r.stall_s,
                play_s: r.play_s,
                rendition_switches: r.rendition_switches,
                new_segments: r.first_segment_requests,
                new_segments_stored: r.first_segment_stored,
                live_edge_hist: encode(&r.live_edge),
                segment_stored_hist: encode(&r.media_stored),
                segment_forwarded_hist: encode(&r.media_forwarded),
                ..ViewerReport::default()
            },
            origin: i.origin,
            prefetch: i.prefetch,
            memory: i.memory,
            generator: GeneratorFigures {
                arrival_lateness_hist: encode(i.arrival_lateness),
                cpu_busy: i.cpu_busy,
                ..GeneratorFigures::default()
            },
            timeline,
            faults: i.faults,
            first_errors: r.first_errors.clone(),
        };
        report.derive();
        report
    }

    /// Recomputes every figure that follows from counters and histograms.
    fn derive(&mut self) {
        let t = &mut self.totals;
        t.error_ratio = ratio(t.errors, t.requests).unwrap_or(0.0);
        t.requests_per_s = t.requests as f64 / self.duration_s.max(0.001);
        t.hit_ratio = ratio(t.hits, t.hits + t.misses);
        t.latency_ms = decode(&t.latency_hist)
            .map(|h| Quantiles::of(&h))
            .unwrap_or_default();
        t.refusal_ms = decode(&t.refusal_hist)
            .map(|h| Quantiles::of(&h))
            .unwrap_or_default();
        let g = &mut self.generator;
        g.arrival_lateness_ms = decode(&g.arrival_lateness_hist)
            .map(|h| Quantiles::of(&h))
            .unwrap_or_default();
        let v = &mut self.viewers;
        v.startup_ms = decode(&v.startup_hist)
            .map(|h| Quantiles::of(&h))
            .unwrap_or_default();
        v.stall_ratio = if v.stall_s + v.play_s > 0.0 {
            v.stall_s / (v.stall_s + v.play_s)
        } else {
            0.0
        };
        v.new_segments_stored_ratio = ratio(v.new_segments_stored, v.new_segments);
        v.live_edge_ms = decode(&v.live_edge_hist)
            .map(|h| Quantiles::of(&h))
            .unwrap_or_default();
        v.segment_stored_ms = decode(&v.segment_stored_hist)
            .map(|h| Quantiles::of(&h))
            .unwrap_or_default();
        v.segment_forwarded_ms = decode(&v.segment_forwarded_hist)
            .map(|h| Quantiles::of(&h))
            .unwrap_or_default();
        for c in self.classes.values_mut() {
            c.ttfb_ms = decode(&c.ttfb_hist)
                .map(|h| Quantiles::of(&h))
                .unwrap_or_default();
            c.total_ms = decode(&c.total_hist)
                .map(|h| Quantiles::of(&h))
                .unwrap_or_default();
        }
        for s in &mut self.timeline {
            let q = decode(&s.latency_hist)
                .map(|h| Quantiles::of(&h))
                .unwrap_or_default();
            s.p50_ms = q.p50;
            s.p99_ms = q.p99;
        }
    }

    /// Combines the reports of the shards of one run. Counters add up,
    /// histograms merge (so percentiles are those of the whole run, not
    /// averages), and origin figures, which every shard reads from the same
    /// origin, take the largest.
    pub fn merge(reports: Vec<Report>) -> Result<Report, String> {
        let mut iter = reports.into_iter();
        let mut out = iter.next().ok_or("no reports to merge")?;
        for r in iter {
            if r.schema != out.schema {
                return Err(format!("schema {} and {} differ", r.schema, out.schema));
            }
            if (r.scenario.as_str(), r.seed) != (out.scenario.as_str(), out.seed) {
                return Err(format!(
                    "reports of different runs: {} seed {} and {} seed {}",
                    out.scenario, out.seed, r.scenario, r.seed
                ));
            }
            for s in &r.shards {
                if out.shards.contains(s) {
                    return Err(format!("shard {s} appears twice"));
                }
                if s.count != out.shards[0].count {
                    return Err(format!(
                        "shard {s} is from a run split {} ways",
                        out.shards[0].count
                    ));
                }
            }
            out.shards.extend(r.shards.iter().copied());
            out.duration_s = out.duration_s.max(r.duration_s);
            let (a, b) = (&mut out.totals, &r.totals);
            a.requests += b.requests;
            a.errors += b.errors;
            a.bytes += b.bytes;
            a.hits += b.hits;
            a.misses += b.misses;
            a.no_cache_status += b.no_cache_status;
            a.failovers += b.failovers;
            a.refused += b.refused;
            if !b.refusal_hist.is_empty() {
                a.refusal_hist = add_encoded(&a.refusal_hist, &b.refusal_hist)?;
            }
            a.latency_hist = add_encoded(&a.latency_hist, &b.latency_hist)?;
            for (k, n) in &r.errors {
                *out.errors.entry(k.clone()).or_default() += n;
            }
            for (name, c) in &r.classes {
                match out.classes.get_mut(name) {
                    Some(o) => {
                        o.requests += c.requests;
                        o.errors += c.errors;
                        o.bytes += c.bytes;
                        o.ttfb_hist = add_encoded(&o.ttfb_hist, &c.ttfb_hist)?;
                        o.total_hist = add_encoded(&o.total_hist, &c.total_hist)?;
                    }
                    None => {
                        out.classes.insert(name.clone(), c.clone());
                    }
                }
            }
            let (a, b) = (&mut out.viewers, &r.viewers);
            a.arrived += b.arrived;
            a.turned_away += b.turned_away;
            a.peak_active += b.peak_active;
            a.startup_hist = add_encoded(&a.startup_hist, &b.startup_hist)?;
            out.generator.cpu_busy = match (out.generator.cpu_busy, r.generator.cpu_busy) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if !r.generator.arrival_lateness_hist.is_empty() {
                out.generator.arrival_lateness_hist = add_encoded(
                    &out.generator.arrival_lateness_hist,
                    &r.generator.arrival_lateness_hist,
                )?;
            }
            a.stalls += b.stalls;
            a.stall_s += b.stall_s;
            a.play_s += b.play_s;
            a.rendition_switches += b.rendition_switches;
            a.new_segments += b.new_segments;
            for (into, from) in [
                (&mut a.live_edge_hist, &b.live_edge_hist),
                (&mut a.segment_stored_hist, &b.segment_stored_hist),
                (&mut a.segment_forwarded_hist, &b.segment_forwarded_hist),
            ] {
                if !from.is_empty() {
                    *into = if into.is_empty() {
                        from.clone()
                    } else {
                        add_encoded(into, from)?
                    };
                }
            }
            a.new_segments_stored += b.new_segments_stored;
            out.origin = match (out.origin, r.origin) {
                (Some(a), Some(b)) => Some(OriginFigures {
                    requests: a.requests.max(b.requests),
                    bytes: a.bytes.max(b.bytes),
                    live_segments: a.live_segments.max(b.live_segments),
                    live_segment_requests: a.live_segment_requests.max(b.live_segment_requests),
                }),
                (a, b) => a.or(b),
            };
            // Every shard read the same nodes over the same time: keep
            // the largest, as for the origin.
            out.prefetch = match (out.prefetch.take(), r.prefetch.clone()) {
                (Some(a), Some(b)) if b.started > a.started => Some(b),
                (a, b) => a.or(b),
            };
            out.memory.peak_viewers += r.memory.peak_viewers;
            out.memory.peak_rss_bytes = out.memory.peak_rss_bytes.max(r.memory.peak_rss_bytes);
            out.memory.bytes_per_viewer =
                out.memory.bytes_per_viewer.max(r.memory.bytes_per_viewer);
            while out.timeline.len() < r.timeline.len() {
                let t = out.timeline.len() as u64;
                out.timeline.push(Second {
                    t,
                    ..Second::default()
                });
            }
            for (a, b) in out.timeline.iter_mut().zip(&r.timeline) {
                a.requests += b.requests;
                a.errors += b.errors;
                a.hits += b.hits;
                a.with_cache_status += b.with_cache_status;
                a.bytes += b.bytes;
                a.active_viewers += b.active_viewers;
                a.origin_requests = a.origin_requests.max(b.origin_requests);
                a.stall_s += b.stall_s;
                a.play_s += b.play_s;
                a.latency_hist = add_encoded(&a.latency_hist, &b.latency_hist)?;
            }
            out.faults.extend(r.faults);
            out.faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
            for e in r.first_errors {
                if out.first_errors.len() < 5 {
                    out.first_errors.push(e);
                }
            }
        }
        out.shards.sort_by_key(|s| s.index);
        out.derive();
        Ok(out)
    }

    /// Requests the origin saw for each one the viewers made, as a share
    /// saved: 1 - origin requests / requests.
    pub fn offload(&self) -> Option<f64> {
        let o = self.origin?;
        (self.totals.requests > 0).then(|| 1.0 - o.requests as f64 / self.totals.requests as f64)
    }

    pub fn byte_offload(&self) -> Option<f64> {
        let o = self.origin?;
        (self.totals.bytes > 0).then(|| 1.0 - o.bytes as f64 / self.totals.bytes as f64)
    }

    /// The terminal summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let shards = if self.shards.len() == 1 && self.shards[0] == Shard::WHOLE {
            String::new()
        } else {
            let list: Vec<String> = self.shards.iter().map(Shard::to_string).collect();
            format!(" (shards {})", list.join(", "))
        };
        let _ = writeln!(
            out,
            "Scenario {:?}{shards}: {:.1} s, {} viewers arrived, peak {} watching",
            self.scenario, self.duration_s, self.viewers.arrived, self.viewers.peak_active
        );
        let _ = writeln!(
            out,
            "  requests     {} ({:.0}/s), {} failed ({:.3}%)",
            t.requests,
            t.requests_per_s,
            t.errors,
            100.0 * t.error_ratio
        );
        if t.errors > 0 {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(out, "  errors       {}", kinds.join(", "));
        }
        match t.hit_ratio {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "  hit ratio    {:.1}% of {} responses with a cache status",
                    100.0 * h,
                    t.hits + t.misses
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  hit ratio    n/a (no Cache-Status or X-Cache header)"
                );
            }
        }
        if let Some(o) = self.origin {
            let _ = writeln!(
                out,
                "  origin       {} requests (offload {:.1}%), {:.1} MiB (byte offload {:.1}%)",
                o.requests,
                100.0 * self.offload().unwrap_or(0.0),
                o.bytes as f64 / 1048576.0,
                100.0 * self.byte_offload().unwrap_or(0.0)
            );
        }
        if let Some(per) = self.origin.and_then(|o| o.requests_per_live_segment()) {
            let o = self.origin.unwrap_or_default();
            let _ = writeln!(
                out,
                "  segments     {} live segments fetched from the origin with {} requests ({per:.2} per segment)",
                o.live_segments, o.live_segment_requests
            );
        }
        if !self.viewers.live_edge_hist.is_empty() && self.viewers.live_edge_ms.max > 0.0 {
            let e = &self.viewers.live_edge_ms;
            let _ = writeln!(
                out,
                "  live edge    segments reached viewers p50 {:.0} ms, p99 {:.0} ms after the origin published them",
                e.p50, e.p99
            );
        }
        if let Some(r) = self.viewers.new_segments_stored_ratio {
            let _ = writeln!(
                out,
                "  new segments {} of {} first requests answered from a cache ({:.1}%)",
                self.viewers.new_segments_stored,
                self.viewers.new_segments,
                100.0 * r
            );
        }
        let (stored, forwarded) = (
            &self.viewers.segment_stored_ms,
            &self.viewers.segment_forwarded_ms,
        );
        if stored.max > 0.0 || forwarded.max > 0.0 {
            let forwarded = if forwarded.max > 0.0 {
                format!(
                    "{:.1} ms forwarded (a miss, or joined a fill)",
                    forwarded.p99
                )
            } else {
                "none forwarded".to_string()
            };
            let _ = writeln!(
                out,
                "  segment p99  {:.1} ms answered from a cache's store, {forwarded}",
                stored.p99
            );
        }
        if let Some(p) = &self.prefetch {
            let dropped: u64 = p.dropped.values().sum();
            let reasons: Vec<String> = p.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(
                out,
                "  prefetch     {} started, {} used by a viewer, {} wasted, {} not yet asked for, {} dropped{}",
                p.started,
                p.used,
                p.wasted,
                p.unclaimed(),
                dropped,
                if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) }
            );
        }
        if t.failovers > 0 {
            let _ = writeln!(
                out,
                "  failovers    {} requests moved to the next target address after a refused or dropped connection",
                t.failovers
            );
        }
        if t.refused > 0 {
            let _ = writeln!(
                out,
                "  refused      {} requests shed with Retry-After (answered in p50 {:.2} ms, p99 {:.2} ms), then asked again",
                t.refused, t.refusal_ms.p50, t.refusal_ms.p99
            );
        }
        let _ = writeln!(
            out,
            "  bytes        {:.1} MiB ({:.1} MiB/s)",
            t.bytes as f64 / 1048576.0,
            t.bytes as f64 / 1048576.0 / self.duration_s.max(0.001)
        );
        let _ = writeln!(
            out,
            "  latency      p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms (intended send to last byte)",
            t.latency_ms.p50, t.latency_ms.p99, t.latency_ms.p999, t.latency_ms.max
        );
        for (name, c) in &self.classes {
            let _ = writeln!(
                out,
                "    {name:<16} {:>8} req  ttfb p99 {:>8.2} ms  total p50 {:>8.2} ms  p99 {:>8.2} ms  {} failed",
                c.requests, c.ttfb_ms.p99, c.total_ms.p50, c.total_ms.p99, c.errors
            );
        }
        let v = &self.viewers;
        if v.play_s > 0.0 {
            let _ = writeln!(
                out,
                "  live viewers startup p50 {:.0} ms  p99 {:.0} ms; {} stalls, stall ratio {:.4}; {} rendition switches",
                v.startup_ms.p50, v.startup_ms.p99, v.stalls, v.stall_ratio, v.rendition_switches
            );
        }
        let g = &self.generator;
        if !g.arrival_lateness_hist.is_empty() {
            let late = g.arrival_lateness_ms;
            let busy = g
                .cpu_busy
                .map(|b| format!(", generator CPU {:.0}% busy", 100.0 * b))
                .unwrap_or_default();
            // Judged only when the generator had its process to itself (its
            // CPU is known): beside a cluster (`fanout up --demo`) it shares
            // the worker threads, and the advice would not apply.
            let behind = g
                .cpu_busy
                .is_some_and(|b| b > BUSY_WARNING || late.p99 > LATE_WARNING_MS);
            let _ = writeln!(
                out,
                "  schedule     requests started p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms after their time{busy}{}",
                late.p50,
                late.p99,
                late.max,
                if behind {
                    "\n               the generator fell behind: its own delays are in the latencies above; \
                     split the run with --shard, or lower the rate"
                } else {
                    ""
                }
            );
        }
        if let Some(b) = self.memory.bytes_per_viewer {
            let _ = writeln!(
                out,
                "  generator    peak RSS {:.1} MiB, {:.1} KiB per viewer at {} viewers",
                self.memory.peak_rss_bytes as f64 / 1048576.0,
                b as f64 / 1024.0,
                self.memory.peak_viewers
            );
        }
        for f in &self.faults {
            let _ = writeln!(
                out,
                "  fault        t={:.1}s {}: {}{}",
                f.at_s,
                f.name,
                if f.ok { "" } else { "FAILED " },
                f.outcome
            );
        }
        for e in &self.first_errors {
            let _ = writeln!(out, "  error        {e}");
        }
        out
    }

    /// A named figure, for thresholds.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let t = &self.totals;
        Some(match name {
            "requests" => t.requests as f64,
            "rps" => t.requests_per_s,
            "errors" => t.errors as f64,
            "error_ratio" => t.error_ratio,
            "hit_ratio" => t.hit_ratio.unwrap_or(0.0),
            "p50_ms" => t.latency_ms.p50,
            "p90_ms" => t.latency_ms.p90,
            "p99_ms" => t.latency_ms.p99,
            "p999_ms" => t.latency_ms.p999,
            "max_ms" => t.latency_ms.max,
            "lateness_p99_ms" => self.generator.arrival_lateness_ms.p99,
            "generator_cpu_busy" => self.generator.cpu_busy?,
            "refused" => self.totals.refused as f64,
            "refusal_p99_ms" => self.totals.refusal_ms.p99,
            "startup_p50_ms" => self.viewers.startup_ms.p50,
            "startup_p99_ms" => self.viewers.startup_ms.p99,
            "stalls" => self.viewers.stalls as f64,
            "stall_ratio" => self.viewers.stall_ratio,
            "origin_requests" => self.origin?.requests as f64,
            "new_segments_stored_ratio" => self.viewers.new_segments_stored_ratio?,
            "live_edge_p50_ms" => self.viewers.live_edge_ms.p50,
            "live_edge_p99_ms" => self.viewers.live_edge_ms.p99,
            "segment_stored_p99_ms" => self.viewers.segment_stored_ms.p99,
            "segment_forwarded_p99_ms" => self.viewers.segment_forwarded_ms.p99,
            "origin_requests_per_segment" => self.origin?.requests_per_live_segment()?,
            "offload" => self.offload()?,
            _ => return None,
        })
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn add_encoded(a: &str, b: &str) -> Result<String, String> {
    let mut x = decode(a)?;
    x.add(decode(b)?)
        .map_err(|e| format!("histograms do not merge: {e:?}"))?;
    Ok(encode(&x))
}

pub const METRICS: &str = "requests, rps, errors, error_ratio, hit_ratio, p50_ms, p90_ms, p99_ms, \
     p999_ms, max_ms, startup_p50_ms, startup_p99_ms, stalls, stall_ratio, origin_requests, offload, \
     lateness_p99_ms, generator_cpu_busy, refused, refusal_p99_ms, new_segments_stored_ratio, \
     origin_requests_per_segment, live_edge_p50_ms, live_edge_p99_ms, segment_stored_p99_ms, \
     segment_forwarded_p99_ms";

/// `--fail-if p99_ms>200`: a figure, a comparison, a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: String,
    pub op: Op,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

impl std::str::FromStr for Threshold {
    type Err = String;
    fn from_str(s: &str) -> Result<Threshold, String> {
        let bad = |why: &str| {
            format!("invalid threshold {s:?}: {why}; expected METRIC>VALUE (or >=, <, <=) with METRIC one of {METRICS}")
        };
        let (at, op, len) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
            .iter()
            .find_map(|(sym, op)| s.find(sym).map(|i| (i, *op, sym.len())))
            .ok_or_else(|| bad("no comparison"))?;
        let metric = s[..at].trim().to_string();
        let value: f64 = s[at + len..]
            .trim()
            .parse()
            .map_err(|_| bad("the value is not a number"))?;
        if !METRICS.split(", ").any(|m| m.trim() == metric) {
            return Err(bad("unknown metric"));
        }
        Ok(Threshold { metric, op, value })
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        };
        write!(f, "{}{op}{}", self.metric, self.value)
    }
}

impl Threshold {
    /// `Ok(figure)` when the threshold holds; `Err(why)` when it trips or
    /// the figure is not in this report (no origin counters, say).
    pub fn check(&self, report: &Report) -> Result<f64, String> {
        let Some(v) = report.metric(&self.metric) else {
            return Err(format!("{self}: {} is not in this report", self.metric));
        };
        let tripped = match self.op {
            Op::Gt => v > self.value,
            Op::Ge => v >= self.value,
            Op::Lt => v < self.value,
            Op::Le => v <= self.value,
        };
        if tripped {
            Err(format!("{self}: {} is {v}", self.metric))
        } else {
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::recorder::{Outcome, Recorder};
    use std::path::Path;
    use std::time::Instant;

    fn scenario() -> ScenarioConfig {
        let text = "kind: scenario\nname: t\ntarget: { addresses: ['127.0.0.1:1'], host: h }\n\
                    phases: [{ name: p, duration: 1s, arrival_rate: 1, population: 1 }]\n\
                    mix: [{ viewer: static, prefix: /s/, count: 1 }]\n";
        match fanout_config::load_str(Path::new("t.yaml"), text).unwrap() {
            fanout_config::AnyConfig::Scenario(s) => *s,
            _ => unreachable!(),
        }
    }

    fn outcome(i: u64) -> Outcome {
        Outcome {
            class: if i % 3 == 0 {
                Class::LiveSegment
            } else {
                Class::Static
            },
            ttfb: Duration::from_micros(100 + i * 7),
            total: Duration::from_micros(500 + i * i % 100_000),
            bytes: 1000 + i,
            hit: Some(i % 5 != 0),
            error: (i % 97 == 0).then(|| (ErrorKind::Timeout, format!("e{i}"))),
        }
    }

    fn report_of(outcomes: impl Iterator<Item = u64>, shard: Shard) -> Report {
        report_with(outcomes, shard, |_| {})
    }

    fn report_with(
        outcomes: impl Iterator<Item = u64>,
        shard: Shard,
        samples: impl FnOnce(&Recorder),
    ) -> Report {
        let rec = Recorder::new(Instant::now());
        samples(&rec);
        let mut lateness = latency_histogram(2);
        for i in outcomes {
            rec.record(outcome(i), Instant::now());
            lateness.record(20 + i % 300).unwrap();
        }
        rec.startup(Duration::from_millis(300));
        let s = scenario();
        let inner = rec.lock();
        Report::build(Inputs {
            scenario: &s,
            shard,
            started_at: SystemTime::now(),
            elapsed: Duration::from_secs(1),
            recorder: &inner,
            arrived: 1,
            turned_away: 0,
            memory: MemoryFigures::default(),
            origin: Some(OriginFigures {
                requests: 5,
                bytes: 9,
                ..OriginFigures::default()
            }),
            prefetch: None,
            faults: Vec::new(),
            arrival_lateness: &lateness,
            cpu_busy: Some(0.25),
        })
    }

    #[test]
    fn merged_shards_equal_one_run() {
        let whole = report_of(0..5000, Shard::WHOLE);
        let a = report_of(
            (0..5000).filter(|i| i % 2 == 0),
            Shard { index: 0, count: 2 },
        );
        let b = report_of(
            (0..5000).filter(|i| i % 2 == 1),
            Shard { index: 1, count: 2 },
        );
        let merged = Report::merge(vec![b, a]).unwrap();
        assert_eq!(merged.totals.requests, whole.totals.requests);
        assert_eq!(merged.totals.errors, whole.totals.errors);
        assert_eq!(merged.totals.hits, whole.totals.hits);
        assert_eq!(merged.totals.latency_ms, whole.totals.latency_ms);
        assert_eq!(merged.errors, whole.errors);
        for (name, c) in &whole.classes {
            let m = &merged.classes[name];
            assert_eq!(
                (m.requests, m.errors, m.bytes),
                (c.requests, c.errors, c.bytes)
            );
            assert_eq!(m.total_ms, c.total_ms, "{name}");
            assert_eq!(m.ttfb_ms, c.ttfb_ms, "{name}");
        }
        assert_eq!(merged.viewers.startup_ms, whole.viewers.startup_ms);
        assert_eq!(
            merged.generator.arrival_lateness_ms,
            whole.generator.arrival_lateness_ms
        );
        assert_eq!(merged.shards.len(), 2);
        // JSON round trip keeps the figures.
        let back: Report = serde_json::from_str(&serde_json::to_string(&merged).unwrap()).unwrap();
        assert_eq!(back.totals.latency_ms, whole.totals.latency_ms);
        // A shard twice is refused.
        let a = report_of(0..10, Shard { index: 0, count: 2 });
        assert!(Report::merge(vec![a.clone(), a]).is_err());
    }

    #[test]
    fn a_second_the_sampler_skipped_keeps_the_audience_and_the_origin_rate() {
        let r = report_with(0..10, Shard::WHOLE, |rec| {
            let t0 = rec.started();
            let at = |ms| t0 + Duration::from_millis(ms);
            rec.sample(at(5), 6000, Some(0));
            rec.sample(at(1_010), 6000, Some(100));
            // The tick for second 2 came at 3.02 s: nothing in second 2.
            rec.sample(at(3_020), 6000, Some(200));
            rec.sample(at(4_000), 5990, Some(100));
        });
        let active: Vec<u64> = r.timeline.iter().map(|s| s.active_viewers).collect();
        assert_eq!(active, [6000, 6000, 6000, 6000, 5990]);
        let origin: Vec<f64> = r.timeline.iter().map(|s| s.origin_requests).collect();
        assert_eq!(origin, [0.0, 100.0, 100.0, 100.0, 100.0]);
        // The charts draw what the timeline says: no dip to 0 in the page.
        let page = crate::scenario::html::render(&r);
        assert!(page.contains("Viewers watching"));
    }

    #[test]
    fn a_generator_that_fell_behind_says_so() {
        let mut r = report_of(0..100, Shard::WHOLE);
        assert!(r.render().contains("schedule     requests started"));
        assert!(r.render().contains("generator CPU 25% busy"));
        assert!(!r.render().contains("fell behind"), "{}", r.render());
        let mut late = latency_histogram(2);
        late.record(5_000).unwrap();
        r.generator.arrival_lateness_hist = encode(&late);
        r.derive();
        assert!(r.render().contains("fell behind"), "{}", r.render());
        assert_eq!(r.metric("lateness_p99_ms").map(f64::round), Some(5.0));
        // Sharing its process with a cluster, it is not judged.
        r.generator.cpu_busy = None;
        assert!(!r.render().contains("fell behind"), "{}", r.render());
        // On time, but out of CPU: its replies wait, and so do latencies.
        let mut r = report_of(0..100, Shard::WHOLE);
        r.generator.cpu_busy = Some(0.97);
        assert!(r.render().contains("CPU 97% busy"), "{}", r.render());
        assert!(r.render().contains("fell behind"), "{}", r.render());
    }

    #[test]
    fn thresholds_parse_and_trip() {
        let r = report_of(0..1000, Shard::WHOLE);
        let t: Threshold = "errors>0".parse().unwrap();
        assert!(t.check(&r).is_err(), "1000 requests with some timeouts");
        let t: Threshold = "hit_ratio<0.5".parse().unwrap();
        assert!(t.check(&r).is_ok());
        let t: Threshold = "p99_ms >= 100000".parse().unwrap();
        assert_eq!(t.op, Op::Ge);
        assert!(t.check(&r).is_ok());
        assert!("p99>1".parse::<Threshold>().is_err());
        assert!("p99_ms=1".parse::<Threshold>().is_err());
        assert!("p99_ms>fast".parse::<Threshold>().is_err());
    }
}
