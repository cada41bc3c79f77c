//! Properties of the caching rules' parsers and normalisers: targeted
//! fields (RFC 9213 / RFC 8941 dictionaries), `Cache-Control` lifetimes,
//! `Age`, `Accept-Encoding` and `Vary` keys, `Content-Range` and slices,
//! surrogate keys and purge queries, CMCD next-request hints and the URIs
//! of HLS playlists. Each says something a reader of the RFC would check: round
//! trips, idempotence, order that must not matter, and no panic on any
//! input.
//!
//! CI runs proptest's default number of cases; `loadtest/bench/properties.sh`
//! runs millions (`PROPTEST_CASES`).

use std::time::{Duration, SystemTime};

use fanout_http_cache::cmcd;
use fanout_http_cache::freshness::{classify, initial_age, Storability, TtlPolicy};
use fanout_http_cache::purge::{parse_query, surrogate_keys, Selector};
use fanout_http_cache::slice::{first_slice, slice_bounds, ContentRange};
use fanout_http_cache::targeted::directives;
use fanout_http_cache::vary::{normalise_accept_encoding, secondary_key, vary_names};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use proptest::prelude::*;

const CDN: &str = "cdn-cache-control";

fn policy(targeted: &[String]) -> TtlPolicy<'_> {
    TtlPolicy {
        default_ttl: Duration::from_secs(10),
        override_ttl: None,
        targeted,
    }
}

fn one(name: &str, v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(v).unwrap(),
    );
    h
}

/// A dictionary member's value as written, and as the parser reports it.
fn member_value() -> impl Strategy<Value = (String, Option<Option<String>>)> {
    prop_oneof![
        Just((String::new(), Some(None))),
        Just(("=?1".to_string(), Some(None))),
        Just(("=?0".to_string(), None)),
        (0u64..999_999_999_999_999).prop_map(|n| (format!("={n}"), Some(Some(n.to_string())))),
        "[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]{0,8}".prop_map(|t| (format!("={t}"), Some(Some(t)))),
        "[a-z ]{0,10}".prop_map(|s| (format!("=\"{s}\""), Some(Some(s)))),
    ]
}

proptest! {
    #[test]
    fn a_targeted_dictionary_reads_back_as_written(
        members in proptest::collection::vec(("[a-z*][a-z0-9_.*-]{0,6}", member_value()), 1..6),
        params in proptest::collection::vec(proptest::option::of("[a-z][a-z0-9]{0,3}"), 6),
    ) {
        let mut written = Vec::new();
        let mut expected: Vec<(String, Option<String>)> = Vec::new();
        for (i, (key, (value, read))) in members.iter().enumerate() {
            // Parameters are allowed and dropped (RFC 9213 defines none).
            let param = params[i].as_ref().map(|p| format!(";{p}=1")).unwrap_or_default();
            written.push(format!("{key}{value}{param}"));
            // RFC 8941 §4.2.2: a repeated key overwrites the earlier one.
            expected.retain(|(k, _)| k != key);
            if let Some(v) = read {
                expected.push((key.clone(), v.clone()));
            }
        }
        let field = written.join(", ");
        let got = directives(&one(CDN, &field), &[CDN.to_string()]);
        let want = (!expected.is_empty()).then_some(expected);
        prop_assert_eq!(got, want, "{}", field);
    }

    #[test]
    fn any_targeted_field_parses_or_is_ignored_whole(field in "\\PC{0,40}") {
        let Ok(v) = HeaderValue::from_str(&field) else { return Ok(()) };
        let mut h = HeaderMap::new();
        h.insert(CDN, v);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=7"));
        let targeted = [CDN.to_string()];
        let got = directives(&h, &targeted);
        let decided = classify(&Method::GET, &HeaderMap::new(), StatusCode::OK, &h, policy(&targeted));
        if got.is_none() {
            // Ignored whole: Cache-Control decides, as if it were absent.
            h.remove(CDN);
            let without = classify(&Method::GET, &HeaderMap::new(), StatusCode::OK, &h, policy(&targeted));
            prop_assert_eq!(decided, without);
        }
    }

    #[test]
    fn max_age_and_s_maxage_give_their_lifetime(n in any::<u64>(), m in any::<u64>(), status in prop_oneof![Just(200u16), Just(301), Just(404), Just(410)]) {
        let cap = |x: u64| Duration::from_secs(x.min(1 << 31));
        let status = StatusCode::from_u16(status).unwrap();
        let get = |cc: &str| classify(&Method::GET, &HeaderMap::new(), status, &one("cache-control", cc), policy(&[]));
        let expect = |d: Duration| if d.is_zero() { Storability::Transient } else {
            Storability::Store(fanout_http_cache::freshness::Freshness::new(d))
        };
        prop_assert_eq!(get(&format!("max-age={n}")), expect(cap(n)));
        // s-maxage wins in a shared cache, and forbids stale use.
        let both = get(&format!("max-age={n}, s-maxage={m}"));
        match both {
            Storability::Store(f) => {
                prop_assert_eq!(f.lifetime, cap(m));
                prop_assert!(f.must_revalidate);
            }
            other => prop_assert_eq!(other, Storability::Transient),
        }
    }

    #[test]
    fn any_cache_control_is_read_without_panic_and_within_bounds(
        cc in "\\PC{0,60}",
        status in 100u16..1000,
        age in "\\PC{0,12}",
        date in "\\PC{0,30}",
    ) {
        let mut h = HeaderMap::new();
        for (name, v) in [("cache-control", &cc), ("age", &age), ("date", &date), ("expires", &date)] {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        let status = StatusCode::from_u16(status).unwrap();
        if let Storability::Store(f) = classify(&Method::GET, &HeaderMap::new(), status, &h, policy(&[])) {
            prop_assert!(f.lifetime <= Duration::from_secs(1 << 31));
        }
        let _ = fanout_http_cache::freshness::anomaly(&h);
        let delay = Duration::from_millis(250);
        prop_assert!(initial_age(&h, delay, SystemTime::now()) >= delay);
    }

    #[test]
    fn accept_encoding_normalises_once_and_whatever_the_order(
        codings in proptest::collection::vec(prop_oneof![
            Just("gzip"), Just("br"), Just("zstd"), Just("deflate"), Just("identity"), Just("*"), Just("x-custom"),
        ], 0..6),
        order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
        spaces in proptest::collection::vec(0usize..3, 6),
    ) {
        let distinguished: Vec<String> = ["zstd", "br", "gzip"].map(String::from).to_vec();
        let normalised = |list: &[&str]| {
            let mut h = HeaderMap::new();
            if !list.is_empty() {
                let v = list.iter().enumerate()
                    .map(|(i, c)| format!("{}{c}", " ".repeat(spaces[i % spaces.len()])))
                    .collect::<Vec<_>>().join(",");
                h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(&v).unwrap());
            }
            normalise_accept_encoding(&distinguished, &mut h);
            h
        };
        let once = normalised(&codings);
        let mut shuffled = codings.clone();
        let len = shuffled.len();
        if len > 1 {
            shuffled.swap((order % len as u64) as usize, ((order / 7) % len as u64) as usize);
        }
        prop_assert_eq!(&normalised(&shuffled), &once);
        // Normalising what was normalised changes nothing.
        let mut twice = once.clone();
        normalise_accept_encoding(&distinguished, &mut twice);
        prop_assert_eq!(&twice, &once);
        // The result names only codings the site distinguishes.
        if let Some(v) = once.get(header::ACCEPT_ENCODING) {
            for c in v.to_str().unwrap().split(", ") {
                prop_assert!(c == "identity" || distinguished.iter().any(|d| d == c), "{}", c);
            }
        }
    }

    #[test]
    fn a_secondary_key_ignores_white_space_around_list_members(
        values in proptest::collection::vec("[a-z0-9-]{1,6}", 1..4),
        pad in proptest::collection::vec(0usize..3, 4),
    ) {
        let names = vary_names(&one("vary", "Accept-Language, x-tier"));
        let request = |sep: &str| {
            let mut h = one("accept-language", &values.join(sep));
            h.insert("x-tier", HeaderValue::from_static("gold"));
            h
        };
        let padded = format!("{},{}", " ".repeat(pad[0]), " ".repeat(pad[1]));
        prop_assert_eq!(
            secondary_key(&names, &request(",")),
            secondary_key(&names, &request(&padded))
        );
    }

    #[test]
    fn content_range_reads_back_as_written(first in 0u64..1 << 50, span in 0u64..1 << 40, extra in 1u64..1 << 40) {
        let last = first + span;
        let complete = last + extra;
        let cr = ContentRange::parse(&format!("bytes {first}-{last}/{complete}")).unwrap();
        prop_assert_eq!((cr.first, cr.last, cr.complete), (first, last, Some(complete)));
        prop_assert_eq!(cr.byte_count(), span + 1);
        prop_assert_eq!(cr.is_whole(), first == 0 && extra == 1);
        // A range past the complete length is invalid (RFC 9110 §14.4).
        let past = format!("bytes {first}-{complete}/{complete}");
        prop_assert_eq!(ContentRange::parse(&past), None);
    }

    #[test]
    fn any_content_range_parses_consistently(v in "\\PC{0,30}") {
        if let Some(cr) = ContentRange::parse(&v) {
            prop_assert!(cr.first <= cr.last);
            prop_assert!(cr.complete.is_none_or(|c| cr.last < c));
        }
    }

    #[test]
    fn a_request_starts_in_the_slice_that_holds_its_first_byte(
        first in prop_oneof![any::<u64>(), (u64::MAX - (1 << 31))..=u64::MAX],
        size in 65_536u64..1 << 30,
    ) {
        let h = one("range", &format!("bytes={first}-"));
        let index = first_slice(&h, size);
        let (from, to) = slice_bounds(index, size);
        // The last slice of the byte space ends at its end.
        prop_assert!(from <= first && (first < to || to == u64::MAX));
        prop_assert!(fanout_http_cache::slice::range_header(index, size).to_str().is_ok());
    }

    #[test]
    fn surrogate_keys_read_back_whatever_the_spacing(
        keys in proptest::collection::vec("[A-Za-z0-9_.:-]{1,12}", 1..6),
        gaps in proptest::collection::vec(" {1,3}|\t", 6),
        split in 0usize..6,
    ) {
        let (surrogate, tagged) = keys.split_at(split.min(keys.len()));
        let mut headers = HeaderMap::new();
        let spaced: String = surrogate.iter().enumerate()
            .map(|(i, k)| format!("{}{k}", gaps[i]))
            .collect();
        if !surrogate.is_empty() {
            headers.insert("surrogate-key", HeaderValue::from_str(&spaced).unwrap());
        }
        let listed: Vec<String> = tagged.iter().enumerate()
            .map(|(i, k)| format!("{}{k}{}", &gaps[i][..1], &gaps[(i + 1) % 6][..1]))
            .collect();
        if !tagged.is_empty() {
            headers.insert("cache-tag", HeaderValue::from_str(&listed.join(",")).unwrap());
        }
        let read: Vec<&str> = surrogate_keys(&headers).collect();
        prop_assert_eq!(read, keys.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn a_purge_query_names_what_was_encoded(
        host in "[a-z0-9.-]{1,20}",
        path in "/[\\PC]{0,20}",
        soft in proptest::bool::ANY,
        prefix in proptest::bool::ANY,
    ) {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("host", &host);
        q.append_pair(if prefix { "prefix" } else { "path" }, &path);
        if soft {
            q.append_pair("soft", "true");
        }
        let want = if prefix {
            Selector::Prefix { host, prefix: path }
        } else {
            Selector::Url { host, path }
        };
        prop_assert_eq!(parse_query(&q.finish()), Ok((want, soft)));
    }

    #[test]
    fn a_next_object_reads_back_as_a_player_encodes_it(
        object in "[a-zA-Z0-9/._ ,\"\\-]{1,30}",
        others in "(bl=[0-9]{1,5},)?(sid=\"[a-z,]{0,8}\",)?",
    ) {
        // CTA-5004: nor is URL-encoded, then written as a quoted string.
        let encoded: String = url_encode(&object);
        let data = format!("{others}nor=\"{encoded}\",su");
        let next = cmcd::parse(&data).expect("a valid payload");
        prop_assert_eq!(next.object.as_deref(), Some(object.as_str()));
    }

    #[test]
    fn any_cmcd_payload_or_playlist_is_read_without_panic(text in "\\PC{0,80}") {
        let _ = cmcd::parse(&text);
        let _ = fanout_http_cache::hls::media_uris(&text);
        let with_header = format!("#EXTM3U\n{text}");
        if let Some(uris) = fanout_http_cache::hls::media_uris(&with_header) {
            prop_assert!(uris.iter().all(|u| !u.is_empty() && !u.starts_with('#')));
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
