//! AsyncBFT's wire format and the engine's checks of what arrives: round trips, garbage,
//! truncation, and blocks that break the rules.

use std::sync::Arc;

use bytes::Bytes;
use farol_consensus::sim::{block_keys, members};
use farol_consensus::{
    Action, AsyncBft, Block, BlockRef, Committee, Config, Consensus, Input, Message, Target,
    Transaction, ValidatorIndex,
};
use farol_crypto::ed25519::SigningKey;
use proptest::prelude::*;

const CHAIN: [u8; 32] = [5; 32];

fn setup(n: usize) -> (Arc<Committee>, Vec<SigningKey>) {
    (Arc::new(Committee::new(members(n, 1)).unwrap_or_else(|e| panic!("{e}"))), block_keys(n))
}

fn tx(i: u8) -> Transaction {
    Transaction { sender: [i; 20], payload: Bytes::from(vec![i; 40]) }
}

fn block(k: &SigningKey, author: u16, round: u64, parents: Vec<BlockRef>) -> Block {
    Block::new(&CHAIN, ValidatorIndex(author), round, 0, parents, vec![tx(author as u8)], |m| {
        k.sign(m)
    })
}

fn engine(c: &Arc<Committee>, ks: &[SigningKey], me: u16) -> AsyncBft {
    let cfg = Config { chain: CHAIN, ..Config::default() };
    AsyncBft::new(c.clone(), ValidatorIndex(me), ks[me as usize].clone(), cfg, Arc::default())
}

#[test]
fn messages_round_trip() {
    let (_, ks) = setup(4);
    let b1 = block(&ks[0], 0, 1, vec![]);
    let b2 = block(&ks[1], 1, 2, vec![b1.reference()]);
    for m in [
        Message::Block(Box::new(b2)),
        Message::Request(vec![[1; 32], [2; 32]]),
        Message::Transactions(vec![tx(1), tx(2)]),
    ] {
        let bytes = m.encode();
        assert_eq!(Message::decode(&bytes), Ok(m.clone()));
        // Transaction digests are computed when first asked for; a block that has them
        // still equals its decoded copy, which has not.
        if let Message::Block(b) = &m {
            assert_eq!(b.transaction_digests().len(), b.transactions.len());
            assert_eq!(Message::decode(&bytes), Ok(m.clone()));
        }
        // Every truncation and any trailing byte is refused.
        for cut in 0..bytes.len() {
            assert!(Message::decode(&bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(Message::decode(&Bytes::from(longer)).is_err());
    }
}

/// A log from before blocks were signed with Ed25519 (48-byte BLS signatures) does not
/// read: a driver refuses it rather than replay a validator without its own blocks.
#[test]
fn records_of_another_format_are_unreadable() {
    use farol_consensus::asyncbft::readable_record;
    use farol_consensus::checkpoint::round_floor_record;
    let (_, ks) = setup(4);
    let b = Message::Block(Box::new(block(&ks[0], 0, 1, vec![]))).encode();
    assert!(readable_record(&b));
    assert!(readable_record(&round_floor_record(7)));
    let old =
        b.slice(..b.len() - farol_crypto::ed25519::SIGNATURE_LEN + farol_crypto::SIGNATURE_LEN);
    assert!(!readable_record(&old));
    assert!(!readable_record(&Bytes::from_static(b"\x53not a snapshot")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::decode(&Bytes::from(bytes));
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn flipped_blocks_never_panic_the_engine(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let (c, ks) = setup(4);
        let mut e = engine(&c, &ks, 0);
        let mut out = Vec::new();
        e.start(&mut out);
        let mut bytes = Message::Block(Box::new(block(&ks[1], 1, 1, vec![]))).encode().to_vec();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x | 1;
        }
        e.handle(Input::Messages(vec![(ValidatorIndex(1), Bytes::from(bytes))]), &mut out);
        let f = e.faults();
        prop_assert!(f.malformed + f.invalid + f.bad_signatures <= 1);
    }
}

/// Four validators' keys and round-1 blocks, and validator 0's started engine.
fn round_one() -> (Vec<SigningKey>, Vec<Block>, Vec<BlockRef>, AsyncBft) {
    let (c, ks) = setup(4);
    let r1: Vec<Block> = (0..4).map(|a| block(&ks[a], a as u16, 1, vec![])).collect();
    let refs: Vec<BlockRef> = r1.iter().map(Block::reference).collect();
    let mut e = engine(&c, &ks, 0);
    e.start(&mut Vec::new());
    (ks, r1, refs, e)
}

/// The actions of `n` ticks of `e`.
fn ticks(e: &mut AsyncBft, n: usize) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..n {
        e.handle(Input::Tick, &mut out);
    }
    out
}

fn deliver(e: &mut AsyncBft, from: u16, b: &Block) -> Vec<Action> {
    let mut out = Vec::new();
    e.handle(
        Input::Messages(vec![(ValidatorIndex(from), Message::Block(Box::new(b.clone())).encode())]),
        &mut out,
    );
    out
}

#[test]
fn blocks_that_break_the_rules_are_refused() {
    let (ks, r1, refs, mut e) = round_one();
    for (a, b) in r1.iter().enumerate().skip(1) {
        deliver(&mut e, a as u16, b);
    }
    assert_eq!(e.faults().invalid, 0);
    // Round 2 with parents of only two validators: no quorum.
    deliver(&mut e, 1, &block(&ks[1], 1, 2, refs[..2].to_vec()));
    assert_eq!(e.faults().invalid, 1);
    // Parents out of order.
    let mut shuffled = refs[..3].to_vec();
    shuffled.swap(0, 2);
    deliver(&mut e, 1, &block(&ks[1], 1, 2, shuffled));
    assert_eq!(e.faults().invalid, 2);
    // A parent from the block's own round.
    let mut same = refs[..3].to_vec();
    same.push(BlockRef { round: 2, author: ValidatorIndex(3), digest: [0; 32] });
    deliver(&mut e, 1, &block(&ks[1], 1, 2, same));
    assert_eq!(e.faults().invalid, 3);
    // A round-1 block with parents, and an author outside the committee.
    deliver(&mut e, 1, &block(&ks[1], 1, 1, refs[..3].to_vec()));
    deliver(&mut e, 1, &block(&ks[1], 9, 1, vec![]));
    assert_eq!(e.faults().invalid, 5);
    // Signed by another key.
    deliver(&mut e, 2, &block(&ks[3], 2, 2, refs[..3].to_vec()));
    assert_eq!(e.faults().bad_signatures, 1);
    // A valid one is taken; a second, different block of the same slot marks an equivocator.
    // (Parents from validators 1-3: validator 0's round-1 block here is the engine's own.)
    deliver(&mut e, 2, &block(&ks[2], 2, 2, refs[1..].to_vec()));
    assert!(e.faults().equivocators.is_empty());
    let twin = Block::new(&CHAIN, ValidatorIndex(2), 2, 0, refs[1..].to_vec(), vec![tx(77)], |m| {
        ks[2].sign(m)
    });
    deliver(&mut e, 2, &twin);
    assert_eq!(
        e.faults().equivocators.iter().copied().collect::<Vec<_>>(),
        vec![ValidatorIndex(2)]
    );
    assert_eq!((e.faults().invalid, e.faults().bad_signatures), (5, 1));
}

/// A block holds at most as many transactions and bytes as an honest proposal may: more
/// transactions than `MAX_PROPOSAL_TRANSACTIONS`, or more payload than `MAX_PROPOSAL_BYTES`,
/// is a broken rule (the wire takes 20,000 transactions of up to 128 KiB each); blocks at the
/// limits are taken.
#[test]
fn blocks_larger_than_a_proposal_are_refused() {
    use farol_consensus::asyncbft::{MAX_PROPOSAL_BYTES, MAX_PROPOSAL_TRANSACTIONS};
    use farol_consensus::block::MAX_TRANSACTION_BYTES;
    let (ks, r1, refs, mut e) = round_one();
    for (a, b) in r1.iter().enumerate().skip(1) {
        deliver(&mut e, a as u16, b);
    }
    let many = |n: usize, bytes: usize| -> Vec<Transaction> {
        (0..n)
            .map(|i| {
                let mut sender = [0u8; 20];
                sender[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Transaction { sender, payload: Bytes::from(vec![7u8; bytes]) }
            })
            .collect()
    };
    let with = |author: u16, txs: Vec<Transaction>| {
        Block::new(&CHAIN, ValidatorIndex(author), 2, 0, refs[1..].to_vec(), txs, |m| {
            ks[author as usize].sign(m)
        })
    };
    let full = MAX_PROPOSAL_BYTES / MAX_TRANSACTION_BYTES;
    let refused = [
        with(1, many(MAX_PROPOSAL_TRANSACTIONS + 1, 1)),
        with(1, many(20_000, 0)),
        with(1, many(full + 1, MAX_TRANSACTION_BYTES)),
        with(
            1,
            many(full + 1, MAX_TRANSACTION_BYTES / 2 + 1)
                .into_iter()
                .chain(many(full - 1, MAX_TRANSACTION_BYTES / 2))
                .collect(),
        ),
    ];
    for (i, b) in refused.iter().enumerate() {
        deliver(&mut e, 1, b);
        let f = e.faults();
        assert_eq!((f.invalid, f.malformed), (i as u64 + 1, 0), "refused block {i}: {f:?}");
    }
    assert!(e.faults().equivocators.is_empty(), "a refused block is not a second version");
    // At the limits.
    for (author, b) in [
        (1, with(1, many(MAX_PROPOSAL_TRANSACTIONS, 1))),
        (2, with(2, many(full, MAX_TRANSACTION_BYTES))),
    ] {
        deliver(&mut e, author, &b);
        let f = e.faults();
        assert_eq!((f.invalid, f.malformed, f.bad_signatures), (refused.len() as u64, 0, 0));
    }
    assert!(e.faults().equivocators.is_empty());
}

/// A block carrying a coin share: its own message kind, the share part of the digest (so
/// the block's signature covers it), round trips and truncations; a share that is not a
/// curve point decodes as its bytes (it is checked when its coin is combined, see the next
/// test); and a share in a block where no share is due, or on a committee without a coin,
/// is a broken rule.
#[test]
fn coin_shares_ride_in_blocks_only_where_due() {
    let (c, ks) = setup(4);
    let share = farol_consensus::sim::keys(4)[&1].sign(&Block::coin_message(&CHAIN, 2));
    let with = |round: u64, coin| {
        Block::with_coin(&CHAIN, ValidatorIndex(1), round, 0, vec![], vec![], coin, |m| {
            ks[1].sign(m)
        })
    };
    let plain = with(1, None);
    let carrying = with(1, Some(share));
    assert_ne!(plain.digest(), carrying.digest(), "the share is part of the digest");
    let bytes = Message::Block(Box::new(carrying.clone())).encode();
    assert_eq!(bytes[0], 4);
    assert_eq!(Message::decode(&bytes), Ok(Message::Block(Box::new(carrying.clone()))));
    for cut in 0..bytes.len() {
        assert!(Message::decode(&bytes.slice(..cut)).is_err(), "cut at {cut}");
    }
    // The share's bytes replaced by ones that are no point.
    let mut broken = bytes.to_vec();
    let at = broken.len() - farol_crypto::ed25519::SIGNATURE_LEN - farol_crypto::SIGNATURE_LEN;
    broken[at..at + farol_crypto::SIGNATURE_LEN].fill(0xff);
    match Message::decode(&Bytes::from(broken)) {
        Ok(Message::Block(b)) => assert_eq!(b.coin, Some([0xff; farol_crypto::SIGNATURE_LEN])),
        other => panic!("{other:?}"),
    }

    // No coin on this committee: any share breaks the rules.
    let mut e = engine(&c, &ks, 0);
    e.start(&mut Vec::new());
    deliver(&mut e, 1, &carrying);
    assert_eq!(e.faults().invalid, 1);
    // With a coin: a share is due in rounds COIN_LAG + 2, + 4, …, not in round 1.
    let dealt = farol_crypto::coin::deal(&[1; 32], 4, 2).unwrap_or_else(|e| panic!("{e}"));
    let c =
        Arc::new(Committee::clone(&c).with_coin(dealt.publics).unwrap_or_else(|e| panic!("{e}")));
    let mut e = engine(&c, &ks, 0);
    e.start(&mut Vec::new());
    deliver(&mut e, 1, &carrying);
    assert_eq!(e.faults().invalid, 1);
    deliver(&mut e, 1, &plain);
    assert_eq!(e.faults().invalid, 1);
}

/// A validly signed block whose coin share is no point of the group: the engine takes the
/// block, and when the coin of that wave is combined, counts the share as bad and elects
/// from the others.
#[test]
fn a_share_that_is_no_point_is_dropped_when_its_coin_is_combined() {
    let (c, ks) = setup(4);
    let dealt = farol_crypto::coin::deal(&[1; 32], 4, 2).unwrap_or_else(|e| panic!("{e}"));
    let c = Arc::new(
        Committee::clone(&c).with_coin(dealt.publics.clone()).unwrap_or_else(|e| panic!("{e}")),
    );
    let cfg = Config {
        chain: CHAIN,
        coin: Some(dealt.secrets[0].clone()),
        eager_coins: true,
        ..Config::default()
    };
    let mut e = AsyncBft::new(c.clone(), ValidatorIndex(0), ks[0].clone(), cfg, Arc::default());
    let own = |out: &[Action]| -> Vec<BlockRef> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { bytes, .. } => match Message::decode(bytes) {
                    Ok(Message::Block(b)) if b.author == ValidatorIndex(0) => Some(b.reference()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    let mut out = Vec::new();
    e.start(&mut out);
    let mut mine: Vec<BlockRef> = own(&out);
    let mut below = Vec::new();
    let lag = farol_consensus::asyncbft::COIN_LAG;
    let mut broken = 0;
    for round in 1..=lag + 8 {
        let due = round > lag && (round - lag).is_multiple_of(2);
        let parents: Vec<BlockRef> = if round == 1 { Vec::new() } else { below.clone() };
        let mut this = Vec::new();
        let mut out = Vec::new();
        for a in 1..4u16 {
            let k = &ks[usize::from(a)];
            let share = due.then(|| {
                let key = &dealt.secrets[usize::from(a)];
                key.sign(&Block::coin_message(&CHAIN, round - lag))
            });
            let b = Block::with_coin(
                &CHAIN,
                ValidatorIndex(a),
                round,
                0,
                parents.clone(),
                vec![],
                share,
                |m| k.sign(m),
            );
            let mut bytes = Message::Block(Box::new(b)).encode().to_vec();
            if due && a == 1 {
                // Validator 1's share replaced by bytes that are no point, and signed again.
                let sig = farol_crypto::ed25519::SIGNATURE_LEN;
                let end = bytes.len() - sig;
                bytes[end - farol_crypto::SIGNATURE_LEN..end].fill(0xff);
                let digest = *blake3::hash(&bytes[1..end]).as_bytes();
                let signature = k.sign(&Block::signing_message(&CHAIN, &digest)).to_bytes();
                bytes[end..].copy_from_slice(&signature);
                broken += 1;
            }
            let bytes = Bytes::from(bytes);
            match Message::decode(&bytes) {
                Ok(Message::Block(b)) => this.push(b.reference()),
                other => panic!("round {round}: {other:?}"),
            }
            e.handle(Input::Messages(vec![(ValidatorIndex(a), bytes)]), &mut out);
        }
        // Empty rounds advance every few ticks (`idle_ticks`).
        for _ in 0..8 {
            e.handle(Input::Tick, &mut out);
        }
        mine.extend(own(&out));
        this.extend(mine.iter().filter(|r| r.round == round));
        // (A stalled engine sends its last block again.)
        this.sort_by_key(|r| (r.round, r.author));
        this.dedup();
        assert_eq!(this.len(), 4, "round {round}: the engine proposed");
        below = this;
    }
    assert!(broken >= 3);
    assert_eq!(e.faults().invalid, 0, "the blocks themselves are valid");
    assert!(e.faults().bad_coin_shares >= 1, "{:?}", e.faults());
    assert!(e.height() > 0, "commits went on: {}", e.summary());
}

#[test]
fn missing_parents_are_requested_and_blocks_wait_for_them() {
    let (ks, r1, refs, mut e) = round_one();
    // A round-2 block arrives before the round-1 blocks it builds on.
    let b = block(&ks[1], 1, 2, refs[1..].to_vec());
    let actions = deliver(&mut e, 1, &b);
    let asked: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, bytes } => match Message::decode(bytes) {
                Ok(Message::Request(ds)) => Some((*to, ds)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].1.len(), 3, "asks for the three missing parents");
    // Nothing is persisted until its parents are there.
    assert!(!actions.iter().any(|a| matches!(a, Action::Persist(_))));
    for (a, p) in r1.iter().enumerate().skip(1) {
        deliver(&mut e, a as u16, p);
    }
    // Now the waiting block went in too (it is not asked for again).
    let again = deliver(&mut e, 1, &b);
    assert!(again.iter().all(|a| !matches!(a, Action::Persist(_))));
}

/// A parent missing for a second block is asked for from that block's sender too, at once:
/// a Byzantine peer that relayed an honest block first and never answers for its parents
/// does not hold the parents up until a stall (before stop 39 only the first sender was
/// asked). A sender is asked once per parent.
#[test]
fn a_missing_parent_is_asked_from_each_sender_that_needs_it() {
    let (ks, _r1, refs, mut e) = round_one();
    let requests = |actions: &[Action]| -> Vec<(Target, usize)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, bytes } => match Message::decode(bytes) {
                    Ok(Message::Request(ds)) => Some((*to, ds.len())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    // Validator 1's round-2 block, relayed first by validator 3.
    let b1 = block(&ks[1], 1, 2, refs[..3].to_vec());
    assert_eq!(requests(&deliver(&mut e, 3, &b1)), vec![(Target::One(ValidatorIndex(3)), 3)]);
    // Validator 2's block needs the same parents: asked from validator 2 as well.
    let b2 = block(&ks[2], 2, 2, refs[..3].to_vec());
    assert_eq!(requests(&deliver(&mut e, 2, &b2)), vec![(Target::One(ValidatorIndex(2)), 3)]);
    // Another block from validator 2 needing them asks nothing more.
    let b3 = block(&ks[3], 3, 2, refs[..3].to_vec());
    assert_eq!(requests(&deliver(&mut e, 2, &b3)), vec![]);
}

/// A validator asking for a block again and again gets it only while its answer budget
/// lasts (64 MiB, refilled by 1 MiB a tick); another validator's requests are still
/// answered. Before stop 41 every request was answered.
#[test]
fn repeated_requests_are_answered_within_a_budget() {
    let (ks, _r1, _refs, mut e) = round_one();
    // A round-1 block of about 1 MiB from validator 1.
    let txs: Vec<Transaction> = (0..16u8)
        .map(|i| Transaction { sender: [i; 20], payload: Bytes::from(vec![i; 64 << 10]) })
        .collect();
    let big = Block::new(&CHAIN, ValidatorIndex(1), 1, 0, vec![], txs, |m| ks[1].sign(m));
    let size = Message::Block(Box::new(big.clone())).encode().len();
    deliver(&mut e, 1, &big);
    let request = Message::Request(vec![big.digest()]).encode();
    let ask = |e: &mut AsyncBft, from: u16, times: usize| -> usize {
        let mut out = Vec::new();
        let batch = (0..times).map(|_| (ValidatorIndex(from), request.clone())).collect();
        e.handle(Input::Messages(batch), &mut out);
        out.iter()
            .filter(|a| {
                matches!(a, Action::Send { to: Target::One(ValidatorIndex(t)), bytes }
                    if *t == from && matches!(Message::decode(bytes), Ok(Message::Block(_))))
            })
            .count()
    };
    let budget = 64usize << 20;
    let answered = ask(&mut e, 2, 100);
    // While any budget is left, one more block: the last answer may take it below zero.
    assert_eq!(answered, budget.div_ceil(size), "a {size}-byte block");
    assert_eq!(e.faults().answers_withheld, (100 - answered) as u64);
    assert_eq!(ask(&mut e, 2, 1), 0, "spent");
    assert_eq!(ask(&mut e, 3, 1), 1, "another validator's budget is its own");
    // Ticks refill it by 1 MiB each: just enough of them for one block's answer.
    let left = budget as i64 - (answered * size) as i64;
    let ticks = (-left) / (1 << 20) + 1;
    for _ in 0..ticks {
        e.handle(Input::Tick, &mut Vec::new());
    }
    assert_eq!(ask(&mut e, 2, 3), 1, "one block's worth back after {ticks} ticks");
}

/// The transactions of the blocks `out` sends.
fn proposed(out: &[Action]) -> Vec<(u64, usize)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { bytes, .. } => match Message::decode(bytes) {
                Ok(Message::Block(b)) => Some((b.round, b.transactions.len())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn one_byzantine_block_with_a_huge_round_does_not_silence_a_validator() {
    let (ks, r1, refs, mut e) = round_one();
    for (a, b) in r1.iter().enumerate().skip(1) {
        deliver(&mut e, a as u16, b);
    }
    // Validator 3 signs a block of round 10^9 over made-up parents: it waits for them.
    let fake: Vec<BlockRef> = (0..3)
        .map(|a| BlockRef { round: 999_999_999, author: ValidatorIndex(a), digest: [a as u8; 32] })
        .collect();
    deliver(&mut e, 3, &block(&ks[3], 3, 1_000_000_000, fake));
    // A transaction assigned to validator 0, then round 2 from validators 1 and 2.
    let (c, _) = setup(4);
    let sender = (0u8..=255)
        .map(|i| [i; 20])
        .find(|s| AsyncBft::assignee(&c, s, 0) == ValidatorIndex(0))
        .unwrap_or_else(|| panic!("no sender assigned to validator 0"));
    let mut out = Vec::new();
    let t = Transaction { sender, payload: Bytes::from_static(b"pay") };
    e.handle(Input::Transactions(vec![t]), &mut out);
    let mut sent = proposed(&out);
    for a in 1..3u16 {
        let b2 = block(&ks[usize::from(a)], a, 2, refs[1..].to_vec());
        sent.extend(proposed(&deliver(&mut e, a, &b2)));
    }
    let mut out = Vec::new();
    for _ in 0..30 {
        e.handle(Input::Tick, &mut out);
    }
    sent.extend(proposed(&out));
    assert!(sent.iter().any(|(_, txs)| *txs == 1), "the transaction was proposed: {sent:?}");
}

/// A parent reference names its block's round and author as well as its digest; the rules
/// count stake by the reference, so one whose block has another round or author is refused,
/// whether the block is there when the reference arrives or comes later.
#[test]
fn a_reference_must_name_its_blocks_round_and_author() {
    let (ks, r1, refs, mut e) = round_one();
    for (a, b) in r1.iter().enumerate().skip(1) {
        deliver(&mut e, a as u16, b);
    }
    // Validator 3's own round-1 block, named as the blocks of three validators in the
    // round before a block of round 10^6: the round would count as reached by a quorum.
    let x = refs[3].digest;
    let lying: Vec<BlockRef> =
        (0..3).map(|a| BlockRef { round: 999_999, author: ValidatorIndex(a), digest: x }).collect();
    let out = deliver(&mut e, 3, &block(&ks[3], 3, 1_000_000, lying));
    assert_eq!(e.faults().invalid, 1, "{:?}", e.faults());
    assert!(!out.iter().any(|a| matches!(a, Action::Persist(_))), "the block was stored");
    // The engine goes on in the real rounds: round 2 from validators 1-3, then its own.
    let mut sent = Vec::new();
    let r2: Vec<Block> =
        (1..4u16).map(|a| block(&ks[usize::from(a)], a, 2, refs[1..].to_vec())).collect();
    for b in &r2[..2] {
        sent.extend(proposed(&deliver(&mut e, b.author.0, b)));
    }
    let mut out = Vec::new();
    for _ in 0..30 {
        e.handle(Input::Tick, &mut out);
    }
    sent.extend(proposed(&out));
    assert!(sent.iter().any(|(round, _)| *round == 3), "no round-3 proposal: {sent:?}");
    // A round-3 block naming validator 3's round-2 block (not yet here) as validator 0's
    // waits for it, and is refused when it comes.
    let b21 = r2[0].reference();
    let b22 = r2[1].reference();
    let b23 = r2[2].reference();
    let named_wrong = BlockRef { round: 2, author: ValidatorIndex(0), digest: b23.digest };
    let held = block(&ks[1], 1, 3, vec![named_wrong, b21, b22]);
    let asked = deliver(&mut e, 1, &held).iter().any(|a| {
        matches!(a, Action::Send { bytes, .. } if matches!(Message::decode(bytes), Ok(Message::Request(_))))
    });
    assert!(asked, "the missing parent was not asked for");
    assert_eq!(e.faults().invalid, 1);
    let out = deliver(&mut e, 3, &r2[2]);
    assert_eq!(e.faults().invalid, 2, "{:?}", e.faults());
    let stored: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            Action::Persist(bytes) => match Message::decode(bytes) {
                Ok(Message::Block(b)) => Some(b.round),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(stored, vec![2], "only validator 3's round-2 block is stored");
}

#[test]
fn a_byzantine_parent_time_does_not_spread_to_honest_proposals() {
    let (c, ks) = setup(4);
    let mut e = engine(&c, &ks, 0);
    e.set_time(5_000);
    e.start(&mut Vec::new());
    let mut out = Vec::new();
    for a in 1..4u16 {
        // Validator 3 claims a time far in the future.
        let time = if a == 3 { u64::MAX / 2 } else { 4_000 };
        let k = &ks[usize::from(a)];
        let b = Block::new(&CHAIN, ValidatorIndex(a), 1, time, vec![], vec![], |m| k.sign(m));
        out.extend(deliver(&mut e, a, &b));
    }
    for _ in 0..30 {
        e.handle(Input::Tick, &mut out);
    }
    let times: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { bytes, .. } => match Message::decode(bytes) {
                Ok(Message::Block(b)) if b.round == 2 => Some(b.time_ms),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(!times.is_empty(), "no round-2 proposal");
    assert!(times.iter().all(|t| *t == 5_000), "proposal times {times:?}");
}

#[test]
fn a_down_validators_senders_spread_over_the_others() {
    let (c, _) = setup(10);
    let senders: Vec<[u8; 20]> = (0u32..40_000)
        .map(|i| {
            let mut s = [7u8; 20];
            s[..4].copy_from_slice(&i.to_le_bytes());
            s
        })
        .collect();
    // The first attempt spreads senders evenly by stake.
    let mut first = [0usize; 10];
    for s in &senders {
        first[usize::from(AsyncBft::assignee(&c, s, 0).0)] += 1;
    }
    assert!(first.iter().all(|k| (3_400..=4_600).contains(k)), "first attempts: {first:?}");
    // With validators 7, 8 and 9 down, the senders of validator 7 land on every one that is
    // up, about evenly (not all on its next neighbour up).
    let down = |v: ValidatorIndex| v.0 >= 7;
    let mut moved = [0usize; 10];
    for s in senders.iter().filter(|s| AsyncBft::assignee(&c, s, 0).0 == 7) {
        let (_, to) = AsyncBft::first_assignee(&c, s, 1, |v| !down(v))
            .unwrap_or_else(|| panic!("no live assignee"));
        moved[usize::from(to.0)] += 1;
    }
    let total: usize = moved.iter().sum();
    let mean = total / 7;
    assert!(
        moved[..7].iter().all(|k| *k * 2 > mean && *k < mean * 2),
        "reassigned from validator 7: {moved:?}"
    );
}

/// A live validator that leaves a sender's transaction out (a censor) loses it after
/// `LIVE_PATIENCE × reassign_rounds` rounds, and the next assignee is another validator,
/// even for a sender whose next stake-weighted pick is the censor again.
#[test]
fn a_transaction_left_out_by_a_live_validator_moves_to_another() {
    let (c, ks) = setup(4);
    let censor = ValidatorIndex(0);
    let sender = (0u32..10_000)
        .map(|i| {
            let mut s = [9u8; 20];
            s[..4].copy_from_slice(&i.to_le_bytes());
            s
        })
        .find(|s| AsyncBft::assignee(&c, s, 0) == censor && AsyncBft::assignee(&c, s, 1) == censor)
        .unwrap_or_else(|| panic!("no sender assigned to the censor twice"));
    let t = Transaction { sender, payload: Bytes::from_static(b"censored") };
    let mut e = engine(&c, &ks, 1);
    let mut out = Vec::new();
    e.start(&mut out);
    e.handle(Input::Transactions(vec![t.clone()]), &mut out);
    // Where the transaction went, in order, and in which round.
    let mut sent_to = Vec::new();
    let mut sent_at = Vec::new();
    let mut parents: Vec<BlockRef> = Vec::new();
    for round in 1..=150u64 {
        let mut refs = Vec::new();
        for a in [0u16, 2, 3] {
            let k = &ks[usize::from(a)];
            let b = Block::new(&CHAIN, ValidatorIndex(a), round, 0, parents.clone(), vec![], |m| {
                k.sign(m)
            });
            refs.push(b.reference());
            out.extend(deliver(&mut e, a, &b));
        }
        parents = refs;
        // Blocks without transactions: idle rounds advance every `idle_ticks`.
        for _ in 0..5 {
            e.handle(Input::Tick, &mut out);
        }
        for a in out.drain(..) {
            if let Action::Send { to: Target::One(v), bytes } = a {
                if let Ok(Message::Transactions(txs)) = Message::decode(&bytes) {
                    if txs.contains(&t) {
                        sent_to.push(v);
                        sent_at.push(round);
                    }
                }
            }
        }
    }
    assert_eq!(sent_to.first(), Some(&censor), "first forwarded to its assignee: {sent_to:?}");
    assert!(sent_to.len() >= 2, "never reassigned: {sent_to:?}");
    assert!(sent_to[1..].iter().all(|v| *v != censor), "back to the censor: {sent_to:?}");
    // Once moved, it moves at every deadline (6 rounds) while it is not committed.
    let gaps: Vec<u64> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[1..].iter().all(|g| *g <= 12), "moved at rounds {sent_at:?} to {sent_to:?}");
}

#[test]
fn forwarded_transactions_wait_within_a_byte_budget_and_each_validators_share() {
    let (c, ks) = setup(4);
    let cfg = Config { chain: CHAIN, max_queue_bytes: 1_000, ..Config::default() };
    let mut e = AsyncBft::new(c, ValidatorIndex(0), ks[0].clone(), cfg, Arc::default());
    let forward = |e: &mut AsyncBft, from: u16, txs: Vec<Transaction>| {
        let frame = Message::Transactions(txs).encode();
        e.handle(Input::Messages(vec![(ValidatorIndex(from), frame)]), &mut Vec::new());
    };
    // 30 distinct 40-byte transactions forwarded by validator 1: its share is 2/4 of the
    // 1,000 bytes, so 12 wait.
    let txs: Vec<Transaction> = (0..30).map(tx).collect();
    forward(&mut e, 1, txs.clone());
    assert_eq!((e.faults().share_full, e.faults().queue_full), (18, 0));
    // The same again: the 12 are queued already (not counted), the rest still over the share.
    forward(&mut e, 1, txs.clone());
    assert_eq!((e.faults().share_full, e.faults().queue_full), (36, 0));
    // Validator 2 fills its own share with others (those validator 1 sent are queued).
    forward(&mut e, 2, (30..60).map(tx).collect());
    assert_eq!((e.faults().share_full, e.faults().queue_full), (54, 0));
    // 40 bytes are left in the queue's budget: one more from validator 3, then it is full.
    forward(&mut e, 3, (60..63).map(tx).collect());
    assert_eq!((e.faults().share_full, e.faults().queue_full), (54, 2));
    for i in (0..12).chain(30..42).chain([60]) {
        assert_eq!(e.locate(&tx(i).digest()), "queued", "{i}");
    }
    // The round-2 proposal takes them all: validator 1's share is free again.
    e.start(&mut Vec::new());
    for a in 1..4u16 {
        deliver(&mut e, a, &block(&ks[usize::from(a)], a, 1, vec![]));
    }
    for _ in 0..10 {
        e.handle(Input::Tick, &mut Vec::new());
    }
    assert_eq!(e.locate(&tx(0).digest()), "in block (0, 2) ordered false");
    forward(&mut e, 1, (100..112).map(tx).collect());
    assert_eq!((e.faults().share_full, e.faults().queue_full), (54, 2));
}

/// A validator's share of the queue follows its stake: twice its stake's share.
#[test]
fn a_validators_share_of_the_queue_follows_its_stake() {
    let mut members = members(4, 1);
    for (m, stake) in members.iter_mut().zip([1, 4, 1, 2]) {
        m.stake = stake;
    }
    let c = Arc::new(Committee::new(members).unwrap_or_else(|e| panic!("{e}")));
    let ks = block_keys(4);
    let cfg = Config { chain: CHAIN, max_queue_bytes: 1_000, ..Config::default() };
    let mut e = AsyncBft::new(c, ValidatorIndex(0), ks[0].clone(), cfg, Arc::default());
    let forward = |e: &mut AsyncBft, from: u16, txs: Vec<Transaction>| {
        let frame = Message::Transactions(txs).encode();
        e.handle(Input::Messages(vec![(ValidatorIndex(from), frame)]), &mut Vec::new());
    };
    // Validator 2 (1 of 8): 2/8 of 1,000 bytes, six 40-byte transactions.
    forward(&mut e, 2, (0..10).map(tx).collect());
    assert_eq!((e.faults().share_full, e.faults().queue_full), (4, 0));
    // Validator 1 (4 of 8): the whole queue; what is left of it (760 bytes) takes 19.
    forward(&mut e, 1, (10..40).map(tx).collect());
    assert_eq!((e.faults().share_full, e.faults().queue_full), (4, 11));
}

/// Parents of round - 1 that exist nowhere, distinct for every block and `tag`.
fn made_up(round: u64, tag: u8) -> Vec<BlockRef> {
    (0..3u16)
        .map(|a| {
            let mut digest = [tag; 32];
            digest[..8].copy_from_slice(&round.to_le_bytes());
            digest[8] = a as u8;
            BlockRef { round: round - 1, author: ValidatorIndex(a), digest }
        })
        .collect()
}

#[test]
fn a_validator_flooding_blocks_over_made_up_parents_fills_only_its_share() {
    let (c, ks) = setup(4);
    let mut e = engine(&c, &ks, 0);
    e.start(&mut Vec::new());
    // Validator 3 signs 5,010 blocks whose parents nobody has: a quarter of the 20,000 held
    // blocks is its share, and the rest are not held.
    let frames: Vec<(ValidatorIndex, Bytes)> = (2..5_012u64)
        .map(|r| {
            let b = block(&ks[3], 3, r, made_up(r, 0xee));
            (ValidatorIndex(3), Message::Block(Box::new(b)).encode())
        })
        .collect();
    let mut out = Vec::new();
    e.handle(Input::Messages(frames), &mut out);
    assert_eq!(e.faults().pending_full, 10, "{:?}", e.faults());
    // Validator 1's block with a missing parent is still held, and its parent asked for.
    let b = block(&ks[1], 1, 7, made_up(7, 0x11));
    let asked = deliver(&mut e, 1, &b).iter().any(|a| match a {
        Action::Send { to: Target::One(ValidatorIndex(1)), bytes } => {
            matches!(Message::decode(bytes), Ok(Message::Request(_)))
        }
        _ => false,
    });
    assert!(asked, "validator 1's block was not held");
    assert_eq!(e.faults().pending_full, 10);
}

/// A block names at most 3n parents (what an honest proposal can name): one over more
/// made-up parents is refused, not held.
#[test]
fn a_block_names_at_most_three_parents_per_validator() {
    let (c, ks) = setup(4);
    let mut e = engine(&c, &ks, 0);
    e.start(&mut Vec::new());
    // Round 19's quorum and older slots of rounds 10 to 18, all made up.
    let parents = |count: usize| -> Vec<BlockRef> {
        let mut ps: Vec<BlockRef> = (0..3u16)
            .map(|a| BlockRef { round: 19, author: ValidatorIndex(a), digest: [a as u8 + 1; 32] })
            .collect();
        for i in 0..count - 3 {
            let (round, author) = (10 + (i / 4) as u64, (i % 4) as u16);
            ps.push(BlockRef {
                round,
                author: ValidatorIndex(author),
                digest: [0x80 + i as u8; 32],
            });
        }
        ps.sort_by_key(|p| (p.round, p.author));
        ps
    };
    let invalid = e.faults().invalid;
    deliver(&mut e, 3, &block(&ks[3], 3, 20, parents(13)));
    assert_eq!(e.faults().invalid, invalid + 1, "13 parents: {:?}", e.faults());
    assert_eq!(e.held(), (0, 0));
    deliver(&mut e, 2, &block(&ks[2], 2, 20, parents(12)));
    assert_eq!(e.faults().invalid, invalid + 1, "12 parents: {:?}", e.faults());
    assert_eq!(e.held(), (1, 12));
}

/// Validator 0's blocks among the messages `out` sends.
fn own_blocks(out: &[Action]) -> Vec<Block> {
    sent_by(out, 0)
}

/// The blocks of `author` that `out` sends.
fn sent_by(out: &[Action], author: u16) -> Vec<Block> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { bytes, .. } => match Message::decode(bytes) {
                Ok(Message::Block(b)) if b.author == ValidatorIndex(author) => Some(*b),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Validators 0 (the engine `e`, whose blocks come from its sends, the first in `started`),
/// 1 and 2 go on for `rounds` rounds, each tick of waiting given; validator 3 is silent.
/// Returns the blocks of validators 1 and 2, by round.
fn three_go_on(e: &mut AsyncBft, ks: &[SigningKey], started: &[Action], rounds: u64) -> Vec<Block> {
    let mut mine: Vec<Block> = own_blocks(started);
    let mut prev: Vec<BlockRef> = Vec::new();
    let mut theirs = Vec::new();
    for r in 1..=rounds {
        let Some(b0) = mine.iter().find(|b| b.round == r).cloned() else {
            panic!("no own block of round {r}: {}", e.summary())
        };
        let mut parents = vec![b0.reference()];
        for a in 1..3u16 {
            let b = block(&ks[usize::from(a)], a, r, prev.clone());
            parents.push(b.reference());
            mine.extend(own_blocks(&deliver(e, a, &b)));
            theirs.push(b);
        }
        let out = ticks(e, 25);
        mine.extend(own_blocks(&out));
        parents.sort_by_key(|p| (p.round, p.author));
        prev = parents;
    }
    theirs
}

/// Blocks over parents that never come are held until the floor passes them, and so is
/// every trace of what they waited for.
#[test]
fn made_up_parents_are_forgotten_below_the_floor() {
    let (c, ks) = setup(4);
    let cfg = Config { chain: CHAIN, gc_depth: 8, ..Config::default() };
    let mut e = AsyncBft::new(c, ValidatorIndex(0), ks[0].clone(), cfg, Arc::default());
    let mut out = Vec::new();
    e.start(&mut out);
    // Validator 3 signs blocks of rounds 2 to 6 over parents nobody has, and is silent.
    for r in 2..7u64 {
        let made_up: Vec<BlockRef> = (0..3u16)
            .map(|a| BlockRef {
                round: r - 1,
                author: ValidatorIndex(a),
                digest: [r as u8 + 16 * a as u8; 32],
            })
            .collect();
        deliver(&mut e, 3, &block(&ks[3], 3, r, made_up));
    }
    assert_eq!(e.held(), (5, 15));
    three_go_on(&mut e, &ks, &out, 40);
    assert!(e.height() > 20, "few commits: {}", e.summary());
    assert_eq!(e.held(), (0, 0), "{}", e.summary());
}

/// A reference is followed in a commit by the round it claims, not by the real round of the
/// block it names: a Byzantine block Y naming its author's recent block X under the oldest
/// round it may claim does not bring X into the commit that orders Y, even where X is held.
/// (Whether X is held depends on each validator's floor, since a parent claimed below it is
/// not fetched; before stop 37 a validator holding X ordered it with Y and one without X did
/// not, so the two committed different histories.) X is ordered later, through the honest
/// block that references it under its real round.
#[test]
fn a_reference_is_followed_by_the_round_it_claims() {
    let (c, ks) = setup(4);
    let gc = 8u64;
    let cfg = Config { chain: CHAIN, gc_depth: gc, ..Config::default() };
    let mut e = AsyncBft::new(c, ValidatorIndex(0), ks[0].clone(), cfg, Arc::default());
    let mut out = Vec::new();
    e.start(&mut out);
    let own = own_blocks;
    let mut commits: Vec<Vec<Transaction>> = Vec::new();
    let mut note = |out: &[Action]| {
        for a in out {
            if let Action::Commit(c) = a {
                commits.push(c.transactions.clone());
            }
        }
    };
    note(&out);
    let hidden = Transaction { sender: [0xee; 20], payload: Bytes::from(vec![0xee; 40]) };
    let r_y = 20u64;
    let mut mine: Vec<Block> = own(&out);
    // refs[r]: the round-r blocks of validators 0, 1 and 2 (validator 3 is otherwise silent).
    let mut refs: Vec<Vec<BlockRef>> = vec![Vec::new()];
    let mut y_ref = None;
    for r in 1..=40u64 {
        let Some(b0) = mine.iter().find(|b| b.round == r).cloned() else {
            panic!("no own block of round {r}: {}", e.summary())
        };
        let mut prev = refs[(r - 1) as usize].clone();
        if r == r_y + 1 {
            // Validator 3's X (round r_y - 1, sent to nobody but here) and Y (round r_y), which
            // names X under round r_y - gc, the oldest a block of round r_y may name.
            let x = Block::new(
                &CHAIN,
                ValidatorIndex(3),
                r_y - 1,
                0,
                refs[(r_y - 2) as usize].clone(),
                vec![hidden.clone()],
                |m| ks[3].sign(m),
            );
            let mut y_parents = refs[(r_y - 1) as usize].clone();
            y_parents.push(BlockRef { round: r_y - gc, ..x.reference() });
            y_parents.sort_by_key(|p| (p.round, p.author));
            let y = block(&ks[3], 3, r_y, y_parents);
            note(&deliver(&mut e, 3, &x));
            note(&deliver(&mut e, 3, &y));
            // Validators 1 and 2 vote for Y in round r_y + 1.
            prev.push(y.reference());
            prev.sort_by_key(|p| (p.round, p.author));
            y_ref = Some(y.reference());
        }
        let mut parents = vec![b0.reference()];
        for a in 1..3u16 {
            let b = block(&ks[usize::from(a)], a, r, prev.clone());
            parents.push(b.reference());
            let out = deliver(&mut e, a, &b);
            note(&out);
            mine.extend(own(&out));
        }
        let out = ticks(&mut e, 25);
        note(&out);
        mine.extend(own(&out));
        parents.sort_by_key(|p| (p.round, p.author));
        refs.push(parents);
    }
    assert!(y_ref.is_some());
    assert!(e.height() > 20, "few commits: {}", e.summary());
    let with = |t: &Transaction| commits.iter().position(|c| c.contains(t));
    let y_commit = with(&tx(3)).unwrap_or_else(|| panic!("Y was not ordered: {}", e.summary()));
    let x_commit = with(&hidden).unwrap_or_else(|| panic!("X was not ordered: {}", e.summary()));
    assert!(x_commit > y_commit, "X ordered with Y (commit {x_commit}), through Y's claim");
}

/// A reference that claims a later round than its block's real one (validator 3's C names
/// validator 1's round-2 block H as of round 28, well within reach of C's round) does not
/// cut the validators that voted for C off the DAG. Here the engine had dropped H below its
/// floor: C waits for H as the claim says, H arrives (from a peer that kept it) below the
/// floor, and C stops waiting for it, as it would have had the claim been true and the floor
/// past it. Before, C and every later block of validator 1, which voted for it, were held for
/// good, and with validator 3 silent the engine had no quorum and stalled.
#[test]
fn a_reference_claiming_a_later_round_does_not_hold_its_voters_forever() {
    let (c, ks) = setup(4);
    let cfg = Config { chain: CHAIN, gc_depth: 8, ..Config::default() };
    let mut e =
        AsyncBft::new(c.clone(), ValidatorIndex(0), ks[0].clone(), cfg.clone(), Arc::default());
    let mut out = Vec::new();
    e.start(&mut out);
    // What the engine asks to persist, in order: its log.
    let mut log: Vec<Bytes> = Vec::new();
    let mut keep = |out: &[Action]| {
        for a in out {
            if let Action::Persist(r) = a {
                log.push(r.clone());
            }
        }
        own_blocks(out)
    };
    let mut mine: Vec<Block> = keep(&out);
    let mut refs: Vec<Vec<BlockRef>> = vec![Vec::new()];
    let mut ones: Vec<Block> = Vec::new();
    let r_c = 30u64;
    let mut c_ref = None;
    let mut height_at_c = 0;
    for r in 1..=60u64 {
        let Some(b0) = mine.iter().find(|b| b.round == r).cloned() else {
            panic!("no own block of round {r}: {} held {:?}", e.summary(), e.held())
        };
        let prev = refs[(r - 1) as usize].clone();
        let mut parents = vec![b0.reference()];
        for a in 1..3u16 {
            let mut p = prev.clone();
            if a == 1 && r == r_c + 1 {
                let h = &ones[1];
                assert_eq!(h.round, 2);
                let mut c_parents = refs[(r_c - 1) as usize].clone();
                c_parents.push(BlockRef { round: r_c - 2, ..h.reference() });
                c_parents.sort_by_key(|p| (p.round, p.author));
                let cb = block(&ks[3], 3, r_c, c_parents);
                p.push(cb.reference());
                p.sort_by_key(|p| (p.round, p.author));
                c_ref = Some(cb.reference());
                height_at_c = e.height();
                // Validator 1 votes for C; C arrives; then H, which the engine dropped.
                let b1 = block(&ks[1], 1, r, p.clone());
                mine.extend(keep(&deliver(&mut e, 1, &b1)));
                mine.extend(keep(&deliver(&mut e, 3, &cb)));
                assert!(e.held().0 >= 1, "C waits for H as its claim says: {:?}", e.held());
                mine.extend(keep(&deliver(&mut e, 1, h)));
                parents.push(b1.reference());
                ones.push(b1);
                continue;
            }
            let b = block(&ks[usize::from(a)], a, r, p);
            parents.push(b.reference());
            mine.extend(keep(&deliver(&mut e, a, &b)));
            if a == 1 {
                ones.push(b);
            }
        }
        let out = ticks(&mut e, 25);
        mine.extend(keep(&out));
        parents.sort_by_key(|p| (p.round, p.author));
        refs.push(parents);
    }
    assert!(c_ref.is_some());
    assert_eq!(e.held(), (0, 0), "{}", e.summary());
    assert!(e.height() > height_at_c + 20, "few commits after C: {}", e.summary());
    // Restarted from its log, it holds the same DAG: H is in the log (before the blocks it
    // released), so C is released again rather than held waiting for it.
    let mut replayed = Vec::new();
    let again = AsyncBft::recover(
        c,
        ValidatorIndex(0),
        ks[0].clone(),
        cfg,
        Arc::default(),
        log,
        &mut replayed,
    );
    assert_eq!(again.held(), (0, 0), "{}", again.summary());
    assert_eq!(again.height(), e.height(), "{}", again.summary());
}

/// A Byzantine block of a huge round whose references to the round before all name one old
/// block is refused once that block is fetched, even though the block comes below the floor
/// and is kept aside (`gone`) rather than in the DAG: before stop 41 the check looked in
/// the DAG only, the block went in with no quorum under it, and the engine's highest round
/// jumped to its claim.
#[test]
fn a_reference_to_a_block_kept_aside_is_checked_too() {
    let (c, ks) = setup(4);
    let cfg = Config { chain: CHAIN, gc_depth: 8, ..Config::default() };
    let mut e = AsyncBft::new(c, ValidatorIndex(0), ks[0].clone(), cfg, Arc::default());
    let mut out = Vec::new();
    e.start(&mut out);
    let theirs = three_go_on(&mut e, &ks, &out, 40);
    assert!(e.height() > 20, "{}", e.summary());
    // Validator 1's round-1 block.
    let old = theirs[0].clone();
    assert_eq!((old.round, old.author), (1, ValidatorIndex(1)));
    // Validator 3's block of round 1,000: three references to the round before, each naming
    // the old round-1 block (long gone from the DAG) under another author.
    let claim = 1_000u64;
    let lie: Vec<BlockRef> = (0..3u16)
        .map(|a| BlockRef { round: claim - 1, author: ValidatorIndex(a), ..old.reference() })
        .collect();
    let v = block(&ks[3], 3, claim, lie);
    let asked = deliver(&mut e, 3, &v);
    assert!(
        asked.iter().any(|a| matches!(a, Action::Send { bytes, .. }
            if matches!(Message::decode(bytes), Ok(Message::Request(ds)) if ds.contains(&old.digest())))),
        "the old block is asked for: it is no longer held"
    );
    assert_eq!(e.faults().invalid, 0);
    // The old block comes, below the floor: kept aside, and the lying block refused.
    deliver(&mut e, 3, &old);
    assert_eq!(e.faults().invalid, 1, "{:?}", e.faults());
    assert_eq!(e.held(), (0, 0), "{}", e.summary());
    assert!(!e.summary().contains(&format!("r{claim}:")), "{}", e.summary());
}

/// An equivocator's versions of one slot past the second are not taken unless a block
/// references one: then it is asked for and taken.
#[test]
fn versions_of_a_slot_past_the_second_wait_until_needed() {
    let (ks, r1, refs, mut e) = round_one();
    for (a, b) in r1.iter().enumerate().skip(1) {
        deliver(&mut e, a as u16, b);
    }
    let stored = persisted;
    // Ten versions of validator 2's round-2 block: two are stored.
    let versions: Vec<Block> = (0..10u8)
        .map(|i| {
            Block::new(
                &CHAIN,
                ValidatorIndex(2),
                2,
                0,
                refs[1..].to_vec(),
                vec![tx(100 + i)],
                |m| ks[2].sign(m),
            )
        })
        .collect();
    let mut kept = Vec::new();
    for v in &versions {
        kept.extend(stored(&deliver(&mut e, 2, v)));
    }
    assert_eq!(kept, vec![(2, 2), (2, 2)]);
    assert_eq!(e.faults().versions_dropped, 8, "{:?}", e.faults());
    // Validator 1's round-2 block, then its round-3 block over the eighth version: held,
    // the version asked for, and both taken when it comes.
    let b21 = block(&ks[1], 1, 2, refs[1..].to_vec());
    let b23 = block(&ks[3], 3, 2, refs[1..].to_vec());
    deliver(&mut e, 1, &b21);
    deliver(&mut e, 3, &b23);
    let b31 = block(&ks[1], 1, 3, vec![b21.reference(), versions[7].reference(), b23.reference()]);
    let out = deliver(&mut e, 1, &b31);
    let eighth = versions[7].digest();
    let asked = out.iter().any(|a| match a {
        Action::Send { bytes, .. } => {
            matches!(Message::decode(bytes), Ok(Message::Request(ds)) if ds.contains(&eighth))
        }
        _ => false,
    });
    assert!(asked, "the eighth version was not asked for: {:?}", e.faults());
    let out = deliver(&mut e, 2, &versions[7]);
    assert_eq!(stored(&out), vec![(2, 2), (3, 1)]);
    assert_eq!(e.faults().versions_dropped, 8);
    // The equivocator's own blocks reference versions too, but each author has an
    // allowance of two per slot: two more are taken, then none.
    let mut kept = Vec::new();
    for v in &versions[2..6] {
        let c = block(&ks[2], 2, 3, vec![b21.reference(), v.reference(), b23.reference()]);
        kept.extend(stored(&deliver(&mut e, 2, &c)));
        kept.extend(stored(&deliver(&mut e, 2, v)));
    }
    assert_eq!(kept, vec![(2, 2), (3, 2), (2, 2), (3, 2)]);
    assert_eq!(e.faults().versions_dropped, 10, "{:?}", e.faults());
}

#[test]
fn a_snapshot_must_hold_every_ordered_block_signed() {
    let (c, ks) = setup(4);
    let r1: Vec<Block> = (0..4).map(|a| block(&ks[a], a as u16, 1, vec![])).collect();
    let ordered = |bs: &[&Block]| {
        let mut ds: Vec<[u8; 32]> = bs.iter().map(|b| b.digest()).collect();
        ds.sort_unstable();
        farol_consensus::Checkpoint { height: 1, floor: 1, ordered: ds, ..Default::default() }
    };
    let snapshot = |cp: farol_consensus::Checkpoint, bs: &[&Block]| farol_consensus::Snapshot {
        checkpoint: cp,
        blocks: bs.iter().map(|b| Arc::new((*b).clone())).collect(),
    };
    let all: Vec<&Block> = r1.iter().collect();
    let whole = snapshot(ordered(&all[..3]), &all);
    assert_eq!(whole.check_blocks(&c, &CHAIN), Ok(()));
    // One ordered block left out.
    let short = snapshot(ordered(&all[..3]), &[all[0], all[2], all[3]]);
    let e = short.check_blocks(&c, &CHAIN).expect_err("a missing ordered block");
    assert!(e.contains("lacks"), "{e}");
    // Validator 1's block with validator 2's signature: the same digest, not its author's.
    let forged =
        Block::new(&CHAIN, ValidatorIndex(1), 1, 0, vec![], vec![tx(1)], |m| ks[2].sign(m));
    assert_eq!(forged.digest(), r1[1].digest());
    let bad = snapshot(ordered(&all[..3]), &[all[0], &forged, all[2]]);
    let e = bad.check_blocks(&c, &CHAIN).expect_err("a block not signed by its author");
    assert!(e.contains("not signed"), "{e}");
    // Signed for another chain.
    assert!(whole.check_blocks(&c, &[6; 32]).is_err());
}

/// Validator `me`'s engine rejoining from `snapshot`, having proposed up to `min_round` (what
/// the engine does at once is left out).
fn rejoiner(
    c: &Arc<Committee>,
    ks: &[SigningKey],
    me: u16,
    snapshot: &farol_consensus::Snapshot,
    min_round: u64,
) -> AsyncBft {
    AsyncBft::from_snapshot(
        c.clone(),
        ValidatorIndex(me),
        ks[usize::from(me)].clone(),
        Config { chain: CHAIN, ..Config::default() },
        Arc::default(),
        snapshot,
        min_round,
        &mut Vec::new(),
    )
}

/// A rejoining validator takes its round from the snapshot's blocks it adds to its DAG, not
/// from every signed block the snapshot holds: one Byzantine block of a huge round over
/// made-up parents would otherwise set its round where no quorum ever gets, and it would
/// never propose again (and with `u64::MAX`, overflow the reassignment arithmetic).
#[test]
fn a_snapshot_block_of_a_huge_round_does_not_set_the_rejoiners_round() {
    let (c, ks) = setup(4);
    let r1: Vec<Block> = (0..4).map(|a| block(&ks[a], a as u16, 1, vec![])).collect();
    let mut ordered: Vec<[u8; 32]> = r1[..3].iter().map(|b| b.digest()).collect();
    ordered.sort_unstable();
    let checkpoint =
        farol_consensus::Checkpoint { height: 1, floor: 1, ordered, ..Default::default() };
    for huge in [1_000_000u64, u64::MAX - 1] {
        let made_up: Vec<BlockRef> = (0..3u16)
            .map(|a| BlockRef { round: huge - 1, author: ValidatorIndex(a), digest: [a as u8; 32] })
            .collect();
        let far = block(&ks[3], 3, huge, made_up);
        let mut blocks: Vec<Arc<Block>> = r1.iter().cloned().map(Arc::new).collect();
        blocks.push(Arc::new(far));
        let snapshot = farol_consensus::Snapshot { checkpoint: checkpoint.clone(), blocks };
        assert_eq!(snapshot.check_blocks(&c, &CHAIN), Ok(()));
        let mut e = rejoiner(&c, &ks, 0, &snapshot, 0);
        assert!(e.round() < 10, "round {} from a block of round {huge}", e.round());
        // It goes on: it hears from two others (their newest blocks, which it holds), gets
        // transactions for another validator, ticks (100: the others are not 10 rounds past
        // its own newest block), and makes its next proposal.
        let mut out = Vec::new();
        for a in 1..3 {
            out.extend(deliver(&mut e, a, &r1[usize::from(a)]));
        }
        e.handle(Input::Transactions(vec![tx(1), tx(2)]), &mut out);
        for _ in 0..130 {
            e.handle(Input::Tick, &mut out);
        }
        assert!(own_blocks(&out).iter().any(|b| b.round == 2), "{}", e.summary());
    }
}

/// A validator that rejoins from a snapshot while the others wait for its block in the
/// snapshot's highest round proposes there (since stop 58): with validator 1 down, round 2
/// holds only the blocks of 0 and 2, short of a quorum without validator 3, and a rejoiner
/// that took round 2 for closed stopped the chain for good. One whose own block of that round
/// is in the snapshot, or who signed that round before (`min_round`), does not propose
/// there again.
#[test]
fn a_rejoiner_proposes_in_the_round_the_others_wait_in() {
    let (c, ks) = setup(4);
    let r1: Vec<Block> = (0..4).map(|a| block(&ks[a], a as u16, 1, vec![])).collect();
    let refs: Vec<BlockRef> = r1.iter().map(|b| b.reference()).collect();
    let r2: Vec<Block> =
        [0u16, 2].iter().map(|a| block(&ks[usize::from(*a)], *a, 2, refs.clone())).collect();
    let mut ordered: Vec<[u8; 32]> = r1[..3].iter().map(|b| b.digest()).collect();
    ordered.sort_unstable();
    let checkpoint =
        farol_consensus::Checkpoint { height: 1, floor: 1, ordered, ..Default::default() };
    let mine = block(&ks[3], 3, 2, refs.clone());
    // (its own round-2 block in the snapshot, the round it signed before, what it proposes)
    for (own_in_snapshot, min_round, proposes) in
        [(false, 1, true), (true, 1, false), (false, 2, false)]
    {
        let mut blocks: Vec<Arc<Block>> = r1.iter().chain(&r2).cloned().map(Arc::new).collect();
        if own_in_snapshot {
            blocks.push(Arc::new(mine.clone()));
        }
        let snapshot = farol_consensus::Snapshot { checkpoint: checkpoint.clone(), blocks };
        assert_eq!(snapshot.check_blocks(&c, &CHAIN), Ok(()));
        let mut e = rejoiner(&c, &ks, 3, &snapshot, min_round);
        // The two others send their newest blocks again while they wait; it ticks.
        let mut out = Vec::new();
        for (i, a) in [0u16, 2].iter().enumerate() {
            out.extend(deliver(&mut e, *a, &r2[i]));
        }
        for _ in 0..130 {
            e.handle(Input::Tick, &mut out);
        }
        // (A block it signed before, sent again while it waits, is not a proposal.)
        let round_2 = out.iter().any(|a| match a {
            Action::Send { bytes, .. } => matches!(
                Message::decode(bytes),
                Ok(Message::Block(b))
                    if b.author == ValidatorIndex(3) && b.round == 2 && b.digest() != mine.digest()
            ),
            _ => false,
        });
        assert_eq!(
            round_2,
            proposes,
            "own block in the snapshot {own_in_snapshot}, min round {min_round}: {}",
            e.summary()
        );
    }
}

/// A rejoiner takes the old engine's own blocks not yet ordered (since stop 58); one whose
/// parent it lacks waits for it, and its next proposal does not stand on it: a proposal on a
/// block this validator does not hold would leave that block out of its commits where the
/// others order it (found by a review).
#[test]
fn a_rejoiner_does_not_build_on_an_own_block_it_does_not_hold() {
    let (c, ks) = setup(4);
    let r1: Vec<Block> = (0..4).map(|a| block(&ks[a], a as u16, 1, vec![])).collect();
    let all: Vec<BlockRef> = r1.iter().map(|b| b.reference()).collect();
    // The snapshot lacks validator 1's round-1 block, which the old engine's own round-2
    // block names.
    let known: Vec<BlockRef> = [0, 2, 3].iter().map(|i| r1[*i].reference()).collect();
    let mut ordered: Vec<[u8; 32]> = [0, 2, 3].iter().map(|i| r1[*i].digest()).collect();
    ordered.sort_unstable();
    let checkpoint =
        farol_consensus::Checkpoint { height: 1, floor: 1, ordered, ..Default::default() };
    let blocks = [0, 2, 3].iter().map(|i| Arc::new(r1[*i].clone())).collect();
    let snapshot = farol_consensus::Snapshot { checkpoint, blocks };
    let mine = block(&ks[3], 3, 2, all);
    let mut e = rejoiner(&c, &ks, 3, &snapshot, 2);
    let mut out = Vec::new();
    e.adopt_own_blocks(vec![mine.encoded()], &mut out);
    assert_eq!(e.held().0, 1, "its own block waits for its parent: {}", e.summary());
    // The others' rounds 2 and 3, on what it holds (quorums without its own), come before
    // it may propose: its next proposal is of round 4, where its previous block (of round
    // 2) would be named.
    let mut out = Vec::new();
    let r2: Vec<Block> =
        (0..3u16).map(|a| block(&ks[usize::from(a)], a, 2, known.clone())).collect();
    let on_r2: Vec<BlockRef> = r2.iter().map(|b| b.reference()).collect();
    for (a, b) in r2.iter().enumerate() {
        out.extend(deliver(&mut e, a as u16, b));
    }
    for a in 0..3u16 {
        out.extend(deliver(&mut e, a, &block(&ks[usize::from(a)], a, 3, on_r2.clone())));
    }
    for _ in 0..130 {
        e.handle(Input::Tick, &mut out);
    }
    let next: Vec<Block> = sent_by(&out, 3).into_iter().filter(|b| b.round > 2).collect();
    assert!(next.iter().any(|b| b.round == 4), "no round-4 proposal: {}", e.summary());
    assert!(
        next.iter().all(|b| b.parents.iter().all(|p| p.digest != mine.digest())),
        "a proposal stands on its own block it does not hold"
    );
}

/// The blocks `out` stores (round, author).
fn persisted(out: &[Action]) -> Vec<(u64, u16)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Persist(bytes) => match Message::decode(bytes) {
                Ok(Message::Block(b)) => Some((b.round, b.author.0)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Answers `e`'s requests from `known` for up to `ticks` ticks, as honest peers would, and
/// returns everything it stored meanwhile.
fn answer_requests(
    e: &mut AsyncBft,
    mut out: Vec<Action>,
    known: &[Block],
    ticks: usize,
) -> Vec<(u64, u16)> {
    let mut stored = persisted(&out);
    for _ in 0..ticks {
        let mut answers = Vec::new();
        for a in &out {
            if let Action::Send { bytes, to } = a {
                if let Ok(Message::Request(ds)) = Message::decode(bytes) {
                    let from = match to {
                        Target::One(v) => *v,
                        _ => ValidatorIndex(1),
                    };
                    for b in known.iter().filter(|b| ds.contains(&b.digest())) {
                        answers.push((from, Message::Block(Box::new(b.clone())).encode()));
                    }
                }
            }
        }
        out = Vec::new();
        if !answers.is_empty() {
            e.handle(Input::Messages(answers), &mut out);
        }
        e.handle(Input::Tick, &mut out);
        stored.extend(persisted(&out));
    }
    stored
}

/// Validator 3 sends `count` blocks of rounds from 2^40 over made-up parents: held (in its
/// share of 5,000) for good, since no floor reaches them.
fn flood_from_3(e: &mut AsyncBft, ks: &[SigningKey], count: u64) {
    let flood: Vec<(ValidatorIndex, Bytes)> = (0..count)
        .map(|i| {
            let b = block(&ks[3], 3, (1 << 40) + i, made_up((1 << 40) + i, 0xee));
            (ValidatorIndex(3), Message::Block(Box::new(b)).encode())
        })
        .collect();
    e.handle(Input::Messages(flood), &mut Vec::new());
}

/// A faulty validator that fills its share of held blocks (with blocks of rounds no floor
/// reaches, over parents that exist nowhere) cannot keep out its own block that honest blocks
/// build on: that block counts for the honest validators whose blocks wait for it, and its
/// missing parent is asked for. Until stop 47 the faulty author's share alone was tried: its
/// block was refused each time it came, its parent never asked for, and the honest blocks
/// over it waited for good (found by a review).
#[test]
fn a_faulty_validators_full_share_does_not_keep_out_blocks_honest_ones_build_on() {
    let (c, ks) = setup(4);
    let mut e = engine(&c, &ks, 0);
    let mut started = Vec::new();
    e.start(&mut started);
    let y1 = own_blocks(&started).remove(0);
    // Validator 3 fills its share.
    flood_from_3(&mut e, &ks, 5_000);
    assert_eq!(e.faults().pending_full, 0, "the share holds 5,000");
    // Round 1: validators 1 and 2's blocks arrive, validator 3's (a1) does not.
    let x1 = block(&ks[1], 1, 1, vec![]);
    let z1 = block(&ks[2], 2, 1, vec![]);
    let a1 = block(&ks[3], 3, 1, vec![]);
    deliver(&mut e, 1, &x1);
    deliver(&mut e, 2, &z1);
    // Round 2: validators 1 and 2 build on 0, 1 and 2; validator 3's block c2 on a1, and
    // validator 1's round-3 block builds on c2.
    let round_two = vec![y1.reference(), x1.reference(), z1.reference()];
    let x2 = block(&ks[1], 1, 2, round_two.clone());
    let z2 = block(&ks[2], 2, 2, round_two);
    let c2 = block(&ks[3], 3, 2, vec![x1.reference(), z1.reference(), a1.reference()]);
    let x3 = block(&ks[1], 1, 3, vec![x2.reference(), z2.reference(), c2.reference()]);
    deliver(&mut e, 1, &x2);
    deliver(&mut e, 2, &z2);
    let out = deliver(&mut e, 1, &x3);
    let stored = answer_requests(&mut e, out, &[c2, a1], 300);
    assert!(stored.contains(&(1, 3)), "a1 never came: {stored:?} {:?}", e.faults());
    assert!(stored.contains(&(3, 1)), "validator 1's round-3 block was never added: {stored:?}");
}

/// A faulty validator that spends its allowance of versions past a slot's second at one
/// validator (its own blocks referencing versions only that validator got) cannot keep out
/// the version that honest blocks build on through its own block: that version is taken for
/// the honest validator whose held block waits for it. Until stop 47 it was dropped every
/// time it came, and the honest blocks over it waited for good (found by a review).
#[test]
fn a_faulty_validators_spent_allowance_does_not_keep_out_versions_honest_ones_build_on() {
    let (c, ks) = setup(4);
    let mut e = engine(&c, &ks, 0);
    let mut started = Vec::new();
    e.start(&mut started);
    let y1 = own_blocks(&started).remove(0);
    let x1 = block(&ks[1], 1, 1, vec![]);
    let z1 = block(&ks[2], 2, 1, vec![]);
    deliver(&mut e, 1, &x1);
    deliver(&mut e, 2, &z1);
    // Six versions of validator 3's round-1 block; validators 1 and 2 got v[0] (and v[1]).
    let v: Vec<Block> = (0..6u8)
        .map(|i| {
            Block::new(&CHAIN, ValidatorIndex(3), 1, 0, vec![], vec![tx(100 + i)], |m| {
                ks[3].sign(m)
            })
        })
        .collect();
    // This validator gets v[2] and v[3] first (the two taken freely), then two round-2
    // blocks of validator 3 over v[4] and v[5], which spend its allowance for the slot.
    let mut stored = Vec::new();
    stored.extend(persisted(&deliver(&mut e, 3, &v[2])));
    stored.extend(persisted(&deliver(&mut e, 3, &v[3])));
    for w in &v[4..6] {
        let d = block(&ks[3], 3, 2, vec![x1.reference(), z1.reference(), w.reference()]);
        deliver(&mut e, 3, &d);
        stored.extend(persisted(&deliver(&mut e, 3, w)));
    }
    stored.retain(|(_, author)| *author == 3);
    assert_eq!(stored, vec![(1, 3), (1, 3), (1, 3), (2, 3), (1, 3), (2, 3)]);
    // Validator 3's round-2 block over v[0], which validators 1 and 2 took, and validator
    // 1's round-3 block over it.
    let round_two = vec![y1.reference(), x1.reference(), z1.reference()];
    let x2 = block(&ks[1], 1, 2, round_two.clone());
    let z2 = block(&ks[2], 2, 2, round_two);
    let c2 = block(&ks[3], 3, 2, vec![x1.reference(), z1.reference(), v[0].reference()]);
    let x3 = block(&ks[1], 1, 3, vec![x2.reference(), z2.reference(), c2.reference()]);
    deliver(&mut e, 1, &x2);
    deliver(&mut e, 2, &z2);
    let out = deliver(&mut e, 1, &x3);
    let stored = answer_requests(&mut e, out, &[c2, v[0].clone()], 300);
    assert!(
        stored.contains(&(3, 1)),
        "validator 1's round-3 block was never added: {stored:?} {:?}",
        e.faults()
    );
}

/// The same when the faulty validator's block arrived (and was held, in its own share) before
/// the honest block that builds on it: that block's validator is added to what waits for it,
/// and for the held blocks it waits for in turn, so its missing grandparent is still taken
/// and asked for once the faulty share is full.
#[test]
fn blocks_honest_ones_build_on_are_taken_when_they_came_first() {
    let (c, ks) = setup(4);
    let mut e = engine(&c, &ks, 0);
    let mut started = Vec::new();
    e.start(&mut started);
    // Validator 3's share one short of full.
    flood_from_3(&mut e, &ks, 4_999);
    let theirs = three_go_on(&mut e, &ks, &started, 3);
    let of = |r: u64, a: u16| -> BlockRef {
        let b = theirs.iter().find(|b| b.round == r && b.author.0 == a);
        b.unwrap_or_else(|| panic!("no block of {a} in round {r}")).reference()
    };
    // Validator 3's chain g (round 1) <- h (round 2) <- c3 (round 3); c3 comes first and
    // fills the share, then validator 1's round-4 block over it, then h (from validator 1).
    let g = block(&ks[3], 3, 1, vec![]);
    let h = block(&ks[3], 3, 2, vec![of(1, 1), of(1, 2), g.reference()]);
    let c3 = block(&ks[3], 3, 3, vec![of(2, 1), of(2, 2), h.reference()]);
    let w = block(&ks[1], 1, 4, vec![of(3, 1), of(3, 2), c3.reference()]);
    deliver(&mut e, 3, &c3);
    assert_eq!(e.faults().pending_full, 0, "c3 fits the share's last place");
    deliver(&mut e, 1, &w);
    let out = deliver(&mut e, 1, &h);
    let stored = answer_requests(&mut e, out, &[g, h, c3], 300);
    assert!(
        stored.contains(&(4, 1)),
        "validator 1's round-4 block was never added: {stored:?} {:?}",
        e.faults()
    );
}

/// A version of a slot past the second is taken live only for held blocks that wait for
/// it, so it is never a tip (a block the next proposal names because nothing references
/// it). The log holds no held block, and before stop 48 replaying it made such a version a
/// tip: after a restart the validator's proposal named a version the others may not have
/// taken. Live and restarted, the engine's next proposal names the same parents.
#[test]
fn a_replayed_version_past_the_second_is_no_tip() {
    let (c, ks) = setup(4);
    let cfg = Config { chain: CHAIN, ..Config::default() };
    let mut e =
        AsyncBft::new(c.clone(), ValidatorIndex(0), ks[0].clone(), cfg.clone(), Arc::default());
    let mut log: Vec<Bytes> = Vec::new();
    let mut keep = |out: &[Action]| {
        log.extend(out.iter().filter_map(|a| match a {
            Action::Persist(r) => Some(r.clone()),
            _ => None,
        }));
        own_blocks(out)
    };
    let mut started = Vec::new();
    e.start(&mut started);
    let y1 = keep(&started).remove(0);
    // Validator 3 equivocates in round 1: v[0] and v[1] are taken freely, and both are
    // referenced (by this validator's round-2 block and validator 1's), so the slot has no
    // tip left.
    let v: Vec<Block> = (0..3u8)
        .map(|i| {
            Block::new(&CHAIN, ValidatorIndex(3), 1, 0, vec![], vec![tx(100 + i)], |m| {
                ks[3].sign(m)
            })
        })
        .collect();
    let x1 = block(&ks[1], 1, 1, vec![]);
    let z1 = block(&ks[2], 2, 1, vec![]);
    let mut mine = keep(&deliver(&mut e, 3, &v[0]));
    mine.extend(keep(&deliver(&mut e, 1, &x1)));
    mine.extend(keep(&deliver(&mut e, 2, &z1)));
    let y2 = mine.iter().find(|b| b.round == 2).cloned();
    let Some(y2) = y2 else { panic!("no own round-2 block: {}", e.summary()) };
    assert!(y2.parents.contains(&v[0].reference()), "{:?}", y2.parents);
    keep(&deliver(&mut e, 3, &v[1]));
    let x2 = block(&ks[1], 1, 2, vec![x1.reference(), z1.reference(), v[1].reference()]);
    keep(&deliver(&mut e, 1, &x2));
    // Validator 2's round-2 block over v[2] and a parent nobody has: held, and v[2] is taken
    // for it.
    let mut w_parents = vec![x1.reference(), z1.reference(), v[2].reference()];
    w_parents.push(BlockRef { round: 1, author: ValidatorIndex(0), digest: [0xab; 32] });
    w_parents.sort_by_key(|p| (p.round, p.author));
    keep(&deliver(&mut e, 2, &block(&ks[2], 2, 2, w_parents)));
    let stored = keep(&deliver(&mut e, 3, &v[2]));
    assert!(stored.is_empty());
    assert_eq!(e.held().0, 1, "{}", e.summary());
    assert_eq!(e.faults().versions_dropped, 0, "{:?}", e.faults());
    assert!(log.contains(&Message::Block(Box::new(v[2].clone())).encode()), "v[2] not logged");
    // Restarted from its log.
    let mut again = AsyncBft::recover(
        c,
        ValidatorIndex(0),
        ks[0].clone(),
        cfg,
        Arc::default(),
        log,
        &mut Vec::new(),
    );
    // Validator 2's other round-2 block completes round 2's quorum for both.
    let z2 = block(&ks[2], 2, 2, vec![y1.reference(), x1.reference(), z1.reference()]);
    let round_three = |e: &mut AsyncBft| {
        // Validator 1 resends its newest block: the restarted engine has heard from the
        // others' part of a quorum once z2 comes (the live one had it).
        // (And, restarted, it waits 100 ticks, the others not being 10 rounds past its
        // newest block, and then for validator 3's block as the live one did.)
        let mut out = deliver(e, 1, &x2);
        out.extend(deliver(e, 2, &z2));
        out.extend(ticks(e, 130));
        let b = own_blocks(&out).into_iter().find(|b| b.round == 3);
        let Some(b) = b else { panic!("no own round-3 block: {}", e.summary()) };
        b.parents
    };
    let live = round_three(&mut e);
    assert!(!live.contains(&v[2].reference()), "{live:?}");
    assert_eq!(round_three(&mut again), live);
}

/// A snapshot holds its blocks by round, so a version of a slot past the second comes
/// before the later block that names it: nothing waits for it yet, and before stop 49 it was
/// dropped and that block held until the stall timer asked the peers, both when rejoining
/// from a peer's snapshot and when restarting from the validator's own log cut to one (there
/// with the naming block in the snapshot or in the log after it; found by a review). Such a
/// version is now tried again once the blocks are in, under the live limits: one that
/// nothing names is still dropped.
#[test]
fn a_snapshots_version_past_the_second_is_taken_for_the_block_naming_it() {
    use farol_consensus::{Checkpoint, Snapshot};
    let (c, ks) = setup(4);
    let cfg = Config { chain: CHAIN, ..Config::default() };
    // Validator 3 equivocates in round 1, four times; by digest, the first two versions are
    // taken freely, the third is named by validator 2's round-2 block and the fourth by none.
    let mut v: Vec<Block> = (0..4u8)
        .map(|i| {
            Block::new(&CHAIN, ValidatorIndex(3), 1, 0, vec![], vec![tx(100 + i)], |m| {
                ks[3].sign(m)
            })
        })
        .collect();
    v.sort_by_key(Block::digest);
    let (y1, x1, z1) =
        (block(&ks[0], 0, 1, vec![]), block(&ks[1], 1, 1, vec![]), block(&ks[2], 2, 1, vec![]));
    let over = |extra: &Block| {
        let mut p = vec![y1.reference(), x1.reference(), z1.reference(), extra.reference()];
        p.sort_by_key(|p| (p.round, p.author));
        p
    };
    let x2 = block(&ks[1], 1, 2, over(&v[0]));
    let w = block(&ks[2], 2, 2, over(&v[2]));
    let snapshot = |blocks: Vec<&Block>| Snapshot {
        checkpoint: Checkpoint::default(),
        blocks: blocks.into_iter().map(|b| Arc::new(b.clone())).collect(),
    };
    let round_one = vec![&y1, &x1, &z1, &v[0], &v[1], &v[2], &v[3]];
    let mut whole = round_one.clone();
    whole.extend([&x2, &w]);
    let rejoined = AsyncBft::from_snapshot(
        c.clone(),
        ValidatorIndex(0),
        ks[0].clone(),
        cfg.clone(),
        Arc::default(),
        &snapshot(whole.clone()),
        0,
        &mut Vec::new(),
    );
    let recover = |log: Vec<Bytes>| {
        AsyncBft::recover(
            c.clone(),
            ValidatorIndex(0),
            ks[0].clone(),
            cfg.clone(),
            Arc::default(),
            log,
            &mut Vec::new(),
        )
    };
    let restarted = recover(vec![snapshot(whole).encode()]);
    // The naming block came after the cut: in the log, after the snapshot.
    let mut first = round_one;
    first.push(&x2);
    let w_later =
        recover(vec![snapshot(first).encode(), Message::Block(Box::new(w.clone())).encode()]);
    for (what, e) in [
        ("rejoined", rejoined),
        ("restarted", restarted),
        ("restarted, the block in the log", w_later),
    ] {
        assert_eq!(e.held(), (0, 0), "{what}: {}", e.summary());
        assert_eq!(e.faults().versions_dropped, 1, "{what}: {:?}", e.faults());
    }
}

/// A block the floor passes while a block in the DAG still names it under a later round (a
/// reference claiming a later round than its block's: validator 3's C names validator 1's
/// round-14 block H as of round 18) is kept aside, and snapshots carry it: a validator that
/// rejoins from a snapshot taken while the floor is past H but not past the claim takes C at
/// once. Before stop 48 H was dropped, no snapshot held it, and such a validator (or one
/// restarted from its log cut to such a snapshot) held C, and every block voting for it, for
/// good (found by a review).
#[test]
fn a_block_named_under_a_later_round_stays_in_snapshots() {
    let (c, ks) = setup(4);
    let cfg = Config { chain: CHAIN, gc_depth: 8, checkpoint_every: 1, ..Config::default() };
    let mut e =
        AsyncBft::new(c.clone(), ValidatorIndex(0), ks[0].clone(), cfg.clone(), Arc::default());
    let mut out = Vec::new();
    e.start(&mut out);
    let mut mine: Vec<Block> = own_blocks(&out);
    let mut refs: Vec<Vec<BlockRef>> = vec![Vec::new()];
    let mut ones: Vec<Block> = Vec::new();
    let (r_c, h_round, claim) = (20u64, 14u64, 18u64);
    let mut c_digest = None;
    let mut taken = None;
    for r in 1..=40u64 {
        let Some(b0) = mine.iter().find(|b| b.round == r).cloned() else {
            panic!("no own block of round {r}: {} held {:?}", e.summary(), e.held())
        };
        let prev = refs[(r - 1) as usize].clone();
        let mut parents = vec![b0.reference()];
        for a in 1..3u16 {
            let mut p = prev.clone();
            if a == 1 && r == r_c + 1 {
                let h = &ones[(h_round - 1) as usize];
                assert_eq!(h.round, h_round);
                let mut c_parents = refs[(r_c - 1) as usize].clone();
                c_parents.push(BlockRef { round: claim, ..h.reference() });
                c_parents.sort_by_key(|p| (p.round, p.author));
                let cb = block(&ks[3], 3, r_c, c_parents);
                // C comes while H is still in the DAG: it goes in at once.
                deliver(&mut e, 3, &cb);
                assert_eq!(e.held(), (0, 0), "{}", e.summary());
                p.push(cb.reference());
                p.sort_by_key(|p| (p.round, p.author));
                c_digest = Some(cb.digest());
            }
            let b = block(&ks[usize::from(a)], a, r, p);
            parents.push(b.reference());
            mine.extend(own_blocks(&deliver(&mut e, a, &b)));
            if a == 1 {
                ones.push(b);
            }
        }
        let out = ticks(&mut e, 25);
        mine.extend(own_blocks(&out));
        parents.sort_by_key(|p| (p.round, p.author));
        refs.push(parents);
        // The first snapshot whose floor is past H and not past the claim, holding C.
        if let (None, Some(s), Some(cd)) = (&taken, e.snapshot(), c_digest) {
            let floor = s.checkpoint.floor;
            if floor > h_round && floor <= claim && s.blocks.iter().any(|b| b.digest() == cd) {
                taken = Some(s);
            }
        }
    }
    let Some(snapshot) = taken else { panic!("no snapshot in the window: {}", e.summary()) };
    let h = ones[(h_round - 1) as usize].digest();
    assert!(snapshot.blocks.iter().any(|b| b.digest() == h), "the snapshot lacks H");
    let mut out = Vec::new();
    let rejoined = AsyncBft::from_snapshot(
        c,
        ValidatorIndex(0),
        ks[0].clone(),
        cfg,
        Arc::default(),
        &snapshot,
        0,
        &mut out,
    );
    assert_eq!(rejoined.held(), (0, 0), "{}", rejoined.summary());
}

/// Validator 0 started, given the round-1 blocks of 1, 2 and 3, and ticks: its actions and
/// its round-2 block.
fn to_round_two(c: &Arc<Committee>, ks: &[SigningKey]) -> (AsyncBft, Vec<Action>, Block) {
    let mut e = engine(c, ks, 0);
    let mut out = Vec::new();
    e.start(&mut out);
    let r1: Vec<Block> = (1..4).map(|a| block(&ks[a], a as u16, 1, vec![])).collect();
    for b in &r1 {
        out.extend(deliver(&mut e, b.author.0, b));
    }
    out.extend(ticks(&mut e, 25));
    let Some(own2) = own_blocks(&out).into_iter().find(|b| b.round == 2) else {
        panic!("no round 2: {}", e.summary())
    };
    (e, out, own2)
}

/// A block signed with an engine's own key that it did not sign, for a round above its
/// first proposal since it started, can only come from another process signing with its
/// key now (a copy of its directory started elsewhere): here validator 0's twin made a
/// round-3 block. Validator 0 proposes no round-3 block of its own (stop 53's rule), and
/// since stop 54 it stands down: it proposes nothing more (the two would sign the same
/// rounds: before, it went on to round 4), and hands the transactions queued for it, those
/// it gets later and those forwarded to it to the validators next in line, and on again
/// when one of those goes quiet. It keeps committing.
#[test]
fn a_block_of_its_own_it_did_not_sign_stands_the_engine_down() {
    let (c, ks) = setup(4);
    let (mut e, _, own2) = to_round_two(&c, &ks);
    // Transactions of senders assigned to validator 0, queued here.
    let mine: Vec<Transaction> = (0..=255u8)
        .map(|i| Transaction { sender: [i; 20], payload: Bytes::from(vec![i; 8]) })
        .filter(|t| AsyncBft::assignee(&c, &t.sender, 0) == ValidatorIndex(0))
        .take(5)
        .collect();
    let (early, rest) = mine.split_at(2);
    let (late, forwarded) = rest.split_at(2);
    e.handle(Input::Transactions(early.to_vec()), &mut Vec::new());
    let refs = own2.parents.clone();
    let r2: Vec<Block> = (1..4).map(|a| block(&ks[a], a as u16, 2, refs.clone())).collect();
    let mut twin_parents: Vec<BlockRef> = r2.iter().map(Block::reference).collect();
    twin_parents.push(own2.reference());
    twin_parents.sort_by_key(|p| (p.round, p.author));
    let twin = block(&ks[0], 0, 3, twin_parents.clone());
    let mut out = deliver(&mut e, 1, &twin);
    for (a, b) in r2.iter().enumerate() {
        out.extend(deliver(&mut e, a as u16 + 1, b));
    }
    out.extend(ticks(&mut e, 25));
    assert!(own_blocks(&out).iter().all(|b| b.round != 3), "a second round-3 block");
    assert_eq!(e.faults().own_blocks_elsewhere, 1, "{:?}", e.faults());
    assert_eq!(e.faults().other_signer, 1, "{:?}", e.faults());
    e.handle(Input::Transactions(late.to_vec()), &mut out);
    // One forwarded by validator 2 (which sees validator 0's key still signing).
    let frame = Message::Transactions(forwarded.to_vec()).encode();
    e.handle(Input::Messages(vec![(ValidatorIndex(2), frame)]), &mut out);
    let r3: Vec<Block> = (1..4).map(|a| block(&ks[a], a as u16, 3, twin_parents.clone())).collect();
    for (a, b) in r3.iter().enumerate() {
        out.extend(deliver(&mut e, a as u16 + 1, b));
    }
    out.extend(ticks(&mut e, 25));
    assert!(own_blocks(&out).iter().all(|b| b.round <= 2), "proposed after it stood down");
    let sent_to = |out: &[Action]| -> Vec<(ValidatorIndex, Transaction)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { to: Target::One(v), bytes } if *v != ValidatorIndex(0) => {
                    match Message::decode(bytes) {
                        Ok(Message::Transactions(txs)) => {
                            Some(txs.into_iter().map(|t| (*v, t)).collect::<Vec<_>>())
                        }
                        _ => None,
                    }
                }
                _ => None,
            })
            .flatten()
            .collect()
    };
    let handed = sent_to(&out);
    let by_sender = |mut t: Vec<Transaction>| {
        t.sort_by_key(|t| t.sender);
        t
    };
    let txs = handed.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(by_sender(txs), by_sender(mine), "queued, later and forwarded go to the others");
    // The chain goes on without the validator the first of them went to: once it has been
    // quiet a few rounds, that transaction moves on to another (the engine proposes no
    // more, so its watch goes by the rounds of its DAG: before, it stood still).
    let (quiet, first) = handed[0].clone();
    let authors: Vec<u16> = (0..4u16).filter(|a| ValidatorIndex(*a) != quiet).collect();
    let mut prev: Vec<BlockRef> =
        r3.iter().filter(|b| b.author != quiet).map(Block::reference).collect();
    prev.push(twin.reference());
    let mut later = Vec::new();
    for round in 4..=14u64 {
        prev.sort_by_key(|p| (p.round, p.author));
        let blocks: Vec<Block> =
            authors.iter().map(|a| block(&ks[usize::from(*a)], *a, round, prev.clone())).collect();
        for b in &blocks {
            later.extend(deliver(&mut e, b.author.0.max(1), b));
        }
        later.extend(ticks(&mut e, 5));
        prev = blocks.iter().map(Block::reference).collect();
    }
    let moved = sent_to(&later).into_iter().any(|(v, t)| v != quiet && t == first);
    assert!(moved, "not moved on from validator {}: {}", quiet.0, e.summary());
    assert!(own_blocks(&later).iter().all(|b| b.round <= 2), "proposed after it stood down");
    assert!(e.height() > 0, "it commits on: {}", e.summary());
}

/// An engine started from an empty log proposes round 1 as a new chain's validator would;
/// on a chain long past round 1 (its directory was lost, its key kept) its old blocks then
/// come back from the others. That is no other process signing: round 1's block does not
/// count as its first proposal, and it does not stand down (a review found that it did, and
/// said another process signed with its key).
#[test]
fn an_empty_logs_old_blocks_coming_back_are_no_other_signer() {
    let (c, ks) = setup(4);
    let mut e = engine(&c, &ks, 0);
    e.start(&mut Vec::new());
    let old = block(&ks[0], 0, 40, made_up(40, 7));
    deliver(&mut e, 1, &old);
    assert_eq!(e.faults().own_blocks_elsewhere, 1, "{:?}", e.faults());
    assert_eq!(e.faults().other_signer, 0, "{:?}", e.faults());
}

/// A block signed with the engine's own key for a round above its quorum's, which its log
/// lost (a restored backup), keeps a restarted engine from proposing in or below that
/// round: validator 0, restarted from its log as it was after round 2, gets its old life's
/// round-3 block from validator 1 and a quorum of round 2, and proposes no round-3 block
/// however long it waits; once round 3 has its quorum, it proposes round 4 (stop 53's
/// own-block rule: without it, it signed a second round-3 block).
#[test]
fn a_restarted_engine_proposes_above_its_own_block_from_elsewhere() {
    let (c, ks) = setup(4);
    let (_, out, own2) = to_round_two(&c, &ks);
    let (mut again, mut sent) = restarted(&c, &ks, records(&out));
    let r2: Vec<Block> = (1..4).map(|a| block(&ks[a], a as u16, 2, own2.parents.clone())).collect();
    let mut r2_refs: Vec<BlockRef> = r2.iter().map(Block::reference).collect();
    r2_refs.push(own2.reference());
    r2_refs.sort_by_key(|p| (p.round, p.author));
    let lost = block(&ks[0], 0, 3, r2_refs.clone());
    for b in &r2 {
        sent.extend(deliver(&mut again, b.author.0, b));
    }
    sent.extend(deliver(&mut again, 1, &lost));
    sent.extend(ticks(&mut again, 150));
    assert!(own_blocks(&sent).iter().all(|b| b.round <= 2), "its lost round signed again");
    for a in 1..4u16 {
        sent.extend(deliver(&mut again, a, &block(&ks[usize::from(a)], a, 3, r2_refs.clone())));
    }
    sent.extend(ticks(&mut again, 150));
    let mine = own_blocks(&sent);
    assert!(mine.iter().all(|b| b.round != 3), "a second round-3 block: {mine:?}");
    assert!(mine.iter().any(|b| b.round == 4), "no round-4 block: {}", again.summary());
    assert_eq!(again.faults().other_signer, 0, "{:?}", again.faults());
}

/// Validator 0 restarted from `log`, and what its start sent.
fn restarted(c: &Arc<Committee>, ks: &[SigningKey], log: Vec<Bytes>) -> (AsyncBft, Vec<Action>) {
    let cfg = Config { chain: CHAIN, ..Config::default() };
    let mut e = AsyncBft::recover(
        c.clone(),
        ValidatorIndex(0),
        ks[0].clone(),
        cfg,
        Arc::default(),
        log,
        &mut Vec::new(),
    );
    let mut sent = Vec::new();
    e.start(&mut sent);
    (e, sent)
}

/// The records `out` asks to persist (the log a driver writes).
fn records(out: &[Action]) -> Vec<Bytes> {
    out.iter()
        .filter_map(|a| match a {
            Action::Persist(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// Validator 0 restarted from a copy of its log taken before it proposed in round 2 (a
/// restored backup), while it went on to rounds 2 and 3 and the others to round 4. It
/// proposes nothing until it has heard from two others (the others' part of a quorum) by
/// blocks of theirs it holds with all they build on, not with one of them far behind,
/// nothing while their round 4 is ahead of its quorum of round 1, and, once it has fetched
/// what their blocks build on (its own old blocks among them), nothing while those are as
/// new as the others' (a process still running with its key would sign on: since stop 54
/// it waits until the others are 10 rounds past them or none newer came for 100 ticks);
/// then it proposes in round 4 and never again in 2 or 3 (stop 53's restart guard:
/// before, it proposed a second round-2 block as soon as it started; with peers heard as
/// their blocks came, a review found it proposed with validator 3's old block and
/// validator 1's held one).
#[test]
fn a_validator_restored_from_an_older_log_listens_and_catches_up_before_it_proposes() {
    let (c, ks) = setup(4);
    let mut e = engine(&c, &ks, 0);
    let mut out = Vec::new();
    e.start(&mut out);
    let r1: Vec<Block> = (1..4).map(|a| block(&ks[a], a as u16, 1, vec![])).collect();
    out.extend(deliver(&mut e, 1, &r1[0]));
    out.extend(deliver(&mut e, 2, &r1[1]));
    // The backup: a quorum of round 1, no block of round 2 yet (it waits for validator 3).
    let backup = records(&out);
    assert!(own_blocks(&out).iter().all(|b| b.round == 1));
    out.extend(deliver(&mut e, 3, &r1[2]));
    out.extend(ticks(&mut e, 25));
    let own = |out: &[Action], round: u64| own_blocks(out).into_iter().find(|b| b.round == round);
    let Some(own2) = own(&out, 2) else { panic!("no round 2: {}", e.summary()) };
    let r2: Vec<Block> = (1..4).map(|a| block(&ks[a], a as u16, 2, own2.parents.clone())).collect();
    for b in &r2 {
        out.extend(deliver(&mut e, b.author.0, b));
    }
    out.extend(ticks(&mut e, 25));
    let Some(own3) = own(&out, 3) else { panic!("no round 3: {}", e.summary()) };
    let r3: Vec<Block> = (1..4).map(|a| block(&ks[a], a as u16, 3, own3.parents.clone())).collect();
    let mut r3_refs: Vec<BlockRef> = r3.iter().map(Block::reference).collect();
    r3_refs.push(own3.reference());
    r3_refs.sort_by_key(|p| (p.round, p.author));
    let r4: Vec<Block> = (1..3).map(|a| block(&ks[a], a as u16, 4, r3_refs.clone())).collect();

    let (mut again, mut sent) = restarted(&c, &ks, backup);
    sent.extend(ticks(&mut again, 30));
    assert!(own_blocks(&sent).iter().all(|b| b.round == 1), "proposed before it heard anyone");
    // Validator 1's newest block (round 4) and validator 3's round-1 block (a peer as far
    // behind as its log): 3 is heard, 1's block waits for what it builds on.
    sent.extend(deliver(&mut again, 1, &r4[0]));
    sent.extend(deliver(&mut again, 3, &r1[2]));
    sent.extend(ticks(&mut again, 30));
    assert!(own_blocks(&sent).iter().all(|b| b.round == 1), "proposed with a peer behind");
    // Validator 2's newest too: far ahead of its quorum of round 1.
    sent.extend(deliver(&mut again, 2, &r4[1]));
    sent.extend(ticks(&mut again, 30));
    assert!(own_blocks(&sent).iter().all(|b| b.round == 1), "proposed before it caught up");
    // What their blocks build on comes (its own old blocks from validator 1, as answers).
    for b in [&own2, &own3] {
        sent.extend(deliver(&mut again, 1, b));
    }
    for b in r2.iter().chain(&r3) {
        sent.extend(deliver(&mut again, b.author.0, b));
    }
    sent.extend(ticks(&mut again, 90));
    assert!(own_blocks(&sent).iter().all(|b| b.round == 1), "proposed beside its old life");
    sent.extend(ticks(&mut again, 10));
    let mine = own_blocks(&sent);
    assert!(mine.iter().all(|b| b.round == 1 || b.round >= 4), "a round signed twice: {mine:?}");
    assert!(mine.iter().any(|b| b.round == 4), "no round-4 block: {}", again.summary());
    assert_eq!(again.faults().own_blocks_elsewhere, 2, "{:?}", again.faults());
}

/// A restarted validator that has heard from the others but stays more than a round behind
/// them (its link is slow: their newest blocks come, what they build on does not yet) proposes
/// anyway once it has waited 100 ticks, within 32 rounds of them; with them 40 rounds ahead
/// it does not (stop 53's restart guard; without the wait such a validator never proposed
/// again).
#[test]
fn a_restarted_validator_behind_on_a_slow_link_proposes_after_a_while() {
    for (ahead, proposes) in [(4u64, true), (40, false)] {
        let (c, ks) = setup(4);
        let (_, out, own2) = to_round_two(&c, &ks);
        let log = records(&out);
        let (mut again, mut sent) = restarted(&c, &ks, log);
        // Validators 1 and 2's round-3 blocks come first (held: round 2 has not come), then
        // their blocks of round 2 + `ahead` (over parents that have not come either, on its
        // slow link), then round 2's blocks of 1, 2 and 3: a quorum of round 2, and the
        // round-3 blocks in the DAG, so 1, 2 (by those) and 3 are heard.
        let r2: Vec<Block> =
            (1..4u16).map(|a| block(&ks[usize::from(a)], a, 2, own2.parents.clone())).collect();
        let mut r2_refs: Vec<BlockRef> = r2.iter().map(Block::reference).collect();
        r2_refs.push(own2.reference());
        r2_refs.sort_by_key(|p| (p.round, p.author));
        for a in 1..3u16 {
            sent.extend(deliver(&mut again, a, &block(&ks[usize::from(a)], a, 3, r2_refs.clone())));
        }
        for a in 1..3u16 {
            let made_up: Vec<BlockRef> = (0..4u16)
                .map(|v| BlockRef {
                    round: 1 + ahead,
                    author: ValidatorIndex(v),
                    digest: [v as u8 + 9; 32],
                })
                .collect();
            sent.extend(deliver(&mut again, a, &block(&ks[usize::from(a)], a, 2 + ahead, made_up)));
        }
        for b in &r2 {
            sent.extend(deliver(&mut again, b.author.0, b));
        }
        sent.extend(ticks(&mut again, 90));
        assert!(own_blocks(&sent).iter().all(|b| b.round <= 2), "proposed before the wait");
        sent.extend(ticks(&mut again, 30));
        let third = own_blocks(&sent).iter().any(|b| b.round == 3);
        assert_eq!(third, proposes, "{ahead} rounds ahead: {}", again.summary());
    }
}
