//! The node's configuration file (TOML). Unknown fields are errors; every error names the
//! field (and the line) it is about.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy_primitives::{Address, Bytes};
use serde::{Deserialize, Serialize};

use crate::genesis::Genesis;
use crate::mempool::MempoolConfig;

/// The most a queue or connection limit may be set to (tokio's channels and semaphores panic
/// past about 2^61; before stop 38 such a setting panicked at start instead of naming the
/// field).
pub const MAX_QUEUE: usize = 1 << 24;

/// The fewest state versions a node may keep (`pipeline.retain_versions`). Execution reads
/// the state of the block before, while the pipeline stores up to a few blocks ahead of it,
/// and a restart after a crash between storing a block's state and its block re-executes
/// its group from the version before the group: with fewer versions kept those could be
/// pruned already, and the node stopped, at every start (before stop 41, when 1 was taken).
pub const MIN_RETAIN_VERSIONS: u64 = 64;

/// The longest `mempool.lifetime_secs` taken: a year.
pub const MAX_LIFETIME_SECS: u64 = 365 * 24 * 3600;

/// Everything a node needs to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the chain, the state and the consensus log live.
    pub data_dir: PathBuf,
    /// The chain's genesis (every node of a chain must have the same). A file may leave it
    /// out (and the committee) for `farol node --chain FILE` to give; a node refuses to
    /// start without one.
    #[serde(default = "Genesis::none")]
    pub genesis: Genesis,
    /// This node's validator keys; without them the node is a full node: it follows the
    /// block-final chain from `sync.peers` and sends transactions there.
    #[serde(default)]
    pub validator: Option<ValidatorKeys>,
    /// The validator set, in order.
    #[serde(default)]
    pub committee: Vec<Member>,
    /// JSON-RPC.
    #[serde(default)]
    pub rpc: RpcConfig,
    /// Mempool limits.
    #[serde(default)]
    pub mempool: MempoolConfig,
    /// The block pipeline.
    #[serde(default)]
    pub pipeline: PipelineSettings,
    /// Block sync from peers.
    #[serde(default)]
    pub sync: SyncSettings,
    /// The validator network.
    #[serde(default)]
    pub network: NetworkSettings,
    /// Log filter (`tracing` syntax, e.g. `info` or `farol_node=debug`).
    #[serde(default = "default_log")]
    pub log: String,
    /// Log JSON lines instead of text (`farol node --log-json`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_json: bool,
}

fn default_log() -> String {
    "info".into()
}

/// What every node of a chain shares: its genesis and its validator set, in the file
/// `farol chain new` writes (`chain.toml`) and `farol node --chain` reads. Public: it holds
/// no secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainFile {
    /// The chain's genesis.
    pub genesis: Genesis,
    /// The validator set, in order.
    pub committee: Vec<Member>,
}

impl ChainFile {
    /// Reads a chain file (the node checks it with the rest of its configuration).
    pub fn load(path: &Path) -> Result<ChainFile, ConfigError> {
        read_toml(path)
    }
}

/// Reads a TOML file into `T`; errors name the file, and the field and line.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: p.clone(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: p, message: described(&text, &e) })
}

/// A TOML error with its line, column and key, but not the line's value: the files hold
/// secrets, and the parser's own message quotes the whole line (before stop 42 a keys file
/// given where a coin share file was wanted printed its BLS secret in the error).
fn described(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return e.message().to_string() };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let shown = text.lines().nth(line - 1).unwrap_or_default();
    let header = shown.trim();
    let shown = match shown.split_once('=') {
        Some((key, _)) => format!("{} = …", key.trim()),
        // A table's header: nothing secret.
        None if header.starts_with('[')
            && header.ends_with(']')
            && !header.contains(['"', '\'', ',']) =>
        {
            header.chars().take(80).collect()
        }
        // Anything else (a line inside a multi-line array of keys) is not shown.
        None => "…".to_string(),
    };
    format!("line {line}, column {column} (`{shown}`): {}", without_strings(e.message()))
}

/// `message` with the values serde quotes as refused strings (`invalid value: string "0x…",
/// expected …`) left out: such a value may be a secret with one digit missing (before stop
/// 48 such a key was printed whole). Farol's own messages, which quote what the user wrote
/// where it is no secret (an address), keep their quotes.
fn without_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let (mut inside, mut escaped) = (false, false);
    for c in message.chars() {
        if inside {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                inside = false;
                out.push_str("…\"");
            }
        } else {
            if c == '"' && out.ends_with("string ") {
                inside = true;
            }
            out.push(c);
        }
    }
    if inside {
        out.push('…');
    }
    out
}

/// A validator's secrets (their `Debug` shows none of them). In a node's configuration they
/// are its `[validator]` table; on their own (`farol chain new` writes one file per
/// validator, `farol node --keys` reads it) the same fields at the top.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorKeys {
    /// Position in the committee.
    pub index: u16,
    /// BLS12-381 secret key (32 bytes, hex).
    pub bls_secret: Bytes,
    /// Ed25519 network identity (PKCS#8 DER, hex).
    pub network_secret: Bytes,
    /// This validator's share of the common coin's key (32 bytes, hex), from the dealer;
    /// required when the committee has coin keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coin_secret: Option<Bytes>,
}

/// A keys file as written: `farol chain new`'s (the secrets with the position and the coin
/// share) or `farol chain key`'s (the secrets alone: the position is found by the BLS key in
/// the committee, and the coin share comes from `farol chain new`'s coin share file).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Position in the committee, if the file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u16>,
    /// BLS12-381 secret key (32 bytes, hex).
    pub bls_secret: Bytes,
    /// Ed25519 network identity (PKCS#8 DER, hex).
    pub network_secret: Bytes,
    /// The coin share, if the file holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coin_secret: Option<Bytes>,
}

impl std::fmt::Debug for KeysFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeysFile(index {:?}, secrets not shown)", self.index)
    }
}

/// A validator's position and its share of the common coin's key, dealt by `farol chain
/// new` for a member that brought its own keys (`validator-<i>.coin.toml`, which `farol node
/// --coin` reads).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinShare {
    /// Position in the committee.
    pub index: u16,
    /// The coin share (32 bytes, hex).
    pub coin_secret: Bytes,
}

impl std::fmt::Debug for CoinShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CoinShare(index {}, secret not shown)", self.index)
    }
}

impl CoinShare {
    /// Reads a coin share file.
    pub fn load(path: &Path) -> Result<CoinShare, ConfigError> {
        read_toml(path)
    }
}

/// The public side of a validator's own keys, its committee entry's keys: what `farol chain
/// key` prints and `farol chain new --member` reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberKeys {
    /// BLS12-381 public key (96 bytes, hex).
    pub bls_public: Bytes,
    /// Proof of possession of that key (48 bytes, hex).
    pub bls_possession: Bytes,
    /// Network identity (DER SubjectPublicKeyInfo, hex).
    pub network_public: Bytes,
}

impl MemberKeys {
    /// Reads a member's public keys file.
    pub fn load(path: &Path) -> Result<MemberKeys, ConfigError> {
        read_toml(path)
    }

    /// Checks the keys: their sizes, the BLS key with its proof of possession, the network
    /// key's form (an Ed25519 `SubjectPublicKeyInfo`; that it is a point on the curve is
    /// checked when a signature is checked with it).
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("bls_public", self.bls_public.len(), farol_crypto::PUBLIC_KEY_LEN),
            ("bls_possession", self.bls_possession.len(), farol_crypto::SIGNATURE_LEN),
        ];
        for (field, len, want) in sizes {
            if len != want {
                return Err(format!("{field}: {len} bytes, want {want}"));
            }
        }
        let key = farol_crypto::PublicKey::from_bytes(&self.bls_public)
            .map_err(|e| format!("bls_public: {e}"))?;
        let proof = farol_crypto::Signature::from_bytes(&self.bls_possession)
            .map_err(|e| format!("bls_possession: {e}"))?;
        key.verify_possession(&proof).map_err(|e| format!("bls_possession: {e}"))?;
        farol_crypto::ed25519::PublicKey::from_spki(&self.network_public)
            .map_err(|e| format!("network_public: {e}"))?;
        Ok(())
    }
}

impl KeysFile {
    /// Reads a keys file.
    pub fn load(path: &Path) -> Result<KeysFile, ConfigError> {
        read_toml(path)
    }

    /// This validator's keys in `committee`: its position from this file or `share`, or
    /// else the member whose BLS key this file's is; its coin share from either file. (That
    /// the keys are the member's is checked with the rest of the configuration.)
    pub fn resolve(
        self,
        share: Option<CoinShare>,
        committee: &[Member],
    ) -> Result<ValidatorKeys, ConfigError> {
        let bad =
            |field: &str, reason: String| ConfigError::Invalid { field: field.into(), reason };
        let index = match self.index {
            Some(a) => a,
            // The member whose BLS key this is.
            None => {
                let key = farol_crypto::SecretKey::from_bytes(&self.bls_secret)
                    .map_err(|e| bad("validator.bls_secret", e.to_string()))?;
                let mine = key.public_key().to_bytes();
                let at = committee.iter().position(|m| m.bls_public[..] == mine[..]);
                let at = at.ok_or_else(|| {
                    bad("validator.bls_secret", "is the key of no committee member".into())
                })?;
                u16::try_from(at).map_err(|_| bad("validator.index", format!("{at}")))?
            }
        };
        if let Some(b) = share.as_ref().map(|s| s.index).filter(|b| *b != index) {
            return Err(bad(
                "coin.index",
                format!("the coin share is validator {b}'s; these keys are validator {index}'s"),
            ));
        }
        let coin_secret = match (self.coin_secret, share) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "validator.coin_secret",
                    "in both the keys file and the coin share file".into(),
                ))
            }
            (own, share) => own.or(share.map(|s| s.coin_secret)),
        };
        Ok(ValidatorKeys {
            index,
            bls_secret: self.bls_secret,
            network_secret: self.network_secret,
            coin_secret,
        })
    }
}

impl std::fmt::Debug for ValidatorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatorKeys")
            .field("index", &self.index)
            .field("bls_secret", &"<secret>")
            .field("network_secret", &"<secret>")
            .field("coin_secret", &self.coin_secret.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// The validator network's limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// Frames queued for a peer (while it is slow or down) before new ones are dropped. A
    /// validator that was seen to go (its connection closed or refused) and comes back
    /// within this many frames gets what was queued meanwhile; frames already handed to a
    /// connection that died silently (a killed or cut-off peer, noticed at the 5 s idle
    /// timeout) are lost, and consensus fetches what it misses.
    pub peer_queue: usize,
    /// The UDP address the validator network listens on, when it is not the committee
    /// address (a host behind a 1:1 NAT listens on its private address, e.g.
    /// `"0.0.0.0:9000"`, while peers dial the public one). Keep the port the committee
    /// address's where the NAT allows: a validator dials from the socket it listens on, and
    /// peers give handshakes from a committee address a budget of its own (from any other
    /// address they share the strangers' budget, see `docs/node.md` §4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings { peer_queue: 4096, listen: None }
    }
}

/// Where and when a node fetches block-final blocks it lacks (see `docs/node.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// Peers' HTTP JSON-RPC addresses (`"127.0.0.1:8545"`, or a host's name and a port,
    /// resolved when the configuration is read: [`resolve_peer`]). A full node needs at least
    /// one; a validator without any catches up only through consensus (within its peers'
    /// history).
    #[serde(deserialize_with = "peers_by_name")]
    pub peers: Vec<SocketAddr>,
    /// A validator syncs when its head has not moved for this many seconds while its peers
    /// certified newer blocks.
    pub stalled_secs: u64,
    /// How often to ask peers for a newer certificate (milliseconds).
    pub poll_millis: u64,
    /// Headers asked for in one request (1 to 1024): block sync checks the chain in
    /// segments of this many blocks.
    pub headers_per_request: u64,
    /// A peer whose answers take longer than this on average (milliseconds, over at least
    /// three) is left for the next one, keeping what it gave.
    pub slow_answer_millis: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            peers: Vec::new(),
            stalled_secs: 3,
            poll_millis: 200,
            headers_per_request: 1024,
            slow_answer_millis: 5_000,
        }
    }
}

/// One member of the validator set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// BLS12-381 public key (96 bytes, hex).
    pub bls_public: Bytes,
    /// Proof of possession of that key (48 bytes, hex).
    pub bls_possession: Bytes,
    /// Network identity (DER SubjectPublicKeyInfo, hex).
    pub network_public: Bytes,
    /// Its validator network address (UDP, QUIC).
    pub address: SocketAddr,
    /// Its stake.
    pub stake: u64,
    /// Who receives the priority fees of the blocks it leads.
    pub fee_recipient: Address,
    /// Its share key of the common coin (96 bytes, hex), from the dealer: the coin keeps
    /// consensus live under asynchrony (`docs/consensus.md` §5). Every member has one, or
    /// none does (then the coin is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coin_public: Option<Bytes>,
}

/// JSON-RPC listeners and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    /// HTTP JSON-RPC (and `/metrics`); `"none"` disables it.
    #[serde(with = "listen_or_none")]
    pub http: Option<SocketAddr>,
    /// WebSocket JSON-RPC; `"none"` disables it.
    #[serde(with = "listen_or_none")]
    pub ws: Option<SocketAddr>,
    /// Largest request body, in bytes.
    pub max_request_bytes: usize,
    /// Most calls in one batch.
    pub max_batch: usize,
    /// Most bytes of results one batch answers; the calls after the one that passes it are
    /// answered with a limit error instead of being run.
    pub max_batch_response_bytes: usize,
    /// Most blocks one `eth_getLogs` may scan.
    pub max_log_blocks: u64,
    /// Most logs one `eth_getLogs` may return.
    pub max_logs: usize,
    /// Gas given to `eth_call` and `eth_estimateGas` when the request sets none (and the
    /// most they may use).
    pub gas_cap: u64,
    /// Subscriptions per WebSocket connection.
    pub max_subscriptions: usize,
    /// Open WebSocket connections; an upgrade past this is answered 503.
    pub max_ws_connections: usize,
    /// How long a WebSocket message may wait for the client to take it before the
    /// connection is closed (a client that stops reading).
    pub ws_send_timeout_millis: u64,
    /// How long an HTTP connection may take to send a request's headers (counted from
    /// connecting, or from the previous answer on a kept-alive connection, so it is also how
    /// long an idle connection is kept), to send its body, and to take any part of an answer
    /// before it is closed (a WebSocket's queued messages wait up to the larger of this and
    /// `ws_send_timeout_millis`).
    pub http_timeout_millis: u64,
    /// How long one call method may execute (geth's `rpc.evmtimeout`): `eth_estimateGas`'s
    /// search and `eth_simulateV1`'s calls stop past it with `execution aborted (timeout =
    /// …)`. Checked before each execution after the first; one execution is bounded by
    /// `gas_cap`.
    pub call_timeout_millis: u64,
    /// How long a batch's calls may take together: the calls not started by then are
    /// answered `request timed out` (-32002, as geth's), not run.
    pub batch_timeout_millis: u64,
    /// How long `eth_sendRawTransactionSync` (EIP-7966) waits for the transaction's receipt
    /// when the request names no time, and the longest a request may name.
    pub send_sync_timeout_millis: u64,
    /// Private keys (32 bytes each) of development accounts the node signs for:
    /// `eth_accounts` lists them and `eth_sendTransaction`, `eth_signTransaction`,
    /// `eth_sign`, `personal_sign` and `eth_signTypedData_v4` use them, as anvil's and
    /// Hardhat's nodes do. For development chains only: anyone who reaches the RPC can spend
    /// from these accounts. `farol devnet` sets its ten funded accounts.
    pub dev_keys: Vec<Bytes>,
    /// Web origins (`"https://app.example"`, or `"*"` for any) whose pages may call the HTTP
    /// JSON-RPC (CORS: a browser asks before it lets a page read another origin's answers).
    /// None by default, as in geth; `farol devnet` sets `"*"`, as anvil does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// The JSON-RPC namespaces served (geth's `--http.api`; `eth`, `net`, `web3`, `debug`,
    /// `trace`, `txpool`, `personal`, `farol`, `rpc`): a method of another is answered as
    /// one that does not exist. All when not given. Nodes that sync from this one need
    /// `farol`, and a full node forwarding transactions `eth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apis: Option<Vec<String>>,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8545))),
            ws: Some(SocketAddr::from(([127, 0, 0, 1], 8546))),
            max_request_bytes: 5 << 20,
            max_batch: 1000,
            max_batch_response_bytes: 64 << 20,
            // reth's default: ethers' `queryFilter` and viem's `getLogs` from block 0 ask for
            // the whole chain, and blocks whose bloom does not match cost a header read each.
            max_log_blocks: 100_000,
            max_logs: 10_000,
            // geth's `rpc.gascap`: calls are not held to EIP-7825's 2^24 (geth since September
            // 2025; estimates are, and to the block's gas limit). Since stop 55: 2^24 before,
            // so view calls needing more than 16.7 million gas failed here and ran on geth.
            gas_cap: 50_000_000,
            max_subscriptions: 128,
            max_ws_connections: 1024,
            ws_send_timeout_millis: 30_000,
            http_timeout_millis: 30_000,
            send_sync_timeout_millis: 5_000,
            call_timeout_millis: 5_000,
            batch_timeout_millis: 30_000,
            dev_keys: Vec::new(),
            cors_origins: Vec::new(),
            apis: None,
        }
    }
}

/// `HOST:PORT` as an address: an IP address and port as they are, else the host's name
/// resolved now, its first IPv4 address taken if it has one (since stop 52; before, only IP
/// addresses were taken). A name is resolved once: a host that moves to another address
/// later is not followed until the node starts again.
pub fn resolve_peer(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    peer_shape(text)?;
    let host = text.rsplit_once(':').map_or(text, |(h, _)| h);
    let all: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?}: {RESOLVE_FAILED} {host:?}: {e}"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| format!("{text:?}: {RESOLVE_FAILED} {host:?}: it has no address"))
}

/// What an error of a name that did not resolve says (`farol node` exits with 1 for it, not
/// as for a configuration refused: the network, or the peer's container, may not be up yet).
pub const RESOLVE_FAILED: &str = "cannot resolve the host";

/// `text` if it has the shape of `HOST:PORT` (an IP address or a host's name, and a port),
/// resolving nothing: `farol node --peer` checks its flags with it, and resolves them with
/// [`resolve_peer`] after (so that a name that does not resolve exits as such, with 1, not
/// as a malformed flag).
pub fn peer_shape(text: &str) -> Result<String, String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_string());
    }
    let bad = || format!("{text:?} is not HOST:PORT (an IP address or a host's name, and a port)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    // An IPv6 address goes in brackets (`[::1]:8545`, which parses above).
    if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(text.to_string())
}

fn peers_by_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    use serde::de::Error;
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|p| resolve_peer(p).map_err(D::Error::custom))
        .collect()
}

/// A listener's address, or `"none"` for no listener (TOML has no null: before stop 41 a
/// listener could be turned off by flag only, and a configuration written without one read
/// back with the default).
mod listen_or_none {
    use std::net::SocketAddr;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        v: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_str("none"),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text == "none" {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            D::Error::custom(format!(
                "{text:?} is not an address like \"127.0.0.1:8545\" or \"none\""
            ))
        })
    }
}

/// How blocks are executed and stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Cut the consensus log to the newest snapshot whose commit is stored once the log
    /// holds this many bytes (0: never).
    pub consensus_log_bytes: u64,
    /// Execute block N+1 while N is stored (off: one block at a time).
    pub pipelined: bool,
    /// Execution threads.
    pub threads: usize,
    /// Store versions kept for queries at past blocks (0: every version, an archive node).
    pub retain_versions: u64,
    /// Sync writes to disk. Off (for benchmarks) a killed process loses nothing, but after a
    /// power loss the node may refuse to start (its state behind its block log), and a
    /// validator may have lost proposals it sent and so propose again in a round it used.
    pub fsync: bool,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            consensus_log_bytes: 64 << 20,
            pipelined: true,
            threads: 2,
            retain_versions: 1024,
            fsync: true,
        }
    }
}

/// The largest chain id (EIP-2294: `(2^64 - 1) / 2 - 36`).
pub const MAX_CHAIN_ID: u64 = u64::MAX / 2 - 36;

/// The latest genesis time taken (`genesis.timestamp`, seconds): the end of the year 9999.
pub const MAX_GENESIS_TIMESTAMP: u64 = 253_402_300_799;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML does not parse or a field is wrong (the message names it).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
    /// The fields parse but do not fit together.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl NodeConfig {
    /// A node of `chain` with its data in `data_dir` and every other setting at its default:
    /// a full node until `validator` is set (and then a validator with no peers to sync
    /// from but consensus's).
    pub fn with_defaults(data_dir: PathBuf, chain: ChainFile) -> NodeConfig {
        NodeConfig {
            data_dir,
            genesis: chain.genesis,
            validator: None,
            committee: chain.committee,
            rpc: RpcConfig::default(),
            mempool: MempoolConfig::default(),
            pipeline: PipelineSettings::default(),
            sync: SyncSettings::default(),
            network: NetworkSettings::default(),
            log: default_log(),
            log_json: false,
        }
    }

    /// Reads and checks a configuration file; a relative `data_dir` is taken from the file's
    /// folder ([`NodeConfig::data_dir_of`]).
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let mut cfg = NodeConfig::load_as_written(path)?;
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            if cfg.data_dir.is_relative() {
                cfg.data_dir = folder.join(&cfg.data_dir);
            }
        }
        Ok(cfg)
    }

    /// Reads and checks a configuration file, its `data_dir` as written.
    pub fn load_as_written(path: &Path) -> Result<NodeConfig, ConfigError> {
        let cfg = NodeConfig::read(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a configuration file, its `data_dir` as written, without the checks of
    /// [`NodeConfig::validate`] (for `farol node`, whose flags may give what the file leaves
    /// out: call `validate` after them).
    pub fn read(path: &Path) -> Result<NodeConfig, ConfigError> {
        read_toml(path)
    }

    /// The data directory `written` in the configuration file at `path`: a relative one
    /// belongs with its configuration, wherever the node is started from (before stop 41 it
    /// was taken from the working directory, and a node started from elsewhere began a fresh
    /// chain in a fresh directory). Where a build before stop 41 would have found a chain
    /// (from the working directory) and there is none beside the file, that is said rather
    /// than a fresh chain started beside it (a validator started on an empty directory could
    /// sign twice in a round).
    pub fn data_dir_of(path: &Path, written: &Path) -> Result<PathBuf, ConfigError> {
        let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) else {
            return Ok(written.to_path_buf());
        };
        if written.is_absolute() {
            return Ok(written.to_path_buf());
        }
        let beside = folder.join(written);
        let holds_chain = |d: &Path| d.join("blocks.log").exists();
        if holds_chain(written) && !holds_chain(&beside) {
            return Err(ConfigError::Invalid {
                field: "data_dir".into(),
                reason: format!(
                    "{} is taken from the configuration's folder ({}), which holds no chain, \
                     while {} from the working directory does: name it with an absolute path \
                     or --data-dir",
                    written.display(),
                    beside.display(),
                    written.display()
                ),
            });
        }
        Ok(beside)
    }

    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: String::new(),
            message: described(text, &e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that `v`'s secrets are the keys of `committee[v.index]` (since stop 42 before
    /// anything is written: a keys file of another chain or position was refused only once
    /// the node had made its data directory for the chain).
    fn check_keys(&self, v: &ValidatorKeys) -> Result<(), ConfigError> {
        let me = usize::from(v.index);
        let bad = |field: &str, reason: String| {
            Err(ConfigError::Invalid { field: field.to_string(), reason })
        };
        let Some(m) = self.committee.get(me) else { return Ok(()) };
        match farol_crypto::SecretKey::from_bytes(&v.bls_secret) {
            Err(e) => return bad("validator.bls_secret", e.to_string()),
            Ok(k) if k.public_key().to_bytes()[..] != m.bls_public[..] => {
                return bad("validator.bls_secret", format!("is not the key of committee[{me}]"))
            }
            Ok(_) => {}
        }
        match farol_network::Identity::from_pkcs8(&v.network_secret) {
            Err(e) => return bad("validator.network_secret", e.to_string()),
            Ok(id) if id.public_key().0[..] != m.network_public[..] => {
                return bad(
                    "validator.network_secret",
                    format!("is not the identity of committee[{me}]"),
                )
            }
            Ok(_) => {}
        }
        if let (Some(k), Some(public)) = (&v.coin_secret, &m.coin_public) {
            match farol_crypto::SecretKey::from_bytes(k) {
                Err(e) => return bad("validator.coin_secret", e.to_string()),
                Ok(k) if k.public_key().to_bytes()[..] != public[..] => {
                    return bad(
                        "validator.coin_secret",
                        format!("is not the share of committee[{me}].coin_public"),
                    )
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// The committee the configuration names, its keys parsed and checked as consensus
    /// runs with them (BLS keys and their possession proofs, Ed25519 network keys, coin
    /// keys; no key twice), and the peers' network addresses. An error names the member's
    /// field. [`NodeConfig::validate`] calls it, so a bad key is refused before a node
    /// writes anything (before stop 46 only the keys' lengths were checked there, and a key
    /// that did not parse was found after the data directory was made).
    pub fn committee(
        &self,
    ) -> Result<(farol_consensus::Committee, Vec<farol_network::Peer>), ConfigError> {
        use farol_crypto::{ed25519, PublicKey, Signature};
        let bad = |field: String, reason: String| ConfigError::Invalid { field, reason };
        let mut members = Vec::with_capacity(self.committee.len());
        let mut peers = Vec::with_capacity(self.committee.len());
        let mut bls: HashMap<&[u8], usize> = HashMap::with_capacity(self.committee.len());
        let mut network: HashMap<&[u8], usize> = HashMap::with_capacity(self.committee.len());
        for (i, m) in self.committee.iter().enumerate() {
            if let Some(j) = bls.insert(&m.bls_public, i) {
                return Err(bad(
                    format!("committee[{i}].bls_public"),
                    format!("the same key as committee[{j}]'s"),
                ));
            }
            if let Some(j) = network.insert(&m.network_public, i) {
                return Err(bad(
                    format!("committee[{i}].network_public"),
                    format!("the same key as committee[{j}]'s"),
                ));
            }
            let key = PublicKey::from_bytes(&m.bls_public)
                .map_err(|e| bad(format!("committee[{i}].bls_public"), e.to_string()))?;
            let possession = Signature::from_bytes(&m.bls_possession)
                .map_err(|e| bad(format!("committee[{i}].bls_possession"), e.to_string()))?;
            let block_key = ed25519::PublicKey::from_spki(&m.network_public).map_err(|e| {
                bad(format!("committee[{i}].network_public"), format!("{e}: not an Ed25519 key"))
            })?;
            members.push(farol_consensus::Member { key, possession, block_key, stake: m.stake });
            peers.push(farol_network::Peer {
                key: farol_network::PeerKey(m.network_public.to_vec()),
                addr: m.address,
            });
        }
        let mut committee = farol_consensus::Committee::new(members)
            .map_err(|e| bad("committee".into(), e.to_string()))?;
        if self.committee.iter().all(|m| m.coin_public.is_some()) {
            let mut shares = Vec::with_capacity(self.committee.len());
            for (i, m) in self.committee.iter().enumerate() {
                let k: &[u8] = m.coin_public.as_ref().map_or(&[], |k| k.as_ref());
                shares.push(
                    PublicKey::from_bytes(k)
                        .map_err(|e| bad(format!("committee[{i}].coin_public"), e.to_string()))?,
                );
            }
            committee = committee
                .with_coin(shares)
                .map_err(|e| bad("committee[].coin_public".into(), e.to_string()))?;
        }
        Ok((committee, peers))
    }

    /// Checks what serde cannot: keys, positions, addresses, limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: String| {
            Err(ConfigError::Invalid { field: field.to_string(), reason })
        };
        if self.genesis.chain_id == 0 {
            return bad(
                "genesis.chain_id",
                "0, or no genesis given (a [genesis] table with a chain_id above 0 is needed, \
                 or `farol node --chain FILE`)"
                    .into(),
            );
        }
        // EIP-2294's bound: past it an EIP-155 signature's `v` does not fit in 64 bits, and
        // tools refuse the chain (before stop 46 such a chain was made and ran).
        if self.genesis.chain_id > MAX_CHAIN_ID {
            return bad("genesis.chain_id", format!("at most {MAX_CHAIN_ID} (EIP-2294)"));
        }
        // Blocks carry the later of their parent's time and their commit's: a genesis time in
        // milliseconds (about the year 55,000 read as seconds) would freeze every block's
        // timestamp and keep an idle chain from making blocks (taken before stop 48).
        if self.genesis.timestamp > MAX_GENESIS_TIMESTAMP {
            return bad(
                "genesis.timestamp",
                format!(
                    "{}: seconds since 1970, at most {MAX_GENESIS_TIMESTAMP} (the end of the \
                     year 9999); this looks like milliseconds",
                    self.genesis.timestamp
                ),
            );
        }
        if self.committee.is_empty() {
            return bad(
                "committee",
                "at least one validator is needed ([[committee]] tables, or `farol node --chain \
                 FILE`)"
                    .into(),
            );
        }
        match &self.validator {
            Some(v) => {
                if usize::from(v.index) >= self.committee.len() {
                    return bad(
                        "validator.index",
                        format!(
                            "{} is not a position in a committee of {}",
                            v.index,
                            self.committee.len()
                        ),
                    );
                }
                if v.bls_secret.len() != 32 {
                    return bad(
                        "validator.bls_secret",
                        format!("{} bytes, want 32", v.bls_secret.len()),
                    );
                }
                let coin = self.committee.iter().any(|m| m.coin_public.is_some());
                match &v.coin_secret {
                    None if coin => {
                        return bad(
                            "validator.coin_secret",
                            "missing: the committee has coin keys".into(),
                        )
                    }
                    Some(_) if !coin => {
                        return bad(
                            "validator.coin_secret",
                            "given, but the committee has no coin keys".into(),
                        )
                    }
                    Some(k) if k.len() != 32 => {
                        return bad("validator.coin_secret", format!("{} bytes, want 32", k.len()))
                    }
                    _ => {}
                }
            }
            None if self.sync.peers.is_empty() => {
                return bad(
                    "sync.peers",
                    "a full node (no [validator] keys, no `farol node --keys`) needs at least \
                     one peer to sync from (or `farol node --peer`)"
                        .into(),
                );
            }
            None => {}
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "empty: a directory is needed".into());
        }
        for (i, p) in self.sync.peers.iter().enumerate() {
            if p.port() == 0 || p.ip().is_unspecified() {
                return bad(&format!("sync.peers[{i}]"), format!("{p}: a host and a port, not 0"));
            }
        }
        if let (Some(h), Some(w)) = (self.rpc.http, self.rpc.ws) {
            // (Port 0 asks the system for a free port: two such are two ports.)
            if h == w && h.port() != 0 {
                return bad(
                    "rpc.ws",
                    format!("{w}, the same as rpc.http (whose port takes WebSocket upgrades too)"),
                );
            }
        }
        if let Some(l) = self.network.listen {
            if l.port() == 0 {
                return bad("network.listen", "port 0: peers dial a known port".into());
            }
            if self.committee.first().is_some_and(|m| m.address.is_ipv4() != l.is_ipv4()) {
                return bad(
                    "network.listen",
                    format!("{l}: another IP family than the committee's addresses"),
                );
            }
        }
        if !(1..=MAX_QUEUE).contains(&self.network.peer_queue) {
            return bad("network.peer_queue", format!("must be from 1 to {MAX_QUEUE}"));
        }
        if !(1..=crate::sync::HEADER_BATCH).contains(&self.sync.headers_per_request) {
            return bad("sync.headers_per_request", "must be between 1 and 1024".into());
        }
        if self.sync.poll_millis == 0 || self.sync.poll_millis > 60_000 {
            return bad("sync.poll_millis", "must be between 1 and 60000".into());
        }
        // Checked once for the committee, not once per member (committees may be large).
        let coin = self.committee.iter().any(|m| m.coin_public.is_some());
        let mut addresses: HashMap<SocketAddr, usize> =
            HashMap::with_capacity(self.committee.len());
        for (i, m) in self.committee.iter().enumerate() {
            if m.bls_public.len() != farol_crypto::PUBLIC_KEY_LEN {
                return bad(
                    &format!("committee[{i}].bls_public"),
                    format!("{} bytes, want {}", m.bls_public.len(), farol_crypto::PUBLIC_KEY_LEN),
                );
            }
            if m.bls_possession.len() != farol_crypto::SIGNATURE_LEN {
                return bad(
                    &format!("committee[{i}].bls_possession"),
                    format!(
                        "{} bytes, want {}",
                        m.bls_possession.len(),
                        farol_crypto::SIGNATURE_LEN
                    ),
                );
            }
            if m.stake == 0 {
                return bad(&format!("committee[{i}].stake"), "must be above 0".into());
            }
            let field = format!("committee[{i}].address");
            if m.address.port() == 0 || m.address.ip().is_unspecified() {
                return bad(&field, "peers dial it: a host and a port, not 0".into());
            }
            if let Some(j) = addresses.insert(m.address, i) {
                return bad(&field, format!("the same as committee[{j}].address"));
            }
            if m.address.is_ipv4() != self.committee[0].address.is_ipv4() {
                return bad(
                    &field,
                    "IPv4 and IPv6 mixed: a validator's one socket dials one family".into(),
                );
            }
            match &m.coin_public {
                None if coin => {
                    return bad(
                        &format!("committee[{i}].coin_public"),
                        "missing: every member has a coin key, or none does".into(),
                    )
                }
                Some(k) if k.len() != farol_crypto::PUBLIC_KEY_LEN => {
                    return bad(
                        &format!("committee[{i}].coin_public"),
                        format!("{} bytes, want {}", k.len(), farol_crypto::PUBLIC_KEY_LEN),
                    )
                }
                _ => {}
            }
        }
        // Consensus counts quorums in u64: twice the total must fit (a committee past it
        // is refused at every start; since stop 42 it is refused here, before `farol chain
        // new` hands out keys for it).
        let total = self.committee.iter().try_fold(0u64, |t, m| t.checked_add(m.stake));
        if total.and_then(|t| t.checked_mul(2)).is_none() {
            return bad("committee[].stake", "the stakes add up past 2^63".into());
        }
        self.committee()?;
        if let Some(v) = &self.validator {
            self.check_keys(v)?;
        }
        if self.genesis.gas_limit < 21_000 {
            return bad("genesis.gas_limit", "below a transfer's 21000".into());
        }
        for (address, account) in &self.genesis.alloc {
            if let Some(why) = account.code_problem() {
                return bad(&format!("genesis.alloc.{address}.code"), why);
            }
        }
        // A slot is decided from the three rounds after it: history must reach past them.
        if self.genesis.consensus.gc_depth < 8 {
            return bad("genesis.consensus.gc_depth", "must be at least 8 rounds".into());
        }
        // Every validator keeps the blocks of this many rounds (and their transactions'
        // digests for several times as many): far past a million is no history, but memory.
        if self.genesis.consensus.gc_depth > 1_000_000 {
            return bad("genesis.consensus.gc_depth", "must be at most 1000000 rounds".into());
        }
        // Without checkpoints (0) or with them further apart than the history kept or the
        // blocks a rejoining validator looks through (§3 of docs/node.md), a validator
        // that fell behind could never rejoin, and the consensus log is never cut.
        let most = self.genesis.consensus.gc_depth.min(crate::sync::CHECKPOINT_SCAN);
        if !(1..=most).contains(&self.genesis.consensus.checkpoint_every) {
            return bad(
                "genesis.consensus.checkpoint_every",
                format!(
                    "must be from 1 to {most} commits (gc_depth, and at most {})",
                    crate::sync::CHECKPOINT_SCAN
                ),
            );
        }
        if self.pipeline.threads == 0 || self.pipeline.threads > 256 {
            return bad("pipeline.threads", "must be between 1 and 256".into());
        }
        if self.pipeline.retain_versions != 0 && self.pipeline.retain_versions < MIN_RETAIN_VERSIONS
        {
            return bad(
                "pipeline.retain_versions",
                format!("0 (every version) or at least {MIN_RETAIN_VERSIONS}"),
            );
        }
        if self.rpc.max_batch_response_bytes == 0 {
            return bad("rpc.max_batch_response_bytes", "must be at least 1".into());
        }
        if self.sync.slow_answer_millis == 0 {
            return bad("sync.slow_answer_millis", "must be at least 1".into());
        }
        for (i, k) in self.rpc.dev_keys.iter().enumerate() {
            if let Err(e) = alloy_signer_local::PrivateKeySigner::from_slice(k) {
                return bad(&format!("rpc.dev_keys[{i}]"), format!("not a secp256k1 key: {e}"));
            }
        }
        for (i, api) in self.rpc.apis.iter().flatten().enumerate() {
            if !crate::rpc::NAMESPACES.contains(&api.as_str()) {
                return bad(
                    &format!("rpc.apis[{i}]"),
                    format!("{api:?} is none of {}", crate::rpc::NAMESPACES.join(", ")),
                );
            }
        }
        for (i, o) in self.rpc.cors_origins.iter().enumerate() {
            if o != "*" && crate::rpc::cors_origin(o).is_none() {
                return bad(
                    &format!("rpc.cors_origins[{i}]"),
                    format!("{o:?} is not an origin like \"https://app.example\" or \"*\""),
                );
            }
        }
        if self.rpc.ws_send_timeout_millis == 0 {
            return bad("rpc.ws_send_timeout_millis", "must be at least 1".into());
        }
        if self.rpc.send_sync_timeout_millis == 0 {
            return bad("rpc.send_sync_timeout_millis", "must be at least 1".into());
        }
        if self.rpc.http_timeout_millis == 0 {
            return bad("rpc.http_timeout_millis", "must be at least 1".into());
        }
        if self.rpc.call_timeout_millis == 0 {
            return bad("rpc.call_timeout_millis", "must be at least 1".into());
        }
        if self.rpc.batch_timeout_millis == 0 {
            return bad("rpc.batch_timeout_millis", "must be at least 1".into());
        }
        if !(1..=MAX_QUEUE).contains(&self.rpc.max_ws_connections) {
            return bad("rpc.max_ws_connections", format!("must be from 1 to {MAX_QUEUE}"));
        }
        if self.rpc.max_batch == 0 {
            return bad("rpc.max_batch", "must be at least 1".into());
        }
        // Each at 0 refuses every request of its kind (before stop 46 they were taken).
        for (field, value) in [
            ("rpc.max_request_bytes", self.rpc.max_request_bytes as u64),
            ("rpc.max_log_blocks", self.rpc.max_log_blocks),
            ("rpc.max_logs", self.rpc.max_logs as u64),
            ("rpc.gas_cap", self.rpc.gas_cap),
            ("rpc.max_subscriptions", self.rpc.max_subscriptions as u64),
            ("mempool.max_tx_bytes", self.mempool.max_tx_bytes as u64),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        // A larger transaction would be accepted here and then refused by every peer inside
        // this validator's blocks.
        if self.mempool.max_tx_bytes > farol_consensus::block::MAX_TRANSACTION_BYTES {
            return bad(
                "mempool.max_tx_bytes",
                format!(
                    "at most {} (consensus's limit)",
                    farol_consensus::block::MAX_TRANSACTION_BYTES
                ),
            );
        }
        if self.mempool.per_sender == 0 || self.mempool.global == 0 {
            return bad("mempool", "per_sender and global must be at least 1".into());
        }
        // A year at most: durations past that overflowed the node's clock arithmetic
        // (before stop 41, `u64::MAX` panicked the mempool's task in a debug build).
        if self.mempool.lifetime_secs > MAX_LIFETIME_SECS {
            return bad("mempool.lifetime_secs", format!("at most {MAX_LIFETIME_SECS} (a year)"));
        }
        if self.mempool.global_bytes < self.mempool.max_tx_bytes {
            return bad(
                "mempool.global_bytes",
                format!("at least max_tx_bytes ({})", self.mempool.max_tx_bytes),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{read_toml, ValidatorKeys};

    /// Sync peers may be named by their hosts (`localhost:8545`, a container's name),
    /// resolved when read, an IPv4 address first; what is no `HOST:PORT` is refused naming
    /// the field (since stop 52; before, IP addresses alone).
    #[test]
    fn a_peer_may_be_named_by_its_host() {
        let at = |s: &str| super::resolve_peer(s);
        assert_eq!(
            at("10.0.0.2:8545"),
            Ok("10.0.0.2:8545".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(at("[::1]:8545"), Ok("[::1]:8545".parse().unwrap_or_else(|e| panic!("{e}"))));
        let local = at("localhost:8545").unwrap_or_else(|e| panic!("{e}"));
        assert!(local.ip().is_loopback() && local.port() == 8545, "{local}");
        for bad in ["nowhere", "localhost:", ":8545", "localhost:65536", "::1:8545"] {
            let e = at(bad).err().unwrap_or_default();
            assert!(e.contains("is not HOST:PORT"), "{bad}: {e}");
        }
        let settings: super::SyncSettings =
            toml::from_str("peers = [\"localhost:9545\"]").unwrap_or_else(|e| panic!("{e}"));
        assert!(settings.peers.len() == 1 && settings.peers[0].ip().is_loopback(), "{settings:?}");
        let e = toml::from_str::<super::SyncSettings>("peers = [\"nowhere\"]")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("peers") && e.contains("nowhere"), "{e}");
    }

    /// A secret the parser refuses (a hex digit lost in copying) is not shown in the error,
    /// nor is a line of a multi-line array of keys; the error still names the line and the
    /// field. Before stop 48 the parser's own message quoted the whole value.
    #[test]
    fn a_refused_secret_is_not_shown() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let secret = format!("{}c", "ab".repeat(31));
        let keys = dir.path().join("keys.toml");
        let text = format!("index = 0\nbls_secret = \"0x{secret}\"\nnetwork_secret = \"0x00\"\n");
        std::fs::write(&keys, text).unwrap_or_else(|e| panic!("{e}"));
        let e = read_toml::<ValidatorKeys>(&keys).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("line 2") && e.contains("bls_secret"), "{e}");
        assert!(!e.contains(&secret[..16]), "the secret is shown: {e}");
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct DevKeys {
            dev_keys: Vec<alloy_primitives::Bytes>,
        }
        let array = dir.path().join("array.toml");
        let text = format!("dev_keys = [\n  \"0x{secret}\",\n]\n");
        std::fs::write(&array, text).unwrap_or_else(|e| panic!("{e}"));
        let e = read_toml::<DevKeys>(&array).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("line 2"), "{e}");
        assert!(!e.contains(&secret[..16]), "the secret is shown: {e}");
        // A table's header is shown.
        let header = dir.path().join("header.toml");
        std::fs::write(&header, "[nonsense]\nx = 1\n").unwrap_or_else(|e| panic!("{e}"));
        let e =
            read_toml::<ValidatorKeys>(&header).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unknown field"), "{e}");
    }
}
