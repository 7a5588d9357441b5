//! The deterministic simulation: random committees, faults and Byzantine validators; every
//! run checks agreement, no duplicates and validity after every commit, and liveness at the
//! end. CI runs 500 seeds; `FAROL_LONG=1` runs 10,000. A failure names its seed; rerun one
//! with `FAROL_SEED=<seed> cargo test -p farol-consensus --test sim one_seed -- --nocapture`.

use farol_consensus::sim::{run, Scenario};

fn seeds() -> u64 {
    if std::env::var_os("FAROL_LONG").is_some() {
        10_000
    } else {
        500
    }
}

#[test]
fn random_scenarios_keep_safety_and_liveness() {
    let total = seeds();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8) as u64;
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut seed = t;
                    while seed < total {
                        let scenario = Scenario::random(seed);
                        if let Err(v) = run(seed, &scenario) {
                            bad.push(format!("{v} [{scenario:?}]"));
                        }
                        seed += threads;
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec!["panic".into()]))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {total} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn one_seed() {
    let Some(seed) = std::env::var("FAROL_SEED").ok().and_then(|s| s.parse().ok()) else {
        return;
    };
    let scenario = Scenario::random(seed);
    println!("{scenario:#?}");
    match run(seed, &scenario) {
        Ok(r) => println!(
            "height {} committed {}/{} rounds {} messages {} stall {} µs",
            r.height, r.committed, r.submitted, r.rounds, r.messages, r.longest_stall
        ),
        Err(v) => panic!("{v}"),
    }
}

#[test]
fn every_proposal_commits_three_message_delays_after_it_is_sent() {
    for n in [4, 7, 10] {
        let mut s = Scenario::clean(n);
        s.latency = (10_000, 10_000);
        s.jitter = false;
        // Under load (the good case): every round carries transactions, none is idle.
        s.tx_rate = 5_000;
        let r = run(1, &s).unwrap_or_else(|v| panic!("{v}"));
        assert!(r.height > 20, "n = {n}: only {} commits", r.height);
        // Past the start (rounds begin idle, before the load arrives), every commit at every
        // validator is of a block sent exactly three latencies before.
        let steady: Vec<_> = r.leader_delays.iter().filter(|(round, _)| *round > 10).collect();
        assert!(steady.len() > 100, "n = {n}: {} commits measured", steady.len());
        assert!(
            steady.iter().all(|(_, d)| *d == 30_000),
            "n = {n}: (round, delay) {:?}",
            &steady[..steady.len().min(40)]
        );
        // Every validator's block commits: as many commits as proposals in decided rounds.
        assert!(
            r.height >= (r.rounds - 3) * n as u64,
            "n = {n}: {} commits in {} rounds",
            r.height,
            r.rounds
        );
    }
}

#[test]
fn seed_range() {
    let Some((a, b)) = std::env::var("FAROL_SEEDS").ok().and_then(|s| {
        let (a, b) = s.split_once("..")?;
        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
    }) else {
        return;
    };
    for seed in a..b {
        let scenario = Scenario::random(seed);
        let t = std::time::Instant::now();
        let r = run(seed, &scenario);
        println!(
            "seed {seed} n {} {:?} in {:?}: {}",
            scenario.n,
            kind(&scenario),
            t.elapsed(),
            match r {
                Ok(r) => format!(
                    "ok height {} committed {}/{} rounds {} stall {} ms",
                    r.height,
                    r.committed,
                    r.submitted,
                    r.rounds,
                    r.longest_stall / 1000
                ),
                Err(v) => format!("FAIL {v}"),
            }
        );
    }
}

fn kind(s: &Scenario) -> String {
    format!(
        "byz {:?} crash {:?} part {:?} loss {}",
        s.byzantine, s.crashes, s.partition, s.loss_ppm
    )
}
