#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one. Installs what it needs (Debian's
# wasm toolchain for the SmartModule, PostgreSQL, Ceph, Apache Kafka with Kafka Connect and
# Debezium, Spark, Apache Iceberg's REST catalog server, Prometheus, buildah and podman, the
# Python readers), then: format, lints, the .wasm build, every test.
#
#   bash tests/run.sh
#
# PROPTEST_CASES sets how many random inputs each property test tries (30000 here).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# a one-off build gains nothing from incremental state, which is gigabytes on disk
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
step() { printf '\n== %s\n' "$*"; }

step "Python readers (PyIceberg, DuckDB, pyspark) in tests/.venv"
if [ ! -x tests/.venv/bin/python ]; then
  python3 -m venv tests/.venv
fi
tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/readers/requirements.txt

step "PostgreSQL (wal_level=logical) for the catalog tests and as the source database"
source tests/postgres.sh
start_postgres

step "Ceph (S3 through the RADOS Gateway) for the object-store tests"
if ! command -v faketime >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  # the clock-skew test runs the connector under libfaketime; the metrics test has
  # Prometheus scrape it
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq faketime prometheus >/dev/null
fi
source tests/ceph.sh
start_ceph
trap stop_ceph EXIT

step "Apache Kafka (KRaft) and Kafka Connect with Debezium, jars from Maven Central"
source tests/kafka.sh
start_kafka
trap 'stop_ceph; kafka_stop' EXIT

step "Spark SQL (pyspark, Iceberg's Spark runtime): one session for the run"
source tests/spark.sh
start_spark
trap 'stop_ceph; kafka_stop; stop_spark' EXIT

step "Apache Iceberg's REST catalog server, over a local warehouse and over Ceph"
source tests/rest.sh
start_rest_catalog
trap 'stop_ceph; kafka_stop; stop_spark; stop_rest_catalog' EXIT

step "Container tools (buildah, podman, runc, mmdebstrap) and a base image from Debian's packages"
source tests/image.sh
start_image_tools

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "SmartModule to WebAssembly"
bash smartmodule/build-wasm.sh --locked

step "tests"
log=$(mktemp)
trap 'rm -f "$log"; stop_ceph; kafka_stop; stop_spark; stop_rest_catalog' EXIT
status=0
PROPTEST_CASES="${PROPTEST_CASES:-30000}" cargo test --workspace --locked --no-fail-fast 2>&1 \
  | tee "$log" || status=$?

if ! command -v fluvio >/dev/null || ! command -v fluvio-run >/dev/null; then
  echo "note: the Fluvio cluster test was SKIPPED (no fluvio and fluvio-run on PATH)"
fi

echo "disk: $(du -sh target 2>/dev/null | cut -f1) in target/, $(df -h . | awk 'NR==2 {print $4}') free"

# one closing line for the whole suite
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nall tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
