//! The control plane as real processes: a group forms once from one peer
//! list, commits survive `kill -9` of every node, a leader killed under a
//! stream of writes loses no acknowledged write, writes to followers reach
//! the leader, and invalid or unauthenticated writes change nothing.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::*;

const CLUSTER: &str = "kind: cluster
sites:
  - name: live
    hosts: [live.example.com]
    origin: { addresses: ['127.0.0.1:9'] }
";

fn member(i: usize) -> String {
    format!(
        r#"{{"id": "cache-{i}", "kind": "cache", "address": "10.0.0.{}:8081"}}"#,
        i % 250 + 1
    )
}

async fn members(g: &ControlGroup, node: usize) -> BTreeSet<String> {
    let r = get(
        g.addrs[node],
        "c",
        "/v1/members",
        &[("authorization", &format!("Bearer {READ_TOKEN}"))],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_state_survives_kill_9_of_every_node() {
    let mut g = ControlGroup::start(3).await;
    std::fs::write(g.dir.path().join("cluster.yaml"), CLUSTER).unwrap();
    let cluster = g.dir.path().join("cluster.yaml");
    let out = g.ctl(&["apply", "-f", cluster.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = g.ctl(&["purge", "--tag", "match-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        g.kill(i);
    }
    for i in 0..3 {
        g.restart(i);
    }
    g.wait_leader(&[]).await;
    let out = g.ctl(&["get"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), CLUSTER);
    // Every node, not just the leader, has the state back.
    for i in 0..3 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = g.status(i).await.unwrap_or_default();
            if s["config_version"] == 1 && s["purge_seq"] == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "node {i} lost state: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_writes_loses_no_acknowledged_write() {
    let mut g = ControlGroup::start(3).await;
    let leader = g.wait_leader(&[]).await;
    let addrs = g.addrs.clone();
    // A writer that spreads its writes over every node (followers forward)
    // and remembers which ones were acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let node = addrs[i % addrs.len()];
                if let Ok((200, _)) =
                    send(node, "POST", "/v1/members", Some(WRITE_TOKEN), &member(i)).await
                {
                    acked.push(format!("cache-{i}"));
                }
                i += 1;
            }
            acked
        })
    };
    // Let some writes land, then kill the leader.
    let deadline = Instant::now() + DEADLINE;
    while members(&g, leader).await.len() < 20 {
        assert!(Instant::now() < deadline, "writes never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    g.kill(leader);
    let new_leader = g.wait_leader(&[leader]).await;
    // Writes resume under the new leader.
    let resumed = members(&g, new_leader).await.len();
    let deadline = Instant::now() + DEADLINE;
    while members(&g, new_leader).await.len() < resumed + 20 {
        assert!(
            Instant::now() < deadline,
            "writes did not resume after failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    // The old leader comes back and catches up; every acknowledged write is
    // on every node.
    g.restart(leader);
    g.wait_leader(&[]).await;
    for node in 0..3 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let have = members(&g, node).await;
            let missing: Vec<_> = acked.iter().filter(|id| !have.contains(*id)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} is missing {} acknowledged writes, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        acked.len() > 40,
        "only {} writes were acknowledged",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_unauthenticated_writes_change_nothing() {
    let g = ControlGroup::start(3).await;
    let follower = (g.wait_leader(&[]).await + 1) % 3;
    // A valid config through a follower: forwarded to the leader.
    let (status, body) = send(
        g.addrs[follower],
        "PUT",
        "/v1/config",
        Some(WRITE_TOKEN),
        CLUSTER,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"config_version\": 1"), "{body}");

    let bad = CLUSTER.replace("hosts:", "hots:");
    let (status, body) = send(g.addrs[0], "PUT", "/v1/config", Some(WRITE_TOKEN), &bad)
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("4:5: sites[0].hots: unknown field"), "{body}");
    // No token, a wrong one, and the read token: all 401 for a write.
    for token in [None, Some("nope"), Some(READ_TOKEN)] {
        let (status, _) = send(
            g.addrs[0],
            "PUT",
            "/v1/config",
            token,
            &CLUSTER.replace("live", "x"),
        )
        .await
        .unwrap();
        assert_eq!(status, 401, "token {token:?}");
    }
    let (status, _) = send(g.addrs[0], "GET", "/v1/config", None, "")
        .await
        .unwrap();
    assert_eq!(status, 401, "reads need the read token when one is set");

    // ctl apply validates before sending: exit 2 with file:line:column.
    let file = g.dir.path().join("bad.yaml");
    std::fs::write(&file, &bad).unwrap();
    let out = g.ctl(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:4:5: sites[0].hots"), "{stderr}");

    for i in 0..3 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = g.status(i).await.unwrap_or_default();
            if s["config_version"] == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "node {i}: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let out = g.ctl(&["get"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        CLUSTER,
        "live version unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_rolls_back_diffs_and_lists_members() {
    let g = ControlGroup::start(3).await;
    let dir = g.dir.path();
    std::fs::write(dir.join("v1.yaml"), CLUSTER).unwrap();
    let v2 = CLUSTER.replace("live.example.com", "live2.example.com");
    std::fs::write(dir.join("v2.yaml"), &v2).unwrap();
    let f = |n: &str| dir.join(n).to_string_lossy().into_owned();
    assert!(g.ctl(&["apply", "-f", &f("v1.yaml")]).status.success());
    let diff = g.ctl(&["diff", "-f", &f("v2.yaml")]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("-    hosts: [live.example.com]")
            && text.contains("+    hosts: [live2.example.com]"),
        "{text}"
    );
    assert!(g.ctl(&["apply", "-f", &f("v2.yaml")]).status.success());
    let out = g.ctl(&["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 3 is live"));
    assert_eq!(String::from_utf8_lossy(&g.ctl(&["get"]).stdout), CLUSTER);
    assert_eq!(
        String::from_utf8_lossy(&g.ctl(&["get", "--version", "2"]).stdout),
        v2
    );

    let (status, _) = send(
        g.addrs[0],
        "POST",
        "/v1/members",
        Some(WRITE_TOKEN),
        &member(7),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(g.ctl(&["drain", "cache-7"]).status.success());
    let out = g.ctl(&["--json", "members"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["state"], "draining");
    let out = g.ctl(&["remove", "cache-404"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "removing an unknown member fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_nodes_are_added_and_removed_at_run_time() {
    let mut g = ControlGroup::start(3).await;
    let (status, _) = send(g.addrs[0], "PUT", "/v1/config", Some(WRITE_TOKEN), CLUSTER)
        .await
        .unwrap();
    assert_eq!(status, 200);
    // A fourth node, listing the running ones (not itself) as peers: it
    // does not form a group of its own, it waits to be added.
    let addr4: std::net::SocketAddr = ([127, 0, 0, 1], free_ports(1)[0]).into();
    let peers: String = g
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  - {{ id: {}, address: '{a}' }}\n", i + 1))
        .collect();
    let file = g.dir.path().join("control-4.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: control\nid: 4\njoin: true\nlisten: '{addr4}'\ndata_dir: data-4\ncluster_secret_file: cluster.secret\n\
             write_token_file: write.token\nread_token_file: read.token\npeers:\n{peers}"
        ),
    )
    .unwrap();
    let _node4 = spawn(&["control", file.to_str().unwrap()]);
    let out = g.ctl(&["raft", "add", "--id", "4", "--address", &addr4.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[1,2,3,4]"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // It catches up with what was committed before it joined. Not at once:
    // the membership change commits on a majority that need not include
    // the new node, which then replicates and applies on its own time.
    let bearer = format!("Bearer {READ_TOKEN}");
    poll_until_host(
        addr4,
        "c",
        "/v1/config",
        &[("authorization", &bearer)],
        |r| r.body == CLUSTER.as_bytes(),
    )
    .await;

    let out = g.ctl(&["raft", "remove", "--id", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("[2,3,4]"));
    g.kill(0);
    // Three voters left (2, 3, 4): writes still commit, through node 4 too.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = send(addr4, "POST", "/v1/members", Some(WRITE_TOKEN), &member(1))
            .await
            .unwrap();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no commit after removing node 1: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// More writes than the log keeps (a snapshot every 1000 entries, 100 kept
/// after it): a node that was down meanwhile catches up from the snapshot,
/// and every node restarts from its own snapshot plus the log after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let mut g = ControlGroup::start(3).await;
    let leader = g.wait_leader(&[]).await;
    let behind = (leader + 1) % 3;
    g.kill(behind);
    let up: Vec<std::net::SocketAddr> = (0..3)
        .filter(|i| *i != behind)
        .map(|i| g.addrs[i])
        .collect();
    const WRITES: usize = 1300;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let up = up.clone();
        tasks.spawn(async move {
            for i in (w..WRITES).step_by(8) {
                let (status, body) = send(
                    up[i % 2],
                    "POST",
                    "/v1/members",
                    Some(WRITE_TOKEN),
                    &member(i),
                )
                .await
                .unwrap();
                assert_eq!(status, 200, "{body}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // The log the stopped node would need is gone from the others.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = g.status(leader).await.unwrap_or_default();
        if s["purged_index"].as_u64().is_some_and(|p| p > 100) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never compacted its log: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g.restart(behind);
    let deadline = Instant::now() + DEADLINE;
    while g.status(behind).await.is_none() || members(&g, behind).await.len() != WRITES {
        assert!(Instant::now() < deadline, "node {behind} did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = g.status(behind).await.unwrap();
    assert!(
        s["snapshot_index"].as_u64().is_some_and(|i| i > 100),
        "caught up without a snapshot: {s}"
    );
    // And everyone restarts from snapshot + log.
    for i in 0..3 {
        g.kill(i);
    }
    for i in 0..3 {
        g.restart(i);
    }
    g.wait_leader(&[]).await;
    for i in 0..3 {
        let deadline = Instant::now() + DEADLINE;
        while members(&g, i).await.len() != WRITES {
            assert!(
                Instant::now() < deadline,
                "node {i} lost members after restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls `path` on `admin` until it answers `status`.
async fn wait_admin(admin: std::net::SocketAddr, path: &str, status: u16) -> Reply {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = get(admin, "c", path, &[]).await {
            if r.status == status {
                return r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{admin}{path} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_says_live_and_ready_only_while_a_leader_is_known() {
    let mut g = ControlGroup::start(3).await;
    for admin in g.admins.clone() {
        wait_admin(admin, "/healthz", 200).await;
        wait_admin(admin, "/readyz", 200).await;
        let m = wait_admin(admin, "/metrics", 200).await;
        assert!(
            String::from_utf8_lossy(&m.body).contains("fanout_control_raft_term"),
            "no Raft metrics on {admin}"
        );
    }
    // Alone, a node cannot elect a leader: alive, but not ready once its
    // election timeout has passed without word from the old leader.
    for i in 0..3 {
        g.kill(i);
    }
    g.restart(0);
    wait_admin(g.admins[0], "/healthz", 200).await;
    wait_admin(g.admins[0], "/readyz", 503).await;
    // With a majority back it is ready again.
    g.restart(1);
    wait_admin(g.admins[0], "/readyz", 200).await;
}
