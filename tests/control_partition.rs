//! A network partition of the control plane, made with real network
//! namespaces: each node runs in its own namespace behind a bridge, and the
//! test cuts one off with iptables inside its namespace. The minority side
//! cannot commit, the majority elects a leader and commits, and after the
//! partition heals the minority catches up and its uncommitted write is gone.
//!
//! Needs root (to create namespaces); without it the test says so and
//! passes vacuously, which the CI machine (root) never does.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Node namespaces on a bridge that lives in a hub namespace of its own
/// (so the host's firewall, which may drop bridged traffic, is not in the
/// way); the test host joins the bridge as `.254` through one more veth.
struct Net {
    tag: String,
    subnet: String,
    nodes: usize,
}

impl Net {
    fn new(nodes: usize) -> Net {
        let pid = std::process::id();
        let tag = format!("{:05}", pid % 100_000);
        let subnet = format!("10.{}.{}", 100 + pid % 100, (pid / 100) % 250);
        let net = Net { tag, subnet, nodes };
        let hub = net.hub();
        let br = "br0";
        sh(&["ip", "netns", "add", &hub]);
        sh(&["ip", "-n", &hub, "link", "add", br, "type", "bridge"]);
        sh(&["ip", "-n", &hub, "link", "set", br, "up"]);
        // The test host's leg.
        let (root, root_peer) = (format!("fo{}r", net.tag), format!("fo{}rb", net.tag));
        sh(&[
            "ip", "link", "add", &root, "type", "veth", "peer", "name", &root_peer,
        ]);
        sh(&["ip", "link", "set", &root_peer, "netns", &hub]);
        sh(&["ip", "-n", &hub, "link", "set", &root_peer, "master", br]);
        sh(&["ip", "-n", &hub, "link", "set", &root_peer, "up"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}.254/24", net.subnet),
            "dev",
            &root,
        ]);
        sh(&["ip", "link", "set", &root, "up"]);
        for i in 0..nodes {
            let (ns, leg, inner) = (
                net.ns(i),
                format!("fo{}h{i}", net.tag),
                format!("fo{}c{i}", net.tag),
            );
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "-n", &hub, "link", "add", &leg, "type", "veth", "peer", "name", &inner,
            ]);
            sh(&["ip", "-n", &hub, "link", "set", &inner, "netns", &ns]);
            sh(&["ip", "-n", &hub, "link", "set", &leg, "master", br]);
            sh(&["ip", "-n", &hub, "link", "set", &leg, "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                &inner,
            ]);
            sh(&["ip", "-n", &ns, "link", "set", &inner, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn hub(&self) -> String {
        format!("fanout-{}-hub", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("fanout-{}-{i}", self.tag)
    }

    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Drops everything between node `i` and the other nodes (the test host
    /// still reaches it).
    fn isolate(&self, i: usize) {
        for j in (0..self.nodes).filter(|j| *j != i) {
            let other = self.ip(j);
            sh(&[
                "ip",
                "netns",
                "exec",
                &self.ns(i),
                "iptables",
                "-A",
                "INPUT",
                "-s",
                &other,
                "-j",
                "DROP",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &self.ns(i),
                "iptables",
                "-A",
                "OUTPUT",
                "-d",
                &other,
                "-j",
                "DROP",
            ]);
        }
    }

    fn heal(&self, i: usize) {
        sh(&["ip", "netns", "exec", &self.ns(i), "iptables", "-F"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them
        // their peers.
        for i in 0..self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub()])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("fo{}r", self.tag)])
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

async fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    let r = get(addr, "c", "/v1/status", &[]).await.ok()?;
    serde_json::from_slice(&r.body).ok()
}

fn config(marker: &str) -> String {
    format!("kind: cluster\nsites:\n  - name: {marker}\n    hosts: [{marker}.example]\n    origin: {{ addresses: ['127.0.0.1:9'] }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit_and_catches_up_after_the_partition_heals() {
    if !is_root() {
        eprintln!("skipped: creating network namespaces needs root");
        return;
    }
    let net = Net::new(3);
    let dir = temp_dir();
    std::fs::write(dir.path().join("secret"), "partition-secret").unwrap();
    std::fs::write(dir.path().join("token"), WRITE_TOKEN).unwrap();
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| format!("{}:7000", net.ip(i)).parse().unwrap())
        .collect();
    let peers: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  - {{ id: {}, address: '{a}' }}\n", i + 1))
        .collect();
    let mut nodes = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let file = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(
            &file,
            format!("kind: control\nid: {}\nlisten: '{a}'\ndata_dir: d{i}\ncluster_secret_file: secret\nwrite_token_file: token\npeers:\n{peers}", i + 1),
        )
        .unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.ns(i),
                BIN,
                "control",
                file.to_str().unwrap(),
            ])
            .env("RUST_LOG", "off")
            .spawn()
            .expect("start a control node in its namespace");
        nodes.push(Running { child });
    }
    // A leader all three agree on.
    let deadline = Instant::now() + DEADLINE;
    let leader = loop {
        let mut seen = Vec::new();
        for a in &addrs {
            seen.push(status(*a).await.and_then(|s| s["leader"].as_u64()));
        }
        if let Some(Some(l)) = seen.first().cloned() {
            if seen.iter().all(|s| *s == Some(l)) {
                break l as usize - 1;
            }
        }
        assert!(Instant::now() < deadline, "no leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status_code, body) = send(
        addrs[leader],
        "PUT",
        "/v1/config",
        Some(WRITE_TOKEN),
        &config("before"),
    )
    .await
    .unwrap();
    assert_eq!(status_code, 200, "{body}");

    // Cut the leader off: it is the minority now.
    net.isolate(leader);
    let minority = addrs[leader];
    let majority: Vec<SocketAddr> = (0..3).filter(|i| *i != leader).map(|i| addrs[i]).collect();
    let stranded = tokio::time::timeout(
        Duration::from_secs(5),
        send(
            minority,
            "PUT",
            "/v1/config",
            Some(WRITE_TOKEN),
            &config("minority"),
        ),
    )
    .await;
    assert!(
        !matches!(stranded, Ok(Ok((200, _)))),
        "the minority committed a write: {stranded:?}"
    );
    // The majority elects a leader and commits.
    let deadline = Instant::now() + DEADLINE;
    // The version the committed write made live, from its answer.
    let live = loop {
        if let Ok((200, body)) = send(
            majority[0],
            "PUT",
            "/v1/config",
            Some(WRITE_TOKEN),
            &config("majority"),
        )
        .await
        {
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            break answer["config_version"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the majority never committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    net.heal(leader);
    // Every node, the healed one included, applies that version.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut versions = Vec::new();
        for a in &addrs {
            versions.push(status(*a).await.unwrap_or_default()["config_version"].as_u64());
        }
        if versions.iter().all(|v| *v == Some(live)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node reached version {live}: {versions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stranded write never became a version anywhere.
    for a in &addrs {
        for v in 1..=live {
            let r = get(*a, "c", &format!("/v1/config?version={v}"), &[])
                .await
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&r.body).contains("minority"),
                "version {v} on {a}"
            );
        }
        let r = get(*a, "c", "/v1/config", &[]).await.unwrap();
        assert!(String::from_utf8_lossy(&r.body).contains("majority"));
    }
    drop(nodes);
}
