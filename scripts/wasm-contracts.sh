#!/usr/bin/env bash
# Builds the Rust WASM contracts (contracts/: the SDK and its examples) for
# wasm32-unknown-unknown and copies the modules to contracts/out/, where the executor's tests
# and `farol bench wasm` read them. Installs the wasm32 target when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../contracts"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
cargo build -q --release --locked --target wasm32-unknown-unknown
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
mkdir -p out
for name in erc20 option_pricer; do
  cp "$target/wasm32-unknown-unknown/release/farol_example_${name}.wasm" "out/${name}.wasm"
done
