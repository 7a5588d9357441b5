# Sourced by the scripts: installs the Debian packages the build needs when they are missing
# (RocksDB, linked by the baseline; libclang, for its bindings).
missing=()
for pkg in librocksdb-dev libclang-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
  sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
# The Rust WASM contracts the executor's tests and benchmarks load (adds the wasm32 target).
bash scripts/wasm-contracts.sh
