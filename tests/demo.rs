//! `fanout up --demo`, the first command of the README, in a short form.

mod support;

use support::*;

#[test]
fn the_demo_serves_live_viewers_and_prints_its_summary() {
    let dir = temp_dir();
    let (file, _cluster) = up_file(
        dir.path(),
        2,
        2,
        "demo:\n  viewers: 40\n  duration: 4s\n  ramp: 1s\n",
    );
    let out = run(&["up", file.to_str().unwrap(), "--demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Fanout demo: 40 live viewers"), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    // Forty viewers of two renditions: all but the first of each object's
    // requests are hits, so the ratio is high; the origin saw far fewer
    // requests than the viewers made.
    let ratio: f64 = field(&stdout, "cache hit ratio")
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(ratio > 50.0, "{stdout}");
    let requests: u64 = field(&stdout, "requests").parse().unwrap();
    let origin: u64 = field(&stdout, "origin requests").parse().unwrap();
    assert!(
        origin > 0 && origin * 3 < requests,
        "origin {origin} vs {requests} requests:\n{stdout}"
    );
    assert!(
        stdout.contains("segments") && stdout.contains("p99"),
        "{stdout}"
    );
}

/// The first word after a summary line's label.
fn field<'a>(summary: &'a str, label: &str) -> &'a str {
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{summary}"))
}
