//! End to end, with real processes and sockets: `farol devnet` starts 4 validator processes
//! and a full node; real Ethereum clients (viem, ethers and Hardhat,
//! `mainnet/node/tests/client`) run their checks, on a Solidity ERC-20 and on the Rust (WASM)
//! ERC-20, with their own keys and with the node's development accounts; transfers sent over
//! JSON-RPC (to a validator, and to the full node, which forwards them) are executed and
//! block-final on every node with the same block hashes and state roots; a validator killed
//! with SIGKILL does not stop the chain, and restarted from its data directory it catches up;
//! the devnet killed with SIGKILL leaves no node running, resumes from its data directory and
//! stops cleanly on SIGINT, during its start-up too. A chain dealt by `farol chain new` runs its validators and a
//! full node from its files and `farol node`'s flags alone.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use farol_node::client;
use serde_json::{json, Value};

mod common;
use common::*;

struct Devnet {
    child: Child,
    summary: Value,
    dir: PathBuf,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = nix_term(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `farol devnet` (4 validators and a full node) on the ports from `base`, with its
/// data in `dir` (relative to `cwd`), and returns it with its JSON summary.
fn start_devnet(cwd: &Path, dir: &Path, base: u16) -> (Child, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_farol"))
        .args(["devnet", "--json", "--validators", "4", "--full-nodes", "1", "--port"])
        .arg(base.to_string())
        .arg("--ws-port")
        .arg((base + 1).to_string())
        .arg("--data-dir")
        .arg(dir)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the devnet: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
    let summary: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("summary {line:?}: {e}"));
    (child, summary)
}

/// Node `i`'s HTTP address: validators first, then full nodes.
fn http(d: &Devnet, i: usize) -> SocketAddr {
    node_http(&d.summary, i)
}

/// Node `i`'s HTTP address in a devnet's summary.
fn node_http(summary: &Value, i: usize) -> SocketAddr {
    let validators = summary["validators"].as_array().map_or(0, Vec::len);
    let node = if i < validators {
        &summary["validators"][i]
    } else {
        &summary["fullNodes"][i - validators]
    };
    let url = node["http"].as_str().unwrap_or_default();
    url.trim_start_matches("http://").parse().unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn log_tail(dir: &Path, i: usize) -> String {
    let name = if i < 4 { format!("validator-{i}") } else { format!("full-node-{}", i - 4) };
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Sends `count` transfers from `key` through `addr` and waits for their receipts; returns
/// the highest block they landed in.
fn send_and_wait(addr: SocketAddr, key: &PrivateKeySigner, count: u64) -> u64 {
    send_and_wait_on(31337, addr, key, count)
}

/// Waits until every node in `nodes` has block `n` final, then checks they hold the same
/// block hash and state root for it.
fn final_everywhere(d: &Devnet, nodes: &[usize], n: u64) {
    let addrs: Vec<SocketAddr> = nodes.iter().map(|&i| http(d, i)).collect();
    final_at(&addrs, n, &|k| log_tail(&d.dir, nodes[k]));
}

#[test]
fn devnet_runs_a_real_client_agrees_and_survives_a_killed_validator() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path().join("devnet");
    let base = client::free_listen_ports(10).unwrap_or_else(|e| panic!("{e}"));
    // A relative data directory (the resume below names it from another folder).
    let (child, summary) = start_devnet(tmp.path(), Path::new("devnet"), base);
    // The configurations hold the validators' keys: the user's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| {
            std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or_default()
        };
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("validator-0.toml")), 0o600);
        assert_eq!(mode(&dir.join("full-node-0.toml")), 0o600);
    }
    let d = Devnet { child, summary, dir: dir.clone() };
    assert_eq!(d.summary["chainId"], 31337);
    assert_eq!(d.summary["accounts"][0]["address"], "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266");

    // Real clients: viem and ethers from npm.
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let client = Path::new(&manifest).join("../../mainnet/node/tests/client");
    assert!(
        client.join("node_modules/viem").exists(),
        "the client test's npm packages are missing: run `npm ci` in {} (scripts/test.sh does)",
        client.display()
    );
    let hardhat = client.join("node_modules/.bin/hardhat");
    let hardhat = hardhat.to_str().unwrap_or("hardhat");
    let runs: [(&str, Vec<&str>); 5] = [
        ("node", vec!["client.mjs"]),
        ("node", vec!["ethers.mjs"]),
        ("node", vec!["wasm.mjs"]),
        (hardhat, vec!["run", "--no-compile", "hardhat.mjs"]),
        // The node's development accounts, signed for by the node (no keys in the client).
        (hardhat, vec!["run", "--network", "remote", "--no-compile", "remote.mjs"]),
    ];
    for (program, args) in runs {
        let script = args.last().copied().unwrap_or_default();
        let out = Command::new(program)
            .args(&args)
            .current_dir(&client)
            .env("HARDHAT_DISABLE_TELEMETRY_PROMPT", "true")
            .env("FAROL_HTTP", d.summary["validators"][0]["http"].as_str().unwrap_or_default())
            .env("FAROL_WS", d.summary["validators"][0]["ws"].as_str().unwrap_or_default())
            .output()
            .unwrap_or_else(|e| panic!("running node: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        assert!(out.status.success(), "{script} failed:\n{text}\n{}", log_tail(&dir, 0));
    }
    // Every validator keeps the compiled module of the WASM contract `wasm.mjs` deployed in
    // its own data directory (docs/wasm.md §5).
    // (Compilation runs in the background: allowed a few seconds to finish.)
    for i in 0..4 {
        let cache = dir.join(format!("validator-{i}")).join("wasm");
        let deadline = Instant::now() + Duration::from_secs(20);
        let compiled = |files: &[PathBuf]| {
            files.iter().filter(|f| f.extension().is_some_and(|e| e == "cwasm")).count()
        };
        let mut files = files_under(&cache);
        while compiled(&files) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            files = files_under(&cache);
        }
        assert!(compiled(&files) > 0, "validator {i}'s WASM cache holds {files:?}");
    }

    // Transfers through validator 1: executed and final everywhere, one chain.
    let funder = PrivateKeySigner::from_bytes(
        &"0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
            .parse()
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let n = send_and_wait(http(&d, 1), &funder, 40);
    final_everywhere(&d, &[0, 1, 2, 3, 4], n);
    // Validators sync their consensus logs (a devnet syncs by default), and time each sync;
    // the full node runs no consensus.
    for i in 0..5 {
        let s = post(http(&d, i), "farol_status", json!([])).unwrap_or_default();
        let syncs = &s["consensusLogSync"];
        let count = syncs["count"].as_u64();
        if i < 4 {
            assert!(count.is_some_and(|c| c > 0) && syncs["max_ms"].as_u64() >= Some(1), "{s}");
        } else {
            assert_eq!(count, Some(0), "{s}");
        }
    }
    // Through the full node (node 4): forwarded to the validators, synced back once final.
    let n = send_and_wait(http(&d, 4), &funder, 5);
    final_everywhere(&d, &[0, 1, 2, 3, 4], n);

    // Kill validator 3 (SIGKILL): the others go on and finalize.
    let pid = d.summary["validators"][3]["pid"].as_u64().unwrap_or_else(|| panic!("no pid"));
    Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(300));
    let n2 = send_and_wait(http(&d, 0), &funder, 40);
    assert!(n2 > n);
    final_everywhere(&d, &[0, 1, 2, 4], n2);

    // Restart it from its data directory: it recovers what it had and catches up.
    let config = dir.join("validator-3.toml");
    let log = std::fs::File::options()
        .append(true)
        .open(dir.join("validator-3.log"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut restarted = Command::new(env!("CARGO_BIN_EXE_farol"))
        .arg("node")
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("restarting validator 3: {e}"));
    // A restart that fails (a port taken, a log it cannot read) is reported at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    while post(http(&d, 3), "farol_status", json!([])).is_err() {
        if let Ok(Some(status)) = restarted.try_wait() {
            panic!("restarted validator 3 exited ({status}):\n{}", log_tail(&d.dir, 3));
        }
        assert!(Instant::now() < deadline, "restarted validator 3 never served JSON-RPC");
        std::thread::sleep(Duration::from_millis(50));
    }
    let n3 = send_and_wait(http(&d, 0), &funder, 10);
    let caught_up = std::panic::catch_unwind(|| final_everywhere(&d, &[0, 1, 2, 3, 4], n3));
    let _ = nix_term(restarted.id());
    let _ = restarted.wait();
    if let Err(e) = caught_up {
        std::panic::resume_unwind(e);
    }

    // The devnet killed with SIGKILL (no chance to stop its validators): they exit anyway.
    let node_pids: Vec<u64> = (0..5)
        .filter(|&i| i != 3)
        .map(|i| {
            let node = if i < 4 { &d.summary["validators"][i] } else { &d.summary["fullNodes"][0] };
            node["pid"].as_u64().unwrap_or_else(|| panic!("no pid for node {i}"))
        })
        .collect();
    let mut d = d;
    d.child.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = d.child.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(pid) = node_pids.iter().find(|p| running(**p)) {
        assert!(Instant::now() < deadline, "node process {pid} outlived its devnet");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);

    // Resumed from its data directory: the chain is where it was; SIGINT (Ctrl-C) stops the
    // devnet and its nodes, with a clean exit.
    // From another folder, by another relative path: the same chain (before stop 41 the
    // configurations named their data directories relative to the first start's folder,
    // and this resume began a fresh chain in the wrong place).
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap_or_else(|e| panic!("{e}"));
    let (mut child, summary) = start_devnet(&elsewhere, Path::new("../devnet"), base);
    assert!(!elsewhere.join("devnet").exists(), "a second chain beside the first");
    let head = post(node_http(&summary, 0), "eth_blockNumber", json!([]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(quantity(&head) >= n3, "resumed at {head}, was at {n3} or more");
    let pids: Vec<u64> = summary["validators"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(summary["fullNodes"].as_array().into_iter().flatten())
        .filter_map(|v| v["pid"].as_u64())
        .collect();
    assert_eq!(pids.len(), 5, "{summary}");
    let status = interrupt(&mut child, "");
    assert!(status.success(), "the devnet exited with {status} on SIGINT");
    if let Some(pid) = pids.iter().find(|p| running(**p)) {
        panic!("node process {pid} outlived its devnet's Ctrl-C");
    }
}

/// Sends SIGINT (Ctrl-C) to `child` and waits up to 30 s for it to exit; its exit status.
fn interrupt(child: &mut Child, when: &str) -> std::process::ExitStatus {
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    exit_within(child, 30, &format!("the devnet did not stop on SIGINT{when}"))
}

/// Whether process `pid` still runs (a zombie does not: it exited, unreaped).
fn running(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

/// A JSON-RPC port someone else holds (anvil on 8545, say: it answers chain id 31337 too)
/// is said before any node starts, and no summary points a user at that server.
#[test]
fn a_json_rpc_port_in_use_is_refused_before_any_node_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = taken.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_farol"))
        .args(["devnet", "--json", "--validators", "1", "--port"])
        .arg(port.to_string())
        .arg("--ws-port")
        .arg(port.wrapping_add(1).to_string())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "a summary: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("is not free"), "{stderr}");
    let left: Vec<_> =
        std::fs::read_dir(tmp.path()).map(|d| d.flatten().count()).into_iter().collect();
    assert_eq!(left, vec![0], "the temporary data directory stayed");
    // With --data-dir nothing is written either, so the same command on free ports starts a
    // fresh devnet rather than one stuck on the taken ports (before stop 41 the
    // configurations were written first, and every retry used the taken ports).
    let kept = tmp.path().join("kept");
    let out = Command::new(env!("CARGO_BIN_EXE_farol"))
        .args(["devnet", "--json", "--validators", "1", "--port"])
        .arg(port.to_string())
        .arg("--ws-port")
        .arg(port.wrapping_add(1).to_string())
        .arg("--data-dir")
        .arg(&kept)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not free"), "{stderr}");
    assert!(!kept.join("validator-0.toml").exists(), "a configuration was kept: {stderr}");
}

/// A bad `--chain-id` or port 0 is refused naming the flag before anything is written (before
/// stop 48 the nodes refused the chain id after the directory was written, and every later
/// run there failed), and a directory another devnet holds is refused before its files
/// change (before stop 48 a second devnet rewrote the running one's configurations).
#[test]
fn bad_flags_and_a_busy_data_dir_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = tmp.path().join("d");
    let max = (u64::MAX / 2 - 35).to_string();
    for (flags, says) in [
        (["--chain-id", "0"], "--chain-id 0"),
        (["--chain-id", max.as_str()], "--chain-id"),
        (["--port", "0"], "--port"),
        (["--ws-port", "0"], "--ws-port"),
        (["--gas-limit", "20999"], "--gas-limit 20999"),
    ] {
        let mut args = vec!["devnet", "--validators", "1", "--data-dir", text(&d)];
        args.extend(flags);
        let (ok, _, stderr) = farol(&args);
        assert!(!ok && stderr.contains(says), "{flags:?}: {stderr}");
        assert!(!d.join("validator-0.toml").exists(), "{flags:?} wrote a configuration");
    }
    // Another devnet's lock (held here) on a directory: refused, its files as they were.
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    let lock = std::fs::File::create(d.join("devnet.lock")).unwrap_or_else(|e| panic!("{e}"));
    lock.try_lock().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("validator-0.toml"), "held").unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = farol(&["devnet", "--port", "19545", "--data-dir", text(&d)]);
    assert!(!ok && stderr.contains("in use by another devnet"), "{stderr}");
    let kept = std::fs::read_to_string(d.join("validator-0.toml")).unwrap_or_default();
    assert_eq!(kept, "held");
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // After the name: the state, then the parent's id.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned))
                    .is_some_and(|ppid| ppid == pid.to_string())
            })
        })
        .collect()
}

/// Ctrl-C while the devnet is still starting (its nodes launched, not all answering yet)
/// stops it: it says so, exits, leaves no node running and removes its temporary data
/// directory. (Caught since stop 41; untested until stop 43.)
#[test]
fn an_interrupt_during_start_up_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = client::free_listen_ports(8).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_farol"))
        .args(["devnet", "--json", "--validators", "4", "--port"])
        .arg(base.to_string())
        .arg("--ws-port")
        .arg((base + 1).to_string())
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the devnet: {e}"));
    // As soon as the first node runs: well before all four answer JSON-RPC.
    let deadline = Instant::now() + Duration::from_secs(30);
    let nodes = loop {
        let nodes = children_of(child.id());
        if !nodes.is_empty() {
            break nodes;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no node started within 30 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let status = interrupt(&mut child, " during start-up");
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut o, &mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(!status.success(), "interrupted, it exits with an error: {err}");
    assert!(err.contains("interrupted while the devnet was starting"), "{err}");
    assert!(out.is_empty(), "a summary was printed: {out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(pid) = nodes.iter().find(|p| running(**p)) {
        assert!(Instant::now() < deadline, "node process {pid} outlived its devnet's Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the temporary data directory stayed: {left:?}");
}

/// Node processes that are stopped (SIGTERM, then SIGKILL) when the test ends.
/// A chain for validators on machines of their own: `farol chain new` deals it (the chain
/// file every node shares, one keys file per validator), and `farol node` runs each validator
/// from the chain file and its keys with flags alone, no configuration file, and a full node
/// from the chain file and its peers; transfers are executed and final on all of them alike.
#[test]
fn a_chain_from_farol_chain_new_runs_on_flags_alone() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("chain");
    let udp = farol_network::free_loopback_addrs(4).unwrap_or_else(|e| panic!("{e}"));
    let base = client::free_listen_ports(5).unwrap_or_else(|e| panic!("{e}"));
    let funder = PrivateKeySigner::random();
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    // Validators 2 and 3 make their own keys (`farol chain key`) and hand over only the
    // public part; 0 and 1 have theirs made by the dealer.
    let own = |i: usize| tmp.path().join(format!("own-{i}.keys.toml"));
    let member = |i: usize| tmp.path().join(format!("member-{i}.toml"));
    for i in 2..4 {
        let (ok, stdout, stderr) = farol(&["chain", "key", "--out", text(&own(i))]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains("bls_public") && !stdout.contains("secret"), "{stdout}");
        assert_eq!(mode(&own(i)), 0o600);
        std::fs::write(member(i), stdout).unwrap_or_else(|e| panic!("{e}"));
    }
    // A contract placed at genesis, from a file in geth's genesis format (addresses without
    // `0x`, nonces in hex).
    let geth_alloc = tmp.path().join("genesis.json");
    let genesis = json!({
        "config": {"chainId": 4242},
        "alloc": {"0000000000000000000000000000000000000abc": {
            "balance": "0x10",
            "nonce": "0x1",
            "code": "0x60ff5f5260205ff3",
            "storage": {"0x0000000000000000000000000000000000000000000000000000000000000001": "0x2a"},
        }},
    });
    std::fs::write(&geth_alloc, genesis.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let mut args = vec!["chain".to_string(), "new".into(), "--out".into(), text(&out).into()];
    for a in &udp {
        args.extend(["--validator".into(), a.to_string()]);
    }
    args.extend([
        "--chain-id".into(),
        "4242".into(),
        "--alloc".into(),
        format!("{}=100ether", funder.address()),
        "--alloc-file".into(),
        text(&geth_alloc).into(),
        "--member".into(),
        "new".into(),
        "--member".into(),
        "new".into(),
    ]);
    for i in 2..4 {
        args.extend(["--member".into(), text(&member(i)).into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = farol(&args);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("Chain 4242 with 4 validators"), "{stdout}");
    assert_eq!(mode(&out), 0o700);
    let dealt = |i: usize| out.join(format!("validator-{i}.keys.toml"));
    let coin = |i: usize| out.join(format!("validator-{i}.coin.toml"));
    // The keys each validator runs with: the dealer's, or its own.
    let keys = |i: usize| if i < 2 { dealt(i) } else { own(i) };
    for i in 0..4 {
        let file = if i < 2 { dealt(i) } else { coin(i) };
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        assert_eq!(dealt(i).exists(), i < 2, "validator {i}");
    }
    // Dealt once: the same command again overwrites nothing.
    let before = std::fs::read(keys(0)).unwrap_or_else(|e| panic!("{e}"));
    let (ok, _, stderr) = farol(&args);
    assert!(!ok && stderr.contains("exists"), "{stderr}");
    assert_eq!(std::fs::read(keys(0)).unwrap_or_default(), before, "keys overwritten");

    // A keys file others can read is run, with a warning.
    std::fs::set_permissions(keys(3), std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let http = |i: usize| SocketAddr::from(([127, 0, 0, 1], base + i as u16));
    let chain = out.join("chain.toml");
    let log = |i: usize| tmp.path().join(format!("node-{i}.log"));
    let tail = |i: usize| {
        let t = std::fs::read_to_string(log(i)).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let mut nodes = Nodes(Vec::new());
    for i in 0..5 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_farol"));
        cmd.arg("node").arg("--chain").arg(&chain);
        if i < 4 {
            cmd.arg("--keys").arg(keys(i));
        }
        if (2..4).contains(&i) {
            cmd.arg("--coin").arg(coin(i));
        }
        cmd.arg("--data-dir").arg(tmp.path().join(format!("node-{i}"))).args([
            "--http",
            &http(i).to_string(),
            "--ws",
            "none",
            "--log",
            "warn",
        ]);
        // Validators sync from each other, the full node from validators 0 and 1.
        for j in (0..4).filter(|&j| j != i && (i < 4 || j < 2)) {
            cmd.args(["--peer", &http(j).to_string()]);
        }
        let f = std::fs::File::create(log(i)).unwrap_or_else(|e| panic!("{e}"));
        let child = cmd
            .stdout(f.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {i}: {e}"));
        nodes.0.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..5 {
        while post(http(i), "farol_status", json!([])).is_err() {
            if let Ok(Some(status)) = nodes.0[i].try_wait() {
                panic!("node {i} exited ({status}):\n{}", tail(i));
            }
            assert!(Instant::now() < deadline, "node {i} never served JSON-RPC:\n{}", tail(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(post(http(0), "eth_chainId", json!([])), Ok(json!("0x1092")));
    let balance = post(http(4), "eth_getBalance", json!([funder.address(), "latest"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(balance, json!("0x56bc75e2d63100000"), "100 ether at genesis");
    // The CREATE2 deployer is placed at genesis (since stop 51).
    let code = post(
        http(4),
        "eth_getCode",
        json!(["0x4e59b44847b379578588920ca78fbf26c0b4956c", "latest"]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(code.as_str().is_some_and(|c| c.len() > 2), "no CREATE2 deployer: {code}");
    let placed = "0x0000000000000000000000000000000000000abc";
    let at = |method: &str, params: Value| {
        post(http(4), method, params).unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(at("eth_getCode", json!([placed, "latest"])), json!("0x60ff5f5260205ff3"));
    assert_eq!(
        at("eth_getStorageAt", json!([placed, "0x1", "latest"])),
        json!(format!("0x{:064x}", 42))
    );
    assert_eq!(at("eth_getTransactionCount", json!([placed, "latest"])), json!("0x1"));
    assert_eq!(at("eth_getBalance", json!([placed, "latest"])), json!("0x10"));
    // Its code runs: it answers 32 bytes of 0xff.
    assert_eq!(
        at("eth_call", json!([{"to": placed}, "latest"])),
        json!(format!("0x{:064x}", 0xff))
    );
    // Through a validator, and through the full node (which forwards to its peers).
    let n = send_and_wait_on(4242, http(1), &funder, 5);
    final_at(&(0..5).map(http).collect::<Vec<_>>(), n, &tail);
    let n = send_and_wait_on(4242, http(4), &funder, 3);
    final_at(&(0..5).map(http).collect::<Vec<_>>(), n, &tail);
    let whole = |i: usize| std::fs::read_to_string(log(i)).unwrap_or_default();
    assert!(whole(3).contains("can be read by others"), "no warning:\n{}", tail(3));
    assert!(!whole(0).contains("can be read by others"), "{}", tail(0));

    // Operating it (stop 53; before, these went untested). The full node's health check
    // answers 200 while it follows the chain.
    let (code, body) = get(http(4), "/health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"healthy\":true"), "{body}");
    // A validator stopped by SIGTERM exits with status 0.
    let status = terminate(&mut nodes.0[0]);
    assert_eq!(status.code(), Some(0), "{}", tail(0));
    // Started again with no peers to sync from and its log filter from RUST_LOG (no --log):
    // it warns that it has no sync peers, logs only what RUST_LOG lets through, and orders
    // and finalizes with the others.
    let f = std::fs::File::create(log(0)).unwrap_or_else(|e| panic!("{e}"));
    nodes.0[0] = Command::new(env!("CARGO_BIN_EXE_farol"))
        .arg("node")
        .arg("--chain")
        .arg(&chain)
        .arg("--keys")
        .arg(keys(0))
        .arg("--data-dir")
        .arg(tmp.path().join("node-0"))
        .args(["--http", &http(0).to_string(), "--ws", "none"])
        .env("RUST_LOG", "error,farol_node::node=warn")
        .stdout(f.try_clone().unwrap_or_else(|e| panic!("{e}")))
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("starting node 0 again: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while post(http(0), "farol_status", json!([])).is_err() {
        if let Ok(Some(status)) = nodes.0[0].try_wait() {
            panic!("node 0 exited ({status}):\n{}", tail(0));
        }
        assert!(Instant::now() < deadline, "node 0 never served JSON-RPC again:\n{}", tail(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let n = send_and_wait_on(4242, http(0), &funder, 3);
    final_at(&(0..5).map(http).collect::<Vec<_>>(), n, &tail);
    assert!(whole(0).contains("no sync.peers"), "no warning of missing peers:\n{}", tail(0));
    // The configuration's level (info) would have said that it started.
    assert!(!whole(0).contains("node started"), "RUST_LOG not read:\n{}", tail(0));
}

/// A node whose chain left the certified one exits with status 3 (docs/node.md §1, "Exit
/// status"), which a supervisor is not to restart past: the lone validator's key, run once
/// on a second directory, made another block 1 there; that directory, started as a full
/// node following the real chain, learns the certified block 1, stops and exits with 3
/// (untested until stop 54).
#[test]
fn a_node_that_left_the_certified_chain_exits_with_3() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("chain");
    let udp = farol_network::free_loopback_addrs(1).unwrap_or_else(|e| panic!("{e}"));
    let base = client::free_listen_ports(2).unwrap_or_else(|e| panic!("{e}"));
    let funder = PrivateKeySigner::random();
    let alloc = format!("{}=100ether", funder.address());
    let validator = udp[0].to_string();
    let (ok, stdout, stderr) = farol(&[
        "chain",
        "new",
        "--out",
        text(&out),
        "--validator",
        &validator,
        "--chain-id",
        "4343",
        "--alloc",
        &alloc,
    ]);
    assert!(ok, "{stdout}{stderr}");
    let chain = out.join("chain.toml");
    let keys = out.join("validator-0.keys.toml");
    let http = |i: usize| SocketAddr::from(([127, 0, 0, 1], base + i as u16));
    let log = |dir: &str| tmp.path().join(format!("{dir}.log"));
    let tail = |dir: &str| {
        let t = std::fs::read_to_string(log(dir)).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    // `farol node` on directory `dir`, a validator with `keys`, a full node with `peer`.
    let start = |dir: &str, keys: Option<&Path>, at: SocketAddr, peer: Option<SocketAddr>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_farol"));
        cmd.arg("node").arg("--chain").arg(&chain);
        if let Some(k) = keys {
            cmd.arg("--keys").arg(k);
        }
        cmd.arg("--data-dir").arg(tmp.path().join(dir));
        cmd.args(["--http", &at.to_string(), "--ws", "none", "--log", "warn"]);
        if let Some(p) = peer {
            cmd.args(["--peer", &p.to_string()]);
        }
        let f = std::fs::File::create(log(dir)).unwrap_or_else(|e| panic!("{e}"));
        let child = cmd
            .stdout(f.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("starting a node on {dir}: {e}"));
        Nodes(vec![child])
    };
    let serving = |node: &mut Nodes, at: SocketAddr, dir: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while post(at, "farol_status", json!([])).is_err() {
            if let Ok(Some(status)) = node.0[0].try_wait() {
                panic!("the node on {dir} exited ({status}):\n{}", tail(dir));
            }
            assert!(Instant::now() < deadline, "no JSON-RPC from {dir}:\n{}", tail(dir));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The second directory's own block 1: two transfers.
    let mut other = start("other", Some(&keys), http(1), None);
    serving(&mut other, http(1), "other");
    send_and_wait_on(4343, http(1), &funder, 2);
    assert_eq!(terminate(&mut other.0[0]).code(), Some(0), "{}", tail("other"));
    // The real chain's: one transfer, made final.
    let mut real = start("real", Some(&keys), http(0), None);
    serving(&mut real, http(0), "real");
    let n = send_and_wait_on(4343, http(0), &funder, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while quantity(&post(http(0), "farol_status", json!([])).unwrap_or_default()["finalized"]) < n {
        assert!(Instant::now() < deadline, "block {n} never final:\n{}", tail("real"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The second directory follows the real chain as a full node: it stops with status 3.
    let mut follower = start("other", None, http(1), Some(http(0)));
    let status = exit_within(&mut follower.0[0], 60, "the node on another chain went on");
    assert_eq!(status.code(), Some(3), "{}", tail("other"));
    // Block sync or the finality certificates find it first, whichever comes (the whole
    // log: with RUST_BACKTRACE set, the error's backtrace fills its end).
    let said = ["this node's chain is not the certified chain", "a quorum certified another"];
    let whole = std::fs::read_to_string(log("other")).unwrap_or_default();
    assert!(said.iter().any(|s| whole.contains(s)), "{whole}");
}

/// `farol chain new` and `farol node`'s flags name what is wrong, and write nothing then.
#[test]
fn chain_new_and_node_flags_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("chain");
    let o = text(&out);
    let v = ["--validator", "127.0.0.1:9100", "--validator", "127.0.0.1:9101"];
    let refused = |args: &[&str], said: &str| {
        let (ok, stdout, stderr) = farol(args);
        assert!(!ok, "farol {args:?} was taken: {stdout}");
        assert!(stderr.contains(said), "farol {args:?} did not say {said:?}: {stderr}");
    };
    fn with<'a>(o: &'a str, more: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["chain", "new", "--out", o, "--chain-id", "7"];
        a.extend_from_slice(more);
        a
    }
    let new = |more: &[&'static str]| with(o, more);
    // Two validators, and `more`.
    let two = |more: &[&'static str]| new(&[&v[..], more].concat());
    refused(
        &new(&["--validator", "127.0.0.1:9100", "--validator", "127.0.0.1:9100"]),
        "--validator: committee[1].address: the same as committee[0].address",
    );
    refused(&new(&[v[0], v[1], v[2], v[3], "--stake", "5"]), "--stake: given 1 times for 2");
    refused(
        &["chain", "new", "--out", o, "--chain-id", "18446744073709551615", v[0], v[1]],
        "--chain-id: genesis.chain_id: at most 9223372036854775771 (EIP-2294)",
    );
    refused(
        &two(&["--fee-recipient", "0x000000000000000000000000000000000000dEaD"]),
        "--fee-recipient: given 1 times for 2",
    );
    refused(&new(&[v[0], v[1], "--alloc", "0x12=1"]), "--alloc");
    refused(
        &new(&[v[0], v[1], "--alloc", "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266=1.5"]),
        "--alloc",
    );
    refused(&new(&[v[0], v[1], "--gas-limit", "20999"]), "--gas-limit: genesis.gas_limit");
    // Accounts from a file (since stop 51): code genesis cannot hold, an address also given
    // with --alloc, a field that is no account's, a file that is not there.
    let file = |name: &str, body: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
        p.to_str().unwrap_or_default().to_string()
    };
    let ef =
        file("ef.toml", "\"0x0000000000000000000000000000000000000042\" = { code = \"0xef00\" }\n");
    refused(
        &with(o, &[v[0], v[1], "--alloc-file", &ef]),
        "--alloc-file: genesis.alloc.0x0000000000000000000000000000000000000042.code: begins with 0xEF",
    );
    let twice =
        file("twice.json", r#"{"alloc": {"0x0000000000000000000000000000000000000042": "0x1"}}"#);
    refused(
        &with(
            o,
            &[
                v[0],
                v[1],
                "--alloc-file",
                &twice,
                "--alloc",
                "0x0000000000000000000000000000000000000042=1",
            ],
        ),
        "given twice",
    );
    let colour =
        file("colour.json", r#"{"0x0000000000000000000000000000000000000042": {"colour": "red"}}"#);
    refused(&with(o, &[v[0], v[1], "--alloc-file", &colour]), "unknown field `colour`");
    refused(
        &new(&[v[0], v[1], "--alloc-file", "/nonexistent/alloc.toml"]),
        "--alloc-file /nonexistent/alloc.toml",
    );
    // One validator with more stake than the three others together: no coin threshold.
    refused(
        &two(&[
            "--validator",
            "127.0.0.1:9102",
            "--validator",
            "127.0.0.1:9103",
            "--stake",
            "1",
            "--stake",
            "1",
            "--stake",
            "1",
            "--stake",
            "100",
        ]),
        "--stake: too uneven",
    );
    refused(
        &["chain", "new", "--out", o, "--chain-id", "0", v[0], v[1]],
        "--chain-id: must be above 0",
    );
    refused(
        &new(&[v[0], v[1], v[2], v[3], "--stake", "0", "--stake", "1"]),
        "--stake: validator 0's is 0",
    );
    let big = "6000000000000000000";
    refused(
        &new(&[v[0], v[1], v[2], v[3], "--stake", big, "--stake", big]),
        "--stake: committee[].stake: the stakes add up past 2^63",
    );
    assert!(!out.exists(), "a refused chain wrote {}", out.display());
    // A keys file left by an earlier run, whatever its number, keeps the folder's keys safe.
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(old.join("validator-7.keys.toml"), "index = 7\n")
        .unwrap_or_else(|e| panic!("{e}"));
    refused(
        &with(text(&old), &[v[0], v[1]]),
        "validator-7.keys.toml exists (from an earlier run?)",
    );

    let (ok, stdout, stderr) =
        farol(&new(&[v[0], v[1], v[2], v[3], "--stake", "2", "--stake", "3"]));
    assert!(ok, "{stdout}{stderr}");
    let chain = out.join("chain.toml");
    let c = text(&chain);
    let data = tmp.path().join("data");
    let d = text(&data);
    refused(&["node", "--data-dir", d], "--config FILE, or --chain FILE with --data-dir DIR");
    refused(&["node", "--chain", c], "--data-dir: needed without --config");
    refused(&["node", "--chain", c, "--data-dir", d], "sync.peers: a full node");
    refused(
        &["node", "--chain", "/nonexistent/chain.toml", "--data-dir", d],
        "/nonexistent/chain.toml",
    );
    refused(&["node", "--chain", c, "--data-dir", d, "--peer", "nowhere"], "--peer");
    let full_listening = [
        "node",
        "--chain",
        c,
        "--data-dir",
        d,
        "--peer",
        "127.0.0.1:1",
        "--listen",
        "0.0.0.0:9000",
    ];
    refused(&full_listening, "--listen: a full node");
    // A configuration refused exits with sysexits' EX_CONFIG, so a supervisor can tell it
    // from a failure a restart may get past (since stop 52; before, 1 for everything).
    let config_refused = Command::new(env!("CARGO_BIN_EXE_farol"))
        .args(full_listening)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&config_refused.stderr);
    assert_eq!(config_refused.status.code(), Some(78), "{stderr}");
    // A peer's name that does not resolve exits with 1, not 78: the network or the peer may
    // come up later, and the recommended unit restarts it (`.invalid` never resolves).
    let unresolved = Command::new(env!("CARGO_BIN_EXE_farol"))
        .args(["node", "--chain", c, "--data-dir", d, "--peer", "validator-9.invalid:8545"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&unresolved.stderr);
    assert_eq!(unresolved.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("validator-9.invalid"), "{stderr}");
    // Another chain's keys for position 1 are refused before the node writes anything.
    let other = tmp.path().join("other");
    let (ok, _, stderr) = farol(&with(text(&other), &[v[0], v[1], v[2], v[3]]));
    assert!(ok, "{stderr}");
    let foreign = other.join("validator-1.keys.toml");
    refused(
        &["node", "--chain", c, "--keys", text(&foreign), "--data-dir", d],
        "validator.bls_secret: is not the key of committee[1]",
    );
    refused(&["node", "--chain", c, "--keys", text(&foreign), "--data-dir", d], "--keys");
    // Own keys: made once, found in the committee by their BLS key, with a coin share.
    let own = tmp.path().join("own.keys.toml");
    let (ok, public, stderr) = farol(&["chain", "key", "--out", text(&own)]);
    assert!(ok, "{stderr}");
    refused(&["chain", "key", "--out", text(&own)], "--out");
    // A public part that cannot be written (stdout a full device) is an error, and the
    // secret keys go with it, so a retry is not refused (before stop 46: a panic, and the
    // file left behind).
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let lost = tmp.path().join("lost.keys.toml");
        let out = Command::new(env!("CARGO_BIN_EXE_farol"))
            .args(["chain", "key", "--out", text(&lost)])
            .stdout(full)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("writing the public keys to stdout"), "{stderr}");
        assert!(!lost.exists());
    }
    refused(
        &["node", "--chain", c, "--keys", text(&own), "--data-dir", d],
        "is the key of no committee member",
    );
    refused(
        &["node", "--chain", c, "--coin", text(&own), "--data-dir", d],
        "--coin: a coin share goes with --keys",
    );
    let third = tmp.path().join("third");
    let t = text(&third);
    let member = tmp.path().join("member.toml");
    refused(
        &with(t, &[v[0], v[1], v[2], v[3], "--member", text(&member), "--member", "new"]),
        "member.toml: No such file",
    );
    std::fs::write(&member, &public).unwrap_or_else(|e| panic!("{e}"));
    refused(
        &with(t, &[v[0], v[1], v[2], v[3], "--member", text(&member)]),
        "--member: given 1 times for 2",
    );
    refused(
        &with(t, &[v[0], v[1], v[2], v[3], "--member", text(&member), "--member", text(&member)]),
        "--member: validators 0 and 1 have one key",
    );
    // A proof of possession that is not the key's (another key's proof) is refused.
    let (_, second, _) =
        farol(&["chain", "key", "--out", text(&tmp.path().join("second.keys.toml"))]);
    let proof = |t: &str| {
        t.lines().find(|l| l.starts_with("bls_possession")).unwrap_or_default().to_string()
    };
    let forged = tmp.path().join("forged.toml");
    std::fs::write(&forged, public.replace(&proof(&public), &proof(&second)))
        .unwrap_or_else(|e| panic!("{e}"));
    refused(
        &with(t, &[v[0], v[1], v[2], v[3], "--member", text(&forged), "--member", "new"]),
        "bls_possession",
    );
    assert!(!third.exists(), "a refused chain wrote {}", third.display());
    // A chain where validator 0 brought its own keys: it gets a coin share file.
    let fourth = tmp.path().join("fourth");
    let (ok, _, stderr) = farol(&with(
        text(&fourth),
        &[v[0], v[1], v[2], v[3], "--member", text(&member), "--member", "new"],
    ));
    assert!(ok, "{stderr}");
    let c4 = fourth.join("chain.toml");
    let share = fourth.join("validator-0.coin.toml");
    assert!(share.exists() && !fourth.join("validator-0.keys.toml").exists());
    // The two files swapped: refused, without printing the secrets the keys file holds.
    let secret = std::fs::read_to_string(&own).unwrap_or_default();
    let secret = secret.lines().find(|l| l.starts_with("bls_secret")).unwrap_or_default();
    let secret = secret.trim_start_matches("bls_secret = \"0x").trim_end_matches('"').to_string();
    assert_eq!(secret.len(), 64, "{secret}");
    let swapped = [
        "node",
        "--chain",
        text(&c4),
        "--keys",
        text(&share),
        "--coin",
        text(&own),
        "--data-dir",
        d,
    ];
    let (ok, _, stderr) = farol(&swapped);
    assert!(!ok && stderr.contains("unknown field"), "{stderr}");
    assert!(!stderr.contains(&secret[..16]), "a secret in the error: {stderr}");
    // Another position's share is blamed on --coin.
    let other_share = tmp.path().join("other.coin.toml");
    let text_share = std::fs::read_to_string(&share).unwrap_or_default();
    std::fs::write(&other_share, text_share.replace("index = 0", "index = 1"))
        .unwrap_or_else(|e| panic!("{e}"));
    let wrong = [
        "node",
        "--chain",
        text(&c4),
        "--keys",
        text(&own),
        "--coin",
        text(&other_share),
        "--data-dir",
        d,
    ];
    refused(&wrong, "--coin");
    refused(&wrong, "the coin share is validator 1's; these keys are validator 0's");
    // Without its share: the error says where it comes from.
    refused(&["node", "--chain", text(&c4), "--keys", text(&own), "--data-dir", d], "--coin FILE");
    // A keys file names its fields and file; one for another position is refused.
    let keys = out.join("validator-1.keys.toml");
    let written = std::fs::read_to_string(&keys).unwrap_or_else(|e| panic!("{e}"));
    let bad = tmp.path().join("bad.keys.toml");
    std::fs::write(&bad, written.replace("index = 1", "index = 9"))
        .unwrap_or_else(|e| panic!("{e}"));
    refused(&["node", "--chain", c, "--keys", text(&bad), "--data-dir", d], "validator.index: 9");
    std::fs::write(&bad, written.replace("index = 1", "index = 1\nstake = 3"))
        .unwrap_or_else(|e| panic!("{e}"));
    refused(&["node", "--chain", c, "--keys", text(&bad), "--data-dir", d], "bad.keys.toml");
    refused(
        &["node", "--chain", c, "--keys", text(&bad), "--data-dir", d],
        "unknown field `stake`",
    );
    // A chain file's mistakes name the file and the field.
    let written = std::fs::read_to_string(&chain).unwrap_or_else(|e| panic!("{e}"));
    assert!(written.contains("stake = 3"), "{written}");
    let bad = tmp.path().join("bad-chain.toml");
    std::fs::write(&bad, written.replace("stake = 3", "stake = \"lots\""))
        .unwrap_or_else(|e| panic!("{e}"));
    refused(
        &["node", "--chain", text(&bad), "--data-dir", d, "--peer", "127.0.0.1:1"],
        "bad-chain.toml",
    );
    refused(&["node", "--chain", text(&bad), "--data-dir", d, "--peer", "127.0.0.1:1"], "stake");
    // A configuration file may leave the chain to --chain, and says so when nothing gives it.
    let cfg = tmp.path().join("node.toml");
    std::fs::write(&cfg, "data_dir = \"data\"\n[rpc]\nhttp = \"none\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    refused(&["node", "--config", text(&cfg)], "genesis.chain_id: 0, or no genesis given");
    refused(&["node", "--config", text(&cfg), "--chain", c], "sync.peers: a full node");
    assert!(!data.exists(), "a refused node made {}", data.display());
}

/// The files under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
