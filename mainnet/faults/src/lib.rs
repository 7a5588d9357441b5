//! Test support for disk faults: runs a test binary's helper test (an `#[ignore]`d test that
//! does the work) in a subprocess under `strace`, whose `--inject` makes chosen system calls
//! fail as a failing or full disk would, and collects the lines the helper reports over a
//! datagram socket (`sendto`, which no fault here touches, unlike the test harness's own
//! writes to stdout). The parent test then opens what the helper left on a healthy disk and
//! checks it. `strace` counts calls per thread: `when=N` fails the N-th call of each thread
//! that makes such calls.
//!
//! Used by Farol Store's and the node's fault tests; the test command installs `strace`
//! (`scripts/deps.sh`). The tests name x86_64's system calls (`rename`, `fdatasync`,
//! `pwrite64`): on another architecture some differ (aarch64 has no `rename`).

use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the socket a helper reports on.
const SOCKET_VAR: &str = "FAROL_FAULTS_SOCKET";

/// A helper's side: where its lines go. `None` outside a run started by [`run`] (the helper
/// test then does nothing).
pub struct Reporter {
    sock: UnixDatagram,
    to: String,
}

impl Reporter {
    /// The reporter of a helper started by [`run`], if this process is one.
    pub fn from_env() -> Option<Reporter> {
        let to = std::env::var(SOCKET_VAR).ok()?;
        let sock = UnixDatagram::unbound().ok()?;
        Some(Reporter { sock, to })
    }

    /// Sends one line to the parent test.
    ///
    /// # Panics
    /// When the parent's socket is gone (the parent test failed first).
    pub fn say(&self, line: String) {
        if let Err(e) = self.sock.send_to(line.as_bytes(), &self.to) {
            panic!("reporting {line:?}: {e}");
        }
    }
}

/// One run of a helper under `strace`.
pub struct Run<'a> {
    /// The test binary (`std::env::current_exe()` of the parent test).
    pub exe: PathBuf,
    /// The helper test's path, as `--exact` takes it (`module::helper`).
    pub helper: &'a str,
    /// A folder for the socket and `strace`'s output.
    pub dir: &'a Path,
    /// The system calls `strace` traces (and counts), comma-separated; the injected ones
    /// must be among them.
    pub traced: &'a str,
    /// Paths to trace alone (`strace -P`, exact paths); empty: every path.
    pub paths: &'a [PathBuf],
    /// `--inject` rules (`fsync:error=EIO:when=3`).
    pub inject: &'a [String],
    /// Environment for the helper.
    pub env: &'a [(&'a str, &'a Path)],
}

/// What a helper reported, and the calls `strace` traced.
pub struct Outcome {
    /// The helper's lines, in order.
    pub said: Vec<String>,
    /// Traced calls: one per call that completed (a call `strace` shows split across
    /// threads counts once).
    pub calls: usize,
}

/// Runs `run`'s helper to its end (two minutes at most) and returns what it reported.
///
/// # Panics
/// When `strace` is missing or cannot trace here, the helper does not end in time, or it
/// fails (a panic in the code under test included): each says so.
pub fn run(run: &Run<'_>) -> Outcome {
    let sock_path = run.dir.join("faults.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path)
        .unwrap_or_else(|e| panic!("binding {}: {e}", sock_path.display()));
    if let Err(e) = sock.set_nonblocking(true) {
        panic!("{e}");
    }
    let trace = run.dir.join("strace.out");
    let mut cmd = Command::new("strace");
    // No signal lines in the output: it counts calls.
    cmd.args(["-f", "-qq", "--seccomp-bpf", "-e", "signal=none", "-o"]).arg(&trace);
    for p in run.paths {
        cmd.arg("-P").arg(p);
    }
    cmd.args(["-e", &format!("trace={}", run.traced)]);
    for i in run.inject {
        cmd.args(["-e", &format!("inject={i}")]);
    }
    cmd.arg(&run.exe)
        .args([run.helper, "--exact", "--ignored", "--test-threads=1"])
        .env(SOCKET_VAR, &sock_path);
    for (k, v) in run.env {
        cmd.env(k, v);
    }
    // A group of its own, so that a timeout stops the helper too (strace 6.1 has no
    // `--kill-on-exit`).
    let mut child =
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0).spawn().unwrap_or_else(
            |e| panic!("strace not found ({e}): install it (apt-get install strace)"),
        );
    // Read while it runs: a full pipe would stop it.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut err = String::new();
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
            err
        })
    });
    let mut said = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut drain = |said: &mut Vec<String>| {
        while let Ok(n) = sock.recv(&mut buf) {
            said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        drain(&mut said);
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("{e}"),
        }
        if Instant::now() > deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            panic!("{} hung ({:?})", run.helper, run.inject);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    drain(&mut said);
    let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    assert!(status.success(), "{} failed ({:?}, {status}): {err}", run.helper, run.inject);
    let trace = std::fs::read_to_string(&trace).unwrap_or_default();
    let calls = trace.lines().filter(|l| !l.contains("resumed>")).count();
    Outcome { said, calls }
}
