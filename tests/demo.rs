//! `fanout up --demo`, the first command of the README, in a short form.

mod support;

use support::*;

#[test]
fn the_demo_runs_its_scenario_and_writes_the_reports() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("short.yaml"),
        "kind: scenario
name: short demo
target: { addresses: ['127.0.0.1:1'], host: ignored }
phases:
  - { name: join, duration: 2s, arrival_rate: 20, population: 40 }
  - { name: watch, duration: 2s, arrival_rate: 0, population: 40 }
mix:
  - { viewer: live, stream: main }
",
    )
    .unwrap();
    let (file, _cluster) = up_file(dir.path(), 2, 2, "demo:\n  scenario: short.yaml\n");
    let reports = dir.path().join("reports");
    let out = run(&[
        "up",
        file.to_str().unwrap(),
        "--demo",
        "--report-dir",
        reports.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Scenario \"short demo\""), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    // Live viewers of two renditions: all but the first request for each
    // object are hits, and the origin saw far fewer requests than viewers
    // made.
    let ratio: f64 = field(&stdout, "hit ratio")
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(ratio > 50.0, "{stdout}");
    let requests: u64 = field(&stdout, "requests").parse().unwrap();
    let origin: u64 = field(&stdout, "origin").parse().unwrap();
    assert!(
        origin > 0 && origin * 3 < requests,
        "origin {origin} vs {requests} requests:\n{stdout}"
    );
    assert!(stdout.contains("live_segment"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["totals"]["requests"].as_u64(), Some(requests));
    let html = std::fs::read_to_string(reports.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "the HTML report has charts");
}

/// The first word after a summary line's label.
fn field<'a>(summary: &'a str, label: &str) -> &'a str {
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{summary}"))
}

/// `fanout up` with a `control_plane` section: the parts follow the
/// control plane, so a config applied with `fanout ctl` reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_a_control_plane_follows_configs_applied_with_ctl() {
    let dir = temp_dir();
    let ports = free_ports(3);
    let nodes: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let extra = format!(
        "control_plane:\n  nodes: [{}]\n  data_dir: cp\n",
        nodes.join(", ")
    );
    let (file, cluster) = up_file(dir.path(), 2, 1, &extra);
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    let proxy = cluster.proxies[0];
    let r = get(proxy, "localhost", "/static/1", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        get(proxy, "alias.localhost", "/static/1", &[])
            .await
            .unwrap()
            .status,
        404
    );

    // The cluster section, with a second host, applied through ctl.
    let yaml = std::fs::read_to_string(&file).unwrap();
    let section = yaml
        .split("\ncluster:\n")
        .nth(1)
        .unwrap()
        .split("\ncache_nodes:")
        .next()
        .unwrap()
        .replace("hosts: [localhost]", "hosts: [localhost, alias.localhost]");
    let changed = dir.path().join("cluster.yaml");
    let dedented: String = section
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&changed, format!("kind: cluster\n{dedented}\n")).unwrap();
    let servers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let token = dir.path().join("cp").join("write.token");
    let out = run(&[
        "ctl",
        "--server",
        &servers.join(","),
        "--token-file",
        token.to_str().unwrap(),
        "apply",
        "-f",
        changed.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies = poll_until_host(proxy, "alias.localhost", "/static/2", &[], |r| {
        r.status == 200
    })
    .await;
    assert_eq!(replies.last().unwrap().status, 200);
}
