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
                  Start here:\n  fanout up --demo        a local cluster, a short simulated live audience, a summary\n  \
                  fanout up               the same cluster, running until Ctrl-C\n  \
                  fanout check FILE...    validate configuration files\n\n\
                  Every file names its kind on its first line (kind: cluster|proxy|cache|origin|up);\n\
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
        /// Also run a short simulated live audience against the proxies, print
        /// a summary (requests, hit ratio, origin requests, latency) and exit:
        /// 0 if every request succeeded, 1 otherwise.
        #[arg(long)]
        demo: bool,
    },
    /// Run one proxy from a `kind: proxy` file.
    Proxy { file: PathBuf },
    /// Run one cache node from a `kind: cache` file.
    Cache { file: PathBuf },
    /// Run the synthetic origin (HLS live and VOD, static objects) from a
    /// `kind: origin` file. Request counts are at /_origin/stats.
    Origin { file: PathBuf },
    /// Load tools that work against any HTTP target (Fanout, NGINX, Varnish).
    Loadtest {
        #[command(subcommand)]
        tool: LoadtestTool,
    },
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
