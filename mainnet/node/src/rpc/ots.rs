//! Otterscan's namespace (`ots_*`, API level 8) and `erigon_getHeaderByNumber`: what the
//! Otterscan block explorer asks of a node besides `eth_*`, as Erigon, reth and anvil serve it
//! (docs/node.md §4 lists the methods and where Farol's answers differ from theirs).
//!
//! Everything is read from the chain as stored: blocks, receipts, states of old blocks
//! (every one of a devnet's is kept; a node that keeps fewer answers what needs an older one
//! with an error naming the block), and the call tracer over a block's transactions for what
//! receipts do not hold (internal operations, revert data, who touched an address).

use std::collections::HashSet;

use alloy_consensus::EMPTY_ROOT_HASH;
use alloy_primitives::KECCAK256_EMPTY;
use alloy_rpc_types_trace::geth::{CallConfig, CallFrame};
use alloy_rpc_types_trace::otterscan::{
    BlockDetails, ContractCreator, InternalIssuance, InternalOperation, OperationType, OtsBlock,
    OtsBlockTransactions, OtsReceipt, OtsTransactionReceipt, TraceEntry, TransactionsWithReceipts,
};
use farol_execution::SpecId;

use super::*;

/// The API level `ots_getApiLevel` answers: Otterscan 2.x asks for 8.
const API_LEVEL: u64 = 8;

/// The most transactions a search may be asked for a page (`pageSize`; Otterscan asks for
/// 25). A page holds whole blocks, so it can be larger.
pub(super) const SEARCH_PAGE_MOST: u64 = 100;

impl Rpc {
    /// An `ots_*` method or `erigon_getHeaderByNumber`.
    pub(super) async fn ots(self: &Arc<Self>, method: &str, p: &[Value]) -> RpcResult {
        let st = &self.state;
        match method {
            "ots_getApiLevel" => Ok(json!(API_LEVEL)),
            "ots_hasCode" => {
                let address: Address = param(p, 0, "address")?;
                let n = self.block_number(lenient(p.get(1)).as_ref())?;
                let view = self.view(n)?;
                let account = view.account(address).map_err(RpcError::server)?;
                Ok(json!(account.is_some_and(|a| has_code(a.code_hash))))
            }
            "erigon_getHeaderByNumber" | "ots_getHeaderByNumber" => {
                let Some(b) = self.block(lenient(p.first()).as_ref())? else {
                    return Ok(Value::Null);
                };
                Ok(rpc_header(&b).unwrap_or(Value::Null))
            }
            "ots_getBlockDetails" | "ots_getBlockDetailsByHash" => {
                let b = if method == "ots_getBlockDetailsByHash" {
                    self.block_param(p, true)?
                } else {
                    self.block(lenient(p.first()).as_ref())?
                };
                let Some(b) = b else { return Ok(Value::Null) };
                let fees = block_fees(&b);
                to_value(BlockDetails::new(rpc_block(&b, false), InternalIssuance::default(), fees))
            }
            "ots_getBlockTransactions" => {
                let number = lenient(p.first());
                let page = number_param(p, 1, "page number")?;
                let size = number_param(p, 2, "page size")?;
                let Some(b) = self.block(number.as_ref())? else { return Ok(Value::Null) };
                let (start, end) = page_from_end(b.txs.len(), page, size);
                let mut block = rpc_block(&b, false);
                block.transactions =
                    BlockTransactions::Full((start..end).map(|i| rpc_tx(&b, i)).collect());
                let receipts = (start..end).map(|i| ots_receipt(&b, i)).collect();
                let fullblock = OtsBlock { block, transaction_count: b.txs.len() };
                to_value(OtsBlockTransactions { fullblock, receipts })
            }
            "ots_getInternalOperations" | "ots_traceTransaction" | "ots_getTransactionError" => {
                let hash: B256 = param(p, 0, "transaction hash")?;
                let Some(loc) = self.located(&hash)? else { return Ok(Value::Null) };
                let i = loc.index;
                if method == "ots_getTransactionError" && loc.block.receipts[i].status() {
                    return Ok(json!(Bytes::new()));
                }
                let only_top = method == "ots_getTransactionError";
                let traces = self.trace_block(loc.block, i..i + 1, call_tracer(only_top)).await?;
                let Some(top) = call_frames(traces)?.pop() else {
                    return Err(RpcError::internal("no trace"));
                };
                match method {
                    "ots_getInternalOperations" => to_value(internal_operations(&top)),
                    "ots_traceTransaction" => {
                        let precompiles: HashSet<Address> =
                            st.spec.precompiles().into_iter().map(|(_, a)| a).collect();
                        big_value(trace_entries(&top, &precompiles))
                    }
                    _ => to_value(revert_data(&top)),
                }
            }
            "ots_searchTransactionsBefore" | "ots_searchTransactionsAfter" => {
                let address: Address = param(p, 0, "address")?;
                let from = number_param(p, 1, "block number")?;
                let size = number_param(p, 2, "page size")?;
                if size == 0 || size > SEARCH_PAGE_MOST {
                    return Err(RpcError::params(format!(
                        "page size (position 2): {size}; from 1 to {SEARCH_PAGE_MOST}"
                    )));
                }
                // A block past the head is taken (Otterscan asks for the one after a
                // transaction's, which may be the head's): before it is before the head's next.
                let head = self.head();
                let from = from.min(head.saturating_add(1));
                let before = method == "ots_searchTransactionsBefore";
                let found = self
                    .limited(&self.trace_slots, move |this| {
                        this.search(address, Search::new(before, from, head), size)
                    })
                    .await?;
                big_value(found)
            }
            "ots_getTransactionBySenderAndNonce" => {
                let sender: Address = param(p, 0, "sender")?;
                let nonce = number_param(p, 1, "nonce")?;
                self.limited(&self.call_slots, move |this| this.by_sender_and_nonce(sender, nonce))
                    .await
            }
            "ots_getContractCreator" => {
                let address: Address = param(p, 0, "address")?;
                let Some(n) = self
                    .limited(&self.call_slots, move |this| this.creation_block(address))
                    .await?
                else {
                    return Ok(Value::Null);
                };
                let b = read_back(n, st.chain.block(n))?;
                let count = b.txs.len();
                let traces = self.trace_block(b.clone(), 0..count, call_tracer(false)).await?;
                let frames = call_frames(traces)?;
                // The last creation at the address in the block is the one that stands (one
                // before it, in an earlier transaction, was destroyed as it was made).
                let found = frames.iter().enumerate().rev().find_map(|(i, top)| {
                    creator_in(top, address)
                        .map(|creator| ContractCreator { hash: *b.txs[i].tx_hash(), creator })
                });
                to_value(found)
            }
            _ => Err(RpcError::new(-32601, unknown_method(method))),
        }
    }

    /// The transactions that involve `address` (a call frame from or to it, at any depth:
    /// sent, received, called, created, self-destructed or paid by a self-destruct) in the
    /// blocks `search` walks, until `size` are found, at the end of a block; newest first.
    /// The page ends early, with what was found, past `rpc.call_timeout_millis` (checked
    /// before each block; one block's trace is bounded by its gas), past
    /// `rpc.max_batch_response_bytes` of transactions, or at a block that cannot be
    /// searched (its state no longer kept); with nothing found, the first and the last are
    /// errors.
    fn search(
        &self,
        address: Address,
        mut search: Search,
        size: u64,
    ) -> Result<TransactionsWithReceipts, RpcError> {
        let clock = CallClock::start(self.cfg.call_timeout_millis);
        let budget = self.cfg.max_batch_response_bytes as u64;
        // Each block walked that holds some, with its matching transactions, newest first.
        let mut found: Vec<Vec<(RpcTransaction, OtsTransactionReceipt)>> = Vec::new();
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut cut = false;
        let first = search.next.unwrap_or_default();
        while let Some(n) = search.take() {
            if clock.check().is_err() {
                if count == 0 {
                    return Err(RpcError::server(format!(
                        "no transaction of {address} from block {first} to block {n} (not \
                         included), as far as rpc.call_timeout_millis ({} ms) allowed \
                         searching",
                        self.cfg.call_timeout_millis
                    )));
                }
                search.give_back(n);
                cut = true;
                break;
            }
            // An empty block is told by its header alone (an idle chain makes one a second).
            let header = read_back(n, self.state.chain.header(n))?;
            if header.transactions_root == EMPTY_ROOT_HASH {
                continue;
            }
            let hits = read_back(n, self.state.chain.scanned_block(n))
                .and_then(|b| Ok((self.block_hits(&b, address)?, b)));
            let (hits, b) = match hits {
                Ok(found) => found,
                Err(_) if count > 0 => {
                    search.give_back(n);
                    cut = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            let mut these = Vec::with_capacity(hits.len());
            for &i in hits.iter().rev() {
                let (tx, receipt) = (rpc_tx(&b, i), ots_receipt(&b, i));
                bytes = bytes.saturating_add(json_len(&tx)).saturating_add(json_len(&receipt));
                these.push((tx, receipt));
            }
            if count > 0 && bytes > budget {
                search.give_back(n);
                cut = true;
                break;
            }
            count += these.len() as u64;
            if !these.is_empty() {
                found.push(these);
            }
            if bytes > budget {
                return Err(RpcError::limit(format!(
                    "the transactions of {address} in block {n} would take about {bytes} \
                     bytes, more than {budget} (rpc.max_batch_response_bytes)"
                )));
            }
            if count >= size {
                break;
            }
        }
        if !search.before {
            found.reverse();
        }
        let (txs, receipts) = found.into_iter().flatten().unzip();
        // The first page is the newest; the last, the oldest.
        let exhausted = !cut && search.next.is_none();
        let (first_page, last_page) = if search.before {
            (search.from == 0 || search.from > search.head, exhausted)
        } else {
            (exhausted, search.from == 0)
        };
        Ok(TransactionsWithReceipts { txs, receipts, first_page, last_page })
    }

    /// The positions, in order, of `b`'s transactions that involve `address` (see
    /// [`Rpc::search`]). A transfer to an account that has no code after the block, in a
    /// block without EIP-7702 authorizations, under Cancun's rules, ran no code: its sender
    /// and recipient are all it involves. (Under those rules code leaves an account only
    /// in the transaction that made it, and only an authorization sets or clears a
    /// delegation, so an account without code after the block had none for a later
    /// transaction of it.) The others are traced.
    fn block_hits(&self, b: &StoredBlock, address: Address) -> Result<Vec<usize>, RpcError> {
        let n = b.number();
        let plain = self.plain_transfers(b)?;
        let mut hits = Vec::new();
        let traced = plain.iter().position(|p| !p).map(|first| {
            let last = plain.iter().rposition(|p| !p).unwrap_or(first);
            first..last + 1
        });
        let frames = match &traced {
            Some(range) => {
                let tracer = call_tracer(false);
                let traces = self.trace_block_here(b, range.clone(), &tracer)?;
                call_frames(traces)?
            }
            None => Vec::new(),
        };
        for i in 0..b.txs.len() {
            let hit = match &traced {
                Some(range) if range.contains(&i) => {
                    let top = frames.get(i - range.start).ok_or_else(|| {
                        RpcError::internal(format!("block {n}: no trace of transaction {i}"))
                    })?;
                    top.iter().any(|f| f.from == address || f.to == Some(address))
                }
                _ => b.senders[i] == address || b.txs[i].to() == Some(address),
            };
            if hit {
                hits.push(i);
            }
        }
        Ok(hits)
    }

    /// For each of `b`'s transactions, whether it is a transfer that runs no code (see
    /// [`Rpc::block_hits`]); all `false` where that cannot be told without running them.
    fn plain_transfers(&self, b: &StoredBlock) -> Result<Vec<bool>, RpcError> {
        let n = b.number();
        let none = vec![false; b.txs.len()];
        let authorizing = b.txs.iter().any(|t| t.authorization_list().is_some());
        if n == 0 || authorizing || !self.state.spec.spec.is_enabled_in(SpecId::CANCUN) {
            return Ok(none);
        }
        let after = self.view(n)?;
        let mut out = Vec::with_capacity(b.txs.len());
        for tx in &b.txs {
            let plain = match tx.to() {
                Some(to) => {
                    let account = after.account(to).map_err(RpcError::server)?;
                    !account.is_some_and(|a| has_code(a.code_hash))
                }
                None => false,
            };
            out.push(plain);
        }
        Ok(out)
    }

    /// `ots_getTransactionBySenderAndNonce`: the hash of `sender`'s transaction with
    /// `nonce`, found in the first block after which the sender's nonce is past it (a search
    /// over the states of the chain's blocks); `null` when no block took that nonce yet, or
    /// took it otherwise than by a transaction of the sender (an EIP-7702 authorization
    /// the sender signed, a creation by code it delegates to).
    fn by_sender_and_nonce(&self, sender: Address, nonce: u64) -> RpcResult {
        let nonce_at = |n: u64| -> Result<u64, RpcError> {
            let account = self.view(n)?.account(sender).map_err(RpcError::server)?;
            Ok(account.map_or(0, |a| a.nonce))
        };
        let Some(n) = first_block_where(self.head(), |n| Ok(nonce_at(n)? > nonce))? else {
            return Ok(Value::Null);
        };
        let b = read_back(n, self.state.chain.block(n))?;
        let hash = (0..b.txs.len())
            .find(|&i| b.senders[i] == sender && b.txs[i].nonce() == nonce)
            .map(|i| *b.txs[i].tx_hash());
        to_value(hash)
    }

    /// The block in which the contract at `address` was created: the first after which it
    /// has code (a search over the states of the chain's blocks). `None` for an address
    /// without code now, with an EIP-7702 delegation for code, or with code from genesis.
    fn creation_block(&self, address: Address) -> Result<Option<u64>, RpcError> {
        let head = self.head();
        let view = self.view(head)?;
        let Some(account) = view.account(address).map_err(RpcError::server)? else {
            return Ok(None);
        };
        if !has_code(account.code_hash) {
            return Ok(None);
        }
        let code = view.code(account.code_hash).map_err(RpcError::server)?;
        if code.starts_with(&alloy_eips::eip7702::constants::EIP7702_DELEGATION_DESIGNATOR) {
            return Ok(None);
        }
        let code_at = |n: u64| -> Result<bool, RpcError> {
            let account = self.view(n)?.account(address).map_err(RpcError::server)?;
            Ok(account.is_some_and(|a| has_code(a.code_hash)))
        };
        Ok(first_block_where(head, code_at)?.filter(|&n| n > 0))
    }
}

/// Whether an account with `code_hash` holds code.
fn has_code(code_hash: B256) -> bool {
    code_hash != KECCAK256_EMPTY && code_hash != B256::ZERO
}

/// A block parameter as Otterscan sends it, a JSON number, as the hex quantity
/// [`Rpc::block_number`] takes (anything else as it is).
fn lenient(v: Option<&Value>) -> Option<Value> {
    match v {
        Some(Value::Number(n)) => Some(match n.as_u64() {
            Some(n) => json!(format!("{n:#x}")),
            None => Value::Number(n.clone()),
        }),
        other => other.cloned(),
    }
}

/// A number at position `i`: a JSON number (as Otterscan sends them) or a hex quantity.
fn number_param(p: &[Value], i: usize, name: &str) -> Result<u64, RpcError> {
    let bad = || RpcError::params(format!("{name} (position {i}): not a number or hex quantity"));
    match p.get(i) {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad),
        Some(v @ Value::String(_)) => {
            serde_json::from_value::<U64>(v.clone()).map(|n| n.to::<u64>()).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
        None => Err(RpcError::params(format!("{name} (position {i}): missing"))),
    }
}

/// Options of the call tracer (`only_top`: the transaction's own frame alone).
fn call_tracer(only_top: bool) -> Tracer {
    let config = CallConfig { only_top_call: Some(only_top), with_log: Some(false) };
    Tracer::Geth(GethDebugTracingOptions::call_tracer(config))
}

/// The call tracer's frames, one per traced transaction.
fn call_frames(traces: Vec<TxTrace>) -> Result<Vec<CallFrame>, RpcError> {
    traces
        .into_iter()
        .map(|t| match t {
            TxTrace::Geth(t) => match *t {
                GethTrace::CallTracer(frame) => Ok(frame),
                other => Err(RpcError::internal(format!("not a call trace: {other:?}"))),
            },
            other => Err(RpcError::internal(format!("not a call trace: {other:?}"))),
        })
        .collect()
}

/// The transactions of the page `page` of `size` (a block's, `len` of them), counted from
/// the block's end as Erigon and reth count (page 0 holds the last `size`), in the block's
/// order: the range of their positions.
fn page_from_end(len: usize, page: u64, size: u64) -> (usize, usize) {
    let len = len as u64;
    let end = len.saturating_sub(page.saturating_mul(size));
    let start = end.saturating_sub(size);
    (start as usize, end as usize)
}

/// What a block's transactions paid: gas used times the price paid per gas, summed.
fn block_fees(b: &StoredBlock) -> U256 {
    (0..b.txs.len())
        .map(|i| {
            let price = b.txs[i].effective_gas_price(b.header.base_fee_per_gas);
            U256::from(b.gas_used(i)) * U256::from(price)
        })
        .fold(U256::ZERO, U256::saturating_add)
}

/// A transaction's receipt as Otterscan takes it: without logs or bloom, with the block's
/// time.
fn ots_receipt(b: &StoredBlock, i: usize) -> OtsTransactionReceipt {
    let receipt = rpc_receipt_at(b, i, 0).map_inner(|inner| OtsReceipt {
        status: inner.status(),
        cumulative_gas_used: inner.cumulative_gas_used(),
        logs: None,
        logs_bloom: None,
        r#type: inner.tx_type() as u8,
    });
    OtsTransactionReceipt { receipt, timestamp: Some(b.header.timestamp) }
}

/// The internal operations of a transaction whose call trace is `top`, as
/// `ots_getInternalOperations` lists them, in the order they ran: value sent by a CALL
/// below the transaction's own frame, contracts created below it, and self-destructs
/// (with the balance they moved). Only those whose effects stand: none from a frame that
/// failed or from below one (Erigon lists those too).
fn internal_operations(top: &CallFrame) -> Vec<InternalOperation> {
    fn walk(f: &CallFrame, depth: usize, out: &mut Vec<InternalOperation>) {
        if f.error.is_some() {
            return;
        }
        let value = f.value.unwrap_or_default();
        let kind = match f.typ.as_str() {
            _ if depth == 0 => None,
            "CALL" if !value.is_zero() => Some(OperationType::OpTransfer),
            "CREATE" => Some(OperationType::OpCreate),
            "CREATE2" => Some(OperationType::OpCreate2),
            "SELFDESTRUCT" => Some(OperationType::OpSelfDestruct),
            _ => None,
        };
        if let (Some(r#type), Some(to)) = (kind, f.to) {
            out.push(InternalOperation { r#type, from: f.from, to, value });
        }
        for c in &f.calls {
            walk(c, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(top, 0, &mut out);
    out
}

/// The frames of a transaction whose call trace is `top`, as `ots_traceTransaction` lists
/// them: every call, creation and self-destruct in the order they began, the transaction's
/// own at depth 0, with no value for a static or delegated call (as Erigon), and without
/// calls to precompiles that move no value (as Erigon and reth).
fn trace_entries(top: &CallFrame, precompiles: &HashSet<Address>) -> Vec<TraceEntry> {
    fn walk(f: &CallFrame, depth: u32, precompiles: &HashSet<Address>, out: &mut Vec<TraceEntry>) {
        let value = f.value.unwrap_or_default();
        let precompile = f.to.is_some_and(|to| precompiles.contains(&to));
        if depth > 0 && precompile && value.is_zero() {
            return;
        }
        let value = match f.typ.as_str() {
            "STATICCALL" | "DELEGATECALL" => None,
            _ => Some(value),
        };
        out.push(TraceEntry {
            r#type: f.typ.clone(),
            depth,
            from: f.from,
            to: f.to.unwrap_or_default(),
            value,
            input: f.input.clone(),
            output: f.output.clone().unwrap_or_default(),
        });
        for c in &f.calls {
            walk(c, depth + 1, precompiles, out);
        }
    }
    let mut out = Vec::new();
    walk(top, 0, precompiles, &mut out);
    out
}

/// What a failed transaction whose top frame is `top` reverted with (`0x` for one that
/// halted otherwise, out of gas or on an invalid instruction, as Erigon answers).
fn revert_data(top: &CallFrame) -> Bytes {
    match (&top.error, &top.output) {
        (Some(e), Some(out)) if e == "execution reverted" => out.clone(),
        _ => Bytes::new(),
    }
}

/// The contract that created `address` in a transaction whose call trace is `top`: the
/// sender of the first creation frame at that address that succeeded.
fn creator_in(top: &CallFrame, address: Address) -> Option<Address> {
    let mut frames = top.iter();
    while let Some(f) = frames.next() {
        if f.error.is_some() {
            frames.skip_children();
            continue;
        }
        if matches!(f.typ.as_str(), "CREATE" | "CREATE2") && f.to == Some(address) {
            return Some(f.from);
        }
    }
    None
}

/// The first block, of `0..=head`, for which `holds` (which, once true, stays true for every
/// later block); `None` when it does not hold at the head.
fn first_block_where(
    head: u64,
    mut holds: impl FnMut(u64) -> Result<bool, RpcError>,
) -> Result<Option<u64>, RpcError> {
    if !holds(head)? {
        return Ok(None);
    }
    let (mut low, mut high) = (0, head);
    while low < high {
        let mid = low + (high - low) / 2;
        if holds(mid)? {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    Ok(Some(low))
}

/// The blocks a search walks: from the one before `from` down to block 1 (`before`; `from`
/// 0: from the head), or from the one after `from` up to the head.
#[derive(Debug)]
struct Search {
    before: bool,
    from: u64,
    head: u64,
    /// The next block to walk.
    next: Option<u64>,
}

impl Search {
    fn new(before: bool, from: u64, head: u64) -> Search {
        let next = match (before, from) {
            (true, 0) => Some(head),
            (true, n) => n.checked_sub(1),
            (false, n) => n.checked_add(1).filter(|&n| n <= head),
        };
        Search { before, from, head, next: next.filter(|&n| n > 0) }
    }

    /// The next block, and moves on.
    fn take(&mut self) -> Option<u64> {
        let n = self.next?;
        self.next = if self.before {
            n.checked_sub(1).filter(|&n| n > 0)
        } else {
            n.checked_add(1).filter(|&n| n <= self.head)
        };
        Some(n)
    }

    /// Puts `n`, just taken, back (it was not walked).
    fn give_back(&mut self, n: u64) {
        self.next = Some(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(typ: &str, from: u8, to: u8, value: u64, calls: Vec<CallFrame>) -> CallFrame {
        CallFrame {
            typ: typ.into(),
            from: Address::repeat_byte(from),
            to: Some(Address::repeat_byte(to)),
            value: Some(U256::from(value)),
            calls,
            ..CallFrame::default()
        }
    }

    fn failed(mut f: CallFrame) -> CallFrame {
        f.error = Some("execution reverted".into());
        f.output = Some(Bytes::from_static(b"\x08\xc3\x79\xa0"));
        f
    }

    /// A transaction from 1 to contract 2 with 5 wei: 2 pays 3, creates 4 (with 7 wei),
    /// which self-destructs to 5; a call from 2 to 6 that failed, after paying 7 inside it;
    /// a static call to the identity precompile and a delegated call to 8.
    fn sample() -> CallFrame {
        let child = frame("CREATE2", 2, 4, 7, vec![frame("SELFDESTRUCT", 4, 5, 7, vec![])]);
        let failing = failed(frame("CALL", 2, 6, 0, vec![frame("CALL", 6, 7, 9, vec![])]));
        let identity = frame("STATICCALL", 2, 4, 0, vec![]);
        let identity = CallFrame { to: Some(Address::with_last_byte(4)), ..identity };
        frame(
            "CALL",
            1,
            2,
            5,
            vec![
                frame("CALL", 2, 3, 1, vec![]),
                child,
                failing,
                identity,
                frame("DELEGATECALL", 2, 8, 5, vec![]),
                frame("CALL", 2, 3, 0, vec![]),
            ],
        )
    }

    #[test]
    fn internal_operations_are_those_below_the_top_that_stand() {
        let ops = internal_operations(&sample());
        let got: Vec<(u8, u8, u8, u64)> = ops
            .iter()
            .map(|o| (o.r#type as u8, o.from.0[0], o.to.0[0], o.value.to::<u64>()))
            .collect();
        // Not the top call's 5 wei, nothing from the failed call, no zero-value call, no
        // delegated call.
        assert_eq!(got, vec![(0, 2, 3, 1), (3, 2, 4, 7), (1, 4, 5, 7)]);
        // A transaction that failed has none.
        assert_eq!(internal_operations(&failed(sample())), vec![]);
        // The numbers are Otterscan's.
        assert_eq!(serde_json::to_value(ops[2]).ok().map(|v| v["type"].clone()), Some(json!(1)));
    }

    #[test]
    fn trace_entries_are_every_frame_in_order_with_depths() {
        let precompiles: HashSet<Address> = [Address::with_last_byte(4)].into_iter().collect();
        let entries = trace_entries(&sample(), &precompiles);
        let got: Vec<(&str, u32, u8, Option<u64>)> = entries
            .iter()
            .map(|e| (e.r#type.as_str(), e.depth, e.to.0[19], e.value.map(|v| v.to::<u64>())))
            .collect();
        assert_eq!(
            got,
            vec![
                ("CALL", 0, 2, Some(5)),
                ("CALL", 1, 3, Some(1)),
                ("CREATE2", 1, 4, Some(7)),
                ("SELFDESTRUCT", 2, 5, Some(7)),
                ("CALL", 1, 6, Some(0)),
                ("CALL", 2, 7, Some(9)),
                ("DELEGATECALL", 1, 8, None),
                ("CALL", 1, 3, Some(0)),
            ]
        );
    }

    #[test]
    fn revert_data_and_creators() {
        assert_eq!(revert_data(&sample()), Bytes::new());
        assert_eq!(revert_data(&failed(sample())), Bytes::from_static(b"\x08\xc3\x79\xa0"));
        let mut halted = failed(sample());
        halted.error = Some("out of gas".into());
        assert_eq!(revert_data(&halted), Bytes::new());
        let four = Address::repeat_byte(4);
        assert_eq!(creator_in(&sample(), four), Some(Address::repeat_byte(2)));
        // Not from a frame that failed.
        let mut undone = sample();
        undone.calls[1] = failed(undone.calls[1].clone());
        assert_eq!(creator_in(&undone, four), None);
        assert_eq!(creator_in(&sample(), Address::repeat_byte(3)), None);
    }

    #[test]
    fn pages_count_from_the_end_of_the_block() {
        assert_eq!(page_from_end(10, 0, 4), (6, 10));
        assert_eq!(page_from_end(10, 1, 4), (2, 6));
        assert_eq!(page_from_end(10, 2, 4), (0, 2));
        assert_eq!(page_from_end(10, 3, 4), (0, 0));
        assert_eq!(page_from_end(10, u64::MAX, u64::MAX), (0, 0));
        assert_eq!(page_from_end(3, 0, 25), (0, 3));
    }

    #[test]
    fn searches_walk_the_blocks_they_should() {
        let walk = |mut s: Search| std::iter::from_fn(move || s.take()).collect::<Vec<_>>();
        assert_eq!(walk(Search::new(true, 0, 4)), vec![4, 3, 2, 1]);
        assert_eq!(walk(Search::new(true, 3, 4)), vec![2, 1]);
        assert_eq!(walk(Search::new(true, 1, 4)), Vec::<u64>::new());
        assert_eq!(walk(Search::new(false, 0, 4)), vec![1, 2, 3, 4]);
        assert_eq!(walk(Search::new(false, 2, 4)), vec![3, 4]);
        assert_eq!(walk(Search::new(false, 4, 4)), Vec::<u64>::new());
        assert_eq!(walk(Search::new(true, 0, 0)), Vec::<u64>::new());
    }

    #[test]
    fn the_first_block_where_is_found_by_halves() {
        for head in [0u64, 1, 2, 7, 100] {
            for at in 0..=head + 1 {
                let mut asked = 0;
                let got = first_block_where(head, |n| {
                    asked += 1;
                    Ok(n >= at)
                });
                assert_eq!(got, Ok((at <= head).then_some(at)), "head {head}, at {at}");
                assert!(asked <= 2 + 64 - head.leading_zeros(), "{asked} asked");
            }
        }
    }

    #[test]
    fn numbers_are_taken_as_otterscan_sends_them() {
        let p = [json!(25), json!("0x19"), json!(-1), json!("x")];
        assert_eq!(number_param(&p, 0, "a"), Ok(25));
        assert_eq!(number_param(&p, 1, "a"), Ok(25));
        assert!(number_param(&p, 2, "a").is_err());
        assert!(number_param(&p, 3, "a").is_err());
        assert!(number_param(&p, 4, "a").is_err_and(|e| e.message.contains("missing")));
        assert_eq!(lenient(Some(&json!(16))), Some(json!("0x10")));
        assert_eq!(lenient(Some(&json!("latest"))), Some(json!("latest")));
    }
}
