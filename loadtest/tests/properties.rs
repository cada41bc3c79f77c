//! Properties of the HLS playlist reading the load generator plays by
//! (RFC 8216): a playlist reads back as written, and no text a server
//! might send panics it.
//!
//! CI runs proptest's default number of cases; `loadtest/bench/properties.sh`
//! runs millions (`PROPTEST_CASES`).

use std::time::Duration;

use fanout_http_cache::hls::{renditions, uris, MediaPlaylist};
use proptest::prelude::*;

proptest! {
    #[test]
    fn a_media_playlist_reads_back_as_written(
        target in 1u64..30,
        sequence in prop_oneof![any::<u64>(), (u64::MAX - 8)..=u64::MAX],
        segments in proptest::collection::vec(("[a-z0-9_/-]{1,12}\\.ts", 1u32..20_000), 0..8),
    ) {
        let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n");
        for (uri, ms) in &segments {
            text += &format!("#EXTINF:{}.{:03},\n{uri}\n", ms / 1000, ms % 1000);
        }
        let p = MediaPlaylist::parse(&text);
        prop_assert_eq!(p.target_duration, Duration::from_secs(target));
        prop_assert_eq!(p.media_sequence, sequence);
        let numbered: Vec<_> = p.numbered().collect();
        prop_assert_eq!(numbered.len(), segments.len());
        for (i, ((seq, uri, d), (want_uri, ms))) in numbered.iter().zip(&segments).enumerate() {
            prop_assert_eq!(*seq, sequence.saturating_add(i as u64));
            prop_assert_eq!(uri, want_uri);
            prop_assert_eq!(*d, Duration::from_millis(u64::from(*ms)));
        }
        prop_assert_eq!(uris(&text).count(), segments.len());
    }

    #[test]
    fn any_playlist_text_is_read_without_panic(
        lines in proptest::collection::vec(prop_oneof![
            "#EXTINF:[-+0-9.e]{0,12},".boxed(),
            "#EXTINF:[1-9]e[0-9]{2},".boxed(),
            "#EXT-X-MEDIA-SEQUENCE:[0-9]{0,22}".boxed(),
            "#EXT-X-TARGETDURATION:[0-9-]{0,22}".boxed(),
            "#EXT-X-STREAM-INF:BANDWIDTH=[0-9]{0,22}".boxed(),
            "\\PC{0,20}".boxed(),
        ], 0..12),
    ) {
        let text = lines.join("\n");
        let p = MediaPlaylist::parse(&text);
        let _ = p.numbered().count();
        let _ = p.last_seq();
        let _ = renditions(&text);
    }
}
