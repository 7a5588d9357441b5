#!/usr/bin/env bash
# Rebuilds mainnet/execution/contracts/artifacts.json from src/ and the exactly
# pinned npm packages (package-lock.json). `--check` only verifies that the
# committed artifacts.json is up to date (used by CI).
set -euo pipefail
if ! command -v npm >/dev/null; then
  sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi
cd "$(dirname "$0")/../mainnet/execution/contracts"
npm ci --no-audit --no-fund
node build.mjs "$@"
