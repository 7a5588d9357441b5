//! Partitioned execution: when the hints split a block into groups of transactions that touch
//! nothing in common, each group runs sequentially on one thread with revm over its own
//! overlay, with no multi-version memory, no validation and no scheduler. Every location a
//! group touches is *claimed* for it, with all the ways it used it, when its bin is done; a
//! claim that two groups cannot share stops the attempt, and the block then runs on the
//! Block-STM path. The result equals
//! the sequential one (see `docs/execution.md`, "Partitioned execution").

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use crossbeam_utils::CachePadded;
use hashbrown::hash_map::Entry as MapEntry;
use hashbrown::{HashMap, HashSet};
use parking_lot::Mutex;
use revm::bytecode::Bytecode;
use revm::context::result::EVMError;
use revm::context::Context;
use revm::database_interface::Database;
use revm::primitives::hardfork::SpecId;
use revm::primitives::KECCAK_EMPTY;
use revm::state::AccountInfo;
use revm::MainContext;

use super::hints::{loc_fingerprint, ByFingerprint};
use super::mv::credit;
use super::{assemble, bloom_of, lazy_credit, meta, transact, ReadError, TxSlot};
use crate::collision::StorageProbe;
use crate::env::{BlockEnv, ChainSpec, RecoveredTx};
use crate::error::ExecError;
use crate::output::BlockOutput;
use crate::sequential::{account_info, diff_from_changes, exec_error};
use crate::state::{Account, CachedView, StateView};
use crate::writes::{collect_writes, Loc, Val};

/// Groups of transactions, each in block order, heaviest first.
pub(super) type Bins = Vec<Vec<u32>>;

/// Splits the block into at most `bins` bins of whole groups, balanced by declared gas.
/// `None` when one group holds more than `max_percent` of the block's gas (running it alone
/// would take about that share of the sequential time).
pub(super) fn plan(group: &[u32], gas: &[u64], bins: usize, max_percent: u64) -> Option<Bins> {
    let n = group.len();
    if bins < 2 || n < 2 {
        return None;
    }
    let mut weight = vec![0u128; n];
    for (g, w) in group.iter().zip(gas) {
        weight[*g as usize] += u128::from((*w).max(1));
    }
    let total: u128 = weight.iter().sum();
    let largest = weight.iter().copied().max().unwrap_or(0);
    if largest * 100 > total * u128::from(max_percent) {
        return None;
    }
    // Groups larger than an eighth of a bin go first, largest first, each to the lightest bin.
    // Ties break by index, so the plan depends only on the block.
    let target = total / bins as u128;
    let mut large: Vec<u32> = (0..n as u32)
        .filter(|g| group[*g as usize] == *g && weight[*g as usize] * 8 > target)
        .collect();
    large.sort_unstable_by_key(|g| (std::cmp::Reverse(weight[*g as usize]), *g));
    let mut load = vec![0u128; bins];
    let mut bin_of = vec![u32::MAX; n];
    let lightest = |load: &[u128]| (0..load.len()).min_by_key(|b| (load[*b], *b)).unwrap_or(0);
    for g in large {
        let b = lightest(&load);
        load[b] += weight[g as usize];
        bin_of[g as usize] = b as u32;
    }
    // The small groups fill the bins one after another, in block order, so that a run of
    // independent transactions stays together in one bin: bin `b` has room for `share` minus
    // its large groups, and a group goes to the bin whose room holds its midpoint.
    let share = total.div_ceil(bins as u128);
    let mut fill = 0;
    let mut room_end = share.saturating_sub(load[0]);
    let mut placed = 0u128;
    let mut out: Bins = vec![Vec::new(); bins];
    for (j, g) in group.iter().enumerate() {
        let g = *g as usize;
        if bin_of[g] == u32::MAX {
            let mid = placed + weight[g] / 2;
            while fill + 1 < bins && mid >= room_end {
                fill += 1;
                room_end += share.saturating_sub(load[fill]);
            }
            load[fill] += weight[g];
            placed += weight[g];
            bin_of[g] = fill as u32;
        }
        out[bin_of[g] as usize].push(j as u32);
    }
    let mut order: Vec<usize> = (0..bins).collect();
    order.sort_unstable_by_key(|b| (std::cmp::Reverse(load[*b]), *b));
    let out: Bins =
        order.into_iter().map(|b| std::mem::take(&mut out[b])).filter(|b| !b.is_empty()).collect();
    (out.len() >= 2).then_some(out)
}

/// Transaction `i` in bin `i mod bins`, whatever it touches (tests: conflicts must be caught).
pub(super) fn round_robin(n: usize, bins: usize) -> Option<Bins> {
    let bins = bins.min(n);
    let out: Bins = (0..bins).map(|b| (b..n).step_by(bins).map(|j| j as u32).collect()).collect();
    (out.len() >= 2).then_some(out)
}

/// How a bin uses a location.
const READ: u8 = 1;
/// Written with a full value (or the sender's account, which every transaction writes).
const WRITE: u8 = 2;
/// A lazy recipient's balance: only its nonce, code, emptiness and overflow were read, and
/// it was only added to.
const CREDIT: u8 = 4;

/// Who claimed a location.
#[derive(Clone, Copy)]
struct Claim {
    /// The first bin that claimed it.
    bin: u32,
    /// Another bin claimed it too.
    shared: bool,
    /// The union of the claims.
    kinds: u8,
    /// Listed in [`Claims::credited`].
    listed: bool,
}

/// The claims of all bins, by the fingerprint of each location. Two bins may share a location
/// they both only read, or both only credit; anything else (a write and any other use, a read
/// and a credit) is a conflict. Two locations with one fingerprint share one claim, which can
/// only add conflicts.
struct Claims {
    shards: Vec<CachePadded<Mutex<ByFingerprint<Claim>>>>,
    /// Fingerprints of locations credited by more than one bin: such credits are checked in
    /// block order.
    credited: Mutex<Vec<u64>>,
}

/// The shard of a fingerprint: bits the maps inside do not use for their buckets or tags.
fn claim_shard(fp: u64) -> usize {
    (fp >> 40) as usize % crate::state::SHARDS
}

impl Claims {
    fn new(locations: usize) -> Self {
        let per_shard = locations / crate::state::SHARDS + 1;
        Claims {
            shards: (0..crate::state::SHARDS)
                .map(|_| {
                    CachePadded::new(Mutex::new(ByFingerprint::with_capacity_and_hasher(
                        per_shard,
                        Default::default(),
                    )))
                })
                .collect(),
            credited: Mutex::new(Vec::new()),
        }
    }

    /// Claims the location with fingerprint `fp` for `bin`; false on a conflict. Claims only
    /// grow and the conflict rule is monotone, so the final claims conflict exactly when some
    /// call returned false.
    fn claim(&self, fp: u64, bin: u32, kind: u8) -> bool {
        let mut shard = self.shards[claim_shard(fp)].lock();
        let c = shard.entry(fp).or_insert(Claim { bin, shared: false, kinds: 0, listed: false });
        c.kinds |= kind;
        c.shared |= c.bin != bin;
        if !c.shared {
            return true;
        }
        if c.kinds & WRITE != 0 || c.kinds & (READ | CREDIT) == READ | CREDIT {
            return false;
        }
        if c.kinds & CREDIT != 0 && !c.listed {
            c.listed = true;
            self.credited.lock().push(fp);
        }
        true
    }
}

/// A location as one bin knows it.
struct Local {
    /// The parent state's value (read when the bin first touched it).
    parent: Val,
    /// The value after the bin's latest write.
    value: Val,
    /// How the bin used it: the union of [`READ`], [`WRITE`] and [`CREDIT`], claimed when
    /// the bin is done.
    uses: u8,
}

/// What a lazy recipient looked like to a transaction, and what it was credited.
struct Payment {
    idx: u32,
    bin: u32,
    to: Address,
    seen: Option<(u64, B256, bool, bool)>,
    credit: U256,
}

/// What a bin produced.
struct BinOut {
    /// Its place in the plan.
    bin: u32,
    /// The locations whose value the bin changed, with their final value, in order.
    changed: Vec<(Loc, Val)>,
    /// What each call with a selector wrote, for the learned profiles.
    written: Vec<(u32, Vec<Loc>)>,
    payments: Vec<Payment>,
    /// The beneficiary fees of its transactions, `None` past 2^256.
    fees: Option<U256>,
}

struct Run<'a, S: ?Sized> {
    base: CachedView<'a, S>,
    claims: Claims,
    bins: Bins,
    next: AtomicUsize,
    abandoned: AtomicBool,
    why: Mutex<Option<&'static str>>,
    txs: &'a [RecoveredTx],
    lazy: Vec<Option<Address>>,
    beneficiary: Address,
    spec: SpecId,
    /// Each transaction's result, written by the worker that ran it.
    slots: Vec<Mutex<Option<TxSlot>>>,
    /// The first transaction's fee, once it ran
    /// ([`first_reward_creates_beneficiary`](super::mv::first_reward_creates_beneficiary)).
    first_fee: Mutex<Option<U256>>,
    out: Mutex<Vec<BinOut>>,
}

impl<S: ?Sized> Run<'_, S> {
    fn abandon(&self, why: &'static str) {
        self.why.lock().get_or_insert(why);
        self.abandoned.store(true, Relaxed);
    }
}

/// revm's database while a worker runs one bin.
struct BinDb<'r, 'a, S: ?Sized> {
    run: &'r Run<'a, S>,
    bin: Cell<u32>,
    idx: Cell<usize>,
    locals: RefCell<HashMap<Loc, Local>>,
    /// The account given to revm for the lazy recipient, when it was read as one.
    lazy_given: Cell<Option<Account>>,
}

#[derive(Clone, Copy)]
struct BinRef<'w, 'r, 'a, S: ?Sized>(&'w BinDb<'r, 'a, S>);

impl<S: StateView + ?Sized> BinDb<'_, '_, S> {
    /// The bin's entry for `loc`, read from the parent state the first time.
    fn entry<'m>(
        &self,
        locals: &'m mut HashMap<Loc, Local>,
        loc: Loc,
    ) -> Result<&'m mut Local, ReadError> {
        Ok(match locals.entry(loc) {
            MapEntry::Occupied(e) => e.into_mut(),
            MapEntry::Vacant(v) => {
                let parent = match loc {
                    Loc::Account(a) => Val::Account(self.run.base.account(a)?),
                    Loc::Storage(a, s) => Val::Storage(self.run.base.storage(a, s)?),
                };
                v.insert(Local { parent, value: parent, uses: 0 })
            }
        })
    }

    /// The bin's value of `loc`, used as `kind`.
    fn access(&self, loc: Loc, kind: u8) -> Result<Val, ReadError> {
        let mut locals = self.locals.borrow_mut();
        let local = self.entry(&mut locals, loc)?;
        local.uses |= kind;
        Ok(local.value)
    }

    /// Records a write of the current transaction.
    fn write(&self, loc: Loc, value: Val, kind: u8) -> Result<(), ReadError> {
        let mut locals = self.locals.borrow_mut();
        // revm loads every location before it writes it, so the entry is already there.
        let local = self.entry(&mut locals, loc)?;
        // revm reports every account a transaction touched (a called contract, say), changed
        // or not; an unchanged value is only a read, and adds no use.
        if local.value != value {
            local.uses |= kind;
            local.value = value;
        }
        Ok(())
    }
}

impl<S: StateView + ?Sized> StorageProbe for BinRef<'_, '_, '_, S> {
    fn parent_has_storage(&self, address: Address) -> Result<bool, crate::error::StateError> {
        self.0.run.base.has_storage(address)
    }
}

impl<S: StateView + ?Sized> Database for BinRef<'_, '_, '_, S> {
    type Error = ReadError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ReadError> {
        let db = self.0;
        let run = db.run;
        if address == run.beneficiary {
            // Its fees are folded in block order at the end; a transaction that reads it
            // needs them now.
            run.abandon("a transaction touches the beneficiary");
            return Err(ReadError::Beneficiary);
        }
        let idx = db.idx.get();
        let loc = Loc::Account(address);
        if run.lazy[idx] == Some(address) {
            let value = alloy_consensus::Transaction::value(&run.txs[idx].tx);
            let kind = lazy_kind(db.entry(&mut db.locals.borrow_mut(), loc)?.value, value);
            if kind == CREDIT {
                if let Val::Account(account) = db.access(loc, CREDIT)? {
                    db.lazy_given.set(Some(account.unwrap_or_default()));
                    return Ok(account.map(|a| account_info(a, Bytecode::default())));
                }
            }
        }
        // The sender's account is always written (its nonce), so it is used as written.
        let kind = if address == run.txs[idx].sender { WRITE } else { READ };
        let Val::Account(account) = db.access(loc, kind)? else {
            return Err(crate::error::StateError::Corrupt(format!(
                "account {address} holds a storage value"
            ))
            .into());
        };
        match account {
            None => Ok(None),
            Some(a) => Ok(Some(account_info(a, run.base.code(a.code_hash)?))),
        }
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, ReadError> {
        Ok(self.0.run.base.code(code_hash)?)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, ReadError> {
        match self.0.access(Loc::Storage(address, index), READ)? {
            Val::Storage(v) => Ok(v),
            Val::Account(_) => Err(crate::error::StateError::Corrupt(format!(
                "slot {index} of {address} holds an account"
            ))
            .into()),
        }
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, ReadError> {
        Ok(self.0.run.base.block_hash(number)?)
    }
}

/// How a transaction paying `value` to an account it may credit lazily uses it: as a credit
/// when the account has no code and the payment cannot overflow, in full otherwise.
fn lazy_kind(account: Val, value: U256) -> u8 {
    match account {
        Val::Account(a)
            if a.is_none_or(|a| {
                a.code_hash == KECCAK_EMPTY && a.balance.checked_add(value).is_some()
            }) =>
        {
            CREDIT
        }
        _ => READ,
    }
}

/// Runs the block in `bins`; `Err(why)` when the attempt was given up (a conflict the hints
/// did not predict, or the beneficiary touched), and the block must run another way.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute<S: StateView + ?Sized>(
    pool: &rayon::ThreadPool,
    threads: usize,
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    lazy: Vec<Option<Address>>,
    bins: Bins,
    profiles: &super::hints::Profiles,
) -> Result<(Result<BlockOutput, ExecError>, Duration, Duration), &'static str> {
    let started = Instant::now();
    let run = Run {
        base: CachedView::new(state),
        claims: Claims::new(3 * txs.len()),
        next: AtomicUsize::new(0),
        abandoned: AtomicBool::new(false),
        why: Mutex::new(None),
        txs,
        lazy,
        beneficiary: env.beneficiary,
        spec: chain.spec,
        slots: (0..txs.len()).map(|_| Mutex::new(None)).collect(),
        first_fee: Mutex::new(None),
        out: Mutex::new(Vec::with_capacity(bins.len())),
        bins,
    };
    let workers = threads.min(run.bins.len());
    pool.scope(|s| {
        for _ in 1..workers {
            s.spawn(|_| worker(&run, chain, env, txs));
        }
        worker(&run, chain, env, txs);
    });
    if run.abandoned.load(Relaxed) {
        // Learn from the transactions that finished, in plan order: a function that
        // conflicted (a shared counter) is then predicted in the next blocks. Profiles only
        // steer scheduling, so which transactions finished before the attempt stopped changes
        // no result.
        let mut outs = run.out.into_inner();
        outs.sort_unstable_by_key(|o| o.bin);
        profiles.learn_from(
            outs.iter().flat_map(|o| &o.written).map(|(i, w)| (&txs[*i as usize], &w[..])),
        );
        return Err(run.why.into_inner().unwrap_or("abandoned"));
    }
    let parallel = started.elapsed();
    let started = Instant::now();
    let output = pool.install(|| finish(run, env, txs, profiles))?;
    Ok((output, parallel, started.elapsed()))
}

fn worker<S: StateView + ?Sized>(
    run: &Run<'_, S>,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
) {
    let db = BinDb {
        run,
        bin: Cell::new(0),
        idx: Cell::new(0),
        locals: RefCell::new(HashMap::new()),
        lazy_given: Cell::new(None),
    };
    let ctx = Context::mainnet()
        .with_db(BinRef(&db))
        .with_cfg(chain.cfg())
        .with_block(env.revm(chain.spec));
    let mut evm = super::worker_evm(ctx, chain);
    loop {
        let b = run.next.fetch_add(1, Relaxed);
        let Some(bin) = run.bins.get(b) else { return };
        db.bin.set(b as u32);
        *db.locals.borrow_mut() = HashMap::with_capacity(bin.len() * 3);
        let mut written_by = Vec::new();
        let mut payments = Vec::new();
        let mut fees = Some(U256::ZERO);
        'txs: for &idx in bin {
            if run.abandoned.load(Relaxed) {
                break;
            }
            let idx_usize = idx as usize;
            db.idx.set(idx_usize);
            db.lazy_given.set(None);
            let (result, state, fee) =
                transact(&mut evm, || txs[idx_usize].tx_env(), || db.lazy_given.set(None));
            let mut written = Vec::new();
            let learn_written = super::hints::learns_from(&txs[idx_usize]);
            let (result, code, wiped) = match result {
                Err(EVMError::Database(ReadError::Beneficiary)) => break 'txs,
                Err(e) => {
                    let e = exec_error(idx_usize, e, |d| match d {
                        ReadError::State(s) => ExecError::State(s),
                        ReadError::Blocked(_) | ReadError::Beneficiary => ExecError::Evm {
                            index: idx_usize,
                            reason: "internal: a partitioned read was blocked".into(),
                        },
                    });
                    (Err(e), Vec::new(), Vec::new())
                }
                Ok(r) => {
                    let w = collect_writes(&state, run.spec);
                    let given = db.lazy_given.get();
                    let mut paid = U256::ZERO;
                    for (loc, val) in w.writes {
                        if loc == Loc::Account(run.beneficiary) {
                            run.abandon("a transaction touches the beneficiary");
                            break 'txs;
                        }
                        let credit = lazy_credit(run.lazy[idx_usize], given, loc, val);
                        if let Some(c) = credit {
                            paid = c;
                        }
                        let kind = if credit.is_some() { CREDIT } else { WRITE };
                        if db.write(loc, val, kind).is_err() {
                            // A failed read of the state (the write's entry) gives the
                            // attempt up, so that the block runs again elsewhere and ends
                            // with the read's error (before stop 38 the bin's later
                            // transactions were skipped and the block failed with "the
                            // scheduler finished without executing it").
                            run.abandon("a state read failed");
                            break 'txs;
                        }
                        if learn_written {
                            written.push(loc);
                        }
                    }
                    fees = fees.and_then(|f| f.checked_add(fee));
                    if idx == 0 {
                        *run.first_fee.lock() = Some(fee);
                    }
                    if let (Some(given), Some(to)) = (given, run.lazy[idx_usize]) {
                        payments.push(Payment {
                            idx,
                            bin: b as u32,
                            to,
                            seen: meta(
                                &Val::Account(Some(given)),
                                alloy_consensus::Transaction::value(&txs[idx_usize].tx),
                                run.spec,
                            ),
                            credit: paid,
                        });
                    }
                    (Ok(r), w.code, w.wiped)
                }
            };
            for (hash, c) in &code {
                run.base.insert_code(*hash, c.clone());
            }
            if learn_written {
                written_by.push((idx, written));
            }
            *run.slots[idx_usize].lock() = Some(TxSlot {
                bloom: bloom_of(&result),
                result,
                code,
                wiped,
                tx_type: txs[idx_usize].tx.tx_type(),
            });
        }
        // The bin's claims, made when it is done: each location once, with every use the bin
        // made of it (a slot read and then written is one claim, not two). A conflict is then
        // noticed when the later of its two bins is done rather than at the use, at no risk:
        // bins never see each other's values, so a bin that conflicts only wasted its work.
        let locals = std::mem::take(&mut *db.locals.borrow_mut());
        if !run.abandoned.load(Relaxed)
            && locals
                .iter()
                .any(|(loc, l)| !run.claims.claim(loc_fingerprint(loc), b as u32, l.uses))
        {
            run.abandon("two groups touched one location");
        }
        if run.abandoned.load(Relaxed) {
            // What the finished transactions wrote still teaches the profiles.
            run.out.lock().push(BinOut {
                bin: b as u32,
                changed: Vec::new(),
                written: written_by,
                payments: Vec::new(),
                fees: None,
            });
            return;
        }
        // The bin's part of the diff, sorted here while other bins still run.
        let mut changed: Vec<(Loc, Val)> = locals
            .into_iter()
            .filter(|(_, l)| l.value != l.parent)
            .map(|(loc, l)| (loc, l.value))
            .collect();
        changed.sort_unstable_by_key(|(l, _)| *l);
        run.out.lock().push(BinOut { bin: b as u32, changed, written: written_by, payments, fees });
    }
}

/// Checks the payments to accounts credited by several bins in block order, then assembles
/// the output. `Err(why)` when a payment saw the account differently than it would have in
/// block order.
fn finish<S: StateView + ?Sized>(
    run: Run<'_, S>,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    profiles: &super::hints::Profiles,
) -> Result<Result<BlockOutput, ExecError>, &'static str> {
    let state_clear = run.spec.is_enabled_in(SpecId::SPURIOUS_DRAGON);
    let outs = run.out.into_inner();
    // Accounts paid from several bins: each payment must have seen the account as block order
    // shows it (nonce, code, emptiness, overflow), and the final balance is the fold of all.
    let credited: HashSet<u64> = run.claims.credited.into_inner().into_iter().collect();
    let mut shared: HashSet<Loc> = HashSet::new();
    let mut shared_finals: Vec<(Loc, Val)> = Vec::new();
    if !credited.is_empty() {
        let mut payments: Vec<&Payment> = outs
            .iter()
            .flat_map(|o| &o.payments)
            .filter(|p| credited.contains(&loc_fingerprint(&Loc::Account(p.to))))
            .collect();
        payments.sort_unstable_by_key(|p| (p.to, p.idx));
        for same in payments.chunk_by(|a, b| a.to == b.to) {
            // A fingerprint shared with another location, or a bin that claimed it and
            // failed: one bin paid it, and its own value stands.
            if same.iter().all(|p| p.bin == same[0].bin) {
                continue;
            }
            let to = same[0].to;
            let parent = match run.base.account(to) {
                Ok(a) => a,
                Err(e) => return Ok(Err(ExecError::State(e))),
            };
            let mut account = parent;
            for p in same {
                let value = alloy_consensus::Transaction::value(&txs[p.idx as usize].tx);
                if meta(&Val::Account(account), value, run.spec) != p.seen {
                    return Err("a payment depends on another group's payment");
                }
                if !p.credit.is_zero() {
                    account = credit(account, p.credit, state_clear);
                }
            }
            shared.insert(Loc::Account(to));
            if account != parent {
                shared_finals.push((Loc::Account(to), Val::Account(account)));
            }
        }
    }
    // Learned from in plan order, which depends only on the block (alongside the receipts).
    let mut outs = outs;
    outs.sort_unstable_by_key(|o| o.bin);
    let written: Vec<Vec<(u32, Vec<Loc>)>> =
        outs.iter_mut().map(|o| std::mem::take(&mut o.written)).collect();
    // The beneficiary: no transaction touched it, so its final value is the parent's with
    // every fee credited. Balances only grow, so when the sum fits, so did every step of the
    // fold in block order, and one credit of the sum gives the same account.
    let beneficiary = env.beneficiary;
    // A failed read is the block's error where sequential execution meets it (`assemble`),
    // which then never calls `diff`.
    let ben_read = crate::sequential::beneficiary_read_error(&run.base, beneficiary);
    let ben_parent = run.base.account(beneficiary).ok().flatten();
    let total = outs.iter().try_fold(U256::ZERO, |sum, o| sum.checked_add(o.fees?));
    let fits = ben_parent.unwrap_or_default().balance.checked_add(total.unwrap_or(U256::MAX));
    let (Some(total), Some(_)) = (total, fits) else {
        return Err("the beneficiary's balance would overflow");
    };
    let ben = credit(ben_parent, total, state_clear);
    // No transaction of a partitioned block writes the beneficiary.
    let created_by_reward = !state_clear
        && super::mv::first_reward_creates_beneficiary(
            ben_parent,
            run.first_fee.into_inner(),
            false,
        );
    let changed: Vec<Vec<(Loc, Val)>> = outs.into_iter().map(|o| o.changed).collect();
    let diff = move |code, mut wiped: Vec<Address>| -> Result<_, ExecError> {
        if created_by_reward {
            wiped.push(beneficiary);
        }
        profiles.learn_from(written.iter().flatten().map(|(i, w)| (&txs[*i as usize], &w[..])));
        // Each bin's changes are sorted and the bins' locations are disjoint, except accounts
        // paid from several bins, whose folded value replaces the bins' own. The folded
        // values and the beneficiary (no bin touched it) are one more sorted run.
        let mut extra = shared_finals;
        if ben != ben_parent {
            extra.push((Loc::Account(beneficiary), Val::Account(ben)));
        }
        extra.sort_unstable_by_key(|(l, _)| *l);
        let mut runs = changed;
        runs.push(extra);
        let last = runs.len() - 1;
        let merged = merge_sorted(runs).filter(move |(run, (loc, _))| {
            *run == last || shared.is_empty() || !shared.contains(loc)
        });
        Ok(diff_from_changes(merged.map(|(_, change)| change), code, wiped))
    };
    Ok(assemble(run.slots, env, txs, ben_read, diff))
}

/// The changes of `runs` (each sorted by location) in location order, each with the index
/// of its run; a location in several runs comes once from each, the lowest run first.
fn merge_sorted(runs: Vec<Vec<(Loc, Val)>>) -> impl Iterator<Item = (usize, (Loc, Val))> {
    let mut runs: Vec<std::vec::IntoIter<(Loc, Val)>> =
        runs.into_iter().map(Vec::into_iter).collect();
    let mut heads: Vec<Option<(Loc, Val)>> = runs.iter_mut().map(Iterator::next).collect();
    let mut heap: BinaryHeap<Reverse<(Loc, usize)>> = heads
        .iter()
        .enumerate()
        .filter_map(|(r, h)| h.as_ref().map(|(loc, _)| Reverse((*loc, r))))
        .collect();
    std::iter::from_fn(move || {
        let Reverse((_, r)) = heap.pop()?;
        let change = heads[r].take()?;
        heads[r] = runs[r].next();
        if let Some((loc, _)) = &heads[r] {
            heap.push(Reverse((*loc, r)));
        }
        Some((r, change))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded generator of numbers below its argument.
    fn below(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |m| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % m
        }
    }

    /// The plan keeps groups whole and transactions in block order, balances the bins, and
    /// refuses a block dominated by one group.
    #[test]
    fn plans_balanced_bins_of_whole_groups() {
        let mut next = below(3);
        for case in 0..200 {
            let n = 1 + next(3000) as usize;
            // Mostly singletons, some groups joining earlier transactions, a few large ones.
            let mut group: Vec<u32> = Vec::with_capacity(n);
            for j in 0..n {
                let g =
                    if j > 0 && next(10) < 2 { group[next(j as u64) as usize] } else { j as u32 };
                group.push(g);
            }
            let gas: Vec<u64> = (0..n).map(|_| 21_000 + next(200_000)).collect();
            let bins = 2 + next(40) as usize;
            let Some(plan) = plan(&group, &gas, bins, 100) else {
                assert!(n < 2 || bins < 2 || group.iter().all(|g| *g == group[0]), "case {case}");
                continue;
            };
            let mut seen = vec![usize::MAX; n];
            let mut loads = Vec::new();
            for (b, txs) in plan.iter().enumerate() {
                assert!(txs.windows(2).all(|w| w[0] < w[1]), "case {case}: bin out of order");
                for &j in txs {
                    assert_eq!(seen[j as usize], usize::MAX, "case {case}: {j} twice");
                    seen[j as usize] = b;
                }
                loads.push(txs.iter().map(|j| u128::from(gas[*j as usize])).sum::<u128>());
            }
            assert!(seen.iter().all(|b| *b != usize::MAX), "case {case}: a transaction left out");
            for j in 0..n {
                assert_eq!(
                    seen[j], seen[group[j] as usize],
                    "case {case}: group {} split",
                    group[j]
                );
            }
            // No bin is much heavier than an equal share plus its largest group.
            let total: u128 = loads.iter().sum();
            let mut weight = vec![0u128; n];
            for j in 0..n {
                weight[group[j] as usize] += u128::from(gas[j]);
            }
            let largest = weight.iter().copied().max().unwrap_or(0);
            let most = loads.iter().copied().max().unwrap_or(0);
            assert!(most <= total.div_ceil(bins as u128) + largest, "case {case}: {loads:?}");
        }
        // One group holding most of the block is not partitioned.
        let group = vec![0u32; 10].into_iter().chain(10..12).collect::<Vec<_>>();
        assert!(plan(&group, &[1; 12], 4, 60).is_none());
    }

    /// Merging sorted runs gives every change once, in location order, with its run.
    #[test]
    fn merges_sorted_runs_in_location_order() {
        let mut next = below(11);
        for case in 0..100 {
            let runs_n = 1 + next(40) as usize;
            let mut all: Vec<(Loc, Val)> = (0..next(2_000))
                .map(|i| {
                    let a = Address::with_last_byte(next(256) as u8);
                    let loc = if next(3) == 0 {
                        Loc::Account(a)
                    } else {
                        Loc::Storage(a, U256::from(next(1 << 20)))
                    };
                    (loc, Val::Storage(U256::from(i)))
                })
                .collect();
            all.sort_unstable_by_key(|(l, _)| *l);
            all.dedup_by_key(|(l, _)| *l);
            let mut runs: Vec<Vec<(Loc, Val)>> = vec![Vec::new(); runs_n];
            let mut run_of = Vec::new();
            for change in &all {
                let r = next(runs_n as u64) as usize;
                runs[r].push(*change);
                run_of.push(r);
            }
            let merged: Vec<(usize, (Loc, Val))> = merge_sorted(runs).collect();
            let expected: Vec<(usize, (Loc, Val))> = run_of.into_iter().zip(all).collect();
            assert_eq!(merged, expected, "case {case}");
        }
    }
}
