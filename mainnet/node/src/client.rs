//! A minimal blocking JSON-RPC client over HTTP/1.1 with keep-alive: the devnet's readiness
//! checks, the node benchmark's load generator and the tests use it.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// The largest answer read (a peer cannot make this client allocate more).
pub const MAX_ANSWER: usize = 256 << 20;
/// The longest status or header line read.
const MAX_LINE: u64 = 8 << 10;
/// The most header lines read.
const MAX_HEADERS: usize = 64;
/// The longest one answer may take to arrive, whole, by default.
const ANSWER_TIME: Duration = Duration::from_secs(60);

/// One connection to a node's HTTP JSON-RPC.
#[derive(Debug)]
pub struct RpcClient {
    addr: SocketAddr,
    conn: Option<BufReader<Timed>>,
    next_id: u64,
    /// The longest one answer may take to arrive, whole.
    answer_time: Duration,
    /// The most bytes of one answer read.
    max_answer: usize,
}

impl RpcClient {
    /// A client of `addr` (connects on first use).
    pub fn new(addr: SocketAddr) -> RpcClient {
        RpcClient { addr, conn: None, next_id: 1, answer_time: ANSWER_TIME, max_answer: MAX_ANSWER }
    }

    /// The same client reading answers of at most `bytes` ([`MAX_ANSWER`] by default, and
    /// never more).
    pub fn with_max_answer(mut self, bytes: usize) -> RpcClient {
        self.max_answer = bytes.min(MAX_ANSWER);
        self
    }

    /// [`RpcClient::call_as`] under the client's limits lowered, for this call only, to
    /// `time` and `bytes`.
    pub fn call_limited<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
        time: Duration,
        bytes: usize,
    ) -> Result<Option<T>, String> {
        let kept = (self.answer_time, self.max_answer);
        self.answer_time = time.min(kept.0);
        self.max_answer = bytes.min(kept.1);
        let answer = self.call_as(method, params);
        (self.answer_time, self.max_answer) = kept;
        answer
    }

    /// The same client with answers allowed `time` to arrive, whole (60 s by default).
    pub fn with_answer_time(mut self, time: Duration) -> RpcClient {
        self.answer_time = time;
        self
    }

    fn connect(&mut self) -> Result<&mut BufReader<Timed>, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
                .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(Duration::from_secs(30))).ok();
            s.set_write_timeout(Some(Duration::from_secs(30))).ok();
            self.conn = Some(BufReader::new(Timed { stream: s, deadline: None }));
        }
        self.conn.as_mut().ok_or_else(|| "no connection".to_string())
    }

    /// POSTs `body` and returns the parsed answer.
    pub fn post(&mut self, body: &str) -> Result<Value, String> {
        let raw = self.post_raw(body)?;
        serde_json::from_slice(&raw).map_err(|e| format!("the answer is not JSON: {e}"))
    }

    /// POSTs `body` and returns the answer's bytes. A connection that failed is dropped, so
    /// that a late answer to this request is never read as the answer to the next.
    fn post_raw(&mut self, body: &str) -> Result<Vec<u8>, String> {
        let reused = self.conn.is_some();
        match self.post_once(body) {
            Ok(answer) => Ok(answer),
            Err(failed) => {
                self.conn = None;
                // A kept-alive connection the server had closed: one retry on a fresh one.
                // Not after a timeout or once the answer began: a peer that holds requests
                // would otherwise hold each twice as long.
                if !(reused && failed.stale) {
                    return Err(failed.text);
                }
                let r = self.post_once(body);
                if r.is_err() {
                    self.conn = None;
                }
                r.map_err(|f| f.text)
            }
        }
    }

    fn post_once(&mut self, body: &str) -> Result<Vec<u8>, Failed> {
        let (addr, answer_time, max_answer) = (self.addr, self.answer_time, self.max_answer);
        let conn = self.connect().map_err(Failed::fresh)?;
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let io = |e: std::io::Error| Failed::fresh(format!("{addr}: {e}"));
        // Nothing of an answer came: the connection was closed before this request.
        let stale = |e: std::io::Error| {
            let timeout = matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock);
            Failed { stale: !timeout, text: format!("{addr}: {e}") }
        };
        conn.get_mut().stream.write_all(req.as_bytes()).map_err(stale)?;
        // A peer that sends without end, or a byte at a time, is cut off: every line and the
        // body have limits, and the whole answer a deadline that every read waits only until.
        conn.get_mut().deadline = Some(Instant::now() + answer_time);
        let status = read_line(conn).map_err(stale)?;
        if status.is_empty() {
            return Err(Failed { stale: true, text: format!("{addr}: connection closed") });
        }
        let mut len = None;
        for headers in 0.. {
            if headers == MAX_HEADERS {
                return Err(Failed::fresh(format!("{addr}: more than {MAX_HEADERS} header lines")));
            }
            let line = read_line(conn).map_err(io)?;
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
        let len =
            len.ok_or_else(|| Failed::fresh(format!("{addr}: no Content-Length in the answer")))?;
        if len > max_answer {
            return Err(Failed::fresh(format!(
                "{addr}: an answer of {len} bytes, at most {max_answer}"
            )));
        }
        // Room for what arrives, not for what the peer says will.
        let mut buf = Vec::with_capacity(len.min(1 << 20));
        while buf.len() < len {
            let want = (len - buf.len()).min(1 << 20) as u64;
            let got = conn.by_ref().take(want).read_to_end(&mut buf).map_err(io)?;
            if got == 0 {
                let text = format!("{addr}: the answer ended after {} of {len} bytes", buf.len());
                return Err(Failed::fresh(text));
            }
        }
        if !status.contains(" 200 ") {
            let shown = &buf[..buf.len().min(1024)];
            let text = format!("{}: {}", status.trim(), String::from_utf8_lossy(shown));
            return Err(Failed::fresh(text));
        }
        Ok(buf)
    }

    /// Posts `body` and checks that the answer is JSON, without keeping it: a JSON tree of
    /// a peer's answer can take many times its bytes, and this caller has no use for it.
    pub fn post_unread(&mut self, body: &str) -> Result<(), String> {
        let raw = self.post_raw(body)?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&raw)
            .map(|_| ())
            .map_err(|e| format!("the answer is not JSON: {e}"))
    }

    /// Calls `method` and returns its result (an error answer is an error).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        Ok(self.call_as::<Value>(method, params)?.unwrap_or(Value::Null))
    }

    /// Calls `method` and reads its result straight into `T` (`None`: `null`). Reading into
    /// a type rather than a JSON tree keeps what a peer's answer costs in memory near its
    /// size: a tree of small values takes many times the bytes of its text. An answer to
    /// another request (its `id`) is an error, and the connection is dropped.
    pub fn call_as<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<Option<T>, String> {
        match self.answer_of(method, params)? {
            Ok(result) => Ok(result),
            Err(e) => {
                let mut shown = json!({ "code": e.code, "message": e.message });
                if let Some(d) = e.data.and_then(|d| serde_json::from_str::<String>(d.get()).ok()) {
                    shown["data"] = Value::String(d);
                }
                Err(format!("{method}: {shown}"))
            }
        }
    }

    /// [`RpcClient::call_limited`], telling an error the peer answered (`Ok(Err(code))`:
    /// it is up and refused the call) from a failure to reach it or to read its answer
    /// (`Err`).
    pub fn call_answered(
        &mut self,
        method: &str,
        params: Value,
        time: Duration,
        bytes: usize,
    ) -> Result<Result<Value, i64>, String> {
        let kept = (self.answer_time, self.max_answer);
        self.answer_time = time.min(kept.0);
        self.max_answer = bytes.min(kept.1);
        let answer = self.answer_of::<Value>(method, params);
        (self.answer_time, self.max_answer) = kept;
        Ok(answer?.map(|r| r.unwrap_or(Value::Null)).map_err(|e| e.code))
    }

    /// Calls `method`: its result, or the error the peer answered (inner), or why no answer
    /// was read (outer).
    fn answer_of<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<Result<Option<T>, AnswerError>, String> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let raw = self.post_raw(&body.to_string())?;
        let answer: Answer<T> = serde_json::from_slice(&raw).map_err(|e| {
            self.conn = None;
            format!("{method}: the answer does not read: {e}")
        })?;
        if answer.id != Some(id) {
            self.conn = None;
            return Err(format!("{method}: an answer to request {:?}, not {id}", answer.id));
        }
        Ok(match answer.error {
            Some(e) => Err(e),
            None => Ok(answer.result),
        })
    }
}

/// Why one request failed, and whether it failed only because its kept-alive connection
/// had been closed before it (`stale`: worth one retry on a fresh connection).
#[derive(Debug)]
struct Failed {
    stale: bool,
    text: String,
}

impl Failed {
    fn fresh(text: impl Into<String>) -> Failed {
        Failed { stale: false, text: text.into() }
    }
}

/// A JSON-RPC answer whose result reads as `T`.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Answer<T> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    result: Option<T>,
    #[serde(default)]
    error: Option<AnswerError>,
}

#[derive(Deserialize)]
struct AnswerError {
    code: i64,
    #[serde(default)]
    message: String,
    /// Kept as its text (no tree built), shown when it is a string (revert data).
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
}

/// A JSON array of at most `MAX` items, refused as soon as it holds more (before reading
/// the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped<T, const MAX: usize>(pub Vec<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for Capped<T, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<T, const MAX: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> serde::de::Visitor<'de> for Items<T, MAX> {
            type Value = Capped<T, MAX>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of at most {MAX} items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if out.len() == MAX {
                        return Err(serde::de::Error::custom(format!("more than {MAX} items")));
                    }
                    out.push(item);
                }
                Ok(Capped(out))
            }
        }
        d.deserialize_seq(Items::<T, MAX>(std::marker::PhantomData))
    }
}

/// A connection whose every read waits only until the answer's deadline: a timeout set once
/// per line would let a peer that sends a byte just before each timeout hold a reader for
/// days (before stop 32 it was set per line and per megabyte of body).
#[derive(Debug)]
struct Timed {
    stream: TcpStream,
    /// When the answer being read must be complete.
    deadline: Option<Instant>,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the answer took too long",
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        self.stream.read(buf)
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes (empty at the end of the stream).
fn read_line(conn: &mut BufReader<Timed>) -> std::io::Result<String> {
    let mut line = String::new();
    conn.by_ref().take(MAX_LINE).read_line(&mut line)?;
    if line.len() as u64 == MAX_LINE && !line.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a header line longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(line)
}

/// Parses a hex quantity (`"0x1a"`).
pub fn quantity(v: &Value) -> Result<u64, String> {
    let s = v.as_str().ok_or_else(|| format!("{v} is not a string"))?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{s:?} is not a quantity"))
}

/// A base port with `n` free loopback TCP ports after it, all below the kernel's ephemeral
/// range, for nodes that are stopped and started again on the same ports (the devnet, the
/// tests, the node benchmark).
///
/// A port in the ephemeral range is free only while no process binds it: once a node is
/// down, any client's outgoing connection may take its number as its local port, and that
/// connection's TIME_WAIT then refuses the restarted node's listener for a minute, even
/// with `SO_REUSEADDR`.
pub fn free_listen_ports(n: u16) -> Result<u16, String> {
    farol_network::free_ports_in_a_row(n, |p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use std::time::Duration;

    use super::RpcClient;

    /// A server that reads one request and answers `answer`, then closes.
    fn serve(answer: Vec<u8>) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            for _ in 0..2 {
                // The client retries once on a fresh connection.
                let Ok((mut s, _)) = l.accept() else { return };
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let _ = s.write_all(&answer);
            }
        });
        addr
    }

    /// A peer's answer cannot make the client read without bound: an endless header line,
    /// too many headers, a body shorter than announced or over the limit are errors.
    #[test]
    fn bad_answers_are_errors_not_unbounded_reads() {
        let mut endless = b"HTTP/1.1 200 OK\r\nX-A: ".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 64 << 10));
        let e = RpcClient::new(serve(endless)).post("{}").expect_err("an endless line was read");
        assert!(e.contains("longer than"), "{e}");
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        many.extend(b"X-A: 1\r\n".repeat(100));
        let e = RpcClient::new(serve(many)).post("{}").expect_err("100 headers were read");
        assert!(e.contains("header lines"), "{e}");
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"a\":1}".to_vec();
        let e = RpcClient::new(serve(short)).post("{}").expect_err("a short body was read");
        assert!(e.contains("ended after"), "{e}");
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", super::MAX_ANSWER + 1);
        let e = RpcClient::new(serve(huge.into_bytes())).post("{}").expect_err("a huge body");
        assert!(e.contains("at most"), "{e}");
        let good = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}".to_vec();
        let v = RpcClient::new(serve(good)).post("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["a"], 1);
    }

    fn http(body: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    /// Answers are read into their types: an answer to another request, an array longer than
    /// its cap and an error with bulky data are refused or skipped without building them.
    #[test]
    fn typed_answers_check_the_id_and_the_size() {
        use super::Capped;
        use alloy_primitives::Bytes;
        use serde_json::json;
        type Two = Capped<Bytes, 2>;
        let ok = http(r#"{"jsonrpc":"2.0","id":1,"result":["0x01","0x0203"]}"#);
        let got = RpcClient::new(serve(ok)).call_as::<Two>("m", json!([]));
        let want = Capped(vec![Bytes::from(vec![1]), Bytes::from(vec![2, 3])]);
        assert_eq!(got, Ok(Some(want)));
        let null = http(r#"{"jsonrpc":"2.0","id":1,"result":null}"#);
        assert_eq!(RpcClient::new(serve(null)).call_as::<Two>("m", json!([])), Ok(None));
        // An answer to request 7, read where request 1's was expected.
        let late = http(r#"{"jsonrpc":"2.0","id":7,"result":["0x01"]}"#);
        let e = RpcClient::new(serve(late)).call_as::<Two>("m", json!([])).expect_err("late");
        assert!(e.contains("request Some(7)"), "{e}");
        let long = http(r#"{"jsonrpc":"2.0","id":1,"result":["0x","0x","0x"]}"#);
        let e = RpcClient::new(serve(long)).call_as::<Two>("m", json!([])).expect_err("3 of 2");
        assert!(e.contains("more than 2 items"), "{e}");
        let mut bulky =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"reverted","data":["#
                .to_string();
        bulky.push_str(&"[0,{\"a\":[1]}],".repeat(10_000));
        bulky.push_str("0]}}");
        let e =
            RpcClient::new(serve(http(&bulky))).call_as::<Two>("m", json!([])).expect_err("error");
        assert_eq!(e, r#"m: {"code":3,"message":"reverted"}"#);
        let text = http(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"reverted","data":"0x08c3"}}"#,
        );
        let e = RpcClient::new(serve(text)).call_as::<Two>("m", json!([])).expect_err("error");
        assert!(e.contains(r#""data":"0x08c3""#), "{e}");
    }

    /// A client's own answer bound, and answers checked without being kept.
    #[test]
    fn an_answer_over_the_clients_bound_is_an_error() {
        let body = format!("[{}0]", "0,".repeat(100));
        let e = RpcClient::new(serve(http(&body))).with_max_answer(100).post_unread("{}");
        assert!(e.as_ref().is_err_and(|e| e.contains("at most 100")), "{e:?}");
        let ok = RpcClient::new(serve(http(&body))).with_max_answer(1000).post_unread("{}");
        assert_eq!(ok, Ok(()));
        let e = RpcClient::new(serve(http("{nope"))).post_unread("{}");
        assert!(e.as_ref().is_err_and(|e| e.contains("not JSON")), "{e:?}");
    }

    /// A call's own bound holds for that call only (block sync reads headers within 4 MiB
    /// with the client that reads snapshots within 256 MiB).
    #[test]
    fn a_calls_own_bound_holds_for_that_call() {
        use alloy_primitives::Bytes;
        use serde_json::json;
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"result":"0x{}"}}"#, "ab".repeat(200));
        let mut c = RpcClient::new(serve(http(&body)));
        let e = c
            .call_limited::<Bytes>("m", json!([]), Duration::MAX, 100)
            .expect_err("over 100 bytes");
        assert!(e.contains("at most 100"), "{e}");
        assert_eq!(c.max_answer, super::MAX_ANSWER, "the client's own bound is back");
        let mut c = RpcClient::new(serve(http(&body)));
        let ok = c
            .call_limited::<Bytes>("m", json!([]), Duration::MAX, 1000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.map(|b| b.len()), Some(200));
    }

    /// A server that closed a kept-alive connection gets the request again on a fresh
    /// one; a server that holds a request past its deadline does not get it twice.
    #[test]
    fn only_a_closed_kept_alive_connection_is_retried() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let accepted = Arc::new(AtomicUsize::new(0));
        // Answers the first request and closes; answers on the next connection.
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let count = accepted.clone();
        std::thread::spawn(move || {
            while let Ok((mut s, _)) = l.accept() {
                count.fetch_add(1, Ordering::SeqCst);
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let _ = s.write_all(&http(r#"{"a":1}"#));
            }
        });
        let mut c = RpcClient::new(addr);
        for _ in 0..2 {
            let v = c.post("{}").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(v["a"], 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Holds every request without answering.
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let held = Arc::new(AtomicUsize::new(0));
        let count = held.clone();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            while let Ok((mut s, _)) = l.accept() {
                count.fetch_add(1, Ordering::SeqCst);
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                kept.push(s);
            }
        });
        let mut c = RpcClient::new(addr).with_answer_time(Duration::from_millis(300));
        assert!(c.post("{}").is_err());
        assert_eq!(held.load(Ordering::SeqCst), 1);
        // Again over a kept-alive connection: first a good exchange, then a held one.
        let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let count = held.clone();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let _ = s.write_all(&http(r#"{"a":1}"#));
            let _ = s.read(&mut req);
            // The second request is held; a second connection would be counted.
            let mut kept = vec![s];
            while let Ok((s, _)) = l.accept() {
                count.fetch_add(1, Ordering::SeqCst);
                kept.push(s);
            }
        });
        let mut c = RpcClient::new(addr).with_answer_time(Duration::from_millis(300));
        assert!(c.post("{}").is_ok());
        assert!(c.post("{}").is_err());
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(held.load(Ordering::SeqCst), 2, "the held request was sent again");
    }

    #[test]
    fn listen_ports_are_free_and_outside_the_ephemeral_range() {
        let base = super::free_listen_ports(10).unwrap_or_else(|e| panic!("{e}"));
        let range: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_else(|_| vec![32_768, 60_999]);
        assert!(base + 9 < range[0] || base > range[1], "{base} in {range:?}");
        for p in base..base + 10 {
            assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(), "port {p}");
        }
    }

    /// A peer that sends its answer a byte at a time, each well within any one read's
    /// timeout, is cut off at the answer's deadline.
    #[test]
    fn a_trickling_answer_ends_at_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else { return };
            let mut request = [0u8; 1024];
            let _ = s.read(&mut request);
            // The head at once, then the body a byte at a time.
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
            if s.write_all(head).is_err() {
                return;
            }
            while s.write_all(b" ").is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Before every read waited for the deadline, this read for 100,000 × 50 ms.
        let mut c = RpcClient::new(addr).with_answer_time(Duration::from_millis(700));
        let r = c.post_once("{}");
        assert!(r.is_err(), "{r:?}");
    }
}
