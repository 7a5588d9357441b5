//! The on-disk cache of compiled WASM modules (its own test binary: it points the process's
//! one runtime at a temporary directory).

use farol_execution::wasm::{contract_code, WasmRuntime};

fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        if entry.extension().is_some_and(|e| e == "cwasm") {
            found.push(entry);
        }
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn compiled_modules_are_kept_on_disk_and_a_bad_file_is_recompiled() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    rt.set_disk_cache(Some(dir.path().to_path_buf()));
    let module = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "call")) (func $unique (drop (i32.const 4242))))"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let code = contract_code(&module);

    let before = rt.stats();
    let hash = rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
    rt.wait(hash);
    assert!(rt.is_ready(hash));
    assert_eq!(rt.stats().compiled, before.compiled + 1);
    let files = cwasm_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().contains(&format!("{hash:x}")));
    // Named by the rewritten module's hash too: another build's gas rules never load here.
    let stem = files[0].file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let rewritten = stem.strip_prefix(&format!("{hash:x}-")).unwrap_or_default();
    assert!(rewritten.len() == 16 && rewritten.chars().all(|c| c.is_ascii_hexdigit()), "{stem}");

    // Out of memory, back from disk: loaded, not compiled.
    rt.forget(hash);
    assert!(!rt.is_ready(hash));
    let mid = rt.stats();
    rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
    rt.wait(hash);
    assert!(rt.is_ready(hash));
    assert_eq!((rt.stats().loaded, rt.stats().compiled), (mid.loaded + 1, mid.compiled));

    // A damaged file fails wasmtime's checks and the module is compiled again.
    std::fs::write(&files[0], b"not a compiled module").unwrap_or_else(|e| panic!("{e}"));
    rt.forget(hash);
    let late = rt.stats();
    rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
    rt.wait(hash);
    assert!(rt.is_ready(hash));
    assert_eq!((rt.stats().loaded, rt.stats().compiled), (late.loaded, late.compiled + 1));
    rt.set_disk_cache(None);
}
