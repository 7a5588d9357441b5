# Sourced by the scripts: installs the Debian packages the build needs when they are missing
# (RocksDB, linked by the baseline; libclang, for its bindings; a C compiler and linker, for
# the crates with C parts and for linking; python3, which the scripts use to read JSON;
# Node.js and npm, for the real Ethereum client the node's end-to-end test runs; strace, with
# which the fault tests make system calls fail as a failing disk or network would).
# FAROL_DEPS=build (scripts/devnet.sh) installs only what building `farol` needs: no Node.js,
# no npm packages, no WASM contracts; FAROL_DEPS=bench (scripts/bench.sh) adds the WASM
# contracts the benchmarks load.
deps_all=true
deps_wasm=true
case "${FAROL_DEPS:-all}" in
  build) deps_all=false; deps_wasm=false ;;
  bench) deps_all=false ;;
esac
# Hardhat 2.29 and its EDR runtime need Node.js 20 or newer; Debian bookworm's is 18. Checked
# before anything is installed or built: an older one stops the test command at once (before
# stop 49 Debian's Node.js 18 and npm were installed first, then refused, and NodeSource's
# package conflicts with Debian's npm).
node_too_old() {
  echo "Node.js $1 is too old: the client tests (Hardhat 2.29) need Node.js 20 or newer" \
    "(from nodejs.org or NodeSource)" >&2
  exit 1
}
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if $deps_all && command -v node >/dev/null && (($(node_major) < 20)); then
  node_too_old "$(node --version)"
fi
# The workspace's `rust-version`.
rust_minor=$(rustc --version 2>/dev/null | sed -n 's/^rustc 1\.\([0-9]*\)\..*/\1/p' || true)
if [[ -n "$rust_minor" ]] && ((rust_minor < 95)); then
  echo "$(rustc --version) is too old: Farol needs Rust 1.95 or newer (rustup update stable)" >&2
  exit 1
fi
missing=()
for pkg in librocksdb-dev libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
command -v cc >/dev/null || missing+=(build-essential)
command -v python3 >/dev/null || missing+=(python3)
# strace fails chosen system calls in the fault tests (bin/farol/tests/faults.rs, the I/O
# sweeps of Farol Store and the block log).
if $deps_all; then
  command -v strace >/dev/null || missing+=(strace)
fi
need_node=false
if $deps_all && ! command -v node >/dev/null; then
  need_node=true
fi
sudo=()
[[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
if ((${#missing[@]} > 0)) || $need_node; then
  "${sudo[@]}" apt-get update
fi
if $need_node; then
  # Only a Node.js of 20 or newer from apt (NodeSource's, say, where it is configured).
  candidate=$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ {print $2}')
  candidate=${candidate#*:}
  if [[ -z "$candidate" || "$candidate" == "(none)" ]] || ((${candidate%%.*} < 20)); then
    node_too_old "not found, and apt offers ${candidate:-none}: it"
  fi
  missing+=(nodejs)
fi
if ((${#missing[@]} > 0)); then
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
if $deps_all && ! command -v npm >/dev/null; then
  # NodeSource's nodejs carries npm. Debian's npm package would bring Debian's Node.js 18
  # beside a newer one: not installed here.
  echo "npm not found beside Node.js $(node --version 2>/dev/null): install the npm of" \
    "that Node.js" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
if $deps_wasm; then
  # The Rust WASM contracts the executor's tests and benchmarks load (adds the wasm32 target).
  bash scripts/wasm-contracts.sh
fi
if $deps_all; then
  if (($(node_major) < 20)); then
    node_too_old "$(node --version 2>/dev/null || echo '(none)')"
  fi
  # The client test's npm packages (viem, solc, OpenZeppelin), as package-lock.json pins.
  (cd mainnet/node/tests/client && npm ci --no-audit --no-fund --loglevel=error)
fi
