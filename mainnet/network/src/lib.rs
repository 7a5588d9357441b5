//! Farol's validator network: QUIC (quinn) with TLS 1.3 (rustls), every peer pinned to the
//! validator set by its identity key, length-prefixed frames on one long-lived stream per
//! peer and direction.
//!
//! - **Authentication.** Both sides present raw Ed25519 public keys ([`identity`]); a key
//!   outside the set is refused during the handshake, and a dialer accepts only the key of
//!   the peer it dialed.
//! - **Frames.** A 4-byte little-endian length, then the bytes. A frame over the limit
//!   closes that connection only; the node goes on with its other peers.
//! - **Outbound.** One task per peer owns a bounded queue and a connection. It reconnects
//!   with exponential backoff (50 ms doubling to 2 s); the backoff starts again from 50 ms
//!   only after a connection stayed up for a second, so a peer that accepts the handshake
//!   and then closes (it does not know our key, or another process holds our identity) is
//!   not dialed in a tight loop. A frame whose write failed is sent again first on the next
//!   connection, once; a frame that fails on two connections in a row is dropped and
//!   counted, so one frame the peer keeps refusing cannot block the frames behind it.
//!   Frames quinn accepted for a connection that then dies silently are lost (a peer cut
//!   off is noticed at the 5 s idle timeout; a peer killed and restarted at the first packet
//!   its new process gets on the old connection, which it answers with a stateless reset
//!   from a key derived from its identity, for connection IDs of 8 random bytes): delivery
//!   is best effort, and
//!   consensus repairs losses by itself. [`Network::send`] never blocks: a frame over
//!   `max_frame`, or for a peer whose queue is full, is dropped and counted.
//! - **Inbound.** Frames go to one channel ([`Inbound`]), bounded in frames and, per peer, in
//!   bytes and in frames: a reader takes a frame's length and one frame from its peer's
//!   budget before it reads the frame, and the budget comes back when the application takes
//!   the frame. When the application does not keep up, readers wait, QUIC flow control
//!   stops the senders, and memory stays bounded. A peer that sends large frames fills only
//!   its own byte budget, and one that sends a flood of tiny ones only its share of the
//!   channel (`inbound / (peers - 1)` frames), so the others' frames still get in. A peer
//!   holds one incoming connection: a newer one closes the one before.
//! - **Handshakes.** A dialer must first prove its address (a stateless Retry); then a
//!   validator's address draws from its own bucket of handshakes and strangers from buckets
//!   per IP and in all, with a bound on their handshakes under way (`gate`,
//!   [`HandshakeLimits`]), so a flood of handshakes costs the listener little and never
//!   shuts out a validator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use thiserror::Error;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

mod gate;
pub mod identity;

pub use gate::HandshakeLimits;
pub use identity::{Identity, PeerKey, ALPN};

/// Why the network could not start.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// A key or TLS setting was refused.
    #[error("identity: {0}")]
    Identity(String),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),
}

/// One validator as the network knows it.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its identity key.
    pub key: PeerKey,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// How to run the network of one validator.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// This validator's position in `peers`.
    pub me: u16,
    /// Its identity (its public key must be `peers[me].key`).
    pub identity: Identity,
    /// The address to listen on (usually `peers[me].addr`; port 0 picks one).
    pub listen: SocketAddr,
    /// The validator set, in committee order.
    pub peers: Vec<Peer>,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Frames queued per peer before `send` drops.
    pub queue: usize,
    /// Bytes queued per peer before `send` drops.
    pub queue_bytes: usize,
    /// Frames queued for the application before readers wait.
    pub inbound: usize,
    /// Bytes of one peer's frames read and not yet taken by the application before its
    /// readers wait (raised to `max_frame` if below it).
    pub inbound_bytes: usize,
    /// Incoming handshakes served.
    pub handshakes: HandshakeLimits,
    /// The protocol name both ends of a connection must speak (TLS ALPN; [`ALPN`] by
    /// default): validators of other names refuse each other's handshakes, and say so
    /// ([`Stats::other_protocol`]). A node names its chain rules' version in it, so that
    /// validators running different rules do not make one chain that diverges.
    pub protocol: Vec<u8>,
    /// Work done on each frame by the reader of its connection, before the frame is queued
    /// for the application (none by default): readers of different peers run apart, on
    /// whichever worker thread is free, while the application may be busy.
    pub precheck: Option<Precheck>,
}

/// A function given each frame received (its sender's position and bytes) by the reader of
/// its connection ([`NetworkConfig::precheck`]). A validator checks blocks' signatures
/// there, into a cache its engine looks in, so that the check runs beside the engine's
/// work rather than in it.
#[derive(Clone)]
pub struct Precheck(pub Arc<PrecheckFn>);

/// What a [`Precheck`] calls.
pub type PrecheckFn = dyn Fn(u16, &Bytes) + Send + Sync;

impl std::fmt::Debug for Precheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Precheck")
    }
}

impl NetworkConfig {
    /// Defaults: 16 MiB frames; per peer, 4,096 frames and 64 MiB queued to send and 64 MiB
    /// received and not yet taken; 16,384 frames inbound in all.
    pub fn new(me: u16, identity: Identity, listen: SocketAddr, peers: Vec<Peer>) -> NetworkConfig {
        NetworkConfig {
            me,
            identity,
            listen,
            peers,
            max_frame: 16 << 20,
            queue: 4096,
            queue_bytes: 64 << 20,
            inbound: 16_384,
            inbound_bytes: 64 << 20,
            handshakes: HandshakeLimits::default(),
            protocol: ALPN.to_vec(),
            precheck: None,
        }
    }
}

/// Counters of what the network did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames written to peers.
    pub frames_out: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames dropped because a peer's queue was full.
    pub dropped: AtomicU64,
    /// Connections established (outbound).
    pub connects: AtomicU64,
    /// Incoming connections refused during the handshake.
    pub refused: AtomicU64,
    /// Incoming handshakes turned down before they started (over a [`HandshakeLimits`]).
    pub limited: AtomicU64,
    /// Incoming handshakes asked to prove their address first (stateless Retry).
    pub retries: AtomicU64,
    /// Connections closed for a bad frame.
    pub bad_frames: AtomicU64,
    /// Incoming connections closed because the same peer connected again.
    pub replaced: AtomicU64,
    /// Outbound connections a peer ended with a stateless reset: it restarted (see
    /// `Identity`'s reset key) and did not know the connection any more.
    pub resets: AtomicU64,
    /// Readers of incoming streams running now (at most 4 per connected peer).
    pub readers: AtomicUsize,
    /// Handshakes, dialed or accepted, that failed because the other end speaks another
    /// protocol (`NetworkConfig::protocol`): another version of the chain's rules.
    pub other_protocol: AtomicU64,
}

/// A running validator network.
#[derive(Debug)]
pub struct Network {
    me: u16,
    endpoint: quinn::Endpoint,
    outbound: Vec<Option<Outbound>>,
    queue_bytes: usize,
    max_frame: usize,
    stats: Arc<Stats>,
    tasks: Vec<JoinHandle<()>>,
}

/// Frames received, with the sender's position, in the order they were read.
#[derive(Debug)]
pub struct Inbound {
    rx: mpsc::Receiver<(u16, Bytes)>,
    /// Each peer's budget (see the module documentation).
    budgets: Arc<Vec<Arc<Budget>>>,
}

/// What one peer's frames may hold of the inbound channel before its readers wait.
#[derive(Debug)]
struct Budget {
    bytes: Semaphore,
    frames: Semaphore,
}

impl Budget {
    fn give_back(&self, len: usize) {
        self.bytes.add_permits(len);
        self.frames.add_permits(1);
    }
}

impl Inbound {
    /// The next frame; `None` once the network is gone.
    pub async fn recv(&mut self) -> Option<(u16, Bytes)> {
        let frame = self.rx.recv().await?;
        self.release(&frame);
        Some(frame)
    }

    /// The next frame if one is there.
    pub fn try_recv(&mut self) -> Result<(u16, Bytes), mpsc::error::TryRecvError> {
        let frame = self.rx.try_recv()?;
        self.release(&frame);
        Ok(frame)
    }

    fn release(&self, (from, bytes): &(u16, Bytes)) {
        if let Some(b) = self.budgets.get(usize::from(*from)) {
            b.give_back(bytes.len());
        }
    }
}

impl Drop for Inbound {
    /// Readers waiting for budget stop: nothing will take their frames any more.
    fn drop(&mut self) {
        for b in self.budgets.iter() {
            b.bytes.close();
            b.frames.close();
        }
    }
}

/// One peer's queue: the channel to its task and the bytes waiting in it.
#[derive(Debug)]
struct Outbound {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a connection must stay up for the next loss to count as a fresh start
/// (reconnect at once, backoff from [`BACKOFF_MIN`]) rather than one more failure.
const STABLE: Duration = Duration::from_secs(1);
const CLOSE_BAD_FRAME: u32 = 1;
/// The longest a handshake may take, from either side. quinn has no limit of its own: its
/// idle timer restarts at every packet, so a peer that sends pings and never finishes its
/// handshake kept it, and its place among the strangers' handshakes the gate allows at once,
/// for as long as it liked (before stop 48: sixteen such held every stranger out).
const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// The application close code for a connection a newer one from the same peer replaced.
const CLOSE_REPLACED: u32 = 2;

/// The transport of a connection: `accepting` (the listener's side) lets the peer open up to
/// 4 streams toward it; the dialing side lets it open none (frames flow from the dialer to
/// the listener only, and a stream nobody reads would hold up to its window in memory).
fn transport(accepting: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(0u32.into());
    t.max_concurrent_uni_streams(if accepting { 4u32 } else { 0 }.into());
    t.datagram_receive_buffer_size(None);
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((32u32 << 20).into());
    t.send_window(32 << 20);
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(5)) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

/// The UDP socket buffers asked for. The kernel's default (about 208 KiB on Linux) overflows
/// when several peers each send a block of a few hundred KiB at once to a busy node: the
/// kernel drops datagrams, QUIC takes the losses for congestion and slows every sender down.
/// The kernel caps the size at `net.core.rmem_max` / `wmem_max`: 4 MiB on the machine the
/// numbers in `docs/consensus.md` come from, but 208 KiB by default on many distributions,
/// where an operator should raise them.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// A UDP socket bound to `addr`, with [`SOCKET_BUFFER`]-sized buffers where the kernel allows
/// them.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer than asked for only makes drops likelier.
    for set in [socket2::Socket::set_recv_buffer_size, socket2::Socket::set_send_buffer_size] {
        if let Err(e) = set(&sock, SOCKET_BUFFER) {
            tracing::debug!(%e, "setting a UDP socket buffer size");
        }
    }
    Ok(socket)
}

/// `n` free UDP addresses on loopback in a row, for a local committee (the devnet, tests,
/// benchmarks), outside the kernel's ephemeral range ([`free_ports_in_a_row`]). Until stop
/// 46 they came from that range (bound to port 0, then let go), where any process's next
/// socket (a DNS lookup's, a test's) could take one before its validator bound it.
pub fn free_loopback_addrs(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let count = u16::try_from(n).map_err(|_| std::io::Error::other(format!("{n} ports")))?;
    let free = |p: u16| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok();
    let base = free_ports_in_a_row(count, free).map_err(std::io::Error::other)?;
    Ok((0..count).map(|i| SocketAddr::from(([127, 0, 0, 1], base + i))).collect())
}

/// A base port with `n` ports after it that `free` finds free, all outside the kernel's
/// ephemeral range (below it where there is room, else above): the kernel never hands such
/// a port to a socket bound to port 0 or to an outgoing connection, so one chosen here
/// stays free until it is bound, and after a process bound to it stops (a restarted node
/// gets its port back; in the ephemeral range an outgoing connection's TIME_WAIT could hold
/// it for a minute). Processes that search at once start apart, and one process's searches
/// go on from where its last ended, so it never hands out a port twice (a port chosen and not
/// yet bound looks free).
pub fn free_ports_in_a_row(n: u16, free: impl Fn(u16) -> bool) -> Result<u16, String> {
    static CURSOR: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);
    const LOWEST: u16 = 10_000;
    // The ephemeral range (Linux's default where the setting cannot be read).
    let range: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .filter(|r: &Vec<u16>| r.len() == 2 && r[0] <= r[1])
        .unwrap_or_else(|| vec![32_768, 60_999]);
    // Below the range, or else above it.
    let (low, high) = if range[0].saturating_sub(LOWEST) > n.saturating_mul(16) {
        (LOWEST, range[0])
    } else {
        (range[1].saturating_add(1), u16::MAX)
    };
    let top = high.saturating_sub(n);
    if top <= low {
        return Err(format!("no room for {n} ports outside the ephemeral range {range:?}"));
    }
    let span = u32::from(top - low);
    let mut cursor = CURSOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let start = cursor.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::process::id().wrapping_mul(7_919) ^ nanos
    }) % span;
    for k in 0..span.div_ceil(7) {
        let offset = (start + k * 7) % span;
        let base = low + offset as u16;
        if (0..n).all(|i| free(base + i)) {
            *cursor = Some(offset + u32::from(n));
            return Ok(base);
        }
    }
    Err(format!("no {n} free ports in a row between {low} and {high}"))
}

/// Bytes of this node's QUIC connection IDs (at most 20): 8 random bytes, quinn's default
/// length, so 2^64 IDs whose reset tokens no one can collect at the 50 resets a second an
/// endpoint sends (quinn's own IDs carry 3 random bytes and a check).
const CID_LEN: usize = 8;

/// A QUIC endpoint serving `server` on [`udp_socket`]`(addr)`, sending stateless resets with
/// `identity`'s key.
fn bind(
    server: quinn::ServerConfig,
    addr: SocketAddr,
    identity: &Identity,
) -> std::io::Result<quinn::Endpoint> {
    let socket = udp_socket(addr)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    let mut config = quinn::EndpointConfig::new(Arc::new(identity.reset_key()));
    // Connection IDs of random bytes alone, with no check quinn could reject a previous
    // run's IDs by: quinn's default keys a check per run (so a restarted process sent no
    // reset for its old IDs), and its IDs carry 3 random bytes, so with a reset key that
    // outlives the process the tokens they draw (one per ID) could be collected in days and
    // then used to end this node's connections. Any packet for an unknown ID may now draw a
    // reset: quinn sends at most one per 20 ms, each smaller than the packet that drew it.
    config.cid_generator(|| Box::new(quinn_proto::RandomConnectionIdGenerator::new(CID_LEN)));
    quinn::Endpoint::new(config, Some(server), socket, runtime)
}

impl Network {
    /// Binds the socket and starts connecting to every peer. Frames received arrive on the
    /// returned channel with the sender's position.
    pub fn start(cfg: NetworkConfig) -> Result<(Network, Inbound), NetworkError> {
        let me = usize::from(cfg.me);
        let mine = cfg
            .peers
            .get(me)
            .ok_or_else(|| NetworkError::Config(format!("me = {me} is not in peers")))?;
        if mine.key != *cfg.identity.public_key() {
            return Err(NetworkError::Config("the identity is not peers[me]'s key".into()));
        }
        // A key twice would credit one validator's frames to the other.
        for (i, p) in cfg.peers.iter().enumerate() {
            if let Some(j) = cfg.peers[..i].iter().position(|q| q.key == p.key) {
                return Err(NetworkError::Config(format!("peers {j} and {i} have one key")));
            }
        }
        let allowed: Vec<PeerKey> = cfg
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .map(|(_, p)| p.key.clone())
            .collect();
        let tls = identity::server_config(&cfg.identity, allowed, &cfg.protocol)?;
        let quic =
            QuicServerConfig::try_from(tls).map_err(|e| NetworkError::Identity(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(transport(true)).retry_token_lifetime(gate::RETRY_TOKEN_LIFE);
        let endpoint = bind(server, cfg.listen, &cfg.identity)
            .map_err(|source| NetworkError::Bind { addr: cfg.listen, source })?;
        let stats = Arc::new(Stats::default());
        let (in_tx, in_rx) = mpsc::channel(cfg.inbound.max(1));
        // A frame takes its whole length at once, so a budget holds the largest frame.
        let max_frame = cfg.max_frame.min(u32::MAX as usize);
        let bytes = cfg.inbound_bytes.max(max_frame).min(Semaphore::MAX_PERMITS);
        let frames = (cfg.inbound / cfg.peers.len().saturating_sub(1).max(1)).max(1);
        let budgets: Arc<Vec<Arc<Budget>>> = Arc::new(
            cfg.peers
                .iter()
                .map(|_| {
                    let (bytes, frames) = (Semaphore::new(bytes), Semaphore::new(frames));
                    Arc::new(Budget { bytes, frames })
                })
                .collect(),
        );
        let inbound = Inbound { rx: in_rx, budgets: budgets.clone() };
        let mut tasks = Vec::new();
        let keys: Arc<Vec<PeerKey>> = Arc::new(cfg.peers.iter().map(|p| p.key.clone()).collect());
        let addrs: Vec<SocketAddr> =
            cfg.peers.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, p)| p.addr).collect();
        let gate = gate::Gate::new(cfg.handshakes, &addrs, std::time::Instant::now());
        tasks.push(tokio::spawn(accept_loop(
            endpoint.clone(),
            keys,
            gate,
            Readers {
                inbound: in_tx,
                budgets,
                max_frame,
                stats: stats.clone(),
                precheck: cfg.precheck.clone(),
            },
        )));
        let mut outbound = Vec::with_capacity(cfg.peers.len());
        for (i, peer) in cfg.peers.iter().enumerate() {
            if i == me {
                outbound.push(None);
                continue;
            }
            let tls = identity::client_config(&cfg.identity, peer.key.clone(), &cfg.protocol)?;
            let quic = QuicClientConfig::try_from(tls)
                .map_err(|e| NetworkError::Identity(e.to_string()))?;
            let mut client = quinn::ClientConfig::new(Arc::new(quic));
            client.transport_config(transport(false));
            let (tx, rx) = mpsc::channel(cfg.queue.max(1));
            let queued = Arc::new(AtomicUsize::new(0));
            outbound.push(Some(Outbound { tx, queued: queued.clone() }));
            let task = dial_loop(endpoint.clone(), client, peer.addr, rx, queued, stats.clone());
            tasks.push(tokio::spawn(task));
        }
        let queue_bytes = cfg.queue_bytes;
        Ok((
            Network { me: cfg.me, endpoint, outbound, queue_bytes, max_frame, stats, tasks },
            inbound,
        ))
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues `frame` for peer `to`; false (and counted) if its queue is full (in frames or
    /// bytes), the frame is over `max_frame`, or `to` is not a peer.
    pub fn send(&self, to: u16, frame: Bytes) -> bool {
        let len = frame.len();
        let sent = match self.outbound.get(usize::from(to)).and_then(|t| t.as_ref()) {
            // The bytes are taken in one step: two callers (consensus and finality share the
            // network) cannot both pass the check and go past `queue_bytes` together.
            Some(o)
                if len <= self.max_frame
                    && o.queued
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                            q.checked_add(len).filter(|t| *t <= self.queue_bytes)
                        })
                        .is_ok() =>
            {
                let ok = o.tx.try_send(frame).is_ok();
                if !ok {
                    o.queued.fetch_sub(len, Ordering::Relaxed);
                }
                ok
            }
            _ => false,
        };
        if !sent {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Queues `frame` for every peer.
    pub fn broadcast(&self, frame: Bytes) {
        for i in 0..self.outbound.len() {
            if i != usize::from(self.me) {
                self.send(i as u16, frame.clone());
            }
        }
    }

    /// Closes every connection and stops the tasks (dropping the network does the same).
    pub fn shutdown(self) {}
}

impl Drop for Network {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"shutdown");
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the readers of incoming streams share.
#[derive(Clone)]
struct Readers {
    inbound: mpsc::Sender<(u16, Bytes)>,
    budgets: Arc<Vec<Arc<Budget>>>,
    max_frame: usize,
    stats: Arc<Stats>,
    precheck: Option<Precheck>,
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    keys: Arc<Vec<PeerKey>>,
    mut gate: gate::Gate,
    readers: Readers,
) {
    // Each peer's newest connection: a newer one closes the one before, so a peer holds at
    // most one (with its 4 streams and their frame buffers) however often it connects.
    let current: Arc<std::sync::Mutex<HashMap<u16, quinn::Connection>>> = Arc::default();
    let mut retries = gate::RetriesSeen::default();
    while let Some(incoming) = endpoint.accept().await {
        let stats = readers.stats.clone();
        let from = incoming.remote_address();
        // A Retry token used before (replayed by someone who saw it): refused, no crypto.
        let retried = !incoming.may_retry();
        if retried && retries.spent(from, &incoming.orig_dst_cid(), std::time::Instant::now()) {
            stats.limited.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, "a Retry token used twice: refused");
            incoming.refuse();
            continue;
        }
        let ticket = match gate.judge(
            from,
            incoming.remote_address_validated(),
            std::time::Instant::now(),
        ) {
            gate::Verdict::Serve(ticket) => {
                if retried {
                    retries.serve(from, &incoming.orig_dst_cid(), std::time::Instant::now());
                }
                ticket
            }
            gate::Verdict::Retry => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = incoming.retry() {
                    // Validated after all: refuse it rather than serve it unjudged.
                    e.into_incoming().refuse();
                }
                continue;
            }
            gate::Verdict::Refuse => {
                stats.limited.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "too many handshakes: refused");
                incoming.refuse();
                continue;
            }
        };
        let keys = keys.clone();
        let readers = readers.clone();
        let current = current.clone();
        tokio::spawn(async move {
            // Dropped unfinished at the deadline, the handshake's connection closes.
            let handshake = tokio::time::timeout(HANDSHAKE_TIME, incoming).await;
            drop(ticket);
            let conn = match handshake {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    if other_protocol(&e) {
                        // Before any key is checked: anyone (a scanner) may be here, so it is
                        // counted and said at debug; the dialing side warns of validators.
                        stats.other_protocol.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%from, "refused a handshake in another protocol (another farol's chain rules, or not a validator)");
                    } else {
                        tracing::debug!("refused a connection: {e}");
                    }
                    return;
                }
                Err(_) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, "a handshake took too long: dropped");
                    return;
                }
            };
            let Some(from) = peer_index(&conn, &keys) else {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                conn.close(CLOSE_BAD_FRAME.into(), b"unknown peer");
                return;
            };
            let before = current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(from, conn.clone());
            if let Some(old) = before {
                stats.replaced.fetch_add(1, Ordering::Relaxed);
                old.close(CLOSE_REPLACED.into(), b"replaced by a newer connection");
            }
            let Some(budget) = readers.budgets.get(usize::from(from)).cloned() else { return };
            while let Ok(recv) = conn.accept_uni().await {
                tokio::spawn(read_frames(
                    recv,
                    conn.clone(),
                    from,
                    budget.clone(),
                    readers.clone(),
                ));
            }
            // Forget it, unless a newer one took its place already.
            let mut current = current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.get(&from).is_some_and(|c| c.stable_id() == conn.stable_id()) {
                current.remove(&from);
            }
        });
    }
}

/// The position of the key the peer authenticated with.
fn peer_index(conn: &quinn::Connection, keys: &[PeerKey]) -> Option<u16> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok()?;
    let presented = certs.first()?;
    keys.iter()
        .position(|k| k.0.as_slice() == presented.as_ref())
        .and_then(|i| u16::try_from(i).ok())
}

/// Reads `recv`'s frames until the stream or its connection ends. A reader stops when its
/// connection closes even while it waits for its peer's budget: a connection a newer one
/// replaced would otherwise live on in its waiting readers, each holding the stream and
/// whatever quinn buffered for it (up to the connection's 32 MiB window), once per
/// reconnect (before stop 41).
async fn read_frames(
    recv: quinn::RecvStream,
    conn: quinn::Connection,
    from: u16,
    budget: Arc<Budget>,
    readers: Readers,
) {
    let stats = readers.stats.clone();
    stats.readers.fetch_add(1, Ordering::Relaxed);
    tokio::select! {
        _ = conn.closed() => {}
        _ = read_loop(recv, &conn, from, &budget, &readers) => {}
    }
    stats.readers.fetch_sub(1, Ordering::Relaxed);
}

async fn read_loop(
    mut recv: quinn::RecvStream,
    conn: &quinn::Connection,
    from: u16,
    budget: &Budget,
    readers: &Readers,
) {
    let Readers { inbound, max_frame, stats, precheck, .. } = readers;
    loop {
        let mut len = [0u8; 4];
        if recv.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > *max_frame {
            stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = from, len, "frame over the limit: closing the connection");
            conn.close(CLOSE_BAD_FRAME.into(), b"frame too large");
            return;
        }
        // The peer's budget pays for the frame before it is read; `Inbound` gives it back
        // when the application takes the frame. The permits return by themselves until the
        // frame is delivered (a failed read, or this reader stopped with its connection).
        let Ok(frame) = budget.frames.acquire().await else { return };
        let Ok(bytes) = budget.bytes.acquire_many(len as u32).await else { return };
        // The frame is gathered from the stream's chunks as quinn received them, written
        // once into memory that nothing zeroes first.
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            match recv.read_chunk(len - buf.len(), true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) | Err(_) => return,
            }
        }
        stats.frames_in.fetch_add(1, Ordering::Relaxed);
        let buf = Bytes::from(buf);
        if let Some(Precheck(check)) = precheck {
            check(from, &buf);
        }
        if inbound.send((from, buf)).await.is_err() {
            return;
        }
        frame.forget();
        bytes.forget();
    }
}

/// Whether `e` ended a handshake because the two ends speak different protocols: TLS's
/// `no_application_protocol` alert (120), QUIC's error 0x178 (RFC 9001, §8.1).
fn other_protocol(e: &quinn::ConnectionError) -> bool {
    let code = quinn::TransportErrorCode::crypto(120);
    match e {
        quinn::ConnectionError::TransportError(t) => t.code == code,
        quinn::ConnectionError::ConnectionClosed(c) => c.error_code == code,
        _ => false,
    }
}

async fn dial_loop(
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    stats: Arc<Stats>,
) {
    let mut backoff = BACKOFF_MIN;
    // The frame whose write failed, and whether it failed on the connection before too.
    let mut unsent: Option<(Bytes, bool)> = None;
    // Whether the last handshake failed on the protocol (said once until one succeeds).
    let mut other = false;
    loop {
        let stream = match endpoint.connect_with(client.clone(), addr, "farol-validator") {
            Ok(connecting) => match tokio::time::timeout(HANDSHAKE_TIME, connecting).await {
                Ok(Ok(conn)) => conn.open_uni().await.ok().map(|s| (conn, s)),
                Ok(Err(e)) if other_protocol(&e) => {
                    stats.other_protocol.fetch_add(1, Ordering::Relaxed);
                    if !other {
                        tracing::warn!(%addr, "this validator speaks another protocol: it runs other chain rules (another farol version) than this one, and the two cannot make one chain");
                    }
                    other = true;
                    None
                }
                _ => None,
            },
            Err(_) => None,
        };
        let Some((conn, mut send)) = stream else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        other = false;
        let up = tokio::time::Instant::now();
        loop {
            let (frame, retried) = match unsent.take() {
                Some((f, _)) => (f, true),
                None => match queue.recv().await {
                    Some(f) => {
                        queued.fetch_sub(f.len(), Ordering::Relaxed);
                        (f, false)
                    }
                    None => return,
                },
            };
            // Handed to quinn as shared buffers: a frame sent to every peer is not copied
            // once per peer (`write_all` copies its slice into fresh memory). `send` kept
            // frames within `max_frame`, which fits the 4-byte length.
            let len = Bytes::copy_from_slice(&(frame.len() as u32).to_le_bytes());
            let ok = send.write_all_chunks(&mut [len, frame.clone()]).await.is_ok();
            if !ok {
                // The connection broke: reconnect and send this frame first (the peer may
                // have read part of it; a new stream starts clean), unless it broke the
                // connection before too.
                if retried {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    unsent = Some((frame, true));
                }
                break;
            }
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(conn.close_reason(), Some(quinn::ConnectionError::Reset)) {
            stats.resets.fetch_add(1, Ordering::Relaxed);
        }
        // A connection that stayed up was a working one: dial again at once. One that was
        // lost at once (refused after the handshake, replaced by a twin) counts as a failed
        // attempt, so the backoff grows instead of a handshake per round trip.
        if up.elapsed() >= STABLE {
            backoff = BACKOFF_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports chosen one after the other by one process never overlap, even when none was
    /// bound in between (each looks free), and lie outside the ephemeral range.
    #[test]
    fn ports_chosen_in_turn_do_not_overlap() {
        let mut taken = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let base = free_ports_in_a_row(4, |_| true).unwrap_or_else(|e| panic!("{e}"));
            for p in base..base + 4 {
                assert!(taken.insert(p), "port {p} handed out twice");
            }
        }
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap_or_else(|_| "32768 60999".into());
        let range: Vec<u16> = range.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        assert!(taken.iter().all(|p| *p < range[0] || *p > range[1]), "{range:?}");
        let addrs = free_loopback_addrs(3).unwrap_or_else(|e| panic!("{e}"));
        assert!(addrs.iter().all(|a| !taken.contains(&a.port())), "{addrs:?}");
    }

    /// Two validators' identities, loopback addresses and committee entries.
    fn two_validators() -> (Vec<Identity>, Vec<SocketAddr>, Vec<Peer>) {
        let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{e}") };
        let ids: Vec<Identity> =
            (0..2).map(|_| Identity::generate().unwrap_or_else(|e| fail(&e))).collect();
        let addrs = free_loopback_addrs(2).unwrap_or_else(|e| fail(&e));
        let peers: Vec<Peer> = ids
            .iter()
            .zip(&addrs)
            .map(|(i, a)| Peer { key: i.public_key().clone(), addr: *a })
            .collect();
        (ids, addrs, peers)
    }

    /// The client configuration of a stranger (a fresh key no committee holds) dialing `to`.
    fn stranger_dialing(to: &Peer) -> quinn::ClientConfig {
        let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{e}") };
        let stranger = Identity::generate().unwrap_or_else(|e| fail(&e));
        let tls =
            identity::client_config(&stranger, to.key.clone(), ALPN).unwrap_or_else(|e| fail(&e));
        let quic = QuicClientConfig::try_from(tls).unwrap_or_else(|e| fail(&e));
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(transport(false));
        client
    }

    /// A stranger dialing as fast as it can is asked to prove its address, then held to its
    /// IP's and all strangers' budgets; a validator that dials next is served at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_handshakes_is_limited_and_validators_still_get_in() {
        let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{e}") };
        let (ids, addrs, peers) = two_validators();
        let mut cfg = NetworkConfig::new(1, ids[1].clone(), addrs[1], peers.clone());
        // No refills: what is limited does not depend on how fast the dials go.
        cfg.handshakes = HandshakeLimits {
            ip_burst: 2,
            ip_per_sec: 0,
            strangers_burst: 3,
            strangers_per_sec: 0,
            ..HandshakeLimits::default()
        };
        let (b, mut rb) = Network::start(cfg).unwrap_or_else(|e| fail(&e));

        let client = stranger_dialing(&peers[1]);
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let dialer = quinn::Endpoint::client(any).unwrap_or_else(|e| fail(&e));
        const ATTEMPTS: u64 = 30;
        for _ in 0..ATTEMPTS {
            let connecting = dialer
                .connect_with(client.clone(), addrs[1], "farol-validator")
                .unwrap_or_else(|e| fail(&e));
            // Refused, or served and then refused for its key: either way it ends.
            let _ = tokio::time::timeout(Duration::from_secs(5), connecting).await;
        }
        let stats = b.stats();
        let limited = stats.limited.load(Ordering::Relaxed);
        assert!(stats.retries.load(Ordering::Relaxed) >= 1, "addresses are validated first");
        // Two served (the IP's burst), the rest refused (a repeated Initial may be counted
        // again).
        assert!(limited >= ATTEMPTS - 2, "{limited} of {ATTEMPTS} limited");
        assert!(rb.try_recv().is_err(), "nothing from the stranger");
        drop(dialer);

        // The strangers' bucket is empty; validator 0 dials from its own address and is served.
        let (a, _ra) =
            Network::start(NetworkConfig::new(0, ids[0].clone(), addrs[0], peers.clone()))
                .unwrap_or_else(|e| fail(&e));
        assert!(a.send(1, Bytes::from_static(b"still here")));
        match tokio::time::timeout(Duration::from_secs(10), rb.recv()).await {
            Ok(Some((0, frame))) => assert_eq!(frame.as_ref(), b"still here"),
            other => panic!("no frame from validator 0: {other:?}"),
        }
        assert_eq!(stats.limited.load(Ordering::Relaxed), limited, "validator 0 was never refused");
    }

    /// A Retry token is good for one handshake (since stop 49): the datagram that carried
    /// one, sent again from the same address while the token lives (as someone who saw it
    /// and can send from there would), is refused at once, counted as limited; before, it
    /// was judged and served like a new handshake.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replayed_retry_token_is_refused() {
        let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{e}") };
        let (ids, addrs, peers) = two_validators();
        let cfg = NetworkConfig::new(1, ids[1].clone(), addrs[1], peers.clone());
        let (b, _rb) = Network::start(cfg).unwrap_or_else(|e| fail(&e));
        // A stranger dials through a relay that keeps the datagram answering the Retry.
        let relay =
            tokio::net::UdpSocket::bind(("127.0.0.1", 0)).await.unwrap_or_else(|e| fail(&e));
        let relay = Arc::new(relay);
        let relay_addr = relay.local_addr().unwrap_or_else(|e| fail(&e));
        let kept: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
        let (r, k, server) = (relay.clone(), kept.clone(), addrs[1]);
        let relaying = tokio::spawn(async move {
            let (mut client, mut answered) = (None, false);
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = r.recv_from(&mut buf).await {
                if from == server {
                    answered = true;
                    if let Some(c) = client {
                        let _ = r.send_to(&buf[..n], c).await;
                    }
                } else {
                    client = Some(from);
                    if answered {
                        k.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(buf[..n].to_vec());
                    }
                    let _ = r.send_to(&buf[..n], server).await;
                }
            }
        });
        let client = stranger_dialing(&peers[1]);
        let dialer =
            quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap_or_else(|e| fail(&e));
        let connecting =
            dialer.connect_with(client, relay_addr, "farol-validator").unwrap_or_else(|e| fail(&e));
        // Served, then refused for its key.
        let _ = tokio::time::timeout(Duration::from_secs(5), connecting).await;
        let stats = b.stats();
        assert_eq!(stats.retries.load(Ordering::Relaxed), 1, "asked to retry once");
        let token = kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(token) = token else { panic!("no datagram after the Retry") };
        // Past the first connection's draining (its packets go to it until then), within
        // the token's 15 s.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let limited = stats.limited.load(Ordering::Relaxed);
        relay.send_to(&token, addrs[1]).await.unwrap_or_else(|e| fail(&e));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while stats.limited.load(Ordering::Relaxed) == limited {
            assert!(std::time::Instant::now() < deadline, "the replayed token was served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stats.limited.load(Ordering::Relaxed), limited + 1);
        assert_eq!(stats.retries.load(Ordering::Relaxed), 1);
        relaying.abort();
    }

    /// The endpoint's socket gets larger buffers than the kernel's default, up to what the
    /// kernel allows (`net.core.rmem_max`).
    #[test]
    fn udp_sockets_get_large_buffers() {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let plain = std::net::UdpSocket::bind(any)
            .and_then(|s| socket2::SockRef::from(&s).recv_buffer_size());
        let sized = udp_socket(any).and_then(|s| socket2::SockRef::from(&s).recv_buffer_size());
        let (plain, sized) = (plain.unwrap(), sized.unwrap());
        let max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|m| m.trim().parse::<usize>().ok());
        match max {
            // Linux reports twice the size set (the kernel's bookkeeping share).
            Some(max) if max > plain => assert_eq!(sized, 2 * max.min(SOCKET_BUFFER), "{plain}"),
            _ => assert!(sized >= plain, "{sized} < {plain}"),
        }
    }
}
