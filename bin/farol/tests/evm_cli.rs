//! `farol evm statetest` as a user runs it: a real process over real fixture files.

use std::path::PathBuf;
use std::process::Command;

fn farol() -> Command {
    Command::new(env!("CARGO_BIN_EXE_farol"))
}

fn fixtures() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../../shared/ethtests/GeneralStateTests")
}

#[test]
fn statetest_passes_a_fixture_file_and_reports_counts() {
    let file = fixtures().join("stExample/add11.json");
    let out = farol().args(["evm", "statetest"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("statetest: 1 files,") && stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn statetest_reports_a_broken_fixture_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, b"{\"t\": {\"env\": 5}}").unwrap();
    let out = farol().args(["evm", "statetest"]).arg(&broken).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("FAIL") && stdout.contains("not a state test"), "{stdout}");
}

#[test]
fn statetest_names_a_missing_path() {
    let out = farol().args(["evm", "statetest", "/nonexistent/fixtures"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/fixtures"), "{stderr}");
}

#[test]
fn statetest_names_an_unknown_fork() {
    let file = fixtures().join("stExample/add11.json");
    let out = farol().args(["evm", "statetest", "--fork", "Atlantis"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fork Atlantis"), "{stderr}");
}

#[test]
fn statetest_checks_the_forks_it_is_asked_for() {
    let file = fixtures().join("stExample/add11.json");
    let out = farol()
        .args(["evm", "statetest", "--fork", "Shanghai", "--fork", "Cancun"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // add11 has one case per fork: two forks, two cases.
    assert!(stdout.contains("2 cases: 2 passed, 0 failed"), "{stdout}");
}
