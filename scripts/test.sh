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
cargo test --workspace "${cargo_args[@]}"
