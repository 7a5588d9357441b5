# Sourced by the scripts: installs the Debian packages the build needs when they are missing
# (RocksDB, linked by the baseline; libclang, for its bindings; a C compiler and linker, for
# the crates with C parts and for linking; python3, which the scripts use to read JSON;
# Node.js and npm, for the real Ethereum client the node's end-to-end test runs).
missing=()
for pkg in librocksdb-dev libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
command -v cc >/dev/null || missing+=(build-essential)
command -v python3 >/dev/null || missing+=(python3)
if ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if ((${#missing[@]} > 0)); then
  sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
# The Rust WASM contracts the executor's tests and benchmarks load (adds the wasm32 target).
bash scripts/wasm-contracts.sh
# The client test's npm packages (viem, solc, OpenZeppelin), exactly as package-lock.json pins.
(cd mainnet/node/tests/client && npm ci --no-audit --no-fund --loglevel=error)
