//! Faults on real processes: one validator of a chain of four runs under `strace`, which
//! makes chosen system calls fail (`--inject`). Its disk: a sync or a write of one of its
//! files fails as a failing or full disk's would; the validator must stop with a message
//! naming the file and the error (status 3 while running, 1 at a start), never go on over
//! data it could not make durable, and, started again on a healthy disk, catch up with the
//! others, keep every block and transaction it had acknowledged, and sign nothing the others
//! take for equivocation. Its network: its sends refused for a while (`strace` attached to
//! the running node, then let go); it must keep running, get what is sent through it
//! included meanwhile (through its peers' JSON-RPC), say in `/health` that it is cut off,
//! and come back into consensus.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use farol_node::client;
use serde_json::{json, Value};

mod common;
use common::*;

const CHAIN_ID: u64 = 4545;

/// The system calls on one file of a node's data directory that fail, and which of them.
struct Fault {
    /// The file, relative to the data directory (empty: calls on any file or socket).
    file: PathBuf,
    /// `strace` syscall names, comma-separated.
    calls: &'static str,
    /// The errno they fail with.
    error: &'static str,
    /// Which calls fail, counted per thread: `strace`'s `when` (`3+`, `200..400`).
    when: String,
}

/// A process started in a group of its own (so that `strace` and the node it runs are
/// stopped together), stopped with SIGTERM, then SIGKILL, when dropped.
struct Proc(Child);

impl Proc {
    /// Stops the node with SIGTERM (under `strace`, the node itself: `strace` would detach
    /// and leave it running) and waits for its exit status (30 s at most).
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.0.id();
        // The node under `strace` is its only child.
        let traced = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "strace");
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        let node = children
            .ok()
            .filter(|_| traced)
            .and_then(|c| c.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| pid.to_string());
        let _ = Command::new("kill").args(["-TERM", &node]).status();
        exit_within(&mut self.0, 30, "no exit within 30 s of SIGTERM")
    }

    fn signal_group(&self, signal: &str) {
        // The group may be gone already (the node exited; `strace` with it).
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.0.id())])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Proc {
    /// The whole group, even when its leader is gone, unless it exited by itself: a node
    /// under a `strace` that was killed may outlive it (strace 6.1, Debian bookworm's, has
    /// no `--kill-on-exit`), while one that exits with a status does so after its node.
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(status)) if status.code().is_some()) {
            return;
        }
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !matches!(self.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("-KILL");
        let _ = self.0.wait();
    }
}

/// Panics, saying what to do, unless `strace` can trace and tamper here (the test command
/// installs it: scripts/deps.sh).
fn strace_works() {
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "--seccomp-bpf", "-e", "trace=fsync"])
        .args(["-e", "inject=fsync:error=EIO", "true"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "strace cannot trace here ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("strace not found ({e}): install it (apt-get install strace)"),
    }
}

struct Chain {
    dir: tempfile::TempDir,
    http: Vec<SocketAddr>,
    /// How many times each node was started (its logs are `node-<i>.<k>.log`).
    starts: Vec<usize>,
}

impl Chain {
    fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}.{}.log", self.starts[i]))
    }

    fn trace(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("strace-{i}.{}.out", self.starts[i]))
    }

    fn whole_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log(i)).unwrap_or_default()
    }

    /// The end of node `i`'s latest log, without the lines of a backtrace.
    fn tail(&self, i: usize) -> String {
        let t = self.whole_log(i);
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !(l.starts_with("at ")
                    || l.split_once(':').is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
            })
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts validator `i`, under `strace` with `fault` if one is given.
    fn start(&mut self, i: usize, fault: Option<&Fault>) -> Proc {
        self.starts[i] += 1;
        let keys = self.dir.path().join(format!("chain/validator-{i}.keys.toml"));
        let mut cmd = match fault {
            None => Command::new(env!("CARGO_BIN_EXE_farol")),
            Some(f) => {
                // What strace traced, the injected calls marked, in `strace-<i>.<k>.out`.
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "--seccomp-bpf", "-o"]).arg(self.trace(i));
                if !f.file.as_os_str().is_empty() {
                    c.arg("-P").arg(self.data(i).join(&f.file));
                }
                c.args(["-e", &format!("trace={}", f.calls)])
                    .args(["-e", &format!("inject={}:error={}:when={}", f.calls, f.error, f.when)])
                    .arg(env!("CARGO_BIN_EXE_farol"));
                c
            }
        };
        cmd.arg("node")
            .arg("--chain")
            .arg(self.dir.path().join("chain/chain.toml"))
            .arg("--keys")
            .arg(keys)
            .arg("--data-dir")
            .arg(self.data(i))
            .args(["--http", &self.http[i].to_string(), "--ws", "none", "--log", "warn"]);
        for j in (0..self.http.len()).filter(|&j| j != i) {
            cmd.args(["--peer", &self.http[j].to_string()]);
        }
        let f = std::fs::File::create(self.log(i)).unwrap_or_else(|e| panic!("{e}"));
        let child = cmd
            .stdout(f.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {i}: {e}"));
        Proc(child)
    }

    /// Waits until node `i` answers JSON-RPC.
    fn serving(&self, i: usize, node: &mut Proc) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while post(self.http[i], "farol_status", json!([])).is_err() {
            if let Ok(Some(status)) = node.0.try_wait() {
                panic!("node {i} exited ({status}):\n{}", self.tail(i));
            }
            assert!(Instant::now() < deadline, "node {i} never served JSON-RPC:\n{}", self.tail(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs validator `i` with `fault` until it exits (90 s at most), and returns how.
    fn run_into(&mut self, i: usize, fault: &Fault) -> ExitStatus {
        let mut node = self.start(i, Some(fault));
        let what = format!("node {i} went on although {} failed", fault.file.display());
        let status = exit_within(&mut node.0, 90, &what);
        drop(node);
        status
    }

    fn status(&self, i: usize) -> Value {
        post(self.http[i], "farol_status", json!([])).unwrap_or_else(|e| panic!("node {i}: {e}"))
    }
}

/// The hash of a transfer from `key` at `nonce`, sent through `addr`.
fn send(addr: SocketAddr, key: &PrivateKeySigner, nonce: u64) -> Value {
    let to = alloy_primitives::Address::from([0x66u8; 20]);
    post(addr, "eth_sendRawTransaction", json!([transfer(CHAIN_ID, key, nonce, to)]))
        .unwrap_or_else(|e| panic!("sending nonce {nonce}: {e}"))
}

/// The receipt of `hash` at `addr`, waited for (60 s at most).
fn receipt(addr: SocketAddr, hash: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = post(addr, "eth_getTransactionReceipt", json!([hash])).unwrap_or(Value::Null);
        if !r.is_null() {
            assert_eq!(r["status"], "0x1", "receipt {r}");
            return r;
        }
        assert!(Instant::now() < deadline, "no receipt for {hash} at {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The newest segment of node `dir`'s state store, relative to `dir`.
fn newest_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<String> = std::fs::read_dir(dir.join("state"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("seg-") && n.ends_with(".log"))
        .collect();
    segments.sort();
    let last = segments.pop().unwrap_or_else(|| panic!("no segment in {}", dir.display()));
    Path::new("state").join(last)
}

/// A chain of four validators dealt by `farol chain new`, one funded account, and the four
/// running and serving JSON-RPC.
fn four_validators() -> (Chain, PrivateKeySigner, Vec<Proc>) {
    strace_works();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let udp = farol_network::free_loopback_addrs(4).unwrap_or_else(|e| panic!("{e}"));
    let base = client::free_listen_ports(4).unwrap_or_else(|e| panic!("{e}"));
    let funder = PrivateKeySigner::random();
    let out = dir.path().join("chain");
    let mut args = vec!["chain".to_string(), "new".into(), "--out".into(), text(&out).into()];
    for a in &udp {
        args.extend(["--validator".into(), a.to_string()]);
    }
    args.extend(["--chain-id".into(), CHAIN_ID.to_string()]);
    args.extend(["--alloc".into(), format!("{}=100ether", funder.address())]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = farol(&args);
    assert!(ok, "{stdout}{stderr}");
    let mut chain = Chain {
        dir,
        http: (0..4).map(|i| SocketAddr::from(([127, 0, 0, 1], base + i as u16))).collect(),
        starts: vec![0; 4],
    };
    let mut nodes: Vec<Proc> = (0..4).map(|i| chain.start(i, None)).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        chain.serving(i, node);
    }
    (chain, funder, nodes)
}

/// A validator whose disk fails (a sync of its block log, of its consensus log or of its
/// state store returns EIO; its block log's disk is full; its mempool journal cannot be read
/// at a start) stops, saying which file and what error, while the other three go on; each
/// time it starts again on a healthy disk it catches up. At the end it holds the blocks and
/// the receipt it had served before the faults, the transaction its pool had accepted
/// before the journal's fault, and the same blocks and state as the others, and no
/// validator has seen it sign twice.
#[test]
fn a_validator_whose_disk_fails_stops_and_comes_back_whole() {
    let (mut chain, funder, mut nodes) = four_validators();
    // Validator 3 serves a receipt, and the block holding it is final everywhere.
    let first = send(chain.http[3], &funder, 0);
    let served = receipt(chain.http[3], &first);
    let at = quantity(&served["blockNumber"]);
    final_at(&chain.http, at, &|k| chain.tail(k));
    let mut nonce = 1;

    // Validator 3 stops for good; each fault then runs it until it exits.
    assert_eq!(nodes[3].terminate().code(), Some(0), "{}", chain.tail(3));
    nodes.pop();
    let eio = |file: &str, calls, from: u32| Fault {
        file: file.into(),
        calls,
        error: "EIO",
        when: format!("{from}+"),
    };
    let mut faults = vec![
        (eio("blocks.log", "fdatasync,fsync", 3), "Input/output error"),
        (eio("consensus.wal", "fdatasync,fsync", 3), "Input/output error"),
        (eio("", "fdatasync,fsync", 2), "Input/output error"),
        (
            Fault { file: "blocks.log".into(), calls: "write", error: "ENOSPC", when: "2+".into() },
            "No space left on device",
        ),
    ];
    faults[2].0.file = newest_segment(&chain.data(3));
    for (fault, said) in &faults {
        // The others go on meanwhile: a transfer through validator 0 each time.
        let h = send(chain.http[0], &funder, nonce);
        nonce += 1;
        let status = chain.run_into(3, fault);
        let log = chain.whole_log(3);
        let file = fault.file.display().to_string();
        assert_eq!(status.code(), Some(3), "{file}: {status}\n{}", chain.tail(3));
        assert!(
            log.contains("the node stopped on an error")
                && log.contains(&file)
                && log.contains(said),
            "{file}: the error is not named:\n{}",
            chain.tail(3)
        );
        receipt(chain.http[0], &h);
    }

    // A transaction only validator 3's pool holds (its nonce leaves a gap), kept in its
    // journal over a stop.
    let mut node = chain.start(3, None);
    chain.serving(3, &mut node);
    let held = send(chain.http[3], &funder, nonce + 1);
    let pending = post(chain.http[3], "eth_getTransactionByHash", json!([held]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(pending["blockNumber"].is_null(), "{pending}");
    assert_eq!(node.terminate().code(), Some(0), "{}", chain.tail(3));
    drop(node);
    // A journal that cannot be read fails the start (status 1) and is left as it is: not
    // set aside as damaged (before stop 55 it was, and its transactions were lost).
    let journal = chain.data(3).join("mempool.journal");
    let before = std::fs::read(&journal).unwrap_or_else(|e| panic!("{e}"));
    let fault =
        Fault { file: "mempool.journal".into(), calls: "read", error: "EIO", when: "1+".into() };
    let status = chain.run_into(3, &fault);
    assert_eq!(status.code(), Some(1), "{}", chain.tail(3));
    let log = chain.whole_log(3);
    assert!(
        log.contains("mempool journal") && log.contains("Input/output error"),
        "{}",
        chain.tail(3)
    );
    assert_eq!(std::fs::read(&journal).unwrap_or_default(), before, "the journal changed");
    assert!(!chain.data(3).join("mempool.damaged").exists(), "the journal was set aside");

    // On a healthy disk it comes back: the held transaction is still in its pool, and runs
    // once the gap is filled.
    let mut node = chain.start(3, None);
    chain.serving(3, &mut node);
    let pending = post(chain.http[3], "eth_getTransactionByHash", json!([held]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pending["hash"], held, "the held transaction was lost:\n{}", chain.tail(3));
    let gap = send(chain.http[3], &funder, nonce);
    receipt(chain.http[3], &gap);
    let last = quantity(&receipt(chain.http[3], &held)["blockNumber"]);
    final_at(&chain.http, last, &|k| chain.tail(k));
    // What it served before the faults it serves still.
    let again = receipt(chain.http[3], &first);
    assert_eq!(again["blockHash"], served["blockHash"], "{again}");
    let block = |i: usize, n: u64| {
        post(chain.http[i], "eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(block(3, at)["hash"], served["blockHash"]);
    // No validator took it for two signers, or saw its blocks elsewhere.
    for i in 0..4 {
        let faults = &chain.status(i)["consensusFaults"];
        assert_eq!(faults["equivocators"], json!(0), "node {i}: {faults}");
        assert_eq!(faults["own_blocks_elsewhere"], json!(0), "node {i}: {faults}");
    }
    nodes.push(node);
}

/// A validator cut off from the others for a few seconds, then back: `strace`, attached to
/// the running node, refuses its UDP sends (`sendmsg`, `sendmmsg`) with EPERM, as a
/// firewall would, until it is killed (the kernel then lets go of the node). Meanwhile the
/// others go on, a transfer sent through it is included all the same (its pool sends it to
/// the peers' JSON-RPC once consensus is in trouble), and its `/health` fails; once its
/// sends go through it catches up, what is sent through it is included, every validator
/// finalizes the blocks with the same hash and state, its own blocks are ordered again
/// (what `/health` reads), and none of them saw it sign twice.
#[test]
fn a_validator_cut_off_for_a_while_comes_back() {
    let (chain, funder, mut nodes) = four_validators();
    let pid = nodes[3].0.id();
    let trace = chain.dir.path().join("strace-cut.out");
    let mut tracer = Proc(
        Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .args(["-e", "trace=sendmsg,sendmmsg"])
            .args(["-e", "inject=sendmsg,sendmmsg:error=EPERM"])
            .args(["-p", &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("strace: {e}")),
    );
    let injected = || {
        let t = std::fs::read_to_string(&trace).unwrap_or_default();
        t.lines().filter(|l| l.ends_with("(INJECTED)")).count()
    };
    // Cut off: its sends fail.
    let deadline = Instant::now() + Duration::from_secs(60);
    while injected() < 50 {
        if let Ok(Some(status)) = tracer.0.try_wait() {
            panic!("strace exited ({status}): it cannot attach here?");
        }
        assert!(Instant::now() < deadline, "its sends never failed:\n{}", chain.tail(3));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The others go on.
    let during = send(chain.http[0], &funder, 0);
    receipt(chain.http[0], &during);
    // A transfer sent through the cut-off validator: its consensus proposes it to no one,
    // and its pool, finding consensus in trouble, sends it to the peers' JSON-RPC (TCP,
    // which the cut leaves alone), so it is included while the cut lasts (since stop 57;
    // before, it waited for the cut's end).
    let held = send(chain.http[3], &funder, 1);
    let r = receipt(chain.http[0], &held);
    assert!(matches!(tracer.0.try_wait(), Ok(None)), "strace exited during the cut");
    // `/health` says the validator is cut off: it makes no commit, or none of its own, or,
    // falling behind again and again, rejoins from its peers' snapshots (it hears blocks it
    // does not acknowledge, so their senders' QUIC streams stall; since stop 57: each
    // rejoin starts the other rules' clocks again).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (code, body) = get(chain.http[3], "/health");
        if code == 503 {
            assert!(body.contains("commit") || body.contains("rejoined"), "{body}");
            eprintln!("cut off: {body}");
            break;
        }
        assert!(Instant::now() < deadline, "still healthy while cut off: {code} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Back: `strace` is killed, and the kernel lets go of the node as its tracer dies
    // (ptrace(2); no seccomp filter was installed, so its sends go through again). A SIGINT
    // that asks `strace` to detach was not always taken within 30 s on a loaded machine.
    let _ = Command::new("kill").args(["-KILL", &tracer.0.id().to_string()]).status();
    exit_within(&mut tracer.0, 30, "strace did not exit on SIGKILL");
    let back = Instant::now();
    assert!(matches!(nodes[3].0.try_wait(), Ok(None)), "node 3 exited:\n{}", chain.tail(3));
    final_at(&chain.http, quantity(&r["blockNumber"]), &|k| chain.tail(k));
    // Once its sends go through, what is sent through it is included, and final everywhere.
    let after = send(chain.http[3], &funder, 2);
    let r = receipt(chain.http[0], &after);
    final_at(&chain.http, quantity(&r["blockNumber"]), &|k| chain.tail(k));
    // Its own blocks are ordered again: one within the last 2 s, at least 3 s after it
    // was let go.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get(chain.http[3], "/health");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let own = v["consensusLastOwnCommitAgeMs"].as_u64().unwrap_or(u64::MAX);
        if code == 200 && own < 2_000 && back.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(Instant::now() < deadline, "its blocks are not ordered: {code} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..4 {
        let faults = &chain.status(i)["consensusFaults"];
        assert_eq!(faults["equivocators"], json!(0), "node {i}: {faults}");
    }
}

/// A measurement, not run by the test command (`cargo test -p farol --test faults
/// waits_through_a_validator_whose_sends_partly_fail -- --ignored --nocapture`): `strace`
/// refuses each of validator 3's threads' sends numbered `FAROL_CUT_WHEN` (`strace`'s
/// `when`, counted per thread; default `100..3000`), and for `FAROL_CUT_SECS` (default 45)
/// one transfer at a time goes through validator 3, each waited for (60 s at most) and its
/// wait printed with validator 3's rejoins so far (docs/node.md §5 has stop 57's runs).
#[test]
#[ignore]
fn waits_through_a_validator_whose_sends_partly_fail() {
    let (chain, funder, nodes) = four_validators();
    let when = std::env::var("FAROL_CUT_WHEN").unwrap_or_else(|_| "100..3000".into());
    let secs = std::env::var("FAROL_CUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(45);
    let mut tracer = Proc(
        Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(chain.dir.path().join("strace-cut.out"))
            .args(["-e", "trace=sendmsg,sendmmsg"])
            .args(["-e", &format!("inject=sendmsg,sendmmsg:error=EPERM:when={when}")])
            .args(["-p", &nodes[3].0.id().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("strace: {e}")),
    );
    let start = Instant::now();
    let mut nonce = 0;
    let mut waits = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let sent = Instant::now();
        let hash = send(chain.http[3], &funder, nonce);
        receipt(chain.http[0], &hash);
        let wait = sent.elapsed().as_millis();
        waits.push(wait);
        let s = chain.status(3);
        eprintln!(
            "at {:>5.1} s, nonce {nonce}: {wait} ms (validator 3: {} rejoins, {} carried)",
            sent.duration_since(start).as_secs_f64(),
            quantity(&s["rejoins"]),
            quantity(&s["rejoinCarried"]),
        );
        nonce += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    waits.sort_unstable();
    eprintln!(
        "{} transfers with each thread's sends {when} refused: median {} ms, longest {} ms",
        waits.len(),
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    let _ = Command::new("kill").args(["-KILL", &tracer.0.id().to_string()]).status();
    exit_within(&mut tracer.0, 30, "strace did not exit on SIGKILL");
}
