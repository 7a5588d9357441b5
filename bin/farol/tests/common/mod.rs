//! What the end-to-end tests share: JSON-RPC calls, signed transfers, waiting for blocks to
//! be final, and running `farol` processes.
// Each test binary uses a part of these.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use farol_node::client::{self, RpcClient};
use serde_json::{json, Value};

pub(crate) fn post(addr: SocketAddr, method: &str, params: Value) -> Result<Value, String> {
    RpcClient::new(addr).call(method, params)
}

pub(crate) fn quantity(v: &Value) -> u64 {
    client::quantity(v).unwrap_or(0)
}

/// Sends SIGTERM to process `pid`.
pub(crate) fn nix_term(pid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill").arg("-TERM").arg(pid.to_string()).status()
}

/// A signed EIP-1559 transfer of a little value from `key`, as `eth_sendRawTransaction` takes it.
pub(crate) fn transfer(chain_id: u64, key: &PrivateKeySigner, nonce: u64, to: Address) -> String {
    let tx = TxEip1559 {
        chain_id,
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

/// Sends `count` transfers from `key` on the chain `chain_id` through `addr` and waits for
/// their receipts; returns the highest block they landed in.
pub(crate) fn send_and_wait_on(
    chain_id: u64,
    addr: SocketAddr,
    key: &PrivateKeySigner,
    count: u64,
) -> u64 {
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
        let h =
            post(addr, "eth_sendRawTransaction", json!([transfer(chain_id, key, nonce + k, to)]))
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

/// Waits until every node at `addrs` has block `n` final, then checks they hold the same
/// block hash and state root for it; `tail(k)` is the end of node `k`'s log.
pub(crate) fn final_at(addrs: &[SocketAddr], n: u64, tail: &dyn Fn(usize) -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, &addr) in addrs.iter().enumerate() {
        loop {
            let s = post(addr, "farol_status", json!([])).unwrap_or_default();
            // The chain's coin is dealt: every node runs the asynchronous fallback.
            if !s.is_null() {
                assert_eq!(s["coin"], json!(true), "node {addr}: {s}");
            }
            if quantity(&s["finalized"]) >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {addr} never finalized block {n}: {s}\n{}",
                tail(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let tag = format!("{n:#x}");
    let blocks: Vec<Value> = addrs
        .iter()
        .map(|&a| post(a, "eth_getBlockByNumber", json!([tag, false])).unwrap_or_default())
        .collect();
    let nodes = addrs;
    for (k, b) in blocks.iter().enumerate() {
        assert_eq!(b["hash"], blocks[0]["hash"], "node {} has another block {n}", nodes[k]);
        assert_eq!(
            b["stateRoot"], blocks[0]["stateRoot"],
            "node {} has another state at {n}",
            nodes[k]
        );
    }
}

/// Waits (`secs` at most, then kills it and panics with `what`) for `child` to exit.
pub(crate) fn exit_within(child: &mut Child, secs: u64, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) struct Nodes(pub(crate) Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = nix_term(c.id());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for c in &mut self.0 {
            while Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `farol` with `args` to its end; returns whether it succeeded, and its stdout and
/// stderr.
pub(crate) fn farol(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_farol"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running farol {args:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn text(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("{} is not UTF-8", p.display()))
}

/// Sends SIGTERM to `child` and waits (30 s at most) for it to exit.
pub(crate) fn terminate(child: &mut Child) -> std::process::ExitStatus {
    nix_term(child.id()).unwrap_or_else(|e| panic!("{e}"));
    exit_within(child, 30, "no exit within 30 s of SIGTERM")
}

/// `GET path` on `addr`: the status code and the body.
pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut page = String::new();
    let _ = s.read_to_string(&mut page);
    let code = page.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = page.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (code, body)
}
