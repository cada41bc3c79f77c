//! Every kind of configuration error, with the exact text a user sees.

use std::path::Path;

use fanout_config::{load_any, load_str, AnyConfig, ConfigErrors};

fn errors(yaml: &str) -> Vec<String> {
    match load_str(Path::new("site.yaml"), yaml) {
        Ok(c) => panic!("expected errors, got a valid {:?} config", c.kind()),
        Err(ConfigErrors(e)) => e.iter().map(ToString::to_string).collect(),
    }
}

fn one_error(yaml: &str) -> String {
    let e = errors(yaml);
    assert_eq!(e.len(), 1, "expected exactly one error, got {e:#?}");
    e.into_iter().next().unwrap()
}

const CLUSTER: &str = "\
kind: cluster
sites:
  - name: live
    hosts: [live.example.com]
    origin:
      addresses: ['127.0.0.1:9000']
";

#[test]
fn a_valid_cluster_loads_with_defaults() {
    let AnyConfig::Cluster(c) = load_str(Path::new("site.yaml"), CLUSTER).unwrap() else {
        panic!()
    };
    assert_eq!(c.sites[0].path_prefixes, ["/"]);
    assert_eq!(c.hashing.vnodes, 160);
    assert_eq!(c.hashing.load_factor, 1.25);
    assert_eq!(c.sites[0].cache.default_ttl.get().as_secs(), 10);
}

#[test]
fn yaml_syntax_errors_name_the_position() {
    let e = one_error("kind: cluster\nsites: [\n  - a: b\n");
    assert!(e.starts_with("site.yaml:3:3: invalid YAML: "), "{e}");
}

#[test]
fn missing_or_unknown_kind() {
    assert_eq!(
        one_error("sites: []\n"),
        "site.yaml:1:1: missing `kind`; allowed: a mapping that starts with kind: cluster, proxy, cache, origin, up, control or scenario"
    );
    assert_eq!(
        one_error("kind: clustr\n"),
        "site.yaml:1:7: kind: unknown kind \"clustr\"; allowed: kind: cluster, proxy, cache, origin, up, control or scenario"
    );
}

#[test]
fn unknown_fields_point_at_the_key_and_suggest_the_closest_name() {
    let yaml = CLUSTER.replace("    hosts:", "    hots:");
    assert_eq!(
        one_error(&yaml),
        "site.yaml:4:5: sites[0].hots: unknown field `hots` (did you mean `hosts`?); \
         allowed: name, hosts, path_prefixes, origin, cache, access_log, access_log_sample, prefetch"
    );
}

#[test]
fn unknown_fields_without_a_close_match_list_what_is_allowed() {
    let yaml = format!("{CLUSTER}hashing:\n  colour: blue\n");
    assert_eq!(
        one_error(&yaml),
        "site.yaml:8:3: hashing.colour: unknown field `colour`; allowed: vnodes, load_factor"
    );
}

#[test]
fn unknown_enum_values_suggest_the_closest() {
    let yaml = format!("{CLUSTER}    cache:\n      query: {{ mode: sorted }}\n");
    assert_eq!(
        one_error(&yaml),
        "site.yaml:8:22: sites[0].cache.query.mode: unknown variant `sorted` (did you mean `sort`?); allowed: keep, sort, ignore"
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let yaml = format!("{CLUSTER}hashing:\n  vnodes: many\n");
    assert_eq!(
        one_error(&yaml),
        "site.yaml:8:11: hashing.vnodes: invalid type: string \"many\"; allowed: u32"
    );
}

#[test]
fn missing_required_fields_name_the_field() {
    let yaml = CLUSTER.replace("    hosts: [live.example.com]\n", "");
    assert_eq!(
        one_error(&yaml),
        "site.yaml:3:5: sites[0].hosts: missing required field; allowed: add `hosts:` here"
    );
}

#[test]
fn bad_values_in_parsed_types_name_the_element() {
    let yaml = CLUSTER.replace(
        "['127.0.0.1:9000']",
        "['127.0.0.1:9000', 'origin-without-port']",
    );
    assert_eq!(
        one_error(&yaml),
        "site.yaml:6:37: sites[0].origin.addresses[1]: invalid address \"origin-without-port\"; \
         allowed: host:port, like 127.0.0.1:9000, origin.internal:80 or [::1]:80"
    );
    let yaml = CLUSTER.replace("[live.example.com]", "['*.']");
    assert!(one_error(&yaml).starts_with(
        "site.yaml:4:13: sites[0].hosts[0]: invalid host pattern \"*.\"; allowed: a host name"
    ));
    let yaml = format!("{CLUSTER}    cache:\n      default_ttl: 30\n");
    assert_eq!(
        one_error(&yaml),
        "site.yaml:8:20: sites[0].cache.default_ttl: 30 has no unit; allowed: a duration with a unit, like 250ms, 2s, 1m30s"
    );
}

#[test]
fn empty_pools_are_refused() {
    let yaml = CLUSTER.replace("['127.0.0.1:9000']", "[]");
    assert_eq!(
        one_error(&yaml),
        "site.yaml:6:18: sites[0].origin.addresses: empty origin pool; allowed: at least one origin address as host:port"
    );
}

#[test]
fn impossible_values_are_refused_all_at_once() {
    let yaml = format!(
        "{CLUSTER}hashing:\n  vnodes: 0\n  load_factor: 0.5\nhealth:\n  interval: 1s\n  timeout: 2s\n  fall: 0\n"
    );
    assert_eq!(
        errors(&yaml),
        [
            "site.yaml:8:11: hashing.vnodes: 0 is out of range; allowed: 1 to 4096 (default 160)",
            "site.yaml:9:16: hashing.load_factor: 0.5 is out of range; allowed: a number from 1.0 (perfectly even) to 100 (default 1.25)",
            "site.yaml:12:12: health.timeout: timeout 2s must be positive and shorter than interval 1s; allowed: a duration between 0 and the probe interval",
            "site.yaml:13:9: health.fall: 0 is out of range; allowed: 1 to 100 consecutive probes",
        ]
    );
}

#[test]
fn duplicate_routes_and_names_are_refused() {
    let yaml = format!(
        "{CLUSTER}  - name: live\n    hosts: [LIVE.example.com]\n    origin: {{ addresses: ['127.0.0.1:9001'] }}\n"
    );
    assert_eq!(
        errors(&yaml),
        [
            "site.yaml:7:11: sites[1].name: duplicate site name live (first used at sites[0].name); allowed: each site name once",
            "site.yaml:8:13: sites[1].hosts[0]: host live.example.com with path prefix \"/\" is already routed by sites[0]; \
             allowed: each host and path prefix pair in one site only",
        ]
    );
}

const UP: &str = "\
kind: up
cluster:
  sites:
    - name: live
      hosts: [localhost]
      origin: { addresses: ['127.0.0.1:9000'] }
cache_nodes:
  - { id: cache-1, listen: '127.0.0.1:8081' }
  - { id: cache-2, listen: '127.0.0.1:8082' }
proxies:
  - { id: proxy-1, listen: '127.0.0.1:8080' }
";

#[test]
fn duplicate_ids_and_ports_in_an_up_file() {
    let yaml = UP.replace(
        "id: cache-2, listen: '127.0.0.1:8082'",
        "id: cache-1, listen: '0.0.0.0:8080'",
    );
    assert_eq!(
        errors(&yaml),
        [
            "site.yaml:9:11: cache_nodes[1].id: duplicate id cache-1 (first used at cache_nodes[0].id); allowed: each id once",
            "site.yaml:11:28: proxies[0].listen: 127.0.0.1:8080 is already used by cache_nodes[1].listen (0.0.0.0:8080); \
             allowed: a distinct address:port for every listener",
        ]
    );
}

#[test]
fn a_valid_up_file_loads() {
    let AnyConfig::Up(u) = load_str(Path::new("up.yaml"), UP).unwrap() else {
        panic!()
    };
    assert_eq!(u.proxy_configs()[0].cache_nodes.len(), 2);
    assert_eq!(u.demo.scenario, None);
}

#[test]
fn a_file_of_the_wrong_kind_is_refused() {
    let dir = tempdir();
    let f = dir.join("c.yaml");
    std::fs::write(&f, CLUSTER).unwrap();
    let e = fanout_config::load_proxy(&f).unwrap_err().to_string();
    assert_eq!(e, format!("{}: kind: this is a `kind: cluster` file, not `kind: proxy`; allowed: a file with kind: proxy", f.display()));
}

#[test]
fn a_proxy_file_reports_errors_in_the_cluster_file_it_names() {
    let dir = tempdir();
    std::fs::write(
        dir.join("cluster.yaml"),
        CLUSTER.replace("hosts:", "hosts_:"),
    )
    .unwrap();
    let proxy = dir.join("proxy.yaml");
    std::fs::write(
        &proxy,
        "kind: proxy\nid: p1\nlisten: 127.0.0.1:8080\ncluster: cluster.yaml\ncache_nodes:\n  - { id: c1, address: '127.0.0.1:8081' }\n",
    )
    .unwrap();
    let e = load_any(&proxy).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:4:5: sites[0].hosts_: unknown field",
            dir.join("cluster.yaml").display()
        )),
        "{e}"
    );

    std::fs::remove_file(dir.join("cluster.yaml")).unwrap();
    let e = load_any(&proxy).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:4:10: cluster: cluster file", proxy.display())),
        "{e}"
    );
}

#[test]
fn origin_files_are_checked() {
    let yaml = "\
kind: origin
listen: 127.0.0.1:9000
live:
  - name: main
    renditions: []
  - { name: ll, part_duration: 300ms, renditions: [{ name: hi, bandwidth: 1000000 }] }
objects:
  - { prefix: /live/x/, count: 0, size: 1KiB }
faults:
  - { path: '/live/**', error_rate: 1.5 }
";
    assert_eq!(
        errors(yaml),
        [
            "site.yaml:5:17: live[0].renditions: no renditions; allowed: at least one rendition with name and bandwidth",
            "site.yaml:6:32: live[1].part_duration: 300ms does not divide the 2s segments into parts; allowed: at least 50ms, shorter than segment_duration and dividing it evenly (such as 500ms for 2s segments)",
            "site.yaml:8:15: objects[0].prefix: prefix \"/live/x/\" overlaps the reserved /live/; allowed: a prefix outside /live/, /vod/ and /_origin/",
            "site.yaml:8:32: objects[0].count: count 0; allowed: at least 1 object",
            "site.yaml:10:37: faults[0].error_rate: 1.5 is out of range; allowed: a share from 0.0 to 1.0",
        ]
    );
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fanout-config-test-{}-{}",
        std::process::id(),
        fastrand_u64()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

#[test]
fn control_files_need_an_odd_group_that_includes_this_node() {
    let yaml = "\
kind: control
id: 4
listen: 127.0.0.1:7000
data_dir: data/control-4
cluster_secret_file: secret
write_token_file: write.token
peers:
  - { id: 1, address: '127.0.0.1:7001' }
  - { id: 1, address: '127.0.0.1:7002' }
";
    assert_eq!(
        errors(yaml),
        [
            "site.yaml:8:3: peers: this node (id 4) is not among the peers; allowed: a list that includes this node's own id (or join: true to join a running group)",
            "site.yaml:8:3: peers: 2 members tolerate no more failures than 1; allowed: an odd number of members: 1, 3 or 5",
            "site.yaml:9:11: peers[1].id: duplicate peer id 1 (first used at peers[0].id); allowed: each peer id once",
        ]
    );
    let ok = yaml
        .replace("id: 4\n", "id: 1\n")
        .replace("  - { id: 1, address: '127.0.0.1:7002' }\n", "");
    let AnyConfig::Control(c) = load_str(Path::new("/etc/fanout/control.yaml"), &ok).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        c.data_dir,
        Path::new("/etc/fanout/data/control-4"),
        "relative paths resolve against the file"
    );
}

const SCENARIO: &str = "\
kind: scenario
name: final
target: { addresses: ['127.0.0.1:8080'], host: localhost }
phases:
  - { name: toss, duration: 10s, arrival_rate: 100, population: 1000 }
mix:
  - { viewer: live, stream: main }
";

#[test]
fn a_valid_scenario_loads_with_defaults() {
    let AnyConfig::Scenario(s) = load_str(Path::new("s.yaml"), SCENARIO).unwrap() else {
        panic!()
    };
    assert_eq!(s.seed, 1);
    assert_eq!(s.limits.max_in_flight, 10_000);
    assert_eq!(s.duration().as_secs(), 10);
    assert_eq!(s.mix[0].weight(), 1);
}

#[test]
fn scenario_errors_point_at_the_field() {
    assert_eq!(
        one_error(&SCENARIO.replace("viewer: live", "viewer: lve")),
        "site.yaml:7:15: mix[0].viewer: unknown variant `lve` (did you mean `live`?); allowed: live, vod, static"
    );
    assert_eq!(
        one_error(&SCENARIO.replace("stream: main", "stream: main, abr: 2")),
        "site.yaml:7:35: mix[0].abr: unknown field `abr` (did you mean `abr_up`?); allowed: weight, stream, abr_down, abr_up, start_behind, cmcd"
    );
    let e = errors(&SCENARIO.replace("arrival_rate: 100", "arrival_rate: -5, start_rate: .nan"));
    assert_eq!(
        e,
        [
            "site.yaml:5:48: phases[0].arrival_rate: invalid rate -5; allowed: viewers per second, zero or more",
            "site.yaml:5:64: phases[0].start_rate: invalid rate NaN; allowed: viewers per second, zero or more",
        ]
    );
    let with_mix = SCENARIO.replace(
        "  - { viewer: live, stream: main }",
        "  - { viewer: vod, titles: 0, zipf: 9 }\n  - { viewer: static, prefix: static/, count: 10 }",
    );
    assert_eq!(
        errors(&with_mix),
        [
            "site.yaml:7:28: mix[0].titles: must be at least 1; allowed: the number of titles under /vod/",
            "site.yaml:7:37: mix[0].zipf: Zipf exponent 9 out of range; allowed: 0 (uniform) to 5; about 1 for typical popularity",
            "site.yaml:8:31: mix[1].prefix: \"static/\" does not start with /; allowed: a path prefix such as /static/",
        ]
    );
}

#[test]
fn fault_steps_do_one_thing_within_the_run() {
    let faults = |f: &str| format!("{SCENARIO}faults:\n{f}");
    assert_eq!(
        one_error(&faults("  - { at: 20s, command: 'true' }\n")),
        "site.yaml:9:11: faults[0].at: 20s is after the run ends (10s); allowed: a time within the phases' total duration"
    );
    assert_eq!(
        one_error(&faults(
            "  - { at: 5s, command: 'true', signal: { pid: 42 } }\n"
        )),
        "site.yaml:9:5: faults[0]: a fault step does exactly one thing; allowed: one of http: {url, method}, signal: {pid, signal} or command: \"...\""
    );
    assert_eq!(
        one_error(&faults("  - { at: 5s, signal: { pid: 1, signal: KILL } }\n")),
        "site.yaml:9:30: faults[0].signal.pid: refusing to signal pid 1; allowed: the pid of a process under test"
    );
    assert_eq!(
        one_error(&faults("  - { at: 5s, http: { url: 'https://x/' } }\n")),
        "site.yaml:9:28: faults[0].http.url: \"https://x/\" is not an http:// URL; allowed: http://host:port/path"
    );
}

#[test]
fn telemetry_settings_are_checked() {
    let yaml = "kind: proxy\nid: p1\nlisten: 127.0.0.1:8080\ncluster: cluster.yaml\n\
                cache_nodes: [{ id: c1, address: '127.0.0.1:8081' }]\n\
                telemetry: { otlp_endpoint: 'collector:4318', sample_ratio: 2 }\n";
    assert_eq!(
        errors(yaml),
        [
            "site.yaml:6:29: telemetry.otlp_endpoint: \"collector:4318\" is not an http(s) URL; allowed: a collector's OTLP/HTTP base URL, like http://otel-collector:4318",
            "site.yaml:6:61: telemetry.sample_ratio: 2 is not a share; allowed: a number from 0 (no new traces) to 1 (every request)",
        ]
    );
    let dir = tempdir();
    std::fs::write(dir.join("cluster.yaml"), CLUSTER).unwrap();
    let proxy = dir.join("proxy.yaml");
    std::fs::write(
        &proxy,
        yaml.replace(
            "'collector:4318', sample_ratio: 2",
            "'http://collector:4318', sample_ratio: 0.01",
        ),
    )
    .unwrap();
    let AnyConfig::Proxy(p) = load_any(&proxy).unwrap() else {
        panic!()
    };
    assert_eq!(p.telemetry.sample_ratio, Some(0.01));
    assert_eq!(
        p.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    let pushes = |interval: &str| {
        "kind: proxy\nid: p1\nlisten: 127.0.0.1:8080\ncluster: cluster.yaml\n\
         cache_nodes: [{ id: c1, address: '127.0.0.1:8081' }]\n\
         telemetry: { otlp_metrics_interval: INTERVAL }\n"
            .replace("INTERVAL", interval)
    };
    assert_eq!(
        one_error(&pushes("10ms")),
        "site.yaml:6:37: telemetry.otlp_metrics_interval: 10ms is out of range; allowed: 100ms to 1h (collectors commonly expect 10s to 60s)"
    );
    assert!(one_error(&pushes("15"))
        .starts_with("site.yaml:6:37: telemetry.otlp_metrics_interval: 15 has no unit"));
    std::fs::write(&proxy, pushes("15s")).unwrap();
    let AnyConfig::Proxy(p) = load_any(&proxy).unwrap() else {
        panic!()
    };
    assert_eq!(
        p.telemetry.otlp_metrics_interval.map(|i| i.get()),
        Some(std::time::Duration::from_secs(15))
    );
}

#[test]
fn a_fixed_send_buffer_is_checked_and_reaches_the_cache_node() {
    let dir = tempdir();
    std::fs::write(dir.join("cluster.yaml"), CLUSTER).unwrap();
    let cache = |send_buffer: &str| {
        let f = dir.join("cache.yaml");
        std::fs::write(
            &f,
            format!("kind: cache\nid: c1\nlisten: 127.0.0.1:8081\ncluster: cluster.yaml\nsend_buffer: {send_buffer}\n"),
        )
        .unwrap();
        load_any(&f)
    };
    let AnyConfig::Cache(c) = cache("256KiB").unwrap() else {
        panic!()
    };
    assert_eq!(c.send_buffer.map(|s| s.bytes()), Some(256 * 1024));
    let e = cache("1KiB").unwrap_err().to_string();
    assert!(
        e.ends_with("cache.yaml:5:14: send_buffer: 1.0 KiB is out of range; allowed: 16KiB to 64MiB, or leave it out to have it chosen per connection"),
        "{e}"
    );
    let up = UP.replace(
        "id: cache-2, listen: '127.0.0.1:8082'",
        "id: cache-2, listen: '127.0.0.1:8082', send_buffer: 128MiB",
    );
    assert_eq!(
        one_error(&up),
        "site.yaml:9:59: cache_nodes[1].send_buffer: 128.0 MiB is out of range; allowed: 16KiB to 64MiB, or leave it out to have it chosen per connection"
    );
    let AnyConfig::Up(u) = load_str(Path::new("up.yaml"), &up.replace("128MiB", "512KiB")).unwrap()
    else {
        panic!()
    };
    let nodes = u.cache_node_configs();
    assert_eq!(nodes[0].send_buffer, None);
    assert_eq!(nodes[1].send_buffer.map(|s| s.bytes()), Some(512 * 1024));
}

#[test]
fn the_hot_tier_is_on_by_default_checked_and_reaches_the_proxy_with_its_peers() {
    let AnyConfig::Up(u) = load_str(Path::new("up.yaml"), UP).unwrap() else {
        panic!()
    };
    let proxy = &u.proxy_configs()[0];
    assert!(proxy.edge.hot_tier.enabled());
    assert_eq!(proxy.edge.hot_tier.capacity.bytes(), 256 * 1024 * 1024);
    assert_eq!(
        proxy.edge.hot_tier.max_object_size.bytes(),
        16 * 1024 * 1024
    );
    // Every cache node learns the others, which spilled keys fill from.
    let peers: Vec<String> = u.cache_node_configs()[1]
        .peers
        .iter()
        .map(|p| format!("{}={}", p.id, p.address))
        .collect();
    assert_eq!(peers, ["cache-1=127.0.0.1:8081", "cache-2=127.0.0.1:8082"]);

    let off = UP.replace(
        "listen: '127.0.0.1:8080' }",
        "listen: '127.0.0.1:8080', hot_tier: { capacity: 0 } }",
    );
    let AnyConfig::Up(u) = load_str(Path::new("up.yaml"), &off).unwrap() else {
        panic!()
    };
    assert!(!u.proxy_configs()[0].edge.hot_tier.enabled());

    let small = UP.replace(
        "listen: '127.0.0.1:8080' }",
        "listen: '127.0.0.1:8080', hot_tier: { capacity: 100KiB } }",
    );
    assert_eq!(
        one_error(&small),
        "site.yaml:11:68: proxies[0].hot_tier.capacity: 100.0 KiB is below 1 MiB; allowed: 0 (off) or at least 1MiB, such as 256MiB"
    );
    let tiny_object = UP.replace(
        "listen: '127.0.0.1:8080' }",
        "listen: '127.0.0.1:8080', hot_tier: { max_object_size: 100 } }",
    );
    assert_eq!(
        one_error(&tiny_object),
        "site.yaml:11:75: proxies[0].hot_tier.max_object_size: 100 B is too small; allowed: at least 1KiB, such as 16MiB"
    );
    let typo = UP.replace(
        "listen: '127.0.0.1:8080' }",
        "listen: '127.0.0.1:8080', hot_tier: { capacty: 8MiB } }",
    );
    let e = one_error(&typo);
    assert!(
        e.starts_with("site.yaml:11:")
            && e.contains("unknown field `capacty` (did you mean `capacity`?); allowed: capacity, max_object_size"),
        "{e}"
    );
}

#[test]
fn accept_encoding_lists_content_codings() {
    let AnyConfig::Cluster(c) = load_str(Path::new("site.yaml"), CLUSTER).unwrap() else {
        panic!()
    };
    assert_eq!(c.sites[0].cache.accept_encoding, ["zstd", "br", "gzip"]);
    let e = one_error(&format!(
        "{CLUSTER}    cache:\n      accept_encoding: [br, 'Gzip;q=1']\n"
    ));
    assert!(e.starts_with("site.yaml:8:"), "points at the list: {e}");
    assert!(
        e.contains("sites[0].cache.accept_encoding[1]: \"Gzip;q=1\" is not a content coding; allowed: lower-case coding names"),
        "{e}"
    );
}

#[test]
fn a_slice_size_must_lie_between_64kib_and_the_largest_stored_object() {
    let with = |cache: &str| format!("{CLUSTER}    cache: {cache}\n");
    let AnyConfig::Cluster(c) = load_str(Path::new("site.yaml"), &with("{ slice: 4MiB }")).unwrap()
    else {
        panic!()
    };
    assert_eq!(c.sites[0].cache.slice.map(|s| s.bytes()), Some(4 << 20));
    assert_eq!(
        one_error(&with("{ slice: 1KiB }")),
        "site.yaml:7:21: sites[0].cache.slice: 1.0 KiB is outside 64.0 KiB..=max_object_size (64.0 MiB); allowed: a slice size such as 4MiB, at least 64KiB and no larger than max_object_size"
    );
    assert_eq!(
        one_error(&with("{ slice: 8MiB, max_object_size: 4MiB }")),
        "site.yaml:7:21: sites[0].cache.slice: 8.0 MiB is outside 64.0 KiB..=max_object_size (4.0 MiB); allowed: a slice size such as 4MiB, at least 64KiB and no larger than max_object_size"
    );
}
