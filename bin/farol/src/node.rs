//! `farol node`: runs one validator from a TOML configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use farol_node::{Node, NodeConfig};

/// Arguments of `farol node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The configuration file (TOML; `farol devnet` writes one per validator and full node).
    #[arg(long)]
    config: PathBuf,
    /// Overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides `rpc.http` (`none` disables it).
    #[arg(long)]
    http: Option<String>,
    /// Overrides `rpc.ws` (`none` disables it; the HTTP listener also accepts WebSocket
    /// upgrades).
    #[arg(long)]
    ws: Option<String>,
    /// Overrides `log` (a `tracing` filter such as `info` or `farol_node=debug`).
    #[arg(long)]
    log: Option<String>,
    /// Logs as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Runs the block stages one block at a time (the benchmark's baseline).
    #[arg(long)]
    no_pipeline: bool,
}

fn listen(flag: &str, v: &str) -> anyhow::Result<Option<SocketAddr>> {
    if v == "none" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .with_context(|| format!("--{flag}: {v:?} is not an address like 127.0.0.1:8545"))
}

/// Sets up logging to stderr, in colour only when stderr is a terminal (a devnet's
/// validators log to files, which before stop 33 got the terminal's escape codes).
pub(crate) fn init_logs(filter: &str, json: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("log filter {filter:?}"))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        b.json().init();
    } else {
        b.init();
    }
    Ok(())
}

/// Runs `farol node` until SIGINT or SIGTERM.
pub(crate) fn run(args: NodeArgs) -> anyhow::Result<()> {
    let mut cfg = NodeConfig::load_as_written(&args.config)?;
    cfg.data_dir = match args.data_dir {
        Some(d) => d,
        None => NodeConfig::data_dir_of(&args.config, &cfg.data_dir)?,
    };
    if let Some(h) = &args.http {
        cfg.rpc.http = listen("http", h)?;
    }
    if let Some(w) = &args.ws {
        cfg.rpc.ws = listen("ws", w)?;
    }
    if let Some(l) = args.log {
        cfg.log = l;
    }
    if args.no_pipeline {
        cfg.pipeline.pipelined = false;
    }
    init_logs(&cfg.log, args.log_json)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("farol-node")
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let node = Node::start(cfg).await?;
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut check = tokio::time::interval(Duration::from_millis(500));
        let failed = loop {
            tokio::select! {
                _ = int.recv() => break false,
                _ = term.recv() => break false,
                _ = check.tick() => if node.failed() { break true },
            }
        };
        tracing::info!("stopping");
        let stopped = node.stop().await;
        match (failed, stopped) {
            (_, Err(e)) => anyhow::bail!("the node stopped on an error: {e}"),
            (true, Ok(())) => anyhow::bail!("the node's pipeline or consensus stopped"),
            (false, Ok(())) => Ok(()),
        }
    })
}
