//! Low-latency HLS (RFC 8216bis) for the synthetic origin's live streams
//! that have a `part_duration`: each segment is published as it is
//! "recorded", one part at a time, and the media playlist lists the parts
//! of its last segments (`EXT-X-PART`), a preload hint for the next part
//! (`EXT-X-PRELOAD-HINT`), and the server controls that let a player ask
//! for the playlist that reaches a point (`CAN-BLOCK-RELOAD`) or for a
//! delta update that skips old segments (`CAN-SKIP-UNTIL`).
//!
//! Time: part `g` (counted from the stream's epoch over all segments) is
//! available at `epoch + (g + 1) × part`; segment `n` is complete with its
//! last part, at `epoch + (n + 1) × segment`, as without parts. Part `i` of
//! segment `n` is served at `{n}.{i}.ts`.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::hls::LiveClock;

/// Complete segments whose parts are still listed (RFC 8216bis §4.4.4.9:
/// parts older than three target durations from the end may go).
const SEGMENTS_WITH_PARTS: u64 = 2;
/// How far ahead of the live edge a blocking request may ask: past the
/// last segment plus two, the answer is 400 at once (§6.2.5.2).
const MAX_AHEAD: u64 = 2;

/// A live stream's parts.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub clock: LiveClock,
    pub part: Duration,
    /// Parts in each segment.
    pub per_segment: u64,
}

/// What a request for a playlist asked of it (§6.2.5: delivery directives).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `_HLS_msn` and, when given, `_HLS_part`.
    pub point: Option<(u64, Option<u64>)>,
    /// `_HLS_skip=YES` (a delta update), or `v2` (also skip date ranges,
    /// of which this origin has none).
    pub skip: bool,
}

impl Directives {
    /// The directives in a query; `Err` for one that is there but does
    /// not parse, or `_HLS_part` without `_HLS_msn` (400, §6.2.5.2).
    pub fn of_query(query: Option<&str>) -> Result<Directives, &'static str> {
        let mut msn = None;
        let mut part = None;
        let mut skip = false;
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("_HLS_msn", v)) => msn = Some(v.parse().map_err(|_| "bad _HLS_msn\n")?),
                Some(("_HLS_part", v)) => part = Some(v.parse().map_err(|_| "bad _HLS_part\n")?),
                Some(("_HLS_skip", v)) => match v {
                    "YES" | "v2" => skip = true,
                    _ => return Err("bad _HLS_skip\n"),
                },
                _ => {}
            }
        }
        if part.is_some() && msn.is_none() {
            return Err("_HLS_part without _HLS_msn\n");
        }
        Ok(Directives {
            point: msn.map(|m| (m, part)),
            skip,
        })
    }
}

impl Parts {
    pub fn new(clock: LiveClock, part: Duration) -> Parts {
        let per_segment = (clock.segment.as_nanos() / part.as_nanos().max(1)).max(1) as u64;
        Parts {
            clock,
            part,
            per_segment,
        }
    }

    /// The newest complete part at `now` (a global index), if any.
    pub fn latest(&self, now: SystemTime) -> Option<u64> {
        let elapsed = now.duration_since(self.clock.epoch).unwrap_or_default();
        (elapsed.as_nanos() / self.part.as_nanos())
            .checked_sub(1)
            .map(|g| g as u64)
    }

    pub fn available_at(&self, global: u64) -> SystemTime {
        self.clock.epoch + self.part * (global as u32 + 1)
    }

    /// The global index of part `part` of segment `msn`. A part index past
    /// the segment's last means the next segment's first (§6.2.5.2).
    pub fn global(&self, msn: u64, part: u64) -> u64 {
        msn.saturating_mul(self.per_segment).saturating_add(part)
    }

    /// When the playlist asked for by `point` can be answered: `Ok(None)`
    /// at once, `Ok(Some(at))` once part `at` is out, `Err` when the point
    /// is too far ahead to wait for.
    pub fn ready_at(
        &self,
        point: (u64, Option<u64>),
        now: SystemTime,
    ) -> Result<Option<SystemTime>, &'static str> {
        let (msn, part) = point;
        let needed = match part {
            Some(p) => self.global(msn, p),
            // The whole segment: its last part.
            None => self.global(msn, self.per_segment - 1),
        };
        let latest = self.latest(now);
        if latest.is_some_and(|g| needed <= g) {
            return Ok(None);
        }
        // The last segment of the playlist is the one in progress.
        let last_segment = self.clock.latest(now).saturating_add(1);
        if msn > last_segment.saturating_add(MAX_AHEAD) {
            return Err("_HLS_msn is more than two segments past the live edge\n");
        }
        Ok(Some(self.available_at(needed)))
    }

    /// When the hinted part `{msn}.{part}.ts` is out, if it is the next
    /// one to come (the preload hint); `None` for any other future part.
    pub fn hinted_ready_at(&self, msn: u64, part: u64, now: SystemTime) -> Option<SystemTime> {
        let next = self.latest(now).map_or(0, |g| g + 1);
        (part < self.per_segment && self.global(msn, part) == next).then(|| self.available_at(next))
    }

    /// Whether part `part` of segment `msn` is out at `now`.
    pub fn published(&self, msn: u64, part: u64, now: SystemTime) -> bool {
        part < self.per_segment
            && self
                .latest(now)
                .is_some_and(|g| self.global(msn, part) <= g)
    }

    /// Seconds a delta update may skip up to (`CAN-SKIP-UNTIL`): six
    /// target durations, the least §4.4.3.8 allows.
    fn skip_until(&self) -> f64 {
        6.0 * self.target_duration() as f64
    }

    fn target_duration(&self) -> u64 {
        self.clock.segment.as_secs_f64().ceil().max(1.0) as u64
    }

    /// The media playlist at `now`: the window of complete segments, the
    /// parts of the last ones and of the segment in progress, and the
    /// preload hint; with `skip`, the segments older than the skip
    /// boundary are replaced by `EXT-X-SKIP`.
    pub fn media_playlist(&self, now: SystemTime, skip: bool) -> String {
        let latest_part = self.latest(now);
        let next_part = latest_part.map_or(0, |g| g + 1);
        // Complete segments: those whose last part is out.
        let complete = next_part / self.per_segment; // segments 0..complete
        let last = complete.checked_sub(1);
        let window = u64::from(self.clock.window);
        let first = complete.saturating_sub(window);
        let part_s = self.part.as_secs_f64();
        let segment_s = self.clock.segment.as_secs_f64();
        let mut out = String::with_capacity(2048);
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={:.1}\n\
             #EXT-X-PART-INF:PART-TARGET={part_s:.3}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
            self.target_duration(),
            3.0 * part_s,
            self.skip_until(),
        );
        let mut from = first;
        if skip && last.is_some() {
            // Keep at least CAN-SKIP-UNTIL seconds from the end.
            let keep = (self.skip_until() / segment_s).ceil() as u64;
            let skipped = (complete - first).saturating_sub(keep);
            if skipped > 0 {
                let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
                from = first + skipped;
            }
        }
        let with_parts = complete.saturating_sub(SEGMENTS_WITH_PARTS);
        for seq in from..complete {
            if seq >= with_parts {
                self.write_parts(&mut out, seq, self.per_segment);
            }
            let _ = write!(out, "#EXTINF:{segment_s:.3},\n{seq}.ts\n");
        }
        // The segment in progress: its parts so far, then the next as a hint.
        let done = next_part - complete * self.per_segment;
        self.write_parts(&mut out, complete, done);
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{complete}.{done}.ts\""
        );
        out
    }

    fn write_parts(&self, out: &mut String, seq: u64, count: u64) {
        let part_s = self.part.as_secs_f64();
        for i in 0..count {
            let independent = if i == 0 { ",INDEPENDENT=YES" } else { "" };
            let _ = writeln!(
                out,
                "#EXT-X-PART:DURATION={part_s:.3},URI=\"{seq}.{i}.ts\"{independent}"
            );
        }
    }

    /// `Last-Modified` of the playlist at `now`: when its newest part came.
    pub fn modified(&self, now: SystemTime) -> SystemTime {
        self.latest(now)
            .map_or(self.clock.epoch, |g| self.available_at(g))
    }

    /// The playlist's version at `now`, for its ETag.
    pub fn version(&self, now: SystemTime) -> u64 {
        self.latest(now).map_or(0, |g| g + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_http_cache::hls::{MediaPlaylist, Point};

    fn parts() -> (Parts, SystemTime) {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = LiveClock {
            epoch: start - Duration::from_secs(24),
            segment: Duration::from_secs(2),
            window: 12,
        };
        (Parts::new(clock, Duration::from_millis(500)), start)
    }

    #[test]
    fn the_playlist_lists_the_parts_so_far_and_hints_the_next() {
        let (p, start) = parts();
        // 24 s in: segments 0..=11 complete, nothing of 12 yet.
        let text = p.media_playlist(start + Duration::from_millis(100), false);
        assert!(
            text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"),
            "{text}"
        );
        assert!(
            text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.0.ts\"\n"),
            "{text}"
        );
        assert_eq!(MediaPlaylist::parse(&text).last_seq(), Some(11));
        assert_eq!(
            text.matches("#EXT-X-PART:").count(),
            8,
            "parts of 10 and 11"
        );
        // 1.1 s later two parts of segment 12 are out.
        let text = p.media_playlist(start + Duration::from_millis(1_100), false);
        assert!(
            text.contains("URI=\"12.1.ts\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.2.ts\""),
            "{text}"
        );
        assert!(Point {
            msn: 12,
            part: Some(1)
        }
        .reached_by(&text));
        assert!(!Point {
            msn: 12,
            part: Some(2)
        }
        .reached_by(&text));
        assert!(
            text.contains("10.0.ts") && !text.contains("9.0.ts"),
            "parts of the last two complete segments: {text}"
        );
    }

    #[test]
    fn a_delta_update_skips_what_is_older_than_the_skip_boundary() {
        let (p, start) = parts();
        let text = p.media_playlist(start, true);
        // 12 segments of 2 s, keep 6 × 2 s = 12 s: 6 skipped.
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-SKIP:SKIPPED-SEGMENTS=6\n"),
            "{text}"
        );
        assert!(
            !text.contains("\n5.ts") && text.contains("\n6.ts"),
            "{text}"
        );
    }

    #[test]
    fn blocking_requests_wait_for_their_point_within_two_segments() {
        let (p, start) = parts();
        let now = start + Duration::from_millis(100);
        assert_eq!(p.ready_at((11, None), now), Ok(None));
        assert_eq!(
            p.ready_at((12, Some(0)), now),
            Ok(Some(start + Duration::from_millis(500)))
        );
        assert_eq!(
            p.ready_at((12, None), now),
            Ok(Some(start + Duration::from_secs(2)))
        );
        // A part index past the segment's last is the next segment's first.
        assert_eq!(
            p.ready_at((12, Some(4)), now),
            p.ready_at((13, Some(0)), now)
        );
        assert!(p.ready_at((14, None), now).is_ok());
        assert!(p.ready_at((14, Some(0)), now).is_ok());
        assert!(p.ready_at((15, None), now).is_err());
    }

    #[test]
    fn only_the_hinted_part_is_waited_for() {
        let (p, start) = parts();
        let now = start + Duration::from_millis(100);
        assert!(p.published(11, 3, now));
        assert!(!p.published(12, 0, now));
        assert_eq!(
            p.hinted_ready_at(12, 0, now),
            Some(start + Duration::from_millis(500))
        );
        assert_eq!(p.hinted_ready_at(12, 1, now), None);
        assert!(!p.published(11, 4, now), "no fifth part");
    }

    #[test]
    fn directives_parse_or_are_refused() {
        assert_eq!(Directives::of_query(None), Ok(Directives::default()));
        assert_eq!(
            Directives::of_query(Some("_HLS_msn=5&_HLS_part=2&_HLS_skip=YES")),
            Ok(Directives {
                point: Some((5, Some(2))),
                skip: true
            })
        );
        assert!(Directives::of_query(Some("_HLS_part=2")).is_err());
        assert!(Directives::of_query(Some("_HLS_msn=x")).is_err());
        assert!(Directives::of_query(Some("_HLS_skip=maybe")).is_err());
    }
}
