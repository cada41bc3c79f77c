//! Properties of what the configuration normalises and parses: the cache
//! key (RFC 3986 §6.2.2 path normalisation, checked against the `url`
//! crate; query policies) and the size and duration units.
//!
//! CI runs proptest's default number of cases; `loadtest/bench/properties.sh`
//! runs millions (`PROPTEST_CASES`).

use std::path::Path;
use std::time::Duration;

use fanout_config::{load_str, AnyConfig, CacheKey, Site, Size, Span};
use proptest::prelude::*;

fn site(query: &str) -> Site {
    let yaml = format!(
        "kind: cluster\nsites:\n  - name: s\n    hosts: [a.example]\n    origin: {{ addresses: ['127.0.0.1:1'] }}\n    cache: {{ query: {query} }}\n"
    );
    match load_str(Path::new("c.yaml"), &yaml) {
        Ok(AnyConfig::Cluster(c)) => c.sites[0].clone(),
        other => panic!("{other:?}"),
    }
}

fn path_of(key: &CacheKey) -> &str {
    let k = key.as_str().strip_prefix("s:").unwrap();
    k.split_once('?').map_or(k, |(p, _)| p)
}

fn segments() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("bc"),
            Just("~x"),
            Just("d-e_f"),
            Just("."),
            Just(".."),
            Just(""),
        ],
        0..8,
    )
}

const UNRESERVED: &str = "abcxyzABCXYZ0129-._~";

proptest! {
    #[test]
    fn dot_segments_go_as_the_url_crate_removes_them(segs in segments()) {
        let site = site("{ mode: keep }");
        let path = format!("/{}", segs.join("/"));
        let ours = CacheKey::new(&site, &path, None);
        let reference = url::Url::parse(&format!("http://a.example{path}")).unwrap();
        prop_assert_eq!(path_of(&ours), reference.path(), "{}", path);
    }

    #[test]
    fn normalising_a_normal_path_changes_nothing(path in "/[a-zA-Z0-9%./~_-]{0,24}", raw in "[^?#]{0,6}") {
        let site = site("{ mode: keep }");
        for p in [path.clone(), format!("{path}{raw}")] {
            let once = CacheKey::new(&site, &p, None);
            let twice = CacheKey::new(&site, path_of(&once), None);
            prop_assert_eq!(&once, &twice, "{}", p);
        }
    }

    #[test]
    fn an_unreserved_character_and_its_percent_encoding_are_one_key(
        before in "[a-z/]{0,6}",
        i in 0..UNRESERVED.len(),
        lower in any::<bool>(),
    ) {
        let site = site("{ mode: keep }");
        let c = UNRESERVED.as_bytes()[i];
        let encoded = if lower { format!("%{c:02x}") } else { format!("%{c:02X}") };
        let plain = format!("/{before}x{}", c as char);
        let escaped = format!("/{before}x{encoded}");
        prop_assert_eq!(CacheKey::new(&site, &plain, None), CacheKey::new(&site, &escaped, None));
    }

    #[test]
    fn sorted_queries_do_not_depend_on_parameter_order(
        params in proptest::collection::vec(("[a-d]{1,2}", "[0-9]{0,2}"), 0..6),
        seed in any::<u64>(),
    ) {
        let site = site("{ mode: sort, drop: [utm] }");
        let write = |ps: &[(String, String)]| {
            ps.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
        };
        let mut tracked = params.clone();
        tracked.push(("utm".to_string(), seed.to_string()));
        let mut shuffled = tracked.clone();
        let n = shuffled.len();
        for i in 0..n {
            shuffled.swap(i, ((seed >> (i % 60)) as usize + i) % n);
        }
        let a = CacheKey::new(&site, "/p", Some(&write(&tracked)));
        let b = CacheKey::new(&site, "/p", Some(&write(&shuffled)));
        prop_assert_eq!(&a, &b);
        prop_assert!(!a.as_str().contains("utm="), "{}", a);
    }

    #[test]
    fn sizes_with_units_count_their_bytes(n in 0u64..1 << 20, unit in 0usize..7) {
        let (suffix, factor) = [
            ("", 1u64),
            ("B", 1),
            ("KiB", 1 << 10),
            ("MiB", 1 << 20),
            ("GiB", 1 << 30),
            ("KB", 1000),
            ("MB", 1_000_000),
        ][unit];
        let parsed: Size = format!("{n}{suffix}").parse().unwrap();
        prop_assert_eq!(parsed.bytes(), n * factor);
    }

    #[test]
    fn any_size_or_duration_text_is_read_or_refused_without_panic(s in "\\PC{0,16}") {
        let _ = s.parse::<Size>();
        let _ = serde_yaml::from_str::<Span>(&format!("{s:?}"));
    }

    #[test]
    fn a_duration_reads_back_as_it_is_written(ms in 1u64..1 << 40) {
        let span = Span(Duration::from_millis(ms));
        let written = span.to_string();
        let read: Span = serde_yaml::from_str(&format!("{written:?}")).unwrap();
        prop_assert_eq!(read, span, "{}", written);
    }
}
