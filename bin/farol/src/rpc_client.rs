//! A minimal blocking JSON-RPC client over HTTP/1.1 with keep-alive, for the devnet's
//! readiness checks and the node benchmark's load generator.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// One connection to a node's HTTP JSON-RPC.
#[derive(Debug)]
pub(crate) struct RpcClient {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    next_id: u64,
}

impl RpcClient {
    /// A client of `addr` (connects on first use).
    pub(crate) fn new(addr: SocketAddr) -> RpcClient {
        RpcClient { addr, conn: None, next_id: 1 }
    }

    fn connect(&mut self) -> anyhow::Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
                .with_context(|| format!("connecting to {}", self.addr))?;
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(Duration::from_secs(30))).ok();
            self.conn = Some(BufReader::new(s));
        }
        self.conn.as_mut().context("no connection")
    }

    /// POSTs `body` and returns the parsed answer.
    pub(crate) fn post(&mut self, body: &str) -> anyhow::Result<Value> {
        let r = self.post_once(body);
        if r.is_err() {
            // A kept-alive connection the server closed: one retry on a fresh one.
            self.conn = None;
            return self.post_once(body);
        }
        r
    }

    fn post_once(&mut self, body: &str) -> anyhow::Result<Value> {
        let addr = self.addr;
        let conn = self.connect()?;
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.get_mut().write_all(req.as_bytes())?;
        let mut status = String::new();
        conn.read_line(&mut status)?;
        if status.is_empty() {
            bail!("connection closed");
        }
        let mut len = None;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        let len = len.context("no Content-Length in the answer")?;
        let mut buf = vec![0; len];
        conn.read_exact(&mut buf)?;
        if !status.contains(" 200 ") {
            bail!("{}: {}", status.trim(), String::from_utf8_lossy(&buf));
        }
        serde_json::from_slice(&buf).context("the answer is not JSON")
    }

    /// Calls `method` and returns its result (an error answer is an error).
    pub(crate) fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let v = self.post(&body.to_string())?;
        if let Some(e) = v.get("error") {
            bail!("{method}: {e}");
        }
        v.get("result").cloned().context("no result")
    }
}

/// Parses a hex quantity (`"0x1a"`).
pub(crate) fn quantity(v: &Value) -> anyhow::Result<u64> {
    let s = v.as_str().context("not a string")?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .with_context(|| format!("{s:?} is not a quantity"))
}
