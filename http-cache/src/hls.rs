//! Just enough of HLS playlists (RFC 8216, and RFC 8216bis for low-latency
//! parts) for the two parts of Fanout that read them: the load generator,
//! which plays them as a player does (the renditions of a master playlist,
//! the numbered segments of a media playlist with their durations), and
//! the cache node, which prefetches what a new version of a live playlist
//! lists ([`media_uris`]).
//!
//! Parsing never fails: text that is not a playlist yields nothing.

use std::time::Duration;

/// URI lines of a playlist (RFC 8216 §4.1: lines that are not tags).
pub fn uris(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// A master playlist's variant streams, lowest bandwidth first.
pub fn renditions(master: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut bandwidth = None;
    for line in master.lines().map(str::trim) {
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            bandwidth = attrs
                .split(',')
                .find_map(|a| a.strip_prefix("BANDWIDTH="))
                .and_then(|b| b.parse().ok())
                .or(Some(0));
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some(b) = bandwidth.take() {
                out.push((b, line.to_string()));
            }
        }
    }
    out.sort_by_key(|(b, _)| *b);
    out
}

/// The URIs a media playlist lists, in order: its segments, its
/// `EXT-X-MAP` initialisation sections, its `EXT-X-PART` parts and its
/// `EXT-X-PRELOAD-HINT`s. `None` for text that is not a playlist (no
/// `#EXTM3U` first, §4.3.1.1) and for a master playlist, which lists
/// other playlists rather than media.
pub fn media_uris(text: &str) -> Option<Vec<&str>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !text.starts_with("#EXTM3U") {
        return None;
    }
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("#EXT-X-STREAM-INF:") || line.starts_with("#EXT-X-I-FRAME-STREAM-INF:")
        {
            return None;
        }
        let tagged = ["#EXT-X-MAP:", "#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:"]
            .iter()
            .find_map(|tag| line.strip_prefix(tag));
        if let Some(attrs) = tagged {
            if let Some(uri) = attribute(attrs, "URI").filter(|u| !u.is_empty()) {
                out.push(uri);
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            out.push(line);
        }
    }
    Some(out)
}

/// Whether a media playlist will never change: `EXT-X-ENDLIST`, or a
/// `VOD` playlist type (RFC 8216 §4.3.3.4, §4.3.3.5). An `EVENT` playlist
/// still grows.
pub fn ended(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .any(|l| l == "#EXT-X-ENDLIST" || l == "#EXT-X-PLAYLIST-TYPE:VOD")
}

/// The value of `name` in an attribute list (§4.2), without the quotes of
/// a quoted string. Quoted strings may hold commas.
pub fn attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                let next = quoted[end + 1..].trim_start_matches(',');
                (&quoted[..end], next)
            }
            None => match after.split_once(',') {
                Some((v, next)) => (v, next),
                None => (after, ""),
            },
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// The longest an origin may hold a blocking playlist reload when the
/// playlist's target duration is not known: three target durations
/// (RFC 8216bis §6.2.5.2) of the longest Apple's authoring guide
/// recommends (6 s).
pub const MAX_BLOCKING_HOLD: Duration = Duration::from_secs(18);

/// Whether a request's query makes it an LL-HLS blocking playlist reload
/// (`_HLS_msn`), which the origin holds until it can answer: a long poll.
pub fn is_blocking_reload(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p.starts_with("_HLS_msn=")))
}

/// A point of a live stream an LL-HLS client asks a playlist to reach
/// (RFC 8216bis §6.2.5.2): `_HLS_msn`, and `_HLS_part` when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub msn: u64,
    pub part: Option<u64>,
}

impl Point {
    /// The point a request's query asks for, when it names one. With
    /// `_HLS_skip` it asks for a delta update reaching that point; the
    /// skip stays in [`base_query`](Self::base_query), so the delta and
    /// the full playlist are different playlists.
    pub fn of_query(query: &str) -> Option<Point> {
        let mut msn = None;
        let mut part = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("_HLS_msn", v)) => msn = Some(v.parse().ok()?),
                Some(("_HLS_part", v)) => part = Some(v.parse().ok()?),
                _ => {}
            }
        }
        Some(Point { msn: msn?, part })
    }

    /// Where the point falls in the stream, for ordering: a whole
    /// segment (no `part`) comes after every part of it.
    pub fn position(&self) -> (u64, u64) {
        (self.msn, self.part.unwrap_or(u64::MAX))
    }

    /// Whether the media playlist `text` already reaches this point: the
    /// segment is complete in it, or (with `part`) that part of the
    /// segment after its last complete one is listed.
    pub fn reached_by(&self, text: &str) -> bool {
        let p = MediaPlaylist::parse(text);
        let complete = p.last_seq();
        if complete.is_some_and(|last| self.msn <= last) {
            return true;
        }
        let next = complete.map_or(p.media_sequence, |last| last.saturating_add(1));
        let Some(part) = self.part.filter(|_| self.msn == next) else {
            return false;
        };
        // Parts listed after the last complete segment are the next one's.
        let after_last = text
            .lines()
            .map(str::trim)
            .rev()
            .take_while(|l| l.starts_with('#'))
            .filter(|l| l.starts_with("#EXT-X-PART:"))
            .count() as u64;
        part < after_last
    }

    /// The query without the blocking parameters: the playlist's own.
    pub fn base_query(query: &str) -> String {
        query
            .split('&')
            .filter(|p| !p.starts_with("_HLS_msn=") && !p.starts_with("_HLS_part="))
            .collect::<Vec<_>>()
            .join("&")
    }
}

pub struct MediaPlaylist<'a> {
    pub target_duration: Duration,
    pub media_sequence: u64,
    /// Segments a delta update left out after the media sequence
    /// (`EXT-X-SKIP`, RFC 8216bis §4.4.5.2): the first one listed is
    /// `media_sequence + skipped`.
    pub skipped: u64,
    /// Each segment's URI and its `#EXTINF` duration.
    pub segments: Vec<(&'a str, Duration)>,
    /// LL-HLS parts (`EXT-X-PART`), in order.
    pub parts: Vec<Part<'a>>,
    /// `EXT-X-PRELOAD-HINT` of `TYPE=PART`: the part to come next.
    pub preload_hint: Option<&'a str>,
}

/// One LL-HLS part of a media playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part<'a> {
    /// The media sequence number of the segment it belongs to.
    pub msn: u64,
    /// Its index within that segment, from 0.
    pub index: u64,
    pub uri: &'a str,
    pub duration: Duration,
}

impl<'a> MediaPlaylist<'a> {
    pub fn parse(text: &'a str) -> MediaPlaylist<'a> {
        let tag = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let target_duration =
            Duration::from_secs(tag("#EXT-X-TARGETDURATION:").unwrap_or(2).max(1));
        let media_sequence = tag("#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0);
        let skipped = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-SKIP:"))
            .and_then(|a| attribute(a, "SKIPPED-SEGMENTS"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let first = media_sequence.saturating_add(skipped);
        let mut segments = Vec::new();
        let mut parts = Vec::new();
        let mut preload_hint = None;
        let mut index = 0;
        let mut extinf = None;
        for line in text.lines().map(str::trim) {
            if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
                let duration = attribute(attrs, "DURATION")
                    .and_then(|d| d.trim().parse::<f64>().ok())
                    .filter(|d| *d > 0.0)
                    .and_then(|d| Duration::try_from_secs_f64(d).ok());
                if let (Some(uri), Some(duration)) = (attribute(attrs, "URI"), duration) {
                    parts.push(Part {
                        msn: first.saturating_add(segments.len() as u64),
                        index,
                        uri,
                        duration,
                    });
                    index += 1;
                }
            } else if let Some(attrs) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
                if attribute(attrs, "TYPE") == Some("PART") {
                    preload_hint = attribute(attrs, "URI");
                }
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                extinf = v
                    .split(',')
                    .next()
                    .and_then(|d| d.trim().parse::<f64>().ok())
                    .filter(|d| *d > 0.0)
                    // A duration past what `Duration` holds (`1e30`) is not one.
                    .and_then(|d| Duration::try_from_secs_f64(d).ok());
            } else if !line.is_empty() && !line.starts_with('#') {
                segments.push((line, extinf.take().unwrap_or(target_duration)));
                index = 0;
            }
        }
        MediaPlaylist {
            target_duration,
            media_sequence,
            skipped,
            segments,
            parts,
            preload_hint,
        }
    }

    /// Whether the server answers blocking reloads
    /// (`EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`).
    pub fn can_block_reload(text: &str) -> bool {
        text.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-SERVER-CONTROL:"))
            .and_then(|a| attribute(a, "CAN-BLOCK-RELOAD"))
            == Some("YES")
    }

    /// The point after the newest one listed: what a blocking reload asks
    /// for next (`_HLS_msn`, `_HLS_part`). After a complete segment with
    /// no part of the next listed, that is the next segment's first part
    /// when the playlist has parts, or the next segment.
    pub fn next_point(&self) -> Option<Point> {
        let after_segments = self
            .last_seq()
            .map_or(self.media_sequence.saturating_add(self.skipped), |l| {
                l.saturating_add(1)
            });
        match self.parts.last() {
            Some(p) if p.msn == after_segments => Some(Point {
                msn: p.msn,
                part: Some(p.index + 1),
            }),
            Some(_) => Some(Point {
                msn: after_segments,
                part: Some(0),
            }),
            None if self.segments.is_empty() => None,
            None => Some(Point {
                msn: after_segments,
                part: None,
            }),
        }
    }

    /// Segments with their media sequence numbers.
    pub fn numbered(&self) -> impl Iterator<Item = (u64, &'a str, Duration)> + '_ {
        self.segments.iter().enumerate().map(|(i, (u, d))| {
            let first = self.media_sequence.saturating_add(self.skipped);
            (first.saturating_add(i as u64), *u, *d)
        })
    }

    pub fn last_seq(&self) -> Option<u64> {
        (!self.segments.is_empty()).then(|| {
            self.media_sequence
                .saturating_add(self.skipped)
                .saturating_add(self.segments.len() as u64 - 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_numbers_neither_panic_nor_wrap() {
        // Found by loadtest/tests/properties.rs.
        let text = format!(
            "#EXT-X-MEDIA-SEQUENCE:{}\n#EXTINF:1e30,\na.ts\n#EXTINF:2,\nb.ts\n",
            u64::MAX
        );
        let p = MediaPlaylist::parse(&text);
        assert_eq!(p.segments[0].1, p.target_duration, "1e30 s is no duration");
        assert_eq!(p.last_seq(), Some(u64::MAX));
        assert!(p.numbered().all(|(seq, _, _)| seq == u64::MAX));
    }

    #[test]
    fn ll_hls_parts_belong_to_the_segment_after_the_last_listed_and_say_what_comes_next() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n\
                    #EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n\
                    #EXT-X-PART:DURATION=1.0,URI=\"12.0.ts\",INDEPENDENT=YES\n\
                    #EXT-X-PART:DURATION=1.0,URI=\"12.1.ts\"\n#EXTINF:2.0,\n12.ts\n\
                    #EXT-X-PART:DURATION=1.0,URI=\"13.0.ts\"\n\
                    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"13.1.ts\"\n";
        let p = MediaPlaylist::parse(text);
        assert!(MediaPlaylist::can_block_reload(text));
        assert_eq!(p.last_seq(), Some(12), "10 and 11 skipped");
        let parts: Vec<_> = p.parts.iter().map(|p| (p.msn, p.index, p.uri)).collect();
        assert_eq!(
            parts,
            [(12, 0, "12.0.ts"), (12, 1, "12.1.ts"), (13, 0, "13.0.ts")]
        );
        assert_eq!(p.preload_hint, Some("13.1.ts"));
        assert_eq!(
            p.next_point(),
            Some(Point {
                msn: 13,
                part: Some(1)
            })
        );
        let complete = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-PART:DURATION=1,URI=\"3.0.ts\"\n#EXTINF:2,\n3.ts\n";
        assert_eq!(
            MediaPlaylist::parse(complete).next_point(),
            Some(Point {
                msn: 4,
                part: Some(0)
            })
        );
        let no_parts = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2,\n3.ts\n";
        assert_eq!(
            MediaPlaylist::parse(no_parts).next_point(),
            Some(Point { msn: 4, part: None })
        );
        assert!(!MediaPlaylist::can_block_reload(no_parts));
    }

    #[test]
    fn media_playlists_number_segments_from_the_media_sequence() {
        let p = MediaPlaylist::parse(
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:17\n#EXTINF:4.0,\n17.ts\n#EXTINF:3.5,\n18.ts\n",
        );
        assert_eq!(p.target_duration, Duration::from_secs(4));
        assert_eq!(
            p.numbered().collect::<Vec<_>>(),
            [
                (17, "17.ts", Duration::from_secs(4)),
                (18, "18.ts", Duration::from_millis(3500))
            ]
        );
        assert_eq!(p.last_seq(), Some(18));
    }

    #[test]
    fn media_uris_lists_segments_maps_parts_and_hints_in_order() {
        let p = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n\
                 #EXTINF:4.0,\n1.m4s\n#EXT-X-PART:DURATION=1.0,URI=\"2.0.m4s\",INDEPENDENT=YES\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"2.1.m4s\"\n";
        assert_eq!(
            media_uris(p),
            Some(vec!["init.mp4", "1.m4s", "2.0.m4s", "2.1.m4s"])
        );
    }

    #[test]
    fn media_uris_refuses_what_is_not_a_media_playlist() {
        assert_eq!(media_uris("<html>1.ts</html>"), None);
        assert_eq!(media_uris(""), None);
        assert_eq!(
            media_uris("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow/index.m3u8\n"),
            None
        );
        assert_eq!(media_uris("\u{feff}#EXTM3U\nx.ts\n"), Some(vec!["x.ts"]));
    }

    #[test]
    fn attributes_are_found_past_quoted_commas() {
        let list = "TYPE=PART,BYTERANGE-START=0,URI=\"a,b.m4s\",X=\"1\"";
        assert_eq!(attribute(list, "URI"), Some("a,b.m4s"));
        assert_eq!(attribute(list, "X"), Some("1"));
        assert_eq!(attribute(list, "TYPE"), Some("PART"));
        assert_eq!(attribute(list, "NONE"), None);
        assert_eq!(attribute("URI=\"unterminated", "URI"), None);
    }

    #[test]
    fn a_blocking_point_is_reached_by_a_complete_segment_or_a_listed_part() {
        let p = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:10\n#EXTINF:2,\n10.ts\n#EXTINF:2,\n11.ts\n\
                 #EXT-X-PART:DURATION=0.5,URI=\"12.0.m4s\"\n#EXT-X-PART:DURATION=0.5,URI=\"12.1.m4s\"\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.2.m4s\"\n";
        let at = |msn, part| Point { msn, part }.reached_by(p);
        assert!(at(11, None) && at(5, None) && at(11, Some(3)));
        assert!(!at(12, None), "segment 12 is not complete");
        assert!(at(12, Some(0)) && at(12, Some(1)));
        assert!(!at(12, Some(2)), "a preload hint is not a listed part");
        assert!(!at(13, Some(0)));
        assert_eq!(
            Point::of_query("a=1&_HLS_msn=12&_HLS_part=1"),
            Some(Point {
                msn: 12,
                part: Some(1)
            })
        );
        assert_eq!(
            Point::of_query("_HLS_msn=12&_HLS_skip=YES"),
            Some(Point {
                msn: 12,
                part: None
            })
        );
        assert_eq!(
            Point::base_query("_HLS_msn=12&_HLS_part=1&_HLS_skip=YES"),
            "_HLS_skip=YES"
        );
        let at = |msn, part| Point { msn, part }.position();
        assert!(at(12, Some(3)) < at(12, None) && at(12, None) < at(13, Some(0)));
        assert_eq!(Point::of_query("_HLS_part=1"), None);
        assert_eq!(Point::of_query("_HLS_msn=x"), None);
        assert_eq!(Point::base_query("a=1&_HLS_msn=12&_HLS_part=1"), "a=1");
    }

    #[test]
    fn renditions_sort_by_bandwidth() {
        let m =
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=6000000,RESOLUTION=1920x1080\n1080p/index.m3u8\n\
                 #EXT-X-STREAM-INF:RESOLUTION=426x240,BANDWIDTH=400000\n240p/index.m3u8\n";
        assert_eq!(
            renditions(m),
            [
                (400_000, "240p/index.m3u8".to_string()),
                (6_000_000, "1080p/index.m3u8".to_string())
            ]
        );
    }
}
