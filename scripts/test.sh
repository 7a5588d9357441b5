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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "${cargo_args[@]}" 2>&1 | tee "$log" || status=$?
# The WASM suite again with every call on the interpreter tier (docs/wasm.md §5), when
# the whole workspace was tested.
if [[ "$status" == 0 && ${#cargo_args[@]} == 0 ]]; then
  FAROL_WASM_TIER=interpreter cargo test --workspace --test wasm 2>&1 | tee -a "$log" \
    || status=$?
fi
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
