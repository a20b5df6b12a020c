#!/usr/bin/env bash
# The demo on a fresh machine: builds the SmartModule and the connector, then runs the
# connector on the embedded default: the sample Debezium stream of the `products` table
# (tests/fixtures/products.kv: snapshot reads, creates, updates, a delete and its tombstone,
# an update that moves a row to another month's partition, a bad message), the SmartModule
# in-process, a SQLite catalog and a local warehouse under .work/demo. Then shows the table,
# its snapshots, and the dead letter.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/.work/demo"
rm -rf "$out"
mkdir -p "$out"

bash smartmodule/build-wasm.sh >&2
cargo build --quiet --release -p iceberg-cdc-sink

cat > "$out/connector.yaml" <<YAML
apiVersion: 0.2.0
meta:
  name: demo-products
  type: iceberg-cdc-sink
  version: 0.1.0
  topic:
    meta:
      name: postgres-cdc
transforms:
  - uses: cdc-iceberg/debezium-cdc@0.1.0
    with:
      operations: "c,u,d,r"
iceberg:
  source:
    type: file
    path: $root/tests/fixtures/products.kv
    format: key-value
  tables:
    # event time: the last update of product 1 happened in July, so its row moves from the
    # June partition to July's (a position delete in June, a new row in July)
    partition-by: month(_cdc_source_ts)
  batch:
    max-records: 4                    # small batches: several snapshots to look at
  catalog:
    uri: sqlite://$out/catalog.db
    warehouse: file://$out/warehouse
  dead-letter:
    file: $out/dead-letter.jsonl
  smartmodules:
    cdc-iceberg/debezium-cdc@0.1.0: $root/target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm
YAML

echo "== running the connector ($out/connector.yaml)" >&2
target/release/iceberg-cdc-sink --config "$out/connector.yaml"

echo >&2
echo "== the table" >&2
target/release/iceberg-cdc-sink --config "$out/connector.yaml" inspect

echo >&2
echo "== dead-lettered ($out/dead-letter.jsonl)" >&2
cat "$out/dead-letter.jsonl"
