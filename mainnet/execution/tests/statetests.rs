//! Every shipped Ethereum state-test fixture passes through both executors.

use std::path::PathBuf;

use farol_execution::statetest::{find_fixtures, run_file, Options};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../../shared/ethtests/GeneralStateTests")
}

#[test]
fn all_shipped_state_tests_pass() {
    let dir = fixtures_dir();
    let files = find_fixtures(&dir).unwrap();
    assert_eq!(files.len(), 420, "expected the 420 shipped fixtures under {}", dir.display());
    let options = Options::default();
    let mut cases = 0;
    let mut failures = Vec::new();
    for f in &files {
        // Every file runs: one filled only for forks before Cancun under the newest of them.
        let results = run_file(f, &options);
        assert!(!results.is_empty(), "{} ran no case", f.display());
        for r in results {
            cases += 1;
            if let Some(why) = r.failure {
                failures.push(format!(
                    "{}::{} [{} #{}]: {}",
                    r.file.display(),
                    r.name,
                    r.fork,
                    r.index,
                    why
                ));
            }
        }
    }
    assert!(cases >= 420, "only {cases} cases ran");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
