# Sourced by the scripts: installs the Debian packages the build needs when they are missing
# (RocksDB, linked by the baseline; libclang, for its bindings; a C compiler and linker, for
# the crates with C parts and for linking; python3, which the scripts use to read JSON;
# Node.js and npm, for the real Ethereum client the node's end-to-end test runs).
# FAROL_DEPS=build (scripts/devnet.sh) installs only what building `farol` needs: no Node.js,
# no npm packages, no WASM contracts; FAROL_DEPS=bench (scripts/bench.sh) adds the WASM
# contracts the benchmarks load.
deps_all=true
deps_wasm=true
case "${FAROL_DEPS:-all}" in
  build) deps_all=false; deps_wasm=false ;;
  bench) deps_all=false ;;
esac
missing=()
for pkg in librocksdb-dev libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
command -v cc >/dev/null || missing+=(build-essential)
command -v python3 >/dev/null || missing+=(python3)
if $deps_all && ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if ((${#missing[@]} > 0)); then
  sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
if $deps_wasm; then
  # The Rust WASM contracts the executor's tests and benchmarks load (adds the wasm32 target).
  bash scripts/wasm-contracts.sh
fi
if $deps_all; then
  # Hardhat 2.29 and its EDR runtime need Node.js 20 or newer; Debian bookworm's is 18.
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if ((node_major < 20)); then
    echo "Node.js $(node --version 2>/dev/null || echo 'not found') is too old: the client" \
      "tests (Hardhat 2.29) need Node.js 20 or newer (from nodejs.org or NodeSource)" >&2
    exit 1
  fi
  # The client test's npm packages (viem, solc, OpenZeppelin), as package-lock.json pins.
  (cd mainnet/node/tests/client && npm ci --no-audit --no-fund --loglevel=error)
fi
