//! A one-validator node over real sockets: JSON-RPC answers bad input with the standard
//! error codes and never falls over (random bodies included), `eth_getProof` verifies against
//! the block's state root, a restarted node keeps its chain, a torn block log tail is cut,
//! and configuration errors name their field.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use farol_crypto::SecretKey;
use farol_network::Identity;
use farol_node::client::{quantity, RpcClient};
use farol_node::config::{Member, PipelineSettings, RpcConfig, ValidatorKeys};
use farol_node::{Genesis, Node, NodeConfig};
use serde_json::{json, Value};

fn config(dir: &std::path::Path, funded: Address) -> NodeConfig {
    let bls = SecretKey::from_seed(&[3; 32]);
    let id = Identity::generate().unwrap_or_else(|e| panic!("{e}"));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = udp.local_addr().unwrap_or_else(|e| panic!("{e}"));
    drop(udp);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    NodeConfig {
        data_dir: dir.to_path_buf(),
        genesis: Genesis {
            consensus: farol_node::genesis::ConsensusParams {
                checkpoint_every: 4,
                ..Default::default()
            },
            ..Genesis::dev(&[funded], U256::from(10u64).pow(U256::from(21)), 1_700_000_000)
        },
        validator: Some(ValidatorKeys {
            index: 0,
            bls_secret: Bytes::copy_from_slice(&bls.to_bytes()),
            network_secret: Bytes::copy_from_slice(id.to_pkcs8()),
            coin_secret: None,
        }),
        committee: vec![Member {
            bls_public: Bytes::copy_from_slice(&bls.public_key().to_bytes()),
            bls_possession: Bytes::copy_from_slice(&bls.prove_possession().to_bytes()),
            network_public: Bytes::copy_from_slice(&id.public_key().0),
            address,
            stake: 1,
            fee_recipient: Address::repeat_byte(0xfe),
            coin_public: None,
        }],
        rpc: RpcConfig {
            http: Some(any),
            ws: Some(any),
            max_log_blocks: 1,
            max_batch_response_bytes: 4_000,
            ..RpcConfig::default()
        },
        mempool: Default::default(),
        // The consensus log is cut to every snapshot (restarts recover from one).
        pipeline: PipelineSettings {
            fsync: false,
            consensus_log_bytes: 1,
            ..PipelineSettings::default()
        },
        sync: Default::default(),
        network: Default::default(),
        log: "warn".into(),
    }
}

fn raw_transfer(key: &PrivateKeySigner, nonce: u64, chain_id: u64) -> String {
    raw_transfer_at(key, nonce, chain_id, 2_000_000_000)
}

fn raw_transfer_at(key: &PrivateKeySigner, nonce: u64, chain_id: u64, fee: u128) -> String {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: fee,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(Address::repeat_byte(0x77)),
        value: U256::from(5),
        ..Default::default()
    };
    signed_hex(key, tx)
}

/// `tx` signed by `key`, as `eth_sendRawTransaction` takes it.
fn signed_hex(key: &PrivateKeySigner, tx: TxEip1559) -> String {
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
    let raw = TxEnvelope::Eip1559(tx.into_signed(sig)).encoded_2718();
    format!("0x{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The error code of a call that must fail.
fn code(c: &mut RpcClient, body: &str) -> i64 {
    let v = c.post(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    v["error"]["code"].as_i64().unwrap_or_else(|| panic!("{body}: no error in {v}"))
}

fn wait_receipt(c: &mut RpcClient, hash: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.call("eth_getTransactionReceipt", json!([hash])).unwrap_or(Value::Null);
        if !r.is_null() {
            return r;
        }
        assert!(Instant::now() < deadline, "no receipt for {hash}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_errors_proofs_restart_and_config() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = PrivateKeySigner::from_slice(&[0x42; 32]).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(dir.path(), key.address());
    let node = Node::start(cfg.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    let http = node.http.unwrap_or_else(|| panic!("no http"));
    let key2 = key.clone();
    let head = tokio::task::spawn_blocking(move || {
        let mut c = RpcClient::new(http);
        // Malformed requests: the standard codes.
        assert_eq!(code(&mut c, "{not json"), -32700);
        assert_eq!(code(&mut c, "[]"), -32600);
        assert_eq!(code(&mut c, "42"), -32600);
        assert_eq!(code(&mut c, r#"{"jsonrpc":"1.0","id":1,"method":"eth_chainId"}"#), -32600);
        assert_eq!(code(&mut c, r#"{"jsonrpc":"2.0","id":1,"method":"eth_nope"}"#), -32601);
        assert_eq!(code(&mut c, r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x12"]}"#), -32602);
        assert_eq!(code(&mut c, r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":{"a":1}}"#), -32602);
        assert_eq!(code(&mut c, r#"{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x02c0"]}"#), -32602);
        assert_eq!(code(&mut c, r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#), -32601);
        let batch: Vec<Value> = (0..1001).map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"})).collect();
        assert_eq!(code(&mut c, &Value::Array(batch).to_string()), -32005);
        // A batch answers each call, errors in place.
        let v = c
            .post(r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"nope"},{"jsonrpc":"2.0","method":"eth_chainId"}]"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
        assert_eq!(v[0]["result"], "0x7a69");
        assert_eq!(v[1]["error"]["code"], -32601);
        // A batch whose answers pass the budget: the calls after that are not run, and each
        // gets a limit error under its own id.
        let batch: Vec<Value> = (0..300).map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"})).collect();
        let v = c.post(&Value::Array(batch).to_string()).unwrap_or_else(|e| panic!("{e}"));
        let answers = v.as_array().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(answers.len(), 300);
        let run = answers.iter().take_while(|a| a["result"] == "0x7a69").count();
        assert!((50..300).contains(&run), "{run} calls ran");
        assert!(answers[run..].iter().all(|a| a["error"]["code"] == -32005), "{v}");
        assert_eq!(answers[299]["id"], 299);
        // Transactions: wrong chain, unaffordable, a good one.
        let wrong = raw_transfer(&key2, 0, 1);
        let e = c.call("eth_sendRawTransaction", json!([wrong])).expect_err("wrong chain accepted");
        assert!(e.contains("-32000") && e.contains("chain id"), "{e}");
        let poor = PrivateKeySigner::from_slice(&[0x43; 32]).unwrap_or_else(|e| panic!("{e}"));
        let e = c.call("eth_sendRawTransaction", json!([raw_transfer(&poor, 0, 31337)])).expect_err("unfunded accepted");
        assert!(e.contains("insufficient funds"), "{e}");
        let legacy = TxLegacy { chain_id: None, nonce: 0, gas_price: 2_000_000_000, gas_limit: 21_000, to: TxKind::Call(Address::ZERO), value: U256::ZERO, input: Bytes::new() };
        let sig = key2.sign_hash_sync(&legacy.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
        let raw = TxEnvelope::Legacy(legacy.into_signed(sig)).encoded_2718();
        let e = c.call("eth_sendRawTransaction", json!([Bytes::from(raw)])).expect_err("pre-EIP-155 accepted");
        assert!(e.contains("chain id"), "{e}");
        let hash = c.call("eth_sendRawTransaction", json!([raw_transfer(&key2, 0, 31337)])).unwrap_or_else(|e| panic!("{e}"));
        let dup = c.call("eth_sendRawTransaction", json!([raw_transfer(&key2, 0, 31337)])).expect_err("duplicate accepted");
        assert!(dup.contains("already known") || dup.contains("nonce too low"), "{dup}");
        let r = wait_receipt(&mut c, &hash);
        assert_eq!(r["status"], "0x1");
        let n = quantity(&r["blockNumber"]).unwrap_or(0);
        // A reverted call: code 3 (init code PUSH1 0 PUSH1 0 REVERT).
        let e = c.call("eth_call", json!([{"data": "0x60006000fd"}])).expect_err("revert succeeded");
        assert!(e.contains("\"code\":3") && e.contains("execution reverted"), "{e}");
        // A priced estimate from an account that can pay for the transfer but not for the
        // whole gas cap: the allowance is what its balance buys (as in geth).
        let poor = Address::repeat_byte(0x31);
        let call = json!({"from": poor, "to": Address::repeat_byte(0x32), "value": "0x1", "maxFeePerGas": "0x77359400"});
        let rich = json!({ poor.to_string(): {"balance": "0x2632e314a001"} });
        let est = c.call("eth_estimateGas", json!([call, "latest", rich])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(est, "0x5208");
        let broke = json!({ poor.to_string(): {"balance": "0x0"} });
        let e = c.call("eth_estimateGas", json!([call, "latest", broke])).expect_err("no funds for the value");
        assert!(e.contains("insufficient funds"), "{e}");
        // A call from an account that holds code (a contract wallet): not refused, as in geth.
        let wallet = json!({ poor.to_string(): {"code": "0x00"} });
        let out = c.call("eth_call", json!([{"from": poor, "to": Address::repeat_byte(0x32)}, "latest", wallet]));
        assert_eq!(out.ok(), Some(json!("0x")));
        // The call object: `input` and `data` that differ, and both kinds of fees, are
        // refused; a nonce ahead of the account's is simulated (a client names the pending
        // one); an authorization list is an EIP-7702 call and costs its gas.
        let e = c.call("eth_call", json!([{"to": poor, "input": "0x01", "data": "0x02"}])).expect_err("two inputs");
        assert!(e.contains("-32602"), "{e}");
        let e = c.call("eth_call", json!([{"to": poor, "gasPrice": "0x1", "maxFeePerGas": "0x1"}])).expect_err("two fee kinds");
        assert!(e.contains("-32602"), "{e}");
        let ahead = c.call("eth_call", json!([{"from": key2.address(), "to": poor, "nonce": "0x64"}]));
        assert_eq!(ahead.ok(), Some(json!("0x")));
        let plain = json!({"from": key2.address(), "to": poor});
        let without = c.call("eth_estimateGas", json!([plain])).unwrap_or_else(|e| panic!("{e}"));
        let auth = alloy_eips::eip7702::Authorization { chain_id: U256::from(31337), address: Address::repeat_byte(0x32), nonce: 0 };
        let sig = key2.sign_hash_sync(&auth.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
        let signed = auth.into_signed(sig);
        let delegated = json!({"from": key2.address(), "to": poor, "authorizationList": [signed]});
        let with = c.call("eth_estimateGas", json!([delegated])).unwrap_or_else(|e| panic!("{e}"));
        let (without, with) = (quantity(&without).unwrap_or(0), quantity(&with).unwrap_or(0));
        assert!(with >= without + 12_500, "with an authorization {with}, without {without}");
        // Log range limit.
        let e = c.call("eth_getLogs", json!([{"fromBlock": "0x0", "toBlock": "latest"}])).expect_err("huge range");
        assert!(e.contains("-32005"), "{e}");
        // A range from past the head has no logs (an indexer polling from its last block + 1
        // must not get the head's again); one ending past the head ends there; a reversed
        // one is an error.
        let head = quantity(&c.call("eth_blockNumber", json!([])).unwrap_or_else(|e| panic!("{e}"))).unwrap_or(0);
        let past = c.call("eth_getLogs", json!([{"fromBlock": format!("{:#x}", head + 1), "toBlock": "latest"}])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(past, json!([]));
        let ends = c.call("eth_getLogs", json!([{"fromBlock": format!("{head:#x}"), "toBlock": format!("{:#x}", head + 1000)}]));
        assert!(ends.is_ok_and(|v| v.is_array()), "a range ending past the head");
        let e = c.call("eth_getLogs", json!([{"fromBlock": format!("{head:#x}"), "toBlock": "0x0"}])).expect_err("a reversed range");
        assert!(e.contains("invalid block range"), "{e}");
        // No uncles: a count of 0 for a block we have, null for one we do not, and no uncle.
        assert_eq!(c.call("eth_getUncleCountByBlockNumber", json!(["latest"])).ok(), Some(json!("0x0")));
        assert_eq!(c.call("eth_getUncleCountByBlockNumber", json!([format!("{:#x}", head + 1000)])).ok(), Some(Value::Null));
        assert_eq!(c.call("eth_getUncleByBlockNumberAndIndex", json!(["latest", "0x0"])).ok(), Some(Value::Null));
        // A proof of the recipient's account against the block's state root.
        let block = c.call("eth_getBlockByNumber", json!([format!("{n:#x}"), false])).unwrap_or_else(|e| panic!("{e}"));
        let root: B256 = serde_json::from_value(block["stateRoot"].clone()).unwrap_or_else(|e| panic!("{e}"));
        let to = Address::repeat_byte(0x77);
        let p = c.call("eth_getProof", json!([to, [], format!("{n:#x}")])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p["balance"], "0x5");
        let bytes: Bytes = serde_json::from_value(p["accountProof"][0].clone()).unwrap_or_else(|e| panic!("{e}"));
        let proof = farol_store::Proof::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let account = farol_execution::Account { balance: U256::from(5), nonce: 0, code_hash: alloy_primitives::KECCAK256_EMPTY };
        let value = farol_execution::encode_account(&account);
        farol_store::verify(&root, &farol_execution::account_key(&to), Some(&value), &proof)
            .unwrap_or_else(|e| panic!("the proof does not verify: {e}"));
        // Random bodies never take the node down.
        const ALPHABET: &[u8] = b"{}[]\":,0x1a-eth_\\ \x00\xff";
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..300 {
            let len = (i * 7) % 300;
            let mut body = Vec::with_capacity(len);
            for _ in 0..len {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                body.push(ALPHABET[(rng % ALPHABET.len() as u64) as usize]);
            }
            let body = String::from_utf8_lossy(&body).into_owned();
            let _ = c.post(&body);
        }
        let methods = ["eth_getBalance", "eth_call", "eth_getLogs", "eth_getProof", "eth_feeHistory", "eth_getBlockByNumber", "eth_estimateGas", "eth_getStorageAt", "farol_transactionStatus"];
        let junk = [json!(null), json!(1), json!("0x"), json!({"a": [1, 2]}), json!([[], {}]), json!("latest"), json!(-1), json!(1e300), json!("0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff")];
        for m in methods {
            for a in &junk {
                for b in &junk {
                    let body = json!({"jsonrpc":"2.0","id":1,"method":m,"params":[a, b]}).to_string();
                    let v = c.post(&body).unwrap_or_else(|e| panic!("{m}({a}, {b}): no answer: {e}"));
                    assert!(v.get("result").is_some() || v.get("error").is_some(), "{v}");
                }
            }
        }
        assert_eq!(c.call("eth_chainId", json!([])).unwrap_or_default(), "0x7a69");
        n
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let compactions =
        || node.state.validator.compactions.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while compactions() == 0 {
        assert!(Instant::now() < deadline, "the consensus log was never cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let height = node.state.validator.height.load(std::sync::atomic::Ordering::Relaxed);
    // A transaction held behind a nonce gap (the account's next nonce is 1): only the
    // mempool has it, and its journal keeps it across the restart.
    let k = key.clone();
    let held = tokio::task::spawn_blocking(move || {
        let mut c = RpcClient::new(http);
        c.call("eth_sendRawTransaction", json!([raw_transfer(&k, 3, 31337)]))
            .unwrap_or_else(|e| panic!("{e}"));
        // Replaced while it waits: the journal then holds both, and the replacement is the
        // one that must come back (the read-back keeps the last of each nonce).
        let hash = c
            .call("eth_sendRawTransaction", json!([raw_transfer_at(&k, 3, 31337, 3_000_000_000)]))
            .unwrap_or_else(|e| panic!("{e}"));
        let st = c.call("farol_transactionStatus", json!([hash])).unwrap_or_default();
        assert_eq!(st["status"], "pending", "{st}");
        hash
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    node.stop().await.unwrap_or_else(|e| panic!("{e}"));

    // Restart: the chain is still there, and consensus, rebuilt from the snapshot its log
    // was cut to, goes on from where it was.
    let node = Node::start(cfg.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(node.state.chain.head_number() >= head);
    let http = node.http.unwrap_or_else(|| panic!("no http"));
    let addr = key.address();
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = RpcClient::new(http);
        assert_eq!(
            c.call("eth_getTransactionCount", json!([addr, "latest"])).unwrap_or_default(),
            "0x1"
        );
        // The held transaction is back in the pool (read back from the journal).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = c.call("farol_transactionStatus", json!([held])).unwrap_or_default();
            if st["status"] == "pending" {
                break;
            }
            assert!(Instant::now() < deadline, "the held transaction did not come back: {st}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let hash = c
            .call("eth_sendRawTransaction", json!([raw_transfer(&k, 1, 31337)]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wait_receipt(&mut c, &hash)["status"], "0x1");
        // Filling the gap lets it through.
        c.call("eth_sendRawTransaction", json!([raw_transfer(&k, 2, 31337)]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wait_receipt(&mut c, &held)["status"], "0x1");
        let s = c.call("farol_status", json!([])).unwrap_or_default();
        assert!(quantity(&s["consensusHeight"]).unwrap_or(0) > height, "{s}");
        // This committee has no coin keys.
        assert_eq!(s["coin"], json!(false), "{s}");
        // This node does not sync (`fsync = false`): no log sync was timed.
        let syncs = &s["consensusLogSync"];
        assert_eq!((syncs["count"].as_u64(), syncs["max_ms"].as_u64()), (Some(0), None), "{s}");
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    node.stop().await.unwrap_or_else(|e| panic!("{e}"));

    // A torn tail in the block log (a write cut short, after the zeros the file grew by) is
    // cut at open; nothing before it is lost.
    let log = dir.path().join("blocks.log");
    let records = |log: &std::path::Path| {
        let mut n = 0usize;
        let wal = farol_node::Wal::open_with(log, |_, _| {
            n += 1;
            Ok::<(), farol_node::WalError>(())
        });
        drop(wal.unwrap_or_else(|e| panic!("{e}")));
        n
    };
    let before = records(&log);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3]))
        .unwrap_or_else(|e| panic!("{e}"));
    let node = Node::start(cfg.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(node.state.chain.head_number() >= head);
    node.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let after = records(&log);
    assert!(after >= before, "the log lost records: {after} < {before}");

    // A chain longer than the state versions kept: the genesis version is gone from the
    // store, and the node still starts (it takes the genesis root from the block log).
    let mut brief = cfg.clone();
    brief.pipeline.retain_versions = 1;
    let node = Node::start(brief.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    let http = node.http.unwrap_or_else(|| panic!("no http"));
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = RpcClient::new(http);
        let hash = c
            .call("eth_sendRawTransaction", json!([raw_transfer(&k, 4, 31337)]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wait_receipt(&mut c, &hash)["status"], "0x1");
        // The genesis version is gone from the store.
        let e = c.call("eth_getBalance", json!([k.address(), "0x0"])).expect_err("pruned");
        assert!(e.contains("not available"), "{e}");
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    node.stop().await.unwrap_or_else(|e| panic!("{e}"));
    let node =
        Node::start(brief).await.unwrap_or_else(|e| panic!("restart past retain_versions: {e}"));
    assert!(node.state.chain.head_number() > head);
    node.stop().await.unwrap_or_else(|e| panic!("{e}"));

    // Configuration errors name the field.
    let text = toml::to_string(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let e = NodeConfig::parse(&text.replace("data_dir", "data_dri")).expect_err("unknown field");
    assert!(e.to_string().contains("data_dri"), "{e}");
    let e = NodeConfig::parse(&text.replace("index = 0", "index = 9")).expect_err("bad index");
    assert!(e.to_string().contains("validator.index"), "{e}");
    let mut short = cfg.clone();
    short.genesis.consensus.gc_depth = 2;
    let e = short.validate().expect_err("a history too short to decide in");
    assert!(e.to_string().contains("genesis.consensus.gc_depth"), "{e}");
    short.genesis.consensus.gc_depth = u64::MAX;
    let e = short.validate().expect_err("a history no validator can hold");
    assert!(e.to_string().contains("genesis.consensus.gc_depth"), "{e}");
    let mut large = cfg.clone();
    large.mempool.max_tx_bytes = 1 << 20;
    let e = large.validate().expect_err("transactions peers would refuse in blocks");
    assert!(e.to_string().contains("mempool.max_tx_bytes"), "{e}");
    large.mempool.max_tx_bytes = 128 << 10;
    large.rpc.max_batch_response_bytes = 0;
    let e = large.validate().expect_err("no batch could answer");
    assert!(e.to_string().contains("rpc.max_batch_response_bytes"), "{e}");
    large.rpc.max_batch_response_bytes = 1;
    large.rpc.max_ws_connections = 0;
    let e = large.validate().expect_err("no WebSocket connection could open");
    assert!(e.to_string().contains("rpc.max_ws_connections"), "{e}");
    large.rpc.max_ws_connections = 1;
    large.sync.slow_answer_millis = 0;
    let e = large.validate().expect_err("every peer would be slow");
    assert!(e.to_string().contains("sync.slow_answer_millis"), "{e}");
    let mut full = cfg.clone();
    full.validator = None;
    let e = full.validate().expect_err("a full node with nowhere to sync from");
    assert!(e.to_string().contains("sync.peers"), "{e}");
    let e =
        NodeConfig::parse(&text.replace("stake = 1", "stake = \"lots\"")).expect_err("bad stake");
    assert!(e.to_string().contains("stake"), "{e}");
    let mut other = cfg.clone();
    other.genesis.chain_id = 1;
    let e = Node::start(other).await.expect_err("another genesis over the same data");
    assert!(e.to_string().contains("genesis"), "{e}");
    let mut bad = cfg.clone();
    if let Some(v) = bad.validator.as_mut() {
        v.bls_secret = Bytes::copy_from_slice(&SecretKey::from_seed(&[9; 32]).to_bytes());
    }
    let e = Node::start(bad).await.expect_err("a key not in the committee");
    assert!(e.to_string().contains("validator.bls_secret"), "{e}");
    // Coin keys: all members or none, the right sizes, and this validator's own share.
    let dealt = farol_crypto::coin::deal(&[4; 32], 1, 1).unwrap_or_else(|e| panic!("{e}"));
    let other = farol_crypto::coin::deal(&[5; 32], 1, 1).unwrap_or_else(|e| panic!("{e}"));
    let mut coin = cfg.clone();
    coin.committee[0].coin_public = Some(Bytes::copy_from_slice(&dealt.publics[0].to_bytes()));
    let e = coin.validate().expect_err("a coin committee without this validator's share");
    assert!(e.to_string().contains("validator.coin_secret"), "{e}");
    let mut short = coin.clone();
    short.committee[0].coin_public = Some(Bytes::from_static(&[1; 10]));
    if let Some(v) = short.validator.as_mut() {
        v.coin_secret = Some(Bytes::copy_from_slice(&dealt.secrets[0].to_bytes()));
    }
    let e = short.validate().expect_err("a 10-byte coin key");
    assert!(e.to_string().contains("committee[0].coin_public"), "{e}");
    if let Some(v) = coin.validator.as_mut() {
        v.coin_secret = Some(Bytes::copy_from_slice(&other.secrets[0].to_bytes()));
    }
    let e = Node::start(coin).await.expect_err("another dealing's share");
    assert!(e.to_string().contains("validator.coin_secret"), "{e}");
}

/// The newest certificate's block number a node holds (0 before any).
fn certified(c: &mut RpcClient) -> u64 {
    let v = c.call("farol_getCertificate", json!([])).unwrap_or(Value::Null);
    if v.is_null() {
        0
    } else {
        quantity(&v["number"]).unwrap_or(0)
    }
}

/// Waits until the node `c` talks to has block `n`; returns its hash and state root.
fn wait_block(c: &mut RpcClient, n: u64) -> (Value, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = c.call("eth_getBlockByNumber", json!([format!("{n:#x}"), false]));
        if let Some(b) = b.ok().filter(|b| !b.is_null()) {
            return (b["hash"].clone(), b["stateRoot"].clone());
        }
        assert!(Instant::now() < deadline, "block {n} never came");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A peer that answers every request with `body`, claiming `len` bytes (its real length
/// when `None`).
fn hostile_peer(body: &'static str, len: Option<u64>) -> SocketAddr {
    let len = len.unwrap_or(body.len() as u64);
    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n{body}");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match std::io::Read::read(&mut s, &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if std::io::Write::write_all(&mut s, answer.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A peer that forwards to `to`, holding every request `delay` first: slow, and correct.
fn slow_proxy(to: SocketAddr, delay: Duration) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut client) = s else { continue };
            let Ok(mut server) = std::net::TcpStream::connect(to) else { continue };
            let (Ok(mut back_to), Ok(mut back_from)) = (client.try_clone(), server.try_clone())
            else {
                continue;
            };
            std::thread::spawn(move || std::io::copy(&mut back_from, &mut back_to));
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match std::io::Read::read(&mut client, &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            std::thread::sleep(delay);
                            if std::io::Write::write_all(&mut server, &buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A full node (no validator keys) follows the block-final chain of its peer, serves it
/// over JSON-RPC with the same hashes and state, forwards the transactions it is sent to the
/// validator, catches up after being down, and survives peers that answer garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_follows_the_certified_chain() {
    let vdir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let fdir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = PrivateKeySigner::from_slice(&[0x52; 32]).unwrap_or_else(|e| panic!("{e}"));
    let vcfg = config(vdir.path(), key.address());
    let validator = Node::start(vcfg.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    let vhttp = validator.http.unwrap_or_else(|| panic!("no http"));
    let mut fcfg = vcfg.clone();
    fcfg.data_dir = fdir.path().to_path_buf();
    fcfg.validator = None;
    fcfg.sync.peers = vec![vhttp];
    fcfg.sync.poll_millis = 50;
    // Segments of 3 blocks: the chain is checked across many of them.
    fcfg.sync.headers_per_request = 3;

    // Some history before the full node starts.
    let k = key.clone();
    let first = tokio::task::spawn_blocking(move || {
        let mut c = RpcClient::new(vhttp);
        let mut last = Value::Null;
        for nonce in 0..5 {
            last = c
                .call("eth_sendRawTransaction", json!([raw_transfer(&k, nonce, 31337)]))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        quantity(&wait_receipt(&mut c, &last)["blockNumber"]).unwrap_or(0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let full = Node::start(fcfg.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    let fhttp = full.http.unwrap_or_else(|| panic!("no http"));
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        let (mut v, mut f) = (RpcClient::new(vhttp), RpcClient::new(fhttp));
        assert_eq!(wait_block(&mut f, first), wait_block(&mut v, first));
        let balance = |c: &mut RpcClient| {
            c.call("eth_getBalance", json!([Address::repeat_byte(0x77), format!("{first:#x}")]))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(balance(&mut f), "0x19");
        // Sent to the full node: forwarded to the validator, executed, synced back.
        let hash = f
            .call("eth_sendRawTransaction", json!([raw_transfer(&k, 5, 31337)]))
            .unwrap_or_else(|e| panic!("{e}"));
        let r = wait_receipt(&mut f, &hash);
        assert_eq!(r, wait_receipt(&mut v, &hash));
        // Everything a full node has is block-final (the certificate follows the block).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = f.call("farol_transactionStatus", json!([hash])).unwrap_or_default();
            if status["status"] == "final" {
                break;
            }
            assert_eq!(status["status"], "executed", "{status}");
            assert!(Instant::now() < deadline, "{status}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(certified(&mut f) >= quantity(&r["blockNumber"]).unwrap_or(u64::MAX));
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    full.stop().await.unwrap_or_else(|e| panic!("{e}"));

    // Down while the chain goes on; restarted, it catches up.
    let k = key.clone();
    let later = tokio::task::spawn_blocking(move || {
        let mut c = RpcClient::new(vhttp);
        let mut last = Value::Null;
        for nonce in 6..10 {
            last = c
                .call("eth_sendRawTransaction", json!([raw_transfer(&k, nonce, 31337)]))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let n = quantity(&wait_receipt(&mut c, &last)["blockNumber"]).unwrap_or(0);
        while certified(&mut c) < n {
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let full = Node::start(fcfg.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    let fhttp = full.http.unwrap_or_else(|| panic!("no http"));
    tokio::task::spawn_blocking(move || {
        let (mut v, mut f) = (RpcClient::new(vhttp), RpcClient::new(fhttp));
        assert_eq!(wait_block(&mut f, later), wait_block(&mut v, later));
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    full.stop().await.unwrap_or_else(|e| panic!("{e}"));

    // Peers that lie: a certificate nobody signed, an answer too large to read, garbage. The
    // full node takes nothing from them, keeps serving, and counts the failures.
    let forged = hostile_peer(
        r#"{"jsonrpc":"2.0","id":1,"result":{"number":"0x5","hash":"0x1111111111111111111111111111111111111111111111111111111111111111","quorum":"0x0100000000000000000000000000000000000000000000000000000000"}}"#,
        None,
    );
    let huge = hostile_peer("{", Some(99_999_999_999_999));
    let junk = hostile_peer("[1,2]", None);
    let odir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut ocfg = fcfg.clone();
    ocfg.data_dir = odir.path().to_path_buf();
    ocfg.sync.peers = vec![forged, huge, junk];
    ocfg.sync.poll_millis = 10;
    let lied_to = Node::start(ocfg).await.unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while lied_to.state.metrics.sync_failures.load(std::sync::atomic::Ordering::Relaxed) < 6 {
        assert!(Instant::now() < deadline, "the lying peers were not all tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lied_to.state.chain.head_number(), 0);
    assert!(!lied_to.failed());
    let ohttp = lied_to.http.unwrap_or_else(|| panic!("no http"));
    tokio::task::spawn_blocking(move || {
        let mut c = RpcClient::new(ohttp);
        assert_eq!(c.call("eth_blockNumber", json!([])).unwrap_or_default(), "0x0");
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    lied_to.stop().await.unwrap_or_else(|e| panic!("{e}"));

    // A peer that answers correctly but slowly (each request held 2 s) is left for the next
    // after three answers, and the node catches up from that one. From the slow peer alone
    // the sync would take a certificate and three answers per block (segments of one block),
    // 2 s each: 38 s or more for a chain of 6 blocks or more.
    let slow = slow_proxy(vhttp, Duration::from_secs(2));
    let sdir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut scfg = fcfg.clone();
    scfg.data_dir = sdir.path().to_path_buf();
    scfg.sync.peers = vec![slow, vhttp];
    scfg.sync.slow_answer_millis = 100;
    scfg.sync.headers_per_request = 1;
    let patient = Node::start(scfg).await.unwrap_or_else(|e| panic!("{e}"));
    let phttp = patient.http.unwrap_or_else(|| panic!("no http"));
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (mut v, mut p) = (RpcClient::new(vhttp), RpcClient::new(phttp));
        let want = wait_block(&mut v, later);
        assert!(later >= 6, "a chain of {later} blocks is too short to tell");
        loop {
            let b = p.call("eth_getBlockByNumber", json!([format!("{later:#x}"), false]));
            if let Some(b) = b.ok().filter(|b| !b.is_null()) {
                assert_eq!((b["hash"].clone(), b["stateRoot"].clone()), want);
                break;
            }
            let waited = started.elapsed();
            assert!(waited < Duration::from_secs(25), "still on the slow peer after {waited:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    patient.stop().await.unwrap_or_else(|e| panic!("{e}"));
    validator.stop().await.unwrap_or_else(|e| panic!("{e}"));
}

fn raw_tx(key: &PrivateKeySigner, nonce: u64, to: TxKind, input: Vec<u8>) -> String {
    let tx = TxEip1559 {
        chain_id: 31337,
        nonce,
        gas_limit: 200_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 0,
        to,
        input: input.into(),
        ..Default::default()
    };
    signed_hex(key, tx)
}

/// A log filter with a numbered `toBlock` returns the logs up to it and then nothing more,
/// however far the chain goes; `eth_getFilterLogs` returns the same range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filters_end_at_their_to_block() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = PrivateKeySigner::from_slice(&[0x43; 32]).unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(dir.path(), key.address());
    cfg.rpc.max_log_blocks = 1_000;
    let node = Node::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let http = node.http.unwrap_or_else(|| panic!("no http"));
    tokio::task::spawn_blocking(move || {
        let mut c = RpcClient::new(http);
        // Runtime code PUSH1 0 PUSH1 0 LOG0 STOP: every call logs once.
        let runtime = [0x60, 0x00, 0x60, 0x00, 0xa0, 0x00];
        let mut init = vec![0x60, 6, 0x60, 12, 0x60, 0, 0x39, 0x60, 6, 0x60, 0, 0xf3];
        init.extend_from_slice(&runtime);
        let hash = c
            .call("eth_sendRawTransaction", json!([raw_tx(&key, 0, TxKind::Create, init)]))
            .unwrap_or_else(|e| panic!("{e}"));
        let r = wait_receipt(&mut c, &hash);
        let logger: Address = serde_json::from_value(r["contractAddress"].clone())
            .unwrap_or_else(|e| panic!("{r}: {e}"));
        let call = |c: &mut RpcClient, nonce: u64| {
            let raw = raw_tx(&key, nonce, TxKind::Call(logger), Vec::new());
            let hash =
                c.call("eth_sendRawTransaction", json!([raw])).unwrap_or_else(|e| panic!("{e}"));
            let r = wait_receipt(c, &hash);
            assert_eq!(r["logs"].as_array().map(Vec::len), Some(1), "{r}");
            quantity(&r["blockNumber"]).unwrap_or(0)
        };
        let blocks = |logs: &Value| -> Vec<u64> {
            logs.as_array()
                .unwrap_or_else(|| panic!("{logs}"))
                .iter()
                .map(|l| quantity(&l["blockNumber"]).unwrap_or(0))
                .collect()
        };
        // A filter's polls return what comes after its creation (as geth's do), here up to
        // two blocks past the head.
        let head = quantity(&c.call("eth_blockNumber", json!([])).unwrap_or_default()).unwrap_or(0);
        let to = head + 2;
        let filter = json!({"address": logger, "fromBlock": format!("{:#x}", head + 1), "toBlock": format!("{to:#x}")});
        let id = c.call("eth_newFilter", json!([filter])).unwrap_or_else(|e| panic!("{e}"));
        let mut logged = Vec::new();
        let mut nonce = 1;
        while logged.last().is_none_or(|b| *b <= to) {
            logged.push(call(&mut c, nonce));
            nonce += 1;
            assert!(nonce < 20, "the chain did not pass block {to}");
        }
        let within: Vec<u64> = logged.iter().copied().filter(|b| *b <= to).collect();
        assert!(!within.is_empty(), "{logged:?}");
        let changes = c.call("eth_getFilterChanges", json!([id])).unwrap_or_else(|e| panic!("{e}"));
        let dbg = c.call(
            "eth_getLogs",
            json!([{"address": logger, "fromBlock": "0x0", "toBlock": "latest"}]),
        );
        eprintln!("head {head} to {to} logged {logged:?} getLogs {dbg:?}");
        assert_eq!(blocks(&changes), within, "{changes}");
        call(&mut c, nonce);
        let changes = c.call("eth_getFilterChanges", json!([id])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(changes, json!([]), "polls past toBlock");
        let all = c.call("eth_getFilterLogs", json!([id])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blocks(&all), within, "{all}");
        let first = logged[0];
        // Without toBlock, the same filter follows the chain.
        let open = json!({"address": logger, "fromBlock": format!("{first:#x}")});
        let id = c.call("eth_newFilter", json!([open])).unwrap_or_else(|e| panic!("{e}"));
        let all = c.call("eth_getFilterLogs", json!([id])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blocks(&all).len() as u64, nonce, "{all}");
        call(&mut c, nonce + 1);
        let changes = c.call("eth_getFilterChanges", json!([id])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blocks(&changes).len(), 1, "{changes}");
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    node.stop().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Sends a WebSocket upgrade request over a new connection and returns the HTTP status line
/// with the stream (kept open, so an accepted session stays open).
async fn ws_handshake(addr: SocketAddr) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = s.read(&mut byte).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 1, "connection closed before a status line: {head:?}");
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).trim().to_string(), s)
}

/// WebSocket connections past `rpc.max_ws_connections` are refused with 503; a closed one
/// frees its place (before stop 28 connections were not counted). And `/metrics` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_are_capped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = PrivateKeySigner::from_slice(&[0x44; 32]).unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = config(dir.path(), key.address());
    cfg.rpc.max_ws_connections = 2;
    let node = Node::start(cfg).await.unwrap_or_else(|e| panic!("{e}"));
    let ws = node.ws.unwrap_or_else(|| panic!("no ws"));
    // The metrics page, while here: the store's counters are on it.
    let http = node.http.unwrap_or_else(|| panic!("no http"));
    let metrics = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap_or_else(|e| panic!("{e}"));
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut page = String::new();
        s.read_to_string(&mut page).await.unwrap_or_else(|e| panic!("{e}"));
        page
    };
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for name in [
        "farol_blocks_total ",
        "farol_store_syncs_total ",
        "farol_store_housekeeping_failures_total 0",
    ] {
        assert!(metrics.contains(name), "{name} missing: {metrics}");
    }
    let (first, a) = ws_handshake(ws).await;
    let (second, _b) = ws_handshake(ws).await;
    assert!(first.contains(" 101 ") && second.contains(" 101 "), "{first} / {second}");
    let (third, _) = ws_handshake(ws).await;
    assert!(third.contains(" 503 "), "{third}");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (again, _c) = ws_handshake(ws).await;
        if again.contains(" 101 ") {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection kept its place: {again}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop().await.unwrap_or_else(|e| panic!("{e}"));
}
