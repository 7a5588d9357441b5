#!/usr/bin/env bash
# Runs the workspace's tests. On a fresh Debian bookworm machine it first installs the system
# packages the build links against (RocksDB for the baseline, libclang for its bindings).
# Usage: scripts/test.sh [--long] [cargo test arguments...]
#   --long  also runs the long fault tests (sets FAROL_LONG=1)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo_args=()
for arg in "$@"; do
  if [[ "$arg" == "--long" ]]; then
    export FAROL_LONG=1
  else
    cargo_args+=("$arg")
  fi
done

source scripts/deps.sh
# Clippy lints the workspace's crates as they compile (scripts/clippy-rustc). Cargo counts the
# wrapper's path in their metadata, so this build keeps artifacts of its own and every crate
# in it went through the lints (editing the flags in scripts/clippy-rustc rebuilds nothing:
# clean the workspace's crates then). Clippy's driver compiles without MIR optimizations
# (LLVM's still run) and without rustc's debug null and alignment checks. A cold CI run took
# 2,041 s so; the one before, with a separate clippy pass (about 230 s of it), about 2,500.
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
export RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/clippy-rustc"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "${cargo_args[@]}" 2>&1 | tee "$log" || status=$?
# The WASM suite again with every call on the interpreter tier (docs/wasm.md §5), when
# the whole workspace was tested.
# It runs the binary the run above built: building that test alone resolves features for
# its package's dev-dependencies only, and rebuilt alloy and the executor (minutes).
if [[ "$status" == 0 && ${#cargo_args[@]} == 0 ]]; then
  wasm_bin=$(sed -n 's|^ *Running tests/wasm.rs (\(.*\))$|\1|p' "$log" | head -n 1)
  if [[ -z "$wasm_bin" ]]; then
    echo "scripts/test.sh: the WASM suite's binary is not named in cargo's output" >&2
    status=1
  else
    wasm_bin=$(realpath "$wasm_bin")
    # As cargo runs it: from its package's directory, named in CARGO_MANIFEST_DIR (the tests
    # find the built contracts from it; the binary's own copy names the checkout that built
    # it, which may be another one sharing the target directory).
    (cd mainnet/execution && CARGO_MANIFEST_DIR=$PWD FAROL_WASM_TIER=interpreter "$wasm_bin") \
      2>&1 | tee -a "$log" || status=$?
  fi
fi
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
