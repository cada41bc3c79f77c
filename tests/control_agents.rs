//! Proxies and cache nodes run by the control plane: they register, take
//! the cluster config and membership from its watch, follow config
//! changes, drains and purges, and with the whole control plane down
//! restart from their saved state and keep serving.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;

struct Fleet {
    g: ControlGroup,
    origin: SocketAddr,
    proxy: SocketAddr,
    proxy_admin: SocketAddr,
    cache_admins: Vec<SocketAddr>,
    processes: Vec<(String, Running)>,
    _origin: Running,
}

fn cluster_yaml(origin: SocketAddr, hosts: &str) -> String {
    format!(
        "kind: cluster\nsites:\n  - name: s\n    hosts: [{hosts}]\n    origin: {{ addresses: ['{origin}'] }}\n\
         health: {{ interval: 100ms, timeout: 50ms, rise: 1, fall: 2 }}\n"
    )
}

impl Fleet {
    fn control_section(&self, name: &str) -> String {
        let servers: Vec<String> = self.g.addrs.iter().map(|a| format!("'{a}'")).collect();
        format!(
            "control:\n  servers: [{}]\n  token_file: write.token\n  state_file: state/{name}.json\n",
            servers.join(", ")
        )
    }

    fn file(&self, name: &str) -> String {
        self.g.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn start(&mut self, name: &str) {
        let kind = if name.starts_with('p') {
            "proxy"
        } else {
            "cache"
        };
        let process = spawn(&[kind, &self.file(&format!("{name}.yaml"))]);
        self.processes.retain(|(n, _)| n != name);
        self.processes.push((name.to_string(), process));
    }

    fn stop(&mut self, name: &str) {
        self.processes.retain(|(n, _)| n != name);
    }

    /// Waits until every running part answers `/readyz`.
    async fn ready(&mut self) {
        for (name, process) in &mut self.processes {
            let admin = match name.as_str() {
                "c1" => self.cache_admins[0],
                "c2" => self.cache_admins[1],
                _ => self.proxy_admin,
            };
            wait_ready(&[admin], process).await;
        }
    }
}

async fn fleet() -> Fleet {
    let g = ControlGroup::start(3).await;
    let p = free_ports(7);
    let a = |i: usize| -> SocketAddr { ([127, 0, 0, 1], p[i]).into() };
    let origin = a(0);
    let d = g.dir.path().to_path_buf();
    std::fs::write(
        d.join("origin.yaml"),
        format!("kind: origin\nlisten: '{origin}'\nobjects:\n  - {{ prefix: /o/, count: 1000, size: 4KiB }}\n"),
    )
    .unwrap();
    let mut origin_process = spawn(&["origin", d.join("origin.yaml").to_str().unwrap()]);
    wait_origin(origin, &mut origin_process).await;
    std::fs::write(d.join("cluster.yaml"), cluster_yaml(origin, "localhost")).unwrap();
    let out = g.ctl(&["apply", "-f", d.join("cluster.yaml").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut f = Fleet {
        g,
        origin,
        proxy: a(1),
        proxy_admin: a(2),
        cache_admins: vec![a(4), a(6)],
        processes: Vec::new(),
        _origin: origin_process,
    };
    for (i, name) in ["c1", "c2"].iter().enumerate() {
        let yaml = format!(
            "kind: cache\nid: {name}\nlisten: '{}'\nadmin_listen: '{}'\n{}",
            a(3 + 2 * i),
            a(4 + 2 * i),
            f.control_section(name)
        );
        std::fs::write(d.join(format!("{name}.yaml")), yaml).unwrap();
        f.start(name);
    }
    let yaml = format!(
        "kind: proxy\nid: p1\nlisten: '{}'\nadmin_listen: '{}'\n{}",
        f.proxy,
        f.proxy_admin,
        f.control_section("p1")
    );
    std::fs::write(d.join("p1.yaml"), yaml).unwrap();
    f.start("p1");
    f.ready().await;
    f
}

/// Polls the proxy's `/status` until `check` accepts it.
async fn wait_status(f: &Fleet, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = get(f.proxy_admin, "localhost", "/status", &[]).await {
            let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if check(&s) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {s}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node_ids(s: &serde_json::Value) -> Vec<String> {
    s["ring"]["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_register_follow_changes_drains_and_purges() {
    let f = fleet().await;
    wait_status(&f, "both cache nodes registered", |s| {
        node_ids(s) == ["c1", "c2"]
    })
    .await;
    let out = f.g.ctl(&["--json", "members"]);
    let members: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2", "p1"]);

    let r = get(f.proxy, "localhost", "/o/1", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("cache-status").contains("fwd=uri-miss"),
        "{}",
        r.header("cache-status")
    );

    // A config change: a second host. Proxy and cache nodes both follow.
    let unknown = get(f.proxy, "alias.localhost", "/o/1", &[]).await.unwrap();
    assert_eq!(unknown.status, 404);
    let file = f.file("cluster2.yaml");
    std::fs::write(&file, cluster_yaml(f.origin, "localhost, alias.localhost")).unwrap();
    assert!(f.g.ctl(&["apply", "-f", &file]).status.success());
    let replies =
        poll_until_host(f.proxy, "alias.localhost", "/o/2", &[], |r| r.status == 200).await;
    assert_eq!(replies.last().unwrap().status, 200);

    // Draining c1: the proxy takes it off the ring.
    assert!(f.g.ctl(&["drain", "c1"]).status.success());
    wait_status(&f, "c1 drained", |s| node_ids(s) == ["c2"]).await;
    let r = get(f.proxy, "localhost", "/o/3", &[]).await.unwrap();
    assert_eq!(r.cache_node(), "fanout-c2");

    // A purge through the control plane reaches the cache node.
    let r = get(f.proxy, "localhost", "/o/3", &[]).await.unwrap();
    assert!(
        r.header("cache-status").contains("hit"),
        "{}",
        r.header("cache-status")
    );
    assert!(f
        .g
        .ctl(&["purge", "--url", "localhost", "/o/3"])
        .status
        .success());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = get(f.proxy, "localhost", "/o/3", &[]).await.unwrap();
        if r.header("cache-status").contains("fwd=uri-miss") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "purge never applied: {}",
            r.header("cache-status")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin_count(f.origin, "/o/3").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_control_plane_down_restarted_parts_serve_from_saved_state() {
    let mut f = fleet().await;
    wait_status(&f, "both cache nodes registered", |s| {
        node_ids(s) == ["c1", "c2"]
    })
    .await;
    let r = get(f.proxy, "localhost", "/o/10", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    for i in 0..3 {
        f.g.kill(i);
    }
    for name in ["c1", "c2", "p1"] {
        f.stop(name);
    }
    for name in ["c1", "c2", "p1"] {
        f.start(name);
    }
    f.ready().await;
    wait_status(&f, "ring from the saved state", |s| {
        node_ids(s) == ["c1", "c2"]
    })
    .await;
    // Cached after the restart, and uncached: both answered.
    for path in ["/o/10", "/o/10", "/o/11"] {
        let r = get(f.proxy, "localhost", path, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
    let r = get(f.proxy, "localhost", "/o/10", &[]).await.unwrap();
    assert!(
        r.header("cache-status").contains("hit"),
        "{}",
        r.header("cache-status")
    );
}

fn signal(process: &Running, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_issued_while_a_cache_node_is_stopped_reaches_it_when_it_resumes() {
    let f = fleet().await;
    wait_status(&f, "both cache nodes registered", |s| {
        node_ids(s) == ["c1", "c2"]
    })
    .await;
    // All traffic on c1, so the object's copy is there.
    assert!(f.g.ctl(&["drain", "c2"]).status.success());
    wait_status(&f, "c2 drained", |s| node_ids(s) == ["c1"]).await;
    get(f.proxy, "localhost", "/o/5", &[]).await.unwrap();
    let r = get(f.proxy, "localhost", "/o/5", &[]).await.unwrap();
    assert!(
        r.header("cache-status").starts_with("fanout-p1; hit"),
        "the proxy's hot tier keeps it too: {}",
        r.header("cache-status")
    );

    // c1 stops (SIGSTOP: it keeps its memory but does nothing), the purge
    // is committed without it, and it resumes.
    let c1 = &f.processes.iter().find(|(n, _)| n == "c1").unwrap().1;
    signal(c1, "-STOP");
    // `--wait 0s`: back once committed. (Waiting on c1 would let the
    // proxy's probes mark it down meanwhile, and send the next request to
    // the origin.)
    let out =
        f.g.ctl(&["purge", "--url", "localhost", "/o/5", "--wait", "0s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The proxy applied the purge at once; while c1 is behind, what c1
    // still answers must not be kept in the hot tier again. This request
    // waits for c1, which resumes with it and the purge both pending.
    let proxy = f.proxy;
    let pending = tokio::spawn(async move { get(proxy, "localhost", "/o/5", &[]).await });
    signal(c1, "-CONT");
    let mut reply = pending.await.unwrap().unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut statuses = Vec::new();
    loop {
        let status = reply.header("cache-status").to_string();
        if status.starts_with("fanout-c1; fwd=uri-miss") {
            break;
        }
        statuses.push(status);
        assert!(
            Instant::now() < deadline,
            "the purge never reached c1: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        reply = get(f.proxy, "localhost", "/o/5", &[]).await.unwrap();
    }
    // Until c1 refilled it, nothing came from the hot tier.
    assert!(
        statuses.iter().all(|s| !s.starts_with("fanout-p1; hit")),
        "the hot tier served a copy from before the purge: {statuses:?}"
    );
    assert_eq!(origin_count(f.origin, "/o/5").await, 2);

    // A purge that a stopped part cannot acknowledge: ctl says which, and
    // fails.
    signal(c1, "-STOP");
    let out =
        f.g.ctl(&["purge", "--url", "localhost", "/o/6", "--wait", "300ms"]);
    signal(c1, "-CONT");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("committed, but after 300ms not yet applied by c1;"),
        "{stderr}"
    );

    // ctl status lists the agents and what they have applied.
    let out = f.g.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for agent in ["c1", "c2", "p1"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(agent) && l.contains(" r")),
            "{agent} missing:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_started_before_the_first_config_waits_for_it() {
    let g = ControlGroup::start(3).await;
    let p = free_ports(3);
    let a = |i: usize| -> SocketAddr { ([127, 0, 0, 1], p[i]).into() };
    let (origin, listen, admin) = (a(0), a(1), a(2));
    let d = g.dir.path().to_path_buf();
    std::fs::write(
        d.join("origin.yaml"),
        format!("kind: origin\nlisten: '{origin}'\nobjects:\n  - {{ prefix: /o/, count: 10, size: 1KiB }}\n"),
    )
    .unwrap();
    let mut origin_process = spawn(&["origin", d.join("origin.yaml").to_str().unwrap()]);
    wait_origin(origin, &mut origin_process).await;
    let servers: Vec<String> = g.addrs.iter().map(|a| format!("'{a}'")).collect();
    std::fs::write(
        d.join("c1.yaml"),
        format!(
            "kind: cache\nid: c1\nlisten: '{listen}'\nadmin_listen: '{admin}'\n\
             control:\n  servers: [{}]\n  token_file: write.token\n  state_file: state/c1.json\n",
            servers.join(", ")
        ),
    )
    .unwrap();
    // The node asks a control plane that has no cluster config yet, as a
    // part started a moment before (or a follower a heartbeat behind) the
    // first commit sees. The pause lets it ask first; should it ask later
    // on a slow machine, the test still passes, it just proves less.
    let mut node = spawn(&["cache", d.join("c1.yaml").to_str().unwrap()]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(d.join("cluster.yaml"), cluster_yaml(origin, "localhost")).unwrap();
    let out = g.ctl(&["apply", "-f", d.join("cluster.yaml").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_ready(&[admin], &mut node).await;
    let r = get(listen, "localhost", "/o/1", &[]).await.unwrap();
    assert_eq!(r.status, 200);
}

fn member_states(f: &Fleet) -> Vec<(String, String)> {
    let out = f.g.ctl(&["--json", "members"]);
    let members: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    members
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
                    (s("id"), s("state"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_node_that_stops_leaves_the_membership_and_comes_back_when_restarted() {
    let mut f = fleet().await;
    wait_status(&f, "both cache nodes registered", |s| {
        node_ids(s) == ["c1", "c2"]
    })
    .await;
    // A graceful stop (a scale-down, a rolling restart): the node says so
    // before it closes its listener.
    let at = f.processes.iter().position(|(n, _)| n == "c1").unwrap();
    let (_, mut c1) = f.processes.remove(at);
    signal(&c1, "-TERM");
    let deadline = Instant::now() + DEADLINE;
    while c1.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "c1 did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let states = member_states(&f);
    assert!(
        states.contains(&("c1".into(), "left".into())),
        "the stopped node is recorded as left: {states:?}"
    );
    wait_status(&f, "c1 off the ring", |s| node_ids(s) == ["c2"]).await;
    let r = get(f.proxy, "localhost", "/o/20", &[]).await.unwrap();
    assert_eq!(r.cache_node(), "fanout-c2");

    // Started again, it registers and is active: unlike a drain, leaving
    // is not an operator's decision to keep.
    f.start("c1");
    f.ready().await;
    wait_status(&f, "c1 back on the ring", |s| node_ids(s) == ["c1", "c2"]).await;
    assert!(member_states(&f).contains(&("c1".into(), "active".into())));

    // A drained node that stops stays drained when it comes back.
    assert!(f.g.ctl(&["drain", "c1"]).status.success());
    let at = f.processes.iter().position(|(n, _)| n == "c1").unwrap();
    let (_, c1) = f.processes.remove(at);
    signal(&c1, "-TERM");
    drop(c1);
    f.start("c1");
    f.ready().await;
    assert!(
        member_states(&f).contains(&("c1".into(), "draining".into())),
        "{:?}",
        member_states(&f)
    );
}
