//! Committees, quorum thresholds and certificates.

use farol_consensus::{
    Added, Certificate, CertificateError, Committee, CommitteeError, Member, Signers, Stake,
    ValidatorIndex, VoteCollector,
};
use farol_crypto::{ed25519, SecretKey};
use proptest::prelude::*;

fn keys(n: usize) -> Vec<SecretKey> {
    (0..n).map(|i| SecretKey::from_seed(&[i as u8 + 1; 32])).collect()
}

fn block_key(i: usize) -> ed25519::PublicKey {
    ed25519::SigningKey::from_seed(&[i as u8 + 1; 32]).public_key()
}

fn member(
    k: &SecretKey,
    possession: farol_crypto::Signature,
    block: usize,
    stake: Stake,
) -> Member {
    Member { key: k.public_key(), possession, block_key: block_key(block), stake }
}

fn committee(keys: &[SecretKey], stakes: &[Stake]) -> Committee {
    let members = keys
        .iter()
        .zip(stakes)
        .enumerate()
        .map(|(i, (k, s))| member(k, k.prove_possession(), i, *s))
        .collect();
    Committee::new(members).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn committees_refuse_bad_members() {
    let ks = keys(3);
    let pk = |i: usize| ks[i].public_key();
    let pop = |i: usize| ks[i].prove_possession();
    // Validator `i` with its own keys, stake `s`.
    let m = |i: usize, s: Stake| member(&ks[i], pop(i), i, s);
    assert_eq!(Committee::new(vec![]), Err(CommitteeError::Empty));
    assert_eq!(Committee::new(vec![m(0, 1), m(1, 0)]), Err(CommitteeError::ZeroStake(1)));
    assert_eq!(Committee::new(vec![m(0, 1), m(0, 1)]), Err(CommitteeError::DuplicateKey(1)));
    assert_eq!(
        Committee::new(vec![m(0, 1), member(&ks[1], pop(1), 0, 1)]),
        Err(CommitteeError::DuplicateBlockKey(1))
    );
    assert_eq!(
        Committee::new(vec![m(0, 1), member(&ks[1], pop(2), 1, 1)]),
        Err(CommitteeError::BadPossession(1))
    );
    assert_eq!(
        Committee::new(vec![m(0, u64::MAX / 2), m(1, u64::MAX / 2)]),
        Err(CommitteeError::Overflow)
    );
    let c = committee(&ks, &[1, 2, 3]);
    assert_eq!((c.len(), c.total_stake()), (3, 6));
    assert_eq!(c.index_of(&pk(2)), Some(ValidatorIndex(2)));
    assert_eq!(c.stake_of(&[ValidatorIndex(0), ValidatorIndex(2), ValidatorIndex(9)]), 4);
}

#[test]
fn thresholds_for_equal_stakes_are_the_usual_2f_plus_1() {
    for (n, quorum, validity) in [(1, 1, 1), (4, 3, 2), (7, 5, 3), (10, 7, 4), (100, 67, 34)] {
        let ks = keys(n);
        let c = committee(&ks, &vec![1; n]);
        assert_eq!((c.quorum_threshold(), c.validity_threshold()), (quorum, validity), "n = {n}");
    }
}

proptest! {
    /// For any stakes: two quorums overlap in more stake than any coalition below a third can
    /// hold, and the validators outside such a coalition still make a quorum.
    #[test]
    fn quorums_intersect_in_an_honest_validator(total in 1u64..10_000_000) {
        let q = total * 2 / 3 + 1;
        let max_byzantine = (total - 1) / 3; // the largest f with 3f < total
        prop_assert!(2 * q - total > max_byzantine);
        prop_assert!(total - max_byzantine >= q);
        let v = total / 3 + 1;
        prop_assert!(v > max_byzantine);
    }
}

#[test]
fn votes_become_a_certificate_at_a_quorum_of_stake() {
    let ks = keys(4);
    let c = committee(&ks, &[10, 20, 30, 40]); // quorum: 67
    let msg = b"round 3 batch of validator 1".to_vec();
    let mut col = VoteCollector::new(&c, msg.clone());
    let vote = |i: usize| ks[i].sign(&msg);
    assert_eq!(col.add(ValidatorIndex(3), vote(3)), Ok(Added::Pending)); // 40
    assert_eq!(col.add(ValidatorIndex(3), vote(3)), Ok(Added::Duplicate));
    assert_eq!(col.add(ValidatorIndex(1), vote(1)), Ok(Added::Pending)); // 60
    let Ok(Added::Certified(cert)) = col.add(ValidatorIndex(0), vote(0)) else {
        panic!("70 stake is a quorum")
    };
    assert_eq!(
        cert.signers.iter().collect::<Vec<_>>(),
        vec![ValidatorIndex(0), ValidatorIndex(1), ValidatorIndex(3)]
    );
    assert_eq!(cert.verify(&c, &msg), Ok(()));
    assert!(matches!(cert.verify(&c, b"another message"), Err(CertificateError::BadSignature(_))));
    assert_eq!(col.add(ValidatorIndex(2), vote(2)), Ok(Added::Duplicate));
    assert_eq!(col.add(ValidatorIndex(9), vote(2)), Err(CertificateError::UnknownSigner(9)));

    // Round trip through bytes; a bitmap that claims less than a quorum is refused.
    let bytes = cert.to_bytes();
    let back = Certificate::from_bytes(&bytes, c.len()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, *cert);
    let mut thin = cert.clone();
    thin.signers = Signers::new(4);
    thin.signers.insert(ValidatorIndex(3));
    thin.signers.insert(ValidatorIndex(1));
    assert_eq!(thin.verify(&c, &msg), Err(CertificateError::NoQuorum { have: 60, need: 67 }));
}

#[test]
fn a_bad_vote_is_found_dropped_and_reported() {
    let ks = keys(4);
    let c = committee(&ks, &[1, 1, 1, 1]); // quorum: 3
    let msg = b"m".to_vec();
    let mut col = VoteCollector::new(&c, msg.clone());
    assert_eq!(col.add(ValidatorIndex(0), ks[0].sign(&msg)), Ok(Added::Pending));
    // Validator 1 signs something else (or sends garbage that decodes as a point).
    assert_eq!(col.add(ValidatorIndex(1), ks[1].sign(b"other")), Ok(Added::Pending));
    // The third vote reaches the quorum, the aggregate fails, vote 1 is found and dropped.
    assert_eq!(col.add(ValidatorIndex(2), ks[2].sign(&msg)), Ok(Added::Pending));
    assert_eq!(col.faulty(), &[ValidatorIndex(1)]);
    assert_eq!(col.stake(), 2);
    // Validator 1 cannot try again; validator 3 completes the quorum.
    assert_eq!(col.add(ValidatorIndex(1), ks[1].sign(&msg)), Ok(Added::Duplicate));
    let Ok(Added::Certified(cert)) = col.add(ValidatorIndex(3), ks[3].sign(&msg)) else {
        panic!("quorum")
    };
    assert_eq!(cert.verify(&c, &msg), Ok(()));
    assert!(!cert.signers.contains(ValidatorIndex(1)));
}

#[test]
fn malformed_certificates_are_refused() {
    let ks = keys(70);
    let c = committee(&ks, &vec![1; 70]);
    let msg = b"m".to_vec();
    let mut col = VoteCollector::new(&c, msg.clone());
    let mut cert = None;
    for (i, k) in ks.iter().enumerate() {
        if let Ok(Added::Certified(x)) = col.add(ValidatorIndex(i as u16), k.sign(&msg)) {
            cert = Some(x);
            break;
        }
    }
    let cert = cert.unwrap_or_else(|| panic!("no certificate"));
    assert_eq!(cert.signers.len(), 47);
    let bytes = cert.to_bytes();
    assert_eq!(bytes.len(), 2 * 8 + farol_crypto::SIGNATURE_LEN);
    assert!(Certificate::from_bytes(&bytes[1..], c.len()).is_err());
    assert!(Certificate::from_bytes(&bytes, 129).is_err());
    // A signer bit past the committee (bit 70 in the second word).
    let mut past = bytes.clone();
    past[8] |= 1 << 6;
    assert_eq!(
        Certificate::from_bytes(&past, c.len()),
        Err(CertificateError::Malformed("a signer past the committee"))
    );
    // A garbage signature.
    let mut garbage = bytes.clone();
    for b in &mut garbage[16..] {
        *b = 0xab;
    }
    assert!(matches!(
        Certificate::from_bytes(&garbage, c.len()),
        Err(CertificateError::BadSignature(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Votes in any order, some of them bad: a certificate comes exactly when the good votes
    /// reach a quorum, it verifies, it holds no bad voter, and only bad voters are reported.
    #[test]
    fn collectors_certify_exactly_the_good_quorums(
        stakes in proptest::collection::vec(1u64..100, 4..9),
        bad_mask in any::<u16>(),
        order_seed in any::<u64>(),
    ) {
        let n = stakes.len();
        let ks = keys(n);
        let c = committee(&ks, &stakes);
        let msg = b"proptest vote".to_vec();
        let mut order: Vec<usize> = (0..n).collect();
        // A deterministic shuffle from the seed.
        let mut x = order_seed | 1;
        for i in (1..n).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let bad = |i: usize| bad_mask & (1 << i) != 0;
        let mut col = VoteCollector::new(&c, msg.clone());
        let mut cert = None;
        let mut good_stake = 0;
        let mut certified_at_good_stake = None;
        for &i in &order {
            let vote = if bad(i) { ks[i].sign(b"not the message") } else { ks[i].sign(&msg) };
            let before = good_stake;
            if !bad(i) {
                good_stake += stakes[i];
            }
            match col.add(ValidatorIndex(i as u16), vote) {
                Ok(Added::Certified(x)) => {
                    // Exactly when the good votes first reach a quorum.
                    prop_assert!(before < c.quorum_threshold() && good_stake >= c.quorum_threshold());
                    certified_at_good_stake = Some(good_stake);
                    cert = Some(x);
                }
                Ok(_) => {}
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
        let total_good: Stake = (0..n).filter(|i| !bad(*i)).map(|i| stakes[i]).sum();
        prop_assert_eq!(cert.is_some(), total_good >= c.quorum_threshold());
        if let Some(cert) = cert {
            prop_assert_eq!(cert.verify(&c, &msg), Ok(()));
            prop_assert!(cert.signers.iter().all(|i| !bad(usize::from(i.0))));
            prop_assert!(certified_at_good_stake.is_some());
        }
        prop_assert!(col.faulty().iter().all(|i| bad(usize::from(i.0))));
    }
}

/// The coin's share threshold separates any set below a third of the stake from any set
/// above two thirds, by count; stakes too uneven for that, share keys for another committee
/// size, and keys off one dealing are refused.
#[test]
fn the_coin_threshold_separates_byzantine_from_honest_counts() {
    let ks = keys(10);
    let t = |stakes: &[Stake]| committee(&ks[..stakes.len()], stakes).coin_threshold();
    assert_eq!(t(&[1]), Some(1));
    assert_eq!(t(&[1; 4]), Some(2));
    assert_eq!(t(&[1; 7]), Some(3));
    assert_eq!(t(&[1; 10]), Some(4));
    // Three validators (1 + 2 + 3 < 28 / 3) could be Byzantine, so a coin needs 4 shares;
    // but the quorum {7, 6, 4, 2} holds Byzantine 4 and 2 and only 2 honest members.
    assert_eq!(t(&[1, 2, 3, 4, 5, 6, 7]), None);
    // Three could be Byzantine; the quorum {2, 2, 2, 1} holds Byzantine 2 and 1.
    assert_eq!(t(&[2, 2, 2, 1, 1, 1, 1]), None);
    assert_eq!(t(&[2, 2, 3, 3]), Some(2));
    assert_eq!(t(&[1, 2, 2, 2, 2, 2, 2]), Some(3));
    // One validator holds a quorum alone, while four others stay below a third.
    assert_eq!(t(&[1, 1, 1, 1, 100]), None);

    let c = committee(&ks[..4], &[1; 4]);
    let dealt = farol_crypto::coin::deal(&[2; 32], 4, 2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.clone().with_coin(dealt.publics[..3].to_vec()),
        Err(CommitteeError::CoinShares(3, 4))
    );
    let mut off = dealt.publics.clone();
    off.swap(0, 3);
    assert_eq!(c.clone().with_coin(off), Err(CommitteeError::CoinDealing(2)));
    let other = farol_crypto::coin::deal(&[2; 32], 4, 3).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.clone().with_coin(other.publics), Err(CommitteeError::CoinDealing(2)));
    let with = c.with_coin(dealt.publics.clone()).unwrap_or_else(|e| panic!("{e}"));
    let coin = with.coin().unwrap_or_else(|| panic!("no coin"));
    assert_eq!((coin.threshold, coin.group), (2, dealt.group));
    let skewed = committee(&ks[..5], &[1, 1, 1, 1, 100]);
    let five = farol_crypto::coin::deal(&[2; 32], 5, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(skewed.with_coin(five.publics), Err(CommitteeError::CoinStakes));
}

/// Over every committee of up to 6 validators with stakes 1 to 3: whenever the coin has a
/// threshold `t`, no set of Byzantine validators (below a third of the stake) has `t`
/// members, and every quorum holds `t` honest members whichever Byzantine validators are
/// in it, so the honest members of any quorum can make the coin alone.
#[test]
fn the_coin_threshold_is_met_by_the_honest_members_of_every_quorum() {
    use farol_consensus::committee::coin_threshold;
    let mut with_coin = 0;
    for n in 1..=6u32 {
        for code in 0..3u32.pow(n) {
            let stakes: Vec<Stake> =
                (0..n).map(|i| u64::from(code / 3u32.pow(i) % 3 + 1)).collect();
            let Some(t) = coin_threshold(&stakes) else { continue };
            with_coin += 1;
            let total: u64 = stakes.iter().sum();
            let (validity, quorum) = (total / 3 + 1, total * 2 / 3 + 1);
            let stake = |set: u32| -> u64 {
                (0..n).filter(|i| set >> i & 1 == 1).map(|i| stakes[i as usize]).sum()
            };
            for byz in (0..1u32 << n).filter(|b| stake(*b) < validity) {
                assert!((byz.count_ones() as usize) < t, "{stakes:?}: t {t}, Byzantine {byz:b}");
                for q in (0..1u32 << n).filter(|q| stake(*q) >= quorum) {
                    let honest = (q & !byz).count_ones() as usize;
                    assert!(honest >= t, "{stakes:?}: t {t}, quorum {q:b}, Byzantine {byz:b}");
                }
            }
        }
    }
    assert!(with_coin > 50, "{with_coin} committees with a coin");
}
