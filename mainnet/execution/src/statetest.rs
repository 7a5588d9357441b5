//! Runs Ethereum GeneralStateTests fixtures through Farol's executors.
//!
//! Each test case (one fork, one data/gas/value index) becomes a one-transaction block over
//! the fixture's pre-state. The transaction is the fixture's signed `txbytes`, decoded and
//! sender-recovered like any block's transactions, then executed by both the sequential and
//! the parallel executor. A case passes when the executor rejects the transaction exactly when
//! the fixture expects an exception, and otherwise when the post-state root (the Ethereum
//! Merkle-Patricia root of all accounts) and the hash of the logs match the fixture's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use alloy_consensus::TxEnvelope;
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{keccak256, Log, B256};
use alloy_trie::root::{state_root_unhashed, storage_root_unhashed};
use alloy_trie::TrieAccount;
pub use revm::statetest_types::SpecName;
use revm::statetest_types::{TestSuite, TestUnit};

use crate::env::{recover_senders, BlockEnv, ChainSpec};
use crate::output::BlockOutput;
use crate::parallel::{ParallelConfig, ParallelExecutor};
use crate::sequential::execute_sequential;
use crate::state::{InMemoryState, MemAccount};
use crate::SpecId;

/// The result of one test case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    /// Fixture file.
    pub file: PathBuf,
    /// Test name inside the file.
    pub name: String,
    /// Fork.
    pub fork: String,
    /// Index of the case among the fork's entries.
    pub index: usize,
    /// `None` when it passed, else what went wrong.
    pub failure: Option<String>,
}

/// Which forks' expectations to check.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    /// Forks to run; fixtures' entries for other forks are skipped.
    pub forks: Vec<SpecName>,
    /// A test with no entries for `forks` runs those of the newest fork it has instead of
    /// none.
    pub newest_when_absent: bool,
}

impl Default for Options {
    /// Cancun, the fork the shipped fixtures were filled for last; a test with no Cancun
    /// entries runs under the newest fork it has (20 of the 420 shipped files, filled only for
    /// older forks: collisions, touches, reverts of creations; until stop 40 they ran no
    /// case at all).
    fn default() -> Self {
        Options { forks: vec![SpecName::Cancun], newest_when_absent: true }
    }
}

/// The rules `fork` names, if revm has them: not for an unknown name, nor for
/// Constantinople as first scheduled (withdrawn before it activated; revm's conversion panics
/// on it, and only Petersburg, `ConstantinopleFix`, ran).
pub fn spec_of(fork: &SpecName) -> Option<SpecId> {
    match fork {
        SpecName::Unknown | SpecName::Constantinople | SpecName::ByzantiumToConstantinopleAt5 => {
            None
        }
        f => Some(f.to_spec_id()),
    }
}

/// Every `.json` file under `path` (or `path` itself), sorted.
pub fn find_fixtures(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(out);
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Runs every case of one fixture file. A file that cannot be read or parsed is one failed
/// case named after the file.
pub fn run_file(path: &Path, options: &Options) -> Vec<CaseResult> {
    let fail_file = |why: String| {
        vec![CaseResult {
            file: path.to_path_buf(),
            name: String::new(),
            fork: String::new(),
            index: 0,
            failure: Some(why),
        }]
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return fail_file(format!("cannot read: {e}")),
    };
    let suite: TestSuite = match parse_suite(&text) {
        Ok(s) => s,
        Err(e) => return fail_file(format!("not a state test: {e}")),
    };
    let mut out = Vec::new();
    for (name, unit) in &suite.0 {
        let newest = unit
            .post
            .keys()
            .filter_map(|f| Some((spec_of(f)?, f)))
            .max_by_key(|(spec, _)| *spec)
            .map(|(_, f)| f)
            .filter(|_| {
                options.newest_when_absent && !unit.post.keys().any(|f| options.forks.contains(f))
            });
        for (fork, cases) in &unit.post {
            if !options.forks.contains(fork) && Some(fork) != newest {
                continue;
            }
            for (index, case) in cases.iter().enumerate() {
                // A fork this revm does not know has no rules to run under.
                let failure = match spec_of(fork) {
                    None => Some(format!("revm has no rules for the fork {fork:?}")),
                    Some(spec) => run_case(unit, spec, case).err(),
                };
                out.push(CaseResult {
                    file: path.to_path_buf(),
                    name: name.clone(),
                    fork: format!("{fork:?}"),
                    index,
                    failure,
                });
            }
        }
    }
    out
}

/// Parses a fixture file. Values in the `transaction` section that do not fit 256 bits
/// (written `0x:bigint ...` by the fillers) are replaced by zero: the runner executes the
/// signed `txbytes`, never those fields, and such a transaction fails to decode there.
fn parse_suite(text: &str) -> Result<TestSuite, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_str(text)?;
    if let Some(units) = value.as_object_mut() {
        for unit in units.values_mut() {
            if let Some(tx) = unit.get_mut("transaction") {
                replace_bigints(tx);
            }
        }
    }
    serde_json::from_value(value)
}

fn replace_bigints(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.starts_with("0x:bigint ") => *s = "0x00".into(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(replace_bigints),
        serde_json::Value::Object(o) => o.values_mut().for_each(replace_bigints),
        _ => {}
    }
}

fn pre_state(unit: &TestUnit) -> InMemoryState {
    let mut state = InMemoryState::new();
    for (address, acc) in &unit.pre {
        state.insert(
            *address,
            MemAccount {
                balance: acc.balance,
                nonce: acc.nonce,
                code: acc.code.clone(),
                storage: acc.storage.iter().map(|(k, v)| (*k, *v)).collect(),
            },
        );
    }
    state
}

fn block_env(unit: &TestUnit) -> BlockEnv {
    let e = &unit.env;
    BlockEnv {
        number: e.current_number.try_into().unwrap_or(u64::MAX),
        timestamp: e.current_timestamp.try_into().unwrap_or(u64::MAX),
        beneficiary: e.current_coinbase,
        base_fee: e.current_base_fee.unwrap_or_default().try_into().unwrap_or(u64::MAX),
        gas_limit: e.current_gas_limit.try_into().unwrap_or(u64::MAX),
        prevrandao: e.current_random.unwrap_or_default(),
        difficulty: e.current_difficulty,
        excess_blob_gas: e.current_excess_blob_gas.map(|x| x.try_into().unwrap_or(u64::MAX)),
    }
}

/// The Ethereum state root of `state`.
pub fn mpt_state_root(state: &InMemoryState) -> B256 {
    let accounts: Vec<_> = state
        .accounts()
        .into_iter()
        .map(|(address, (account, storage))| {
            let storage_root = storage_root_unhashed(
                storage.into_iter().map(|(k, v)| (B256::from(k.to_be_bytes::<32>()), v)),
            );
            (
                address,
                TrieAccount {
                    nonce: account.nonce,
                    balance: account.balance,
                    storage_root,
                    code_hash: account.code_hash,
                },
            )
        })
        .collect();
    state_root_unhashed(accounts)
}

/// keccak256 of the RLP list of `logs`, as the fixtures' `logs` field.
pub fn logs_hash(logs: &[Log]) -> B256 {
    let mut out = Vec::new();
    alloy_rlp::encode_list(logs, &mut out);
    keccak256(out)
}

fn run_case(
    unit: &TestUnit,
    spec: SpecId,
    case: &revm::statetest_types::Test,
) -> Result<(), String> {
    let expect_error = case.expect_exception.is_some();
    let Some(bytes) = &case.txbytes else { return Err("the fixture has no txbytes".into()) };
    let tx = match TxEnvelope::decode_2718(&mut bytes.as_ref()) {
        Ok(tx) => tx,
        Err(_) if expect_error => return Ok(()),
        Err(e) => return Err(format!("txbytes do not decode: {e}")),
    };
    let txs = match recover_senders(vec![tx]) {
        Ok(t) => t,
        Err(_) if expect_error => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let chain = ChainSpec::ethereum(
        unit.env.current_chain_id.map_or(1, |c| c.try_into().unwrap_or(1)),
        spec,
    );
    let env = block_env(unit);
    let pre = pre_state(unit);
    let sequential = execute_sequential(&pre, &chain, &env, &txs);
    let parallel = ParallelExecutor::new(ParallelConfig::always_parallel(2))
        .execute(&pre, &chain, &env, &txs)
        .map(|(o, _)| o);
    if sequential != parallel {
        return Err(format!("parallel differs from sequential: {parallel:?} vs {sequential:?}"));
    }
    match (sequential, expect_error) {
        (Err(_), true) => Ok(()),
        (Err(e), false) => Err(format!("unexpected error: {e}")),
        (Ok(_), true) => Err(format!(
            "expected exception {:?}, the transaction was accepted",
            case.expect_exception
        )),
        (Ok(out), false) => check_post(&pre, &out, case),
    }
}

fn check_post(
    pre: &InMemoryState,
    out: &BlockOutput,
    case: &revm::statetest_types::Test,
) -> Result<(), String> {
    let logs: Vec<Log> = out.txs.iter().flat_map(|t| t.logs.iter().cloned()).collect();
    let logs_hash = logs_hash(&logs);
    let mut post = pre.clone();
    post.apply(&out.diff);
    let root = mpt_state_root(&post);
    let mut problems = Vec::new();
    if logs_hash != case.logs {
        problems.push(format!("logs hash {logs_hash}, expected {}", case.logs));
    }
    if root != case.hash {
        problems.push(format!("state root {root}, expected {}", case.hash));
        // Name the accounts that differ, the way revme helps debugging.
        let got = post.accounts();
        let mut diffs = BTreeMap::new();
        for (a, want) in &case.post_state {
            match got.get(a) {
                None => {
                    diffs.insert(*a, "missing".to_string());
                }
                Some((acc, st)) => {
                    let want_storage: BTreeMap<_, _> = want
                        .storage
                        .iter()
                        .filter(|(_, v)| !v.is_zero())
                        .map(|(k, v)| (*k, *v))
                        .collect();
                    if acc.balance != want.balance || acc.nonce != want.nonce || *st != want_storage
                    {
                        diffs.insert(
                            *a,
                            format!(
                                "balance {} want {}, nonce {} want {}, storage {:?} want {:?}",
                                acc.balance, want.balance, acc.nonce, want.nonce, st, want_storage
                            ),
                        );
                    }
                }
            }
        }
        for a in got.keys() {
            if !case.post_state.is_empty() && !case.post_state.contains_key(a) {
                diffs.insert(*a, "unexpected".to_string());
            }
        }
        if !diffs.is_empty() {
            problems.push(format!("accounts: {diffs:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
