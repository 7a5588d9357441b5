#!/usr/bin/env bash
# Runs Farol's benchmarks in release mode, installing the Debian packages the store baseline
# links against when they are missing. Each prints one JSON line per result on stdout.
# Usage: scripts/bench.sh [store|exec|wasm|consensus|all] [farol bench arguments, e.g. --quick]
#   store  Farol Store against an MPT over RocksDB          (farol bench store)
#   exec   the parallel executor against sequential revm    (farol bench exec)
#   wasm   WASM contracts against the same work on the EVM  (farol bench wasm)
#   consensus  AsyncBFT over QUIC against one proposer per round (farol bench consensus)
#   node   a 4-validator devnet under JSON-RPC load, pipelined against one block at a time
#          (farol bench node)
#   all    all five, one after the other (the default)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The benchmarks run no Node.js: the build's packages and the WASM contracts only.
FAROL_DEPS=bench source scripts/deps.sh
what=all
if [[ $# -gt 0 && ( "$1" == store || "$1" == exec || "$1" == wasm || "$1" == consensus || "$1" == node || "$1" == all ) ]]; then
  what=$1
  shift
fi
cargo build --release -p farol
farol=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/farol
case "$what" in
  store) "$farol" bench store "$@" ;;
  exec) "$farol" bench exec "$@" ;;
  wasm) "$farol" bench wasm "$@" ;;
  consensus) "$farol" bench consensus "$@" ;;
  node) "$farol" bench node "$@" ;;
  all)
    "$farol" bench store "$@"
    "$farol" bench exec "$@"
    "$farol" bench wasm "$@"
    "$farol" bench consensus "$@"
    "$farol" bench node "$@"
    ;;
esac
