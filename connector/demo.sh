#!/usr/bin/env bash
# The demo on a fresh machine: builds the SmartModule and runs it, inside Fluvio's engine,
# over a sample Debezium stream of the `products` table. Change records go to stdout, the
# bad record to a dead-letter file.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.work/demo
mkdir -p "$out"

bash smartmodule/build-wasm.sh >&2
cargo build --quiet --release -p iceberg-cdc-sink

echo "== CDC records from tests/fixtures/products.kv" >&2
target/release/iceberg-cdc-sink transform \
  --input tests/fixtures/products.kv --format key-value \
  --dead-letter "$out/dead-letter.jsonl" | tee "$out/changes.jsonl"

echo >&2
echo "== dead-lettered ($out/dead-letter.jsonl)" >&2
cat "$out/dead-letter.jsonl"
