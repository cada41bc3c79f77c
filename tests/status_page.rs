//! The control plane's status page, loaded in a real headless browser
//! (Debian's chromium; `.ci/run` installs it) against a `fanout up`
//! cluster: its script reads /v1/status and shows the Raft leader, every
//! control node, and every proxy and cache node with its applied revision
//! and traffic, whichever control node the page is loaded from.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The page's DOM after its script has run.
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium is needed for this test: apt-get install chromium (.ci/run does)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The text of the table row for `member`.
fn row<'a>(dom: &'a str, member: &str) -> &'a str {
    let start = dom
        .find(&format!("data-member=\"{member}\""))
        .unwrap_or_else(|| panic!("no row for {member} in:\n{dom}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_leader_members_and_traffic() {
    let dir = temp_dir();
    let (control_plane, ports) = control_plane_section();
    let (file, cluster) = up_file(dir.path(), 1, 1, &control_plane);
    let mut process = spawn(&["up", file.to_str().unwrap()]);
    wait_cluster_ready(&cluster, &mut process).await;
    // A miss through the proxy, a hit at the node for a client of its
    // own, and a hit in the proxy's hot tier: two requests and one hit each.
    for addr in [cluster.proxies[0], cluster.caches[0], cluster.proxies[0]] {
        let r = get(addr, "localhost", "/static/4", &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }

    // Members watch and report to one control node: find it, and wait for
    // both parts' traffic (reported every two seconds) to reach it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let watched = 'found: loop {
        for port in &ports {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
            let Ok(r) = get(addr, "localhost", "/v1/status?local=1", &[]).await else {
                continue;
            };
            let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let reported = status["agents"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["requests"] == 2 && a["hits"] == 1)
                .count();
            if reported == 2 {
                break 'found addr;
            }
        }
        assert!(Instant::now() < deadline, "traffic never reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The page of a node that no part talks to still shows them all.
    let node = ports
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .find(|a| *a != watched)
        .unwrap();
    let r = get(node, "localhost", "/v1/status?local=1", &[])
        .await
        .unwrap();
    let own: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        own["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["requests"].is_null()),
        "no traffic reported to {node} itself: {own}"
    );
    let url = format!("http://{node}/ui");
    let dom = tokio::task::spawn_blocking(move || rendered(&url))
        .await
        .unwrap();
    assert!(
        dom.contains(r#"<span id="error"></span>"#),
        "the page read /v1/status:\n{dom}"
    );
    assert!(
        dom.contains(r#"<td id="leader">node "#),
        "a leader is shown:\n{dom}"
    );
    assert!(
        dom.contains(r#"<td id="role">Leader</td>"#)
            || dom.contains(r#"<td id="role">Follower</td>"#),
        "{dom}"
    );
    let mut leaders = 0;
    for id in 1..=3 {
        let start = dom
            .find(&format!("data-node=\"{id}\""))
            .unwrap_or_else(|| panic!("no row for control node {id}:\n{dom}"));
        let row = &dom[start..start + dom[start..].find("</tr>").unwrap()];
        assert!(
            row.contains("Leader") || row.contains("Follower"),
            "control node {id} answered its peer: {row}"
        );
        leaders += row.contains("Leader") as usize;
    }
    assert_eq!(leaders, 1, "{dom}");
    for member in ["cache-1", "proxy-1"] {
        let row = row(&dom, member);
        assert!(row.contains("up to date"), "{row}");
        assert!(
            row.contains(r#"<td class="num">2</td>"#),
            "two requests: {row}"
        );
        assert!(row.contains("50.0%"), "one hit of two: {row}");
    }
}
