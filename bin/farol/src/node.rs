//! `farol node`: runs one validator or full node from a TOML configuration, or from a chain
//! file and flags alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use farol_node::config::{ChainFile, CoinShare, ConfigError, KeysFile};
use farol_node::{Node, NodeConfig};

/// Arguments of `farol node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The configuration file (TOML; `farol devnet` writes one per validator and full node).
    /// Without it, `--chain` and `--data-dir` are needed and every other setting is at its
    /// default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The chain's genesis and validator set (`chain.toml`, from `farol chain new`); replaces
    /// the configuration's `[genesis]` and `[[committee]]`.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// This validator's keys (a keys file from `farol chain new`, or from `farol chain key`
    /// with `--coin`); replaces the configuration's `[validator]`. A node without keys is a
    /// full node.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// This validator's position and coin share (`validator-<i>.coin.toml`, which `farol
    /// chain new --member` deals to a validator that brought its own keys), with `--keys`.
    #[arg(long, value_name = "FILE")]
    coin: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A peer's HTTP JSON-RPC address to sync blocks from (repeat for more): an IP address or
    /// a host's name (resolved at the start) and a port; replaces `sync.peers`.
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = farol_node::config::peer_shape)]
    peers: Vec<String>,
    /// The UDP address the validator network listens on (`network.listen`), where it is not
    /// the committee's address for this validator (behind 1:1 NAT: `0.0.0.0:PORT`).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// Overrides `rpc.http` (`none` disables it).
    #[arg(long)]
    http: Option<String>,
    /// Overrides `rpc.ws` (`none` disables it; the HTTP listener also accepts WebSocket
    /// upgrades).
    #[arg(long)]
    ws: Option<String>,
    /// Overrides `log` (a `tracing` filter such as `info` or `farol_node=debug`); without it,
    /// `RUST_LOG` does.
    #[arg(long)]
    log: Option<String>,
    /// Logs as JSON lines instead of text (`log_json` in the configuration).
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
    let filter = tracing_subscriber::EnvFilter::try_new(filter).with_context(|| {
        format!("log (--log, RUST_LOG or the configuration's `log`): filter {filter:?}")
    })?;
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

/// A warning when the file `p`, which holds a validator's secrets, can be read by others
/// than its owner: as ssh does for its keys, though without refusing.
fn readable_by_others(p: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p).map(|m| m.permissions().mode()).unwrap_or(0);
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} (mode {:o}) can be read by others: it holds this validator's secrets (chmod 600)",
            p.display(),
            mode & 0o777
        )
    })
}

/// The node's configuration: the file's (or defaults), with the flags' over it, checked.
/// Also returns the warnings to log.
pub(crate) fn configure(args: &NodeArgs) -> anyhow::Result<(NodeConfig, Vec<String>)> {
    let chain = args.chain.as_deref().map(ChainFile::load).transpose()?;
    let mut warnings = Vec::new();
    let mut cfg = match (&args.config, chain.clone()) {
        (Some(path), _) => {
            let mut c = NodeConfig::read(path)?;
            // A configuration holding validator keys is as secret as a keys file (before
            // stop 49 only `--keys` and `--coin` files were looked at).
            if c.validator.is_some() {
                warnings.extend(readable_by_others(path));
            }
            c.data_dir = match &args.data_dir {
                Some(d) => d.clone(),
                None => NodeConfig::data_dir_of(path, &c.data_dir)?,
            };
            c
        }
        (None, Some(chain)) => {
            let Some(d) = &args.data_dir else {
                bail!("--data-dir: needed without --config (where the chain is kept)");
            };
            NodeConfig::with_defaults(d.clone(), chain)
        }
        (None, None) => bail!("--config FILE, or --chain FILE with --data-dir DIR, is needed"),
    };
    if let Some(chain) = chain {
        cfg.genesis = chain.genesis;
        cfg.committee = chain.committee;
    }
    if args.coin.is_some() && args.keys.is_none() {
        bail!("--coin: a coin share goes with --keys (this validator's own keys)");
    }
    if let Some(path) = &args.keys {
        let share = args.coin.as_deref().map(CoinShare::load).transpose()?;
        let keys = KeysFile::load(path)?.resolve(share, &cfg.committee).map_err(|e| {
            match (&e, &args.coin) {
                (ConfigError::Invalid { field, .. }, Some(c)) if field.starts_with("coin.") => {
                    anyhow::anyhow!("--coin {}: {e}", c.display())
                }
                _ => anyhow::anyhow!("--keys {}: {e}", path.display()),
            }
        })?;
        cfg.validator = Some(keys);
        for p in std::iter::once(path).chain(&args.coin) {
            warnings.extend(readable_by_others(p));
        }
    }
    if !args.peers.is_empty() {
        // Resolved here, not by the flag's parser: a name that does not resolve is not a
        // malformed flag (clap would exit with 2), and exits with 1 (`run`).
        cfg.sync.peers = args
            .peers
            .iter()
            .map(|p| farol_node::config::resolve_peer(p).map_err(|e| anyhow::anyhow!("--peer {e}")))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(l) = args.listen {
        if cfg.validator.is_none() {
            bail!("--listen: a full node (no validator keys) has no validator network");
        }
        cfg.network.listen = Some(l);
    }
    if let Some(h) = &args.http {
        cfg.rpc.http = listen("http", h)?;
    }
    if let Some(w) = &args.ws {
        cfg.rpc.ws = listen("ws", w)?;
    }
    // `--log`, else `RUST_LOG` (as most Rust programs read it; since stop 52), else the
    // configuration's.
    match (&args.log, std::env::var("RUST_LOG")) {
        (Some(l), _) => cfg.log = l.clone(),
        (None, Ok(env)) if !env.trim().is_empty() => cfg.log = env,
        _ => {}
    }
    if args.no_pipeline {
        cfg.pipeline.pipelined = false;
    }
    // An error about what a file given by flag holds names that file.
    cfg.validate().map_err(|e| {
        let field = match &e {
            ConfigError::Invalid { field, .. } => field.as_str(),
            _ => "",
        };
        match (&args.keys, &args.chain) {
            (Some(k), _) if field == "validator.coin_secret" => match &args.coin {
                Some(c) => anyhow::anyhow!("--coin {}: {e}", c.display()),
                None => anyhow::anyhow!(
                    "--keys {}: {e} (keys made by `farol chain key` take their coin share \
                     from --coin FILE)",
                    k.display()
                ),
            },
            (Some(k), _) if field.starts_with("validator.") => {
                anyhow::anyhow!("--keys {}: {e}", k.display())
            }
            (_, Some(c)) if field.starts_with("genesis") || field.starts_with("committee") => {
                anyhow::anyhow!("--chain {}: {e}", c.display())
            }
            _ => e.into(),
        }
    })?;
    Ok((cfg, warnings))
}

/// The exit status of a configuration `farol node` refuses (sysexits' `EX_CONFIG`): starting
/// again does not help, so a supervisor should not (systemd: `RestartPreventExitStatus=78`).
pub(crate) const EXIT_CONFIG: u8 = 78;
/// The exit status of a node that failed while running: its pipeline or consensus stopped
/// on an error, which the log names (a disk that failed, or a chain that left the certified
/// one, which no restart mends).
pub(crate) const EXIT_FAILED: u8 = 3;

/// An error with the exit status `farol` ends with (1 for any other error).
#[derive(Debug)]
pub(crate) struct Exit(pub u8, pub anyhow::Error);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.1, f)
    }
}

impl std::error::Error for Exit {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.source()
    }
}

/// Runs `farol node` until SIGINT or SIGTERM. A second signal while it stops exits at once.
/// Exit status: 0 when stopped by a signal, [`EXIT_CONFIG`] for a configuration refused,
/// [`EXIT_FAILED`] when the node failed while running, 1 otherwise (a start that failed on
/// its data directory or a port, say, which a restart may get past).
pub(crate) fn run(args: NodeArgs) -> anyhow::Result<()> {
    let (cfg, warnings) = configure(&args).map_err(|e| {
        // A peer's name that did not resolve is no configuration error: the network or the
        // peer may come up later, and a supervisor should try again.
        let unresolved = format!("{e:#}").contains(farol_node::config::RESOLVE_FAILED);
        Exit(if unresolved { 1 } else { EXIT_CONFIG }, e)
    })?;
    init_logs(&cfg.log, args.log_json || cfg.log_json).map_err(|e| Exit(EXIT_CONFIG, e))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("farol-node")
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Caught from before the start, on a task of their own: the start runs for long
        // stretches without yielding (opening the store, reading a long block log), and a
        // signal then exits at once, said in the log (the default action did the same,
        // silently; what was written is kept as after a crash). Later signals come here.
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let started = Arc::new(AtomicBool::new(false));
        let (signals, mut signalled) = tokio::sync::mpsc::unbounded_channel();
        {
            let started = started.clone();
            tokio::spawn(async move {
                loop {
                    let which = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    };
                    if !started.load(Ordering::SeqCst) {
                        tracing::warn!("{which} while starting: exiting (what was written is kept, as after a crash)");
                        std::process::exit(0);
                    }
                    if signals.send(which).is_err() {
                        return;
                    }
                }
            });
        }
        let node = match Node::start(cfg).await {
            Ok(node) => node,
            Err(e @ farol_node::NodeError::Config { .. }) => {
                return Err(Exit(EXIT_CONFIG, e.into()).into())
            }
            Err(e) => return Err(e.into()),
        };
        started.store(true, Ordering::SeqCst);
        let mut check = tokio::time::interval(Duration::from_millis(500));
        let failed = loop {
            tokio::select! {
                _ = signalled.recv() => break false,
                _ = check.tick() => if node.failed() { break true },
            }
        };
        tracing::info!("stopping (a second signal exits at once)");
        let stopped = tokio::select! {
            r = node.stop_before_exit() => r,
            Some(which) = signalled.recv() => {
                // Dropping the stop would still wait for the pipeline's thread at the
                // runtime's end: the process ends here instead, as a kill would, with the
                // status of a node that failed if it had (not 0, which a supervisor takes
                // for a stop it asked for).
                tracing::warn!("{which}: exiting without waiting for the node to stop (what was written is kept, as after a crash)");
                std::process::exit(if failed { i32::from(EXIT_FAILED) } else { 0 });
            }
        };
        match (failed, stopped) {
            (_, Err(e)) => Err(Exit(EXIT_FAILED, anyhow::anyhow!("the node stopped on an error: {e}")).into()),
            (true, Ok(())) => Err(Exit(EXIT_FAILED, anyhow::anyhow!("the node's pipeline or consensus stopped")).into()),
            (false, Ok(())) => Ok(()),
        }
    });
    // Work left on the blocking pool (a block trace, a snapshot being encoded) is not waited
    // for past a few seconds: the node has stopped, and dropping the runtime would wait for
    // it without limit, deaf to signals.
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}
