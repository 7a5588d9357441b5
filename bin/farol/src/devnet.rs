//! `farol devnet`: a local mainnet of N validator processes on loopback, with anvil's
//! defaults so that Ethereum tools work unconfigured.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, U256};
use anyhow::{bail, Context};
use clap::Args;
use farol_node::config::{PipelineSettings, RpcConfig, SyncSettings};
use farol_node::genesis::{mnemonic_accounts, DEV_CHAIN_ID, DEV_MNEMONIC};
use farol_node::{Genesis, NodeConfig};
use serde_json::json;

use farol_node::client::{quantity, RpcClient};

/// Arguments of `farol devnet`.
#[derive(Debug, Args)]
pub(crate) struct DevnetArgs {
    /// Validator processes (default 4; a devnet kept in `--data-dir` has its own number).
    #[arg(long)]
    validators: Option<u16>,
    /// Full node processes (no consensus: they follow the block-final chain from the
    /// validators and forward transactions to them); they listen on the ports after the
    /// validators'.
    #[arg(long, default_value_t = 0)]
    full_nodes: u16,
    /// Keep the chain here (a restart with the same directory resumes it); without it a
    /// fresh temporary directory is used and removed at exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP JSON-RPC port of the first validator (validator i listens on port + 2i; default
    /// 8545, or the ports a devnet kept in `--data-dir` was given).
    #[arg(long)]
    port: Option<u16>,
    /// WebSocket JSON-RPC port of the first validator (validator i listens on port + 2i;
    /// default 8546, or as kept).
    #[arg(long)]
    ws_port: Option<u16>,
    /// Funded development accounts.
    #[arg(long, default_value_t = 10)]
    accounts: u32,
    /// Balance of each, in ether.
    #[arg(long, default_value_t = 10_000)]
    balance: u64,
    /// The mnemonic the accounts are derived from (m/44'/60'/0'/0/i).
    #[arg(long, default_value = DEV_MNEMONIC)]
    mnemonic: String,
    /// Chain id.
    #[arg(long, default_value_t = DEV_CHAIN_ID)]
    chain_id: u64,
    /// Gas limit of every block (Ethereum's by default, as anvil's `--gas-limit`; at least a
    /// transfer's 21,000).
    #[arg(long, default_value_t = farol_node::genesis::DEFAULT_GAS_LIMIT)]
    gas_limit: u64,
    /// Print a JSON summary on one line instead of the banner.
    #[arg(long)]
    json: bool,
    /// Run every validator's block stages one block at a time (the benchmark's baseline).
    #[arg(long)]
    no_pipeline: bool,
    /// Log filter passed to the validators.
    #[arg(long, default_value = "info")]
    log: String,
    /// Leave out the CREATE2 deployer that a fresh devnet's genesis holds, as anvil's does,
    /// at 0x4e59b44847b379578588920ca78fbf26c0b4956c (anvil's flag is accepted too).
    #[arg(long, alias = "disable-default-create2-deployer")]
    no_create2_deployer: bool,
    /// State versions each node keeps for queries at past blocks (`eth_call`,
    /// `eth_getBalance`, traces): 0, a fresh devnet's default, keeps every block's, as
    /// anvil does; N (at least 64) the newest N. A resumed devnet keeps its own unless
    /// given.
    #[arg(long, value_name = "N")]
    retain_versions: Option<u64>,
}

impl DevnetArgs {
    fn port(&self) -> u16 {
        self.port.unwrap_or(8545)
    }

    fn ws_port(&self) -> u16 {
        self.ws_port.unwrap_or(8546)
    }
}

/// A fresh devnet's configurations (keys, committee, genesis) of `n` validators under
/// `dir`: the funded accounts' keys are every node's development keys (`rpc.dev_keys`).
fn create(
    args: &DevnetArgs,
    n: usize,
    dir: &Path,
    keys: &[alloy_signer_local::PrivateKeySigner],
) -> anyhow::Result<Vec<NodeConfig>> {
    let accounts: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    let dev_keys: Vec<Bytes> = keys.iter().map(|k| Bytes::from(k.to_bytes().to_vec())).collect();
    // Distinct free ports: the probing sockets stay open until all are chosen (one probed
    // and closed at a time, the kernel may hand the same port out twice).
    let addrs = farol_network::free_loopback_addrs(n).context("finding free UDP ports")?;
    // Equal stakes; fees of validator i's blocks go to a fixed address of its own.
    let members: Vec<_> = addrs
        .into_iter()
        .enumerate()
        .map(|(i, a)| (a, 1, Address::with_last_byte(0xf0 + (i as u8 & 0x0f))))
        .collect();
    let (committee, validator_keys) = crate::chain::deal(&members)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let wei = U256::from(args.balance) * U256::from(10u64).pow(U256::from(18));
    let mut genesis = Genesis::dev(&accounts, wei, now);
    genesis.chain_id = args.chain_id;
    genesis.gas_limit = args.gas_limit;
    if !args.no_create2_deployer {
        genesis = genesis.with_create2_deployer();
    }
    let mut out = Vec::with_capacity(n);
    let https = (0..n).map(|i| node_port(args.port(), i)).collect::<anyhow::Result<Vec<_>>>()?;
    for (i, keys) in validator_keys.into_iter().enumerate() {
        let port = |base: u16| node_port(base, i);
        let cfg = NodeConfig {
            data_dir: dir.join(format!("validator-{i}")),
            genesis: genesis.clone(),
            validator: Some(keys),
            committee: committee.clone(),
            rpc: RpcConfig {
                http: Some(port(args.port())?),
                ws: Some(port(args.ws_port())?),
                dev_keys: dev_keys.clone(),
                // Pages of any origin may call it, as anvil's (browser dapps in development).
                cors_origins: vec!["*".into()],
                ..RpcConfig::default()
            },
            // Unprotected (pre-EIP-155) transactions taken, as anvil and hardhat take them:
            // the keyless deployments of contracts found at one address on every chain.
            mempool: farol_node::mempool::MempoolConfig {
                allow_unprotected_txs: true,
                ..Default::default()
            },
            // Pipelined as stored: `--no-pipeline` applies to the run it is given to, a
            // resumed devnet's too (before stop 49 a devnet created with it stored it, and
            // stayed unpipelined when resumed without it).
            // Every block's state by default, as anvil's: indexers (The Graph, Ponder) and
            // explorers read contracts and balances at old blocks (before stop 52 a devnet
            // kept the newest 1,024, minutes under load).
            pipeline: PipelineSettings {
                retain_versions: args.retain_versions.unwrap_or(0),
                ..PipelineSettings::default()
            },
            // A validator that fell behind its peers' consensus history catches up from
            // the others' block-final blocks.
            sync: SyncSettings {
                peers: https.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| *a).collect(),
                ..SyncSettings::default()
            },
            network: Default::default(),
            log: args.log.clone(),
            log_json: false,
        };
        out.push(cfg);
    }
    Ok(out)
}

/// Node `i`'s port on `base` (validators first, then full nodes; two ports per node).
fn node_port(base: u16, i: usize) -> anyhow::Result<SocketAddr> {
    let i = u16::try_from(i).context("too many nodes")?;
    let p = i.checked_mul(2).and_then(|d| base.checked_add(d)).context("port past 65535")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], p)))
}

/// The full nodes' configurations: the validators' chain and committee, no keys, syncing
/// from every validator.
fn full_nodes(
    args: &DevnetArgs,
    dir: &Path,
    validators: &[NodeConfig],
) -> anyhow::Result<Vec<NodeConfig>> {
    let peers: Vec<SocketAddr> = validators.iter().filter_map(|c| c.rpc.http).collect();
    // After the validators' ports, as they were stored (a reused devnet keeps its own).
    let http_base = validators[0].rpc.http.map_or(args.port(), |a| a.port());
    let ws_base = validators[0].rpc.ws.map_or(args.ws_port(), |a| a.port());
    let mut out = Vec::new();
    for j in 0..usize::from(args.full_nodes) {
        let i = validators.len() + j;
        let mut c = validators[0].clone();
        c.data_dir = dir.join(format!("full-node-{j}"));
        c.validator = None;
        c.rpc = RpcConfig {
            http: Some(node_port(http_base, i)?),
            ws: Some(node_port(ws_base, i)?),
            dev_keys: validators[0].rpc.dev_keys.clone(),
            cors_origins: validators[0].rpc.cors_origins.clone(),
            ..RpcConfig::default()
        };
        c.sync = SyncSettings { peers: peers.clone(), ..SyncSettings::default() };
        out.push(c);
    }
    Ok(out)
}

fn config_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("validator-{i}.toml"))
}

/// How many validators the devnet kept in `dir` has (0: none is kept there).
fn stored_validators(dir: &Path) -> usize {
    (0..).take_while(|i| config_path(dir, *i).exists()).count()
}

/// Writes a node's configuration or a validator's keys file, readable by the user alone.
fn write_private(path: &Path, c: &NodeConfig) -> anyhow::Result<()> {
    use std::io::Write;
    let text = toml::to_string(c).context("writing a configuration")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // A file from before stop 41 keeps its mode when opened: set it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// A node's name in file names and messages.
fn node_name(validators: usize, i: usize) -> String {
    if i < validators {
        format!("validator-{i}")
    } else {
        format!("full-node-{}", i - validators)
    }
}

/// Nodes of each kind `farol devnet` starts at most.
const MAX_NODES: u16 = 64;

/// Makes the child get SIGTERM when this process dies, however it dies (a `kill -9`, or a
/// signal before the handlers below are installed): a devnet never leaves nodes behind.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec and only makes two system
    // calls (prctl, getppid), both async-signal-safe; it allocates nothing (its errors are
    // raw OS errors).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            // The parent may have died before the line above: then no signal will come.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::errno::Errno::ESRCH as i32));
            }
            Ok(())
        });
    }
}

struct Running {
    children: Vec<Option<Child>>,
}

impl Running {
    fn stop(&mut self) {
        // Taken: a second stop (the drop after an explicit one) signals nobody.
        let mut taken: Vec<Child> = self.children.iter_mut().filter_map(Option::take).collect();
        let mut children: Vec<&mut Child> = taken.iter_mut().collect();
        terminate(&mut children, Duration::from_secs(15));
    }
}

/// Sends SIGTERM to `children`, waits up to `grace` for them to exit, then kills the rest.
pub(crate) fn terminate(children: &mut [&mut Child], grace: Duration) {
    for c in children.iter_mut() {
        // One already waited for may have a reused process id by now: not signalled.
        if matches!(c.try_wait(), Ok(Some(_))) {
            continue;
        }
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = Instant::now() + grace;
    for c in children.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `farol devnet` until SIGINT or SIGTERM.
/// Validator `i`'s stored configuration in the devnet directory `dir`, as a resumed devnet
/// runs it.
fn stored_config(dir: &Path, i: usize) -> anyhow::Result<NodeConfig> {
    let p = config_path(dir, i);
    let mut c = NodeConfig::load(&p).with_context(|| {
        format!("{} exists but validator {i}'s configuration does not load", dir.display())
    })?;
    c.data_dir = dir.join(format!("validator-{i}"));
    // A devnet kept from before stop 41 gets the CORS setting new ones have.
    if c.rpc.cors_origins.is_empty() {
        c.rpc.cors_origins = vec!["*".into()];
    }
    // Pipelined unless this run says `--no-pipeline` (a devnet created with it before stop
    // 49 stored it, and stayed unpipelined; since stop 50 it no longer does).
    c.pipeline.pipelined = true;
    Ok(c)
}

pub(crate) fn run(args: DevnetArgs) -> anyhow::Result<()> {
    // An absolute directory, so that the configurations written there (and a resume from
    // another working directory) name the same place (before stop 41 a relative one was
    // stored as given, and a resume from elsewhere started a fresh chain).
    let kept = match &args.data_dir {
        Some(d) => Some(std::path::absolute(d).with_context(|| format!("{}", d.display()))?),
        None => None,
    };
    // A devnet kept there has its own number of validators.
    let stored = kept.as_deref().map_or(0, stored_validators);
    let validators = match (args.validators, stored) {
        (Some(v), s) if s > 0 && usize::from(v) != s => {
            let d = kept.as_deref().map_or_else(String::new, |d| d.display().to_string());
            bail!("{d} holds a devnet of {s} validators, not {v}")
        }
        (Some(v), _) => v,
        (None, 0) => 4,
        (None, s) => u16::try_from(s).unwrap_or(u16::MAX),
    };
    // Checked before anything is written (before stop 48 a bad chain id was found by the
    // nodes, in a message naming their configuration's field, after the directory was
    // written: every later run there failed).
    if args.gas_limit < 21_000 {
        bail!("--gas-limit {}: at least a transfer's 21000", args.gas_limit);
    }
    if let Some(r) = args.retain_versions.filter(|r| *r != 0) {
        let least = farol_node::config::MIN_RETAIN_VERSIONS;
        if r < least {
            bail!("--retain-versions {r}: 0 (every block's state) or at least {least}");
        }
    }
    if args.chain_id == 0 || args.chain_id > farol_node::config::MAX_CHAIN_ID {
        bail!(
            "--chain-id {}: from 1 to {} (EIP-2294)",
            args.chain_id,
            farol_node::config::MAX_CHAIN_ID
        );
    }
    // Port 0 would let each node's system pick one the devnet does not know.
    if args.port == Some(0) || args.ws_port == Some(0) {
        bail!("--port and --ws-port: from 1 to 65535 (0 is not a port the devnet can tell)");
    }
    if validators == 0 {
        bail!("--validators: at least 1");
    }
    if validators > MAX_NODES || args.full_nodes > MAX_NODES {
        bail!("--validators and --full-nodes: at most {MAX_NODES} each on one machine");
    }
    // Node i listens on port + 2i and ws_port + 2i: the two ranges must not meet. A kept
    // devnet's ports are its own, unless given.
    let kept_ports = kept
        .as_deref()
        .filter(|_| stored > 0)
        .and_then(|d| NodeConfig::load(&config_path(d, 0)).ok())
        .map(|c| (c.rpc.http.map(|a| a.port()), c.rpc.ws.map(|a| a.port())));
    let (kept_http, kept_ws) = kept_ports.unwrap_or_default();
    let nodes = u32::from(validators) + u32::from(args.full_nodes);
    let span = 2 * nodes;
    let http = u32::from(args.port.or(kept_http).unwrap_or(args.port()));
    let ws = u32::from(args.ws_port.or(kept_ws).unwrap_or(args.ws_port()));
    if http.max(ws) + span > 65_537 {
        bail!(
            "--port {http} / --ws-port {ws}: {nodes} nodes need ports up to {} (at most 65535)",
            http.max(ws) + span - 2
        );
    }
    if (http % 2 == ws % 2) && http.abs_diff(ws) < span {
        bail!(
            "--port {http} and --ws-port {ws}: node i listens on port + 2i and ws-port + 2i, so with {nodes} nodes the two would share ports"
        );
    }
    let keys = mnemonic_accounts(&args.mnemonic, args.accounts).map_err(anyhow::Error::msg)?;
    let accounts: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    let (_tmp, dir) = match kept {
        Some(d) => (None, d),
        None => {
            let t = tempfile::Builder::new().prefix("farol-devnet-").tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    // Its configurations hold the validators' keys: the directory is the user's alone (one
    // that holds a devnet kept from before stop 41 is made so too; any other directory
    // named that exists already keeps its mode).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    if stored > 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} the user's alone", dir.display()))?;
    }
    // One devnet at a time in a directory: held until this one ends. Before stop 48 a
    // second devnet given the same `--data-dir` and other ports rewrote the running one's
    // configurations (new network addresses, ports and peers) before its nodes failed on
    // the stores' locks.
    let lock_path = dir.join("devnet.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by another devnet (it holds {}): stop that one first, or give another \
             --data-dir",
            dir.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
    let n = usize::from(validators);
    let configs = if stored > 0 {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            v.push(stored_config(&dir, i)?);
        }
        if v[0].committee.len() != n {
            bail!(
                "{} holds a devnet of {} validators, not {n}",
                dir.display(),
                v[0].committee.len()
            );
        }
        // Ports asked for explicitly move the kept devnet's JSON-RPC (not part of its chain).
        if args.port.is_some() || args.ws_port.is_some() {
            let https =
                (0..n).map(|i| node_port(args.port(), i)).collect::<anyhow::Result<Vec<_>>>()?;
            for (i, c) in v.iter_mut().enumerate() {
                if args.port.is_some() {
                    c.rpc.http = Some(https[i]);
                    c.sync.peers = https
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, a)| *a)
                        .collect();
                }
                if args.ws_port.is_some() {
                    c.rpc.ws = Some(node_port(args.ws_port(), i)?);
                }
            }
        }
        // Not a rule of the chain: given, it applies to a kept devnet too.
        if let Some(r) = args.retain_versions {
            for c in &mut v {
                c.pipeline.retain_versions = r;
            }
        }
        // Validator network ports something else took meanwhile are chosen again (the
        // committee's addresses are not part of its chain either).
        let taken: Vec<usize> = (0..n)
            .filter(|i| {
                v[0].committee
                    .get(*i)
                    .is_some_and(|m| std::net::UdpSocket::bind(m.address).is_err())
            })
            .collect();
        if !taken.is_empty() {
            let fresh = farol_network::free_loopback_addrs(taken.len())
                .context("finding free UDP ports")?;
            for (i, addr) in taken.iter().zip(fresh) {
                eprintln!("note: validator-{i}'s network port is taken: it moves to {addr}");
                // Every stored configuration's committee (a hand-edited one may be shorter).
                for m in v.iter_mut().filter_map(|c| c.committee.get_mut(*i)) {
                    m.address = addr;
                }
            }
        }
        // The stored devnet is what runs: say which flags it does not follow.
        let stored = &v[0];
        let mut ignored = Vec::new();
        if stored.genesis.chain_id != args.chain_id {
            ignored.push(format!("chain id {} (not {})", stored.genesis.chain_id, args.chain_id));
        }
        if stored.genesis.gas_limit != args.gas_limit {
            let kept = stored.genesis.gas_limit;
            ignored.push(format!("block gas limit {kept} (not {})", args.gas_limit));
        }
        if accounts.iter().any(|a| !stored.genesis.alloc.contains_key(a)) {
            ignored.push("other funded accounts (--mnemonic, --accounts, --balance)".into());
        }
        if !ignored.is_empty() {
            eprintln!(
                "note: {} holds an existing devnet, which keeps its own {}",
                dir.display(),
                ignored.join(", ")
            );
        }
        v
    } else {
        create(&args, n, &dir, &keys)?
    };
    let validators = configs.len();
    let mut configs = configs;
    configs.extend(full_nodes(&args, &dir, &configs)?);
    // Someone else's server on a port (anvil on 8545, say, which answers chain id 31337
    // too): said now, not found out after a banner that points the user at it, and before
    // anything is written, so that the same command with other ports then works.
    for (i, c) in configs.iter().enumerate() {
        for addr in c.rpc.http.iter().chain(c.rpc.ws.iter()) {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                bail!(
                    "{addr} ({}'s JSON-RPC) is not free: {e}; stop what listens there or pass \
                     --port and --ws-port",
                    node_name(validators, i)
                );
            }
        }
    }
    for (i, c) in configs.iter().enumerate() {
        write_private(&dir.join(format!("{}.toml", node_name(validators, i))), c)?;
    }
    // SIGINT and SIGTERM are caught from before the first node starts: one during start-up
    // stops the nodes and removes a temporary directory as one after it does (by default
    // it would kill this process and leave both behind).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        anyhow::Ok((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    let exe = std::env::current_exe().context("locating the farol binary")?;
    let mut running = Running { children: Vec::new() };
    for (i, c) in configs.iter().enumerate() {
        std::fs::create_dir_all(&c.data_dir)?;
        let name = node_name(validators, i);
        let log =
            File::options().create(true).append(true).open(dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("node")
            .arg("--config")
            .arg(dir.join(format!("{name}.toml")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // A reused devnet's stored configurations hold their own settings: these two
        // flags still apply.
        cmd.arg("--log").arg(&args.log);
        if args.no_pipeline {
            cmd.arg("--no-pipeline");
        }
        // A process group of its own: the terminal's Ctrl-C reaches the devnet alone, which
        // stops each node with one SIGTERM (since stop 52 a node takes a second signal as
        // "exit at once", and the terminal's SIGINT followed by the devnet's SIGTERM cut
        // every node's stop short).
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        running.children.push(Some(child));
    }
    // Ready when every node answers JSON-RPC as a Farol node of this chain, and is still
    // running (something else that took its port meanwhile would answer too).
    let deadline = Instant::now() + Duration::from_secs(60);
    let chain_id = format!("{:#x}", configs[0].genesis.chain_id);
    for (i, c) in configs.iter().enumerate() {
        let Some(http) = c.rpc.http else { continue };
        let mut client = RpcClient::new(http);
        loop {
            let running_here = match running.children.get_mut(i) {
                Some(Some(child)) => matches!(child.try_wait(), Ok(None)),
                _ => false,
            };
            let farol = client
                .call("web3_clientVersion", json!([]))
                .is_ok_and(|v| v.as_str().is_some_and(|v| v.starts_with("farol/")));
            let answers = farol
                && client.call("eth_chainId", json!([])).is_ok_and(|v| v == chain_id)
                && client.call("eth_blockNumber", json!([])).and_then(|v| quantity(&v)).is_ok();
            if running_here && answers {
                break;
            }
            if let Some(Some(child)) = running.children.get_mut(i) {
                if let Ok(Some(status)) = child.try_wait() {
                    let name = node_name(validators, i);
                    let log = std::fs::read_to_string(dir.join(format!("{name}.log")))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    bail!("{name} exited ({status}):\n{}", tail.join("\n"));
                }
            }
            if Instant::now() > deadline {
                bail!("{} did not answer on {http} within 60 s", node_name(validators, i));
            }
            let signalled = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => true,
                    _ = term.recv() => true,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => false,
                }
            });
            if signalled {
                bail!("interrupted while the devnet was starting");
            }
        }
    }
    let pids: Vec<u32> = running.children.iter().flatten().map(Child::id).collect();
    print_summary(&args, &configs, validators, &keys, &dir, &pids);
    // Until SIGINT or SIGTERM; a node that exits is reported (the others go on), and once
    // none is left the command ends with an error.
    let all_gone = rt.block_on(async {
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = check.tick() => {
                    for (i, slot) in running.children.iter_mut().enumerate() {
                        if let Some(c) = slot {
                            if let Ok(Some(status)) = c.try_wait() {
                                let name = node_name(validators, i);
                                eprintln!("{name} exited ({status}); see {}", dir.join(format!("{name}.log")).display());
                                *slot = None;
                            }
                        }
                    }
                    if running.children.iter().all(Option::is_none) {
                        return anyhow::Ok(true);
                    }
                }
            }
        }
        anyhow::Ok(false)
    })?;
    eprintln!("stopping the devnet");
    running.stop();
    if all_gone {
        bail!("every node of the devnet exited (their logs are in {})", dir.display());
    }
    Ok(())
}

fn print_summary(
    args: &DevnetArgs,
    all: &[NodeConfig],
    validators: usize,
    keys: &[alloy_signer_local::PrivateKeySigner],
    dir: &Path,
    pids: &[u32],
) {
    let url = |a: Option<SocketAddr>, scheme: &str| {
        a.map(|a| format!("{scheme}://{a}")).unwrap_or_default()
    };
    let (configs, fulls) = all.split_at(validators);
    let describe = |i: usize, c: &NodeConfig| {
        let name = node_name(validators, i);
        json!({
            "index": if i < validators { i } else { i - validators },
            "pid": pids.get(i),
            "http": url(c.rpc.http, "http"),
            "ws": url(c.rpc.ws, "ws"),
            "metrics": c.rpc.http.map(|a| format!("http://{a}/metrics")),
            "config": dir.join(format!("{name}.toml")),
            "log": dir.join(format!("{name}.log")),
        })
    };
    if args.json {
        let s = json!({
            "chainId": configs[0].genesis.chain_id,
            "validators": configs.iter().enumerate().map(|(i, c)| describe(i, c)).collect::<Vec<_>>(),
            "fullNodes": fulls.iter().enumerate().map(|(j, c)| describe(validators + j, c)).collect::<Vec<_>>(),
            "accounts": keys.iter().map(|k| json!({
                "address": k.address(),
                "privateKey": k.credential().to_bytes().to_vec().iter().fold(String::from("0x"), |s, b| s + &format!("{b:02x}")),
                "balance": configs[0].genesis.alloc.get(&k.address()).map(|a| a.balance.to_string()),
            })).collect::<Vec<_>>(),
            "mnemonic": args.mnemonic,
            "dataDir": dir,
            // 0: every block's state is kept.
            "retainVersions": configs[0].pipeline.retain_versions,
        });
        println!("{s}");
        return;
    }
    let g = &configs[0].genesis;
    println!("Farol devnet: {} validators, chain id {}", configs.len(), g.chain_id);
    println!("\nAvailable Accounts\n==================");
    let ether = U256::from(10u64).pow(U256::from(18));
    for (i, k) in keys.iter().enumerate() {
        match g.alloc.get(&k.address()) {
            Some(a) => println!("({i}) {} ({} ETH)", k.address(), a.balance / ether),
            None => println!("({i}) {} (not funded on this chain)", k.address()),
        }
    }
    println!("\nPrivate Keys\n==================");
    for (i, k) in keys.iter().enumerate() {
        let hex: String = k.credential().to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        println!("({i}) 0x{hex}");
    }
    println!(
        "\nWallet\n==================\nMnemonic:          {}\nDerivation path:   m/44'/60'/0'/0/",
        args.mnemonic
    );
    println!("\nChain ID\n==================\n{}", g.chain_id);
    println!("\nBase fee: {} wei, block gas limit: {}", g.base_fee, g.gas_limit);
    match configs[0].pipeline.retain_versions {
        0 => println!("State of every block kept (queries at any block)"),
        n => println!("State of the newest {n} blocks kept (queries at older blocks fail)"),
    }
    println!("\nValidators\n==================");
    for (i, c) in configs.iter().enumerate() {
        println!(
            "({i}) JSON-RPC {}  WebSocket {}  metrics {}/metrics",
            url(c.rpc.http, "http"),
            url(c.rpc.ws, "ws"),
            url(c.rpc.http, "http")
        );
    }
    if !fulls.is_empty() {
        println!("\nFull nodes\n==================");
        for (j, c) in fulls.iter().enumerate() {
            println!(
                "({j}) JSON-RPC {}  WebSocket {}",
                url(c.rpc.http, "http"),
                url(c.rpc.ws, "ws")
            );
        }
    }
    println!("\nData: {} (logs: validator-N.log, full-node-N.log)", dir.display());
    println!("\nListening on {}", url(configs[0].rpc.http, "http"));
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        devnet: super::DevnetArgs,
    }

    /// The stored configurations are pipelined whatever the creating run's flag:
    /// `--no-pipeline` is passed to the nodes of the run it is given to (before stop 49 it
    /// was stored, and a devnet created with it stayed unpipelined when resumed without it).
    #[test]
    fn a_created_devnet_is_stored_pipelined() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let args = Cli::parse_from(["devnet", "--no-pipeline"]).devnet;
        let keys = farol_node::genesis::mnemonic_accounts(super::DEV_MNEMONIC, 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let configs = super::create(&args, 4, dir.path(), &keys).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(configs.len(), 4);
        assert!(configs.iter().all(|c| c.pipeline.pipelined));
        // One stored unpipelined (by a farol before stop 49) is resumed pipelined.
        let mut old = configs[1].clone();
        old.pipeline.pipelined = false;
        super::write_private(&super::config_path(dir.path(), 1), &old)
            .unwrap_or_else(|e| panic!("{e}"));
        let resumed = super::stored_config(dir.path(), 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(resumed.pipeline.pipelined);
        assert_eq!(resumed.committee.len(), 4);
    }

    /// A fresh devnet's genesis holds the CREATE2 deployer, as anvil's does, unless told not
    /// to (with Farol's flag or anvil's); the stored configuration keeps it.
    #[test]
    fn a_created_devnet_holds_the_create2_deployer() {
        use farol_node::genesis::CREATE2_DEPLOYER;
        let keys = farol_node::genesis::mnemonic_accounts(super::DEV_MNEMONIC, 2)
            .unwrap_or_else(|e| panic!("{e}"));
        for (flags, held) in [
            (&[][..], true),
            (&["--no-create2-deployer"][..], false),
            (&["--disable-default-create2-deployer"][..], false),
        ] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let args = Cli::parse_from(["devnet"].iter().chain(flags)).devnet;
            let configs =
                super::create(&args, 4, dir.path(), &keys).unwrap_or_else(|e| panic!("{e}"));
            let path = super::config_path(dir.path(), 0);
            super::write_private(&path, &configs[0]).unwrap_or_else(|e| panic!("{e}"));
            let stored = super::stored_config(dir.path(), 0).unwrap_or_else(|e| panic!("{e}"));
            let deployer = stored.genesis.alloc.get(&CREATE2_DEPLOYER);
            assert_eq!(deployer.is_some_and(|a| !a.code.is_empty()), held, "{flags:?}");
            assert_eq!(stored.genesis, configs[0].genesis);
            assert_eq!(stored.genesis.alloc.len(), 2 + usize::from(held));
            assert!(stored.mempool.allow_unprotected_txs, "as anvil, since stop 51");
            assert_eq!(stored.genesis.gas_limit, 45_000_000);
        }
    }

    /// A fresh devnet keeps every block's state, as anvil's, unless `--retain-versions` says
    /// otherwise (since stop 52; before, the newest 1,024).
    #[test]
    fn a_created_devnet_keeps_every_state() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let keys = farol_node::genesis::mnemonic_accounts(super::DEV_MNEMONIC, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        for (flags, kept) in [(&[][..], 0), (&["--retain-versions", "100"][..], 100)] {
            let args = Cli::parse_from(["devnet"].iter().chain(flags)).devnet;
            let configs =
                super::create(&args, 2, dir.path(), &keys).unwrap_or_else(|e| panic!("{e}"));
            assert!(configs.iter().all(|c| c.pipeline.retain_versions == kept), "{flags:?}");
            assert!(configs.iter().all(|c| c.validate().is_ok()), "{flags:?}");
        }
    }

    /// `--gas-limit` sets the genesis's block gas limit (since stop 51).
    #[test]
    fn a_created_devnet_takes_its_gas_limit() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let keys = farol_node::genesis::mnemonic_accounts(super::DEV_MNEMONIC, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let args = Cli::parse_from(["devnet", "--gas-limit", "60000000"]).devnet;
        let configs = super::create(&args, 1, dir.path(), &keys).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(configs[0].genesis.gas_limit, 60_000_000);
    }

    #[derive(Parser)]
    struct NodeCli {
        #[command(flatten)]
        node: crate::node::NodeArgs,
    }

    /// A configuration file holding validator keys that others can read is run with a
    /// warning, as a `--keys` file is (since stop 49; before, nothing was said).
    #[test]
    fn a_configuration_with_keys_others_can_read_is_warned_of() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let args = Cli::parse_from(["devnet"]).devnet;
        let keys = farol_node::genesis::mnemonic_accounts(super::DEV_MNEMONIC, 2)
            .unwrap_or_else(|e| panic!("{e}"));
        let configs = super::create(&args, 4, dir.path(), &keys).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("validator-0.toml");
        super::write_private(&path, &configs[0]).unwrap_or_else(|e| panic!("{e}"));
        let warnings = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("{e}"));
            let node = NodeCli::parse_from([
                std::ffi::OsStr::new("node"),
                std::ffi::OsStr::new("--config"),
                path.as_os_str(),
            ])
            .node;
            crate::node::configure(&node).unwrap_or_else(|e| panic!("{e}")).1
        };
        assert_eq!(warnings(0o600), Vec::<String>::new());
        let shown = warnings(0o640);
        assert!(shown.len() == 1 && shown[0].contains("can be read by others"), "{shown:?}");
    }
}
