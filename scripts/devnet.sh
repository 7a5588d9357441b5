#!/usr/bin/env bash
# The main job: a local Farol mainnet of 4 validator processes on loopback (anvil's chain id,
# accounts and ports), built in release mode. On a fresh Debian machine it first installs
# what the build needs (scripts/deps.sh). Arguments go to `farol devnet` (see --help).
# Ctrl-C stops every validator.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Only what the build needs (the devnet runs no Node.js).
FAROL_DEPS=build source scripts/deps.sh
cargo build --release -p farol
farol=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/farol
exec "$farol" devnet "$@"
