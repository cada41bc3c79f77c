//! The binary's contract with a user at the command line: invalid
//! configuration is refused with file:line:column and exit status 2, and
//! every example file stays valid.

mod support;

use support::*;

#[test]
fn up_with_a_bad_file_exits_2_naming_file_line_and_column() {
    let dir = temp_dir();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "kind: up\ncluster:\n  sites:\n    - name: live\n      hosts: [localhost]\n      origin: { addresses: [] }\n\
         cache_nodes:\n  - { id: c1, listen: '127.0.0.1:1' }\nproxies:\n  - { id: p1, listen: '127.0.0.1:2', colour: red }\n",
    )
    .unwrap();
    let out = run(&["up", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:10:38: proxies[0].colour: unknown field `colour`",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was started"), "{stderr}");
}

#[test]
fn up_reports_every_semantic_error_at_once() {
    let dir = temp_dir();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "kind: up\ncluster:\n  sites:\n    - name: live\n      hosts: [localhost]\n      origin: { addresses: [] }\n\
         cache_nodes:\n  - { id: c1, listen: '127.0.0.1:1' }\nproxies:\n  - { id: c1, listen: '127.0.0.1:1' }\n",
    )
    .unwrap();
    let out = run(&["up", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    for expected in [
        format!("{f}:6:28: cluster.sites[0].origin.addresses: empty origin pool"),
        format!("{f}:10:11: proxies[0].id: duplicate id c1"),
        format!(
            "{f}:10:23: proxies[0].listen: 127.0.0.1:1 is already used by cache_nodes[0].listen"
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_accepts_every_example_and_refuses_a_broken_one() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<String> = Vec::new();
    for entry in walk(&examples) {
        if entry.extension().is_some_and(|e| e == "yaml") {
            files.push(entry.to_string_lossy().into_owned());
        }
    }
    assert!(
        files.len() >= 5,
        "examples/ should hold one file of each kind: {files:?}"
    );
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for kind in ["cluster", "proxy", "cache", "origin", "up", "control"] {
        assert!(
            stdout.contains(&format!("(kind: {kind})")),
            "no {kind} example checked:\n{stdout}"
        );
    }

    let dir = temp_dir();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: cluster\nsites: []\n").unwrap();
    let out = run(&["check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}:2:8: sites: no sites; allowed: at least one site with hosts and an origin\n",
            bad.display()
        )
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_port_in_use_is_reported_once_with_what_could_not_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = temp_dir();
    let (file, _cluster) = up_file(dir.path(), 1, 1, "");
    // Put the proxy on the port that is already taken.
    let yaml = std::fs::read_to_string(&file).unwrap();
    let proxy_line = yaml
        .lines()
        .find(|l| l.contains("id: proxy-1"))
        .unwrap()
        .to_string();
    let listen = proxy_line
        .split("listen: '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&file, yaml.replace(&listen, &format!("127.0.0.1:{port}"))).unwrap();
    let out = run(&["up", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("cannot listen on 127.0.0.1:{port}");
    assert!(
        stderr.contains(&format!("proxy-1 failed: proxy proxy-1: listener: {what}")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches(&what).count(),
        1,
        "the cause once, not repeated:\n{stderr}"
    );
}

#[test]
fn environment_references_fill_in_each_replica_and_a_missing_one_is_refused() {
    let dir = temp_dir();
    let file = dir.path().join("cache.yaml");
    std::fs::write(
        &file,
        "kind: cache\n# set ${NOT_NEEDED} only in comments\nid: ${FANOUT_TEST_POD}\n\
         listen: '127.0.0.1:${FANOUT_TEST_PORT:-8081}'\ncapacity: 1MiB\ncluster: cluster.yaml\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cluster.yaml"),
        "kind: cluster\nsites: [{ name: s, hosts: [a], origin: { addresses: ['127.0.0.1:9'] } }]\n",
    )
    .unwrap();
    let check = |env: &[(&str, &str)]| {
        std::process::Command::new(BIN)
            .args(["check", file.to_str().unwrap()])
            .env_remove("FANOUT_TEST_POD")
            .env_remove("FANOUT_TEST_PORT")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = check(&[("FANOUT_TEST_POD", "cache-7")]);
    assert!(out.status.success(), "{out:?}");
    // The value lands where the reference stood: a port that is not one
    // is refused as the file's own value would be.
    let out = check(&[
        ("FANOUT_TEST_POD", "cache-7"),
        ("FANOUT_TEST_PORT", "99999"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:5: environment variable FANOUT_TEST_POD is not set",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn the_swarm_stack_files_check_with_the_environment_each_task_gets() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/swarm/config");
    let files: Vec<String> = ["cache", "proxy", "control", "cluster", "origin"]
        .iter()
        .map(|k| dir.join(format!("{k}.yaml")).to_string_lossy().into_owned())
        .collect();
    let out = std::process::Command::new(BIN)
        .arg("check")
        .args(&files)
        // What fanout-stack.yml sets from Swarm's templates.
        .env("FANOUT_SLOT", "4")
        .env("FANOUT_TASK", "fanout_cache.4.x2mc1uhnt3f4bbb9y1ds7kw2u")
        .env("FANOUT_CONTROL_ID", "2")
        .env("FANOUT_PROXY_ID", "proxy-2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
