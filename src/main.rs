//! The `fanout` binary: parses the command line, sets up logging and
//! metrics, loads configuration and calls a component's `run`.
//!
//! Exit status: 0 on success, 1 when something fails at run time, 2 when a
//! configuration file or the command line is invalid (nothing is started).

mod cli;
mod control_bench;
mod ctl;
mod loadtest;
mod span_queue;
mod telemetry;
mod up;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use fanout_config::ConfigErrors;
use tokio_util::sync::CancellationToken;

use cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for invalid configuration, as `fanout check` and every
/// component report it.
pub(crate) const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format, cli.log.as_deref());

    if let Command::Check { files } = &cli.command {
        return check(files);
    }
    raise_open_file_limit();

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.workers {
        runtime.worker_threads(n.max(1));
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fanout: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli.command))
}

async fn async_main(command: Command) -> ExitCode {
    let settings = telemetry_settings(&command);
    let metrics = match telemetry::init_metrics(&settings) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fanout: cannot set up metrics: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let tracer = match telemetry::init_tracing(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fanout: cannot set up trace export: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = run_command(command).await;
    if let Some(provider) = tracer {
        telemetry::flush_traces(provider).await;
    }
    telemetry::flush_metrics(metrics).await;
    code
}

/// The `telemetry:` section of the file a command runs, read ahead of the
/// command so that tracing is set up before any part starts. A file that
/// does not load gives the defaults here; the command reports its errors.
fn telemetry_settings(command: &Command) -> fanout_config::Telemetry {
    let loaded = match command {
        Command::Proxy { file } => fanout_config::load_proxy(file).map(|c| c.telemetry),
        Command::Cache { file } => fanout_config::load_cache_node(file).map(|c| c.telemetry),
        Command::Up {
            file: Some(file), ..
        } => fanout_config::load_up(file).map(|c| c.telemetry.clone()),
        _ => return fanout_config::Telemetry::default(),
    };
    loaded.unwrap_or_default()
}

async fn run_command(command: Command) -> ExitCode {
    let shutdown = shutdown_on_signal();
    let result = match command {
        Command::Up {
            file,
            demo,
            report_dir,
        } => {
            let demo = demo.then_some(up::DemoArgs { report_dir });
            return up::run(file.as_deref(), demo, shutdown).await;
        }
        Command::Proxy { file } => match fanout_config::load_proxy(&file) {
            Ok(c) => fanout_proxy::run(c, Some(file.clone()), shutdown, None)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => return config_failed(&e),
        },
        Command::Cache { file } => match fanout_config::load_cache_node(&file) {
            Ok(c) => fanout_cache_node::run(c, shutdown, None)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => return config_failed(&e),
        },
        Command::Origin { file } => match fanout_config::load_origin(&file) {
            Ok(c) => fanout_loadtest::origin::run(c, shutdown)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => return config_failed(&e),
        },
        Command::Control { file } => match fanout_config::load_control(&file) {
            Ok(c) => fanout_control_plane::run(c, shutdown)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => return config_failed(&e),
        },
        Command::Ctl(args) => return ctl::run(args).await,
        Command::Loadtest { tool } => return loadtest::run(tool, shutdown).await,
        Command::Probe { url } => return probe(&url).await,
        Command::Check { .. } => unreachable!("handled before the runtime starts"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(url: &str) -> ExitCode {
    let Ok(uri) = url.parse::<http::Uri>() else {
        eprintln!("fanout probe: {url:?} is not a URL");
        return ExitCode::from(EXIT_CONFIG);
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    match tokio::time::timeout(std::time::Duration::from_secs(2), client.get(uri)).await {
        Ok(Ok(r)) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(Ok(r)) => {
            eprintln!("fanout probe: {url}: {}", r.status());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("fanout probe: {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("fanout probe: {url}: no answer within 2 s");
            ExitCode::FAILURE
        }
    }
}

fn check(files: &[std::path::PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match fanout_config::load_any(Path::new(file)) {
            Ok(c) => println!("{}: ok (kind: {})", file.display(), c.kind()),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

/// Every client and upstream connection is a file descriptor, and a flash
/// crowd opens thousands at once: a soft limit of 1024 (a common default)
/// would turn one into refused connections. Raise it to the hard limit.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 16_384 => tracing::warn!(
            limit = n,
            "open-file limit is low; a flash crowd may exhaust it"
        ),
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

pub(crate) fn config_failed(errors: &ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    eprintln!("fanout: invalid configuration; nothing was started");
    ExitCode::from(EXIT_CONFIG)
}

/// A token cancelled on the first Ctrl-C or SIGTERM. A second signal ends
/// the process at once, for when a drain is taking too long.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down; send the signal again to exit at once");
        t.cancel();
        wait_for_signal().await;
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
