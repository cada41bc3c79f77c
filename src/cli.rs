//! The command line: what each subcommand does, in the words `--help` shows.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "fanout",
    version,
    about = "Edge proxy and CDN cache cluster for live streams",
    long_about = "Fanout puts a cluster of stateless proxies and cache nodes in front of an HTTP origin.\n\
                  Proxies route each request by consistent hashing to the cache node that owns its key;\n\
                  cache nodes answer from memory and send one request per object to the origin.\n\n\
                  Start here:\n  fanout up --demo        a local cluster, a 20 s load test, its summary and HTML report\n  \
                  fanout up               the same cluster, running until Ctrl-C\n  \
                  fanout check FILE...    validate configuration files\n\n\
                  Every file names its kind on its first line (kind: cluster|proxy|cache|origin|up|control|scenario);\n\
                  see examples/ for one of each.",
    after_help = "Exit status: 0 success, 1 runtime failure, 2 invalid configuration or arguments."
)]
pub struct Cli {
    /// Log format: `human` (default) or `json` (one object per line, for log shippers).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. `info` or `fanout_proxy=debug,info`. Overrides RUST_LOG.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,

    /// Worker threads for the async runtime (default: one per core). Pin with
    /// `taskset` for fair benchmarks on small machines.
    #[arg(long, global = true, value_name = "N")]
    pub workers: Option<usize>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole local cluster (origin, cache nodes, proxies) in one process.
    ///
    /// Without FILE it runs the built-in quickstart (examples/quickstart.yaml):
    /// a synthetic origin with a live HLS stream, 3 cache nodes and 2 proxies on
    /// 127.0.0.1. It prints URLs to try and runs until Ctrl-C.
    Up {
        /// A `kind: up` file; default: the built-in quickstart.
        file: Option<PathBuf>,
        /// Also run a short load test against the proxies (the file's
        /// demo.scenario, or the built-in loadtest/scenarios/quickstart.yaml:
        /// 20 s of live, VOD and static viewers), print its summary, write
        /// report.json and report.html with charts to --report-dir, and exit:
        /// 0 if every request succeeded, 1 otherwise.
        #[arg(long)]
        demo: bool,
        /// Where --demo writes its reports.
        #[arg(long, value_name = "DIR", default_value = "fanout-report")]
        report_dir: PathBuf,
    },
    /// Run one proxy from a `kind: proxy` file.
    Proxy { file: PathBuf },
    /// Run one cache node from a `kind: cache` file.
    Cache { file: PathBuf },
    /// Run the synthetic origin (HLS live and VOD, static objects) from a
    /// `kind: origin` file. Request counts are at /_origin/stats.
    Origin { file: PathBuf },
    /// Run one control-plane node (a member of the Raft group that owns the
    /// cluster config, membership and purges) from a `kind: control` file.
    ///
    /// Start every node of a new group with the same `peers` list; they form
    /// one group and elect a leader. The Raft log, vote and snapshots live in
    /// `data_dir` and survive restarts.
    Control { file: PathBuf },
    /// Operate a running control plane: apply and inspect the cluster config,
    /// members and purges.
    ///
    /// Examples:
    ///   fanout ctl --server 127.0.0.1:7001 --token-file write.token apply -f cluster.yaml
    ///   fanout ctl status
    ///   fanout ctl purge --prefix live.example.com /live/main/
    #[command(verbatim_doc_comment)]
    Ctl(CtlArgs),
    /// Load tools that work against any HTTP target (Fanout, NGINX, Varnish).
    Loadtest {
        #[command(subcommand)]
        tool: LoadtestTool,
    },
    /// Exit 0 if URL answers 2xx within 2 s, 1 otherwise: a health check for
    /// container images that have no curl (Docker HEALTHCHECK, systemd).
    ///
    /// Example: fanout probe http://127.0.0.1:9180/readyz
    Probe { url: String },
    /// Validate configuration files of any kind without starting anything.
    ///
    /// Prints `file:line:column: field: problem; allowed: ...` for every
    /// problem and exits 2 if any file is invalid.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum LoadtestTool {
    /// Play a `kind: scenario` file against any HTTP target: viewers arrive
    /// on an open-loop Poisson schedule through the scenario's phases, behave
    /// like live HLS players, VOD players or page assets, and fault steps run
    /// at their times. Prints progress while running, a summary at the end,
    /// and writes the JSON and HTML reports when asked.
    ///
    /// Exit status: 0 when every --fail-if threshold holds (and, with none
    /// given, when no request failed), 1 otherwise, 2 for an invalid file.
    ///
    /// Examples:
    ///   fanout loadtest run loadtest/scenarios/ipl-final.yaml --html report.html
    ///   fanout loadtest run s.yaml --target 10.0.0.5:80 --host live.example.com --fail-if 'p99_ms>200' --fail-if 'stall_ratio>0.01'
    ///   fanout loadtest run s.yaml --shard 0/2 --json a.json   # and --shard 1/2 elsewhere
    #[command(verbatim_doc_comment)]
    Run {
        /// A `kind: scenario` file (see loadtest/scenarios/).
        scenario: PathBuf,
        /// Send to these addresses instead of the file's target.addresses.
        #[arg(long, value_name = "IP:PORT")]
        target: Vec<std::net::SocketAddr>,
        /// Host header instead of the file's target.host.
        #[arg(long)]
        host: Option<String>,
        /// The synthetic origin to read counters from, instead of target.origin.
        #[arg(long, value_name = "IP:PORT")]
        origin: Option<std::net::SocketAddr>,
        /// A cache node's admin listener to read prefetch counters from,
        /// instead of target.metrics (repeat for each node).
        #[arg(long, value_name = "IP:PORT")]
        metrics: Vec<std::net::SocketAddr>,
        /// Play only arrivals i, i+n, i+2n...; merge the shards' JSON reports
        /// with `fanout loadtest merge`.
        #[arg(long, value_name = "I/N", default_value = "0/1")]
        shard: fanout_loadtest::scenario::Shard,
        /// Write the JSON report here (schema in docs/loadtest.md).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the HTML report with charts here.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Fail (exit 1) if a figure crosses a threshold, e.g. 'p99_ms>200',
        /// 'errors>0', 'stall_ratio>0.01', 'hit_ratio<0.9'. Repeatable.
        #[arg(long = "fail-if", value_name = "METRIC>VALUE")]
        fail_if: Vec<fanout_loadtest::scenario::report::Threshold>,
        /// No progress display.
        #[arg(long)]
        quiet: bool,
    },
    /// Combine the JSON reports of a sharded run into one: counters add up
    /// and histograms merge, so percentiles are the whole run's.
    ///
    /// Example: fanout loadtest merge a.json b.json --json all.json --html all.html
    Merge {
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        #[arg(long = "fail-if", value_name = "METRIC>VALUE")]
        fail_if: Vec<fanout_loadtest::scenario::report::Threshold>,
    },
    /// Start a 3-node control plane on loopback (real processes, fsync on),
    /// then measure config-write commit latency, the time until WATCHERS
    /// agents see each write, and the failover time after killing the leader.
    /// A write+fsync loop on the same disk is the reference.
    ControlPlane {
        /// Config writes to time.
        #[arg(long, default_value_t = 200)]
        writes: usize,
        /// Agents long-polling the watch.
        #[arg(long, default_value_t = 50)]
        agents: usize,
        /// Where the nodes keep their data (default: a temp dir), to measure
        /// a particular disk.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// CLIENTS clients, each on a connection opened beforehand, ask for one
    /// object within SPREAD: the moment a new live segment appears.
    ///
    /// Latency runs from each client's scheduled send time to its last body
    /// byte. With --origin, also reads the synthetic origin's counter to show
    /// how many requests for the path reached it (a cache should send one).
    ///
    /// Example: fanout loadtest flash-crowd --target 127.0.0.1:8080 --path /live/main/720p/100.ts
    FlashCrowd {
        /// Address of the HTTP server under test.
        #[arg(long, value_name = "HOST:PORT")]
        target: std::net::SocketAddr,
        /// Host header to send.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// Path (and query) to request.
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Window the requests are spread over.
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        spread: std::time::Duration,
        /// Per-request limit, from its scheduled send time.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The synthetic origin behind the target, to count origin requests.
        #[arg(long, value_name = "HOST:PORT")]
        origin: Option<std::net::SocketAddr>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Control-plane servers, tried in order until one answers (repeat the
    /// flag or separate with commas).
    #[arg(
        long = "server",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        env = "FANOUT_SERVERS",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub servers: Vec<String>,
    /// File holding the bearer token (the write token for changes, the read
    /// token or the write token for reads). Or set FANOUT_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON instead of text, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this long without an answer (servers are retried).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The group: leader, term, each control node, the live config version.
    Status,
    /// Validate a `kind: cluster` file here, then commit it as the new live
    /// config version. Exit 2 if it does not validate (nothing is sent).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print the live config (or an older kept version) as YAML.
    Get {
        #[arg(long)]
        version: Option<u64>,
    },
    /// Show what applying FILE would change in the live config.
    Diff {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Make an earlier kept version live again (as a new version).
    Rollback {
        /// Version to go back to; default: the one before the live one.
        #[arg(long)]
        to: Option<u64>,
    },
    /// List registered proxies and cache nodes.
    Members,
    /// Change the control plane's own membership (joint consensus).
    Raft {
        #[command(subcommand)]
        change: RaftChange,
    },
    /// Take a member out of rotation: proxies stop sending it new keys.
    Drain { id: String },
    /// Remove a member.
    Remove { id: String },
    /// Purge cached objects on every cache node and every proxy's hot tier
    /// (in order; parts that are down apply it when they come back). Waits
    /// until every active proxy and cache node has applied it: from then on
    /// none serves the purged objects.
    Purge {
        /// One URL: HOST and PATH (with query).
        #[arg(long, num_args = 2, value_names = ["HOST", "PATH"], conflicts_with_all = ["prefix", "tag"])]
        url: Option<Vec<String>>,
        /// Every object of HOST under PREFIX.
        #[arg(long, num_args = 2, value_names = ["HOST", "PREFIX"], conflicts_with = "tag")]
        prefix: Option<Vec<String>>,
        /// Every object tagged TAG (Surrogate-Key or Cache-Tag).
        #[arg(long)]
        tag: Option<String>,
        /// Mark stale instead of removing (stale-if-error can still use it).
        #[arg(long)]
        soft: bool,
        /// How long to wait for every active proxy and cache node to apply
        /// the purge; `0s` returns once it is committed. Exit 1 if some
        /// have not applied it by then (they will, when they are back).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum RaftChange {
    /// Add a control node: start it first with a `kind: control` file whose
    /// peers list the running nodes (not itself), then add it here; it
    /// catches up as a learner and becomes a voter.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long, value_name = "HOST:PORT")]
        address: String,
    },
    /// Remove a control node from the group (it stops taking part; stop
    /// its process afterwards).
    Remove {
        #[arg(long)]
        id: u64,
    },
}
