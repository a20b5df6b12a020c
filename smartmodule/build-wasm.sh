#!/usr/bin/env bash
# Builds the SmartModule to WebAssembly with Debian's Rust (the rustup toolchain here has no
# wasm32 target). Installs Debian's rustc-web, rust-web-src and lld when they are missing.
# The module lands at target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm, where
# `smdk load`, the tests and Connector.yaml's examples look for it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in rustc-web rust-web-src lld; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Debian's rustc, with the standard library built from rust-web-src for wasm32;
# --allow-undefined lets the host's `copy_records` import link.
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="-C linker=wasm-ld -C link-arg=--allow-undefined" \
  cargo build --profile release-lto -Zbuild-std=std,panic_abort \
  --target wasm32-unknown-unknown -p debezium-cdc "$@"

wasm=target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm
test -s "$wasm"
echo "$wasm ($(stat -c %s "$wasm") bytes)"
