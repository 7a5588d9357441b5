//! The runtime's memory of modules is bounded (its own test binary: it fills the process's
//! one runtime).

use alloy_primitives::keccak256;
use farol_execution::wasm::{contract_code, WasmRuntime, MAX_MODULES};

fn module(n: usize) -> Vec<u8> {
    let src = format!(
        r#"(module (memory (export "memory") 1) (func (export "call")) (func (drop (i32.const {n}))))"#
    );
    contract_code(&wat::parse_str(src).unwrap_or_else(|e| panic!("{e}")))
}

/// Past [`MAX_MODULES`] the least recently used module leaves memory; one that left comes
/// back when it is deployed or called again. Before stop 38 every module ever deployed (even
/// in a creation that failed afterwards, or in an `eth_call`) stayed for good.
#[test]
fn modules_past_the_limit_leave_least_recently_used_first() {
    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    let codes: Vec<Vec<u8>> = (0..MAX_MODULES + 8).map(module).collect();
    let hashes: Vec<_> = codes.iter().map(keccak256).collect();
    for (i, code) in codes.iter().enumerate() {
        let hash = rt.deploy(code).unwrap_or_else(|e| panic!("{e}"));
        rt.wait(hash);
        // Module 0 is used again before every other deployment: it stays.
        if i > 0 {
            rt.deploy(&codes[0]).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(rt.modules() <= MAX_MODULES, "{} modules after {i}", rt.modules());
    }
    assert_eq!(rt.modules(), MAX_MODULES);
    assert_eq!(rt.stats().evicted, 8);
    assert!(rt.holds(hashes[0]), "the module used all along left");
    // Modules 1 to 8 were the least recently used.
    for h in &hashes[1..=8] {
        assert!(!rt.holds(*h));
    }
    for h in &hashes[9..] {
        assert!(rt.holds(*h));
    }
    // One that left is prepared again when it comes back.
    let back = rt.deploy(&codes[1]).unwrap_or_else(|e| panic!("{e}"));
    rt.wait(back);
    assert!(rt.is_ready(back));
}
