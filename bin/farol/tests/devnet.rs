//! End to end, with real processes and sockets: `farol devnet` starts 4 validator processes
//! and a full node; real Ethereum clients (viem, ethers and Hardhat,
//! `mainnet/node/tests/client`) run their checks, on a Solidity ERC-20 and on the Rust (WASM)
//! ERC-20, with their own keys and with the node's development accounts; transfers sent over
//! JSON-RPC (to a validator, and to the full node, which forwards them) are executed and
//! block-final on every node with the same block hashes and state roots; a validator killed
//! with SIGKILL does not stop the chain, and restarted from its data directory it catches up;
//! the devnet killed with SIGKILL leaves no node running, resumes from its data directory and
//! stops cleanly on SIGINT.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use farol_node::client::{self, RpcClient};
use serde_json::{json, Value};

fn post(addr: SocketAddr, method: &str, params: Value) -> Result<Value, String> {
    RpcClient::new(addr).call(method, params)
}

fn quantity(v: &Value) -> u64 {
    client::quantity(v).unwrap_or(0)
}

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

fn nix_term(pid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill").arg("-TERM").arg(pid.to_string()).status()
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

fn transfer(key: &PrivateKeySigner, nonce: u64, to: Address) -> String {
    let tx = TxEip1559 {
        chain_id: 31337,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1,
        to: TxKind::Call(to),
        value: U256::from(1_000 + nonce),
        ..Default::default()
    };
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
    let raw = TxEnvelope::Eip1559(tx.into_signed(sig)).encoded_2718();
    format!("0x{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Sends `count` transfers from `key` through `addr` and waits for their receipts; returns
/// the highest block they landed in.
fn send_and_wait(addr: SocketAddr, key: &PrivateKeySigner, count: u64) -> u64 {
    let from = format!("{:#x}", key.address());
    let nonce = quantity(
        &post(addr, "eth_getTransactionCount", json!([from, "pending"])).unwrap_or_default(),
    );
    let mut hashes = Vec::new();
    for k in 0..count {
        // Plain accounts (low addresses are precompiles, which cost more than 21,000 gas).
        let mut to = [0x55u8; 20];
        to[19] = (k % 200) as u8;
        let to = Address::from(to);
        let h = post(addr, "eth_sendRawTransaction", json!([transfer(key, nonce + k, to)]))
            .unwrap_or_else(|e| panic!("sending: {e}"));
        hashes.push(h);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut top = 0;
    for h in hashes {
        loop {
            let r = post(addr, "eth_getTransactionReceipt", json!([h])).unwrap_or(Value::Null);
            if !r.is_null() {
                assert_eq!(r["status"], "0x1", "receipt {r}");
                top = top.max(quantity(&r["blockNumber"]));
                break;
            }
            assert!(Instant::now() < deadline, "no receipt for {h}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    top
}

/// Waits until every node in `nodes` has block `n` final, then checks they hold the same
/// block hash and state root for it.
fn final_everywhere(d: &Devnet, nodes: &[usize], n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for &i in nodes {
        loop {
            let s = post(http(d, i), "farol_status", json!([])).unwrap_or_default();
            // The devnet deals the common coin: every node runs the asynchronous fallback.
            if !s.is_null() {
                assert_eq!(s["coin"], json!(true), "node {i}: {s}");
            }
            if quantity(&s["finalized"]) >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} never finalized block {n}: {s}\n{}",
                log_tail(&d.dir, i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let tag = format!("{n:#x}");
    let blocks: Vec<Value> = nodes
        .iter()
        .map(|&i| post(http(d, i), "eth_getBlockByNumber", json!([tag, false])).unwrap_or_default())
        .collect();
    for (k, b) in blocks.iter().enumerate() {
        assert_eq!(b["hash"], blocks[0]["hash"], "node {} has another block {n}", nodes[k]);
        assert_eq!(
            b["stateRoot"], blocks[0]["stateRoot"],
            "node {} has another state at {n}",
            nodes[k]
        );
    }
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
    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the devnet did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the devnet exited with {status} on SIGINT");
    if let Some(pid) = pids.iter().find(|p| running(**p)) {
        panic!("node process {pid} outlived its devnet's Ctrl-C");
    }
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
