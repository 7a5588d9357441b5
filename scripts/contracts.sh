#!/usr/bin/env bash
# Rebuilds mainnet/execution/contracts/artifacts.json from src/ and the exactly
# pinned npm packages (package-lock.json). `--check` only verifies that the
# committed artifacts.json is up to date (used by CI).
set -euo pipefail
cd "$(dirname "$0")/../mainnet/execution/contracts"
npm ci --no-audit --no-fund
node build.mjs "$@"
