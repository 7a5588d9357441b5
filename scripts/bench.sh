#!/usr/bin/env bash
# Runs `farol bench store` in release mode, installing the Debian packages the baseline links
# against when they are missing. Arguments go to `farol bench store` (e.g. --quick).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
cargo run --release -p farol -- bench store "$@"
