//! MPEG-DASH for the live streams: the same timeline as their HLS media
//! playlists, as a dynamic MPD (ISO/IEC 23009-1, live profile) with a
//! `SegmentTemplate` and a `SegmentTimeline` addressed by `$Number$`, the
//! way packagers such as Shaka Packager and Unified Origin write them.
//! Segment `n` of the MPD is segment `n` of the HLS playlist (same bytes,
//! same publication time), served as `{rendition}/{n}.m4s` beside an
//! initialization segment `{rendition}/init.mp4`.
//!
//! Each publication adds one `S` repeat to the timeline, so every new
//! segment makes a new MPD version, which is what a cache that prefetches
//! by manifest reads.

use std::fmt::Write;
use std::time::SystemTime;

use fanout_config::Rendition;

use super::hls::LiveClock;

pub const MPD: &str = "application/dash+xml";
pub const MEDIA_SEGMENT: &str = "video/iso.segment";
pub const INIT_SEGMENT: &str = "video/mp4";
/// Bytes of an initialization segment (a real one is about this size).
pub const INIT_BYTES: u64 = 1024;

/// The MPD at the time segment `latest` is the newest published.
pub fn mpd(clock: &LiveClock, renditions: &[Rendition], latest: u64) -> String {
    let d = clock.segment.as_millis();
    let first = (latest + 1).saturating_sub(clock.window as u64);
    let seconds = clock.segment.as_secs_f64();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" \
         type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
         minimumUpdatePeriod=\"PT{seconds:.3}S\" minBufferTime=\"PT{seconds:.3}S\" \
         timeShiftBufferDepth=\"PT{:.3}S\" suggestedPresentationDelay=\"PT{:.3}S\">",
        rfc3339(clock.epoch),
        rfc3339(clock.available_at(latest)),
        seconds * f64::from(clock.window),
        seconds * 3.0,
    );
    out.push_str(" <Period id=\"0\" start=\"PT0S\">\n");
    out.push_str(
        "  <AdaptationSet mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">\n",
    );
    let _ = writeln!(
        out,
        "   <SegmentTemplate timescale=\"1000\" startNumber=\"{first}\" \
         media=\"$RepresentationID$/$Number$.m4s\" initialization=\"$RepresentationID$/init.mp4\">\n    \
         <SegmentTimeline><S t=\"{}\" d=\"{d}\" r=\"{}\"/></SegmentTimeline>\n   </SegmentTemplate>",
        u128::from(first) * d,
        latest - first,
    );
    for r in renditions {
        let _ = write!(
            out,
            "   <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"avc1.64001f\"",
            r.name, r.bandwidth
        );
        if let Some((w, h)) = r.resolution.as_deref().and_then(|r| r.split_once('x')) {
            let _ = write!(out, " width=\"{w}\" height=\"{h}\"");
        }
        out.push_str("/>\n");
    }
    out.push_str("  </AdaptationSet>\n </Period>\n</MPD>\n");
    out
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_mpd_lists_the_window_the_hls_playlist_lists() {
        let clock = LiveClock {
            epoch: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            segment: Duration::from_secs(2),
            window: 5,
        };
        let rendition = |name: &str, bandwidth, resolution: Option<&str>| Rendition {
            name: name.to_string(),
            bandwidth,
            resolution: resolution.map(str::to_string),
            segment_size: None,
        };
        let renditions = [
            rendition("720p", 3_000_000, Some("1280x720")),
            rendition("360p", 800_000, None),
        ];
        let text = mpd(&clock, &renditions, 41);
        let url = url::Url::parse("http://o.example/live/main/manifest.mpd").unwrap();
        let parsed = fanout_http_cache::dash::parse(&text, &url).expect("an MPD");
        assert!(parsed.dynamic);
        assert_eq!(parsed.representations.len(), 2);
        let paths: Vec<&str> = parsed.representations[0].iter().map(|u| u.path()).collect();
        // The HLS playlist at this point lists 37..=41.
        assert_eq!(
            paths,
            [
                "/live/main/720p/init.mp4",
                "/live/main/720p/37.m4s",
                "/live/main/720p/38.m4s",
                "/live/main/720p/39.m4s",
                "/live/main/720p/40.m4s",
                "/live/main/720p/41.m4s"
            ]
        );
        assert!(text.contains("width=\"1280\" height=\"720\""), "{text}");
        assert!(text.contains("availabilityStartTime=\"1970-01-12T13:46:40.000Z\""));
    }
}
