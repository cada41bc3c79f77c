//! HLS playlists (RFC 8216) for live streams that advance in real time and
//! for VOD titles.
//!
//! A live stream's clock starts one window before the origin started, so a
//! player that joins at once finds a full window. Segment `n` becomes
//! available when it has been fully "recorded": at `epoch + (n + 1) × d`.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use fanout_config::{LiveStream, Rendition};

pub fn master(renditions: &[Rendition]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    for r in renditions {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", r.bandwidth);
        if let Some(res) = &r.resolution {
            let _ = write!(out, ",RESOLUTION={res}");
        }
        let _ = write!(out, "\n{}/index.m3u8\n", r.name);
    }
    out
}

/// The live timeline of one stream.
#[derive(Debug, Clone, Copy)]
pub struct LiveClock {
    pub epoch: SystemTime,
    pub segment: Duration,
    pub window: u32,
}

impl LiveClock {
    pub fn new(stream: &LiveStream, origin_start: SystemTime) -> LiveClock {
        let segment = stream.segment_duration.get();
        LiveClock {
            epoch: origin_start - segment * stream.window,
            segment,
            window: stream.window,
        }
    }

    /// The newest complete segment at `now`.
    pub fn latest(&self, now: SystemTime) -> u64 {
        let elapsed = now.duration_since(self.epoch).unwrap_or_default();
        (elapsed.as_nanos() / self.segment.as_nanos()).saturating_sub(1) as u64
    }

    pub fn available_at(&self, seq: u64) -> SystemTime {
        self.epoch + self.segment * (seq as u32 + 1)
    }

    pub fn media_playlist(&self, latest: u64) -> String {
        let first = (latest + 1).saturating_sub(self.window as u64);
        let mut out = header(self.segment, first);
        for seq in first..=latest {
            let _ = write!(
                out,
                "#EXTINF:{:.3},\n{seq}.ts\n",
                self.segment.as_secs_f64()
            );
        }
        out
    }
}

pub fn vod_playlist(segment: Duration, segments: u32) -> String {
    let mut out = header(segment, 0);
    out.insert_str("#EXTM3U\n".len(), "#EXT-X-PLAYLIST-TYPE:VOD\n");
    for seq in 0..segments {
        let _ = write!(out, "#EXTINF:{:.3},\n{seq}.ts\n", segment.as_secs_f64());
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

fn header(segment: Duration, media_sequence: u64) -> String {
    // EXT-X-TARGETDURATION is an integer no smaller than any segment (§4.3.3.1).
    let target = segment.as_secs_f64().ceil().max(1.0) as u64;
    format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{media_sequence}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_window_slides_with_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = LiveClock {
            epoch: start - Duration::from_secs(12),
            segment: Duration::from_secs(2),
            window: 6,
        };
        assert_eq!(clock.latest(start), 5);
        assert_eq!(clock.latest(start + Duration::from_millis(1999)), 5);
        assert_eq!(clock.latest(start + Duration::from_secs(2)), 6);
        assert_eq!(clock.available_at(6), start + Duration::from_secs(2));
        let p = clock.media_playlist(6);
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{p}");
        assert_eq!(p.matches(".ts").count(), 6);
        assert!(p.ends_with("#EXTINF:2.000,\n6.ts\n"));
        assert!(!p.contains("ENDLIST"));
    }

    #[test]
    fn vod_playlists_are_complete() {
        let p = vod_playlist(Duration::from_millis(4000), 3);
        assert!(p.starts_with("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n"), "{p}");
        assert!(p.contains("#EXT-X-TARGETDURATION:4\n"));
        assert!(p.ends_with("2.ts\n#EXT-X-ENDLIST\n"));
    }
}
