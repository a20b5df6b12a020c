#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md, in one command (after `bash tests/run.sh` has set up the
# Python readers, the wasm toolchain and the Kafka jars once):
#
#   bash bench/run.sh quick              # about two minutes
#   bash bench/run.sh full [options]     # 5M events over 1M keys unless options say otherwise
#   bash bench/run.sh soak [options]     # 20M events over 1M keys into stdin, RSS sampled:
#                                        # bench/soak-rss.png (matplotlib into tests/.venv);
#                                        # --maintenance 2m runs maintenance as users do
#
# Extra options go to `cdc-bench run` (e.g. --events 2200000 --keys 1000000). The report
# lands in .work/bench-<profile>.json; the table is printed.
#
# The Kafka contender (Apache Kafka, the tests' single-node KRaft broker on loopback) runs
# in every profile; BENCH_KAFKA=0 leaves it out. The Spark MERGE INTO job (pyspark from
# tests/.venv, Iceberg's Spark runtime from Maven) runs within its budget (--spark-budget,
# 0 leaves it out).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-quick}"
shift || true
cargo build --release --locked -p iceberg-cdc-sink -p cdc-bench
bash smartmodule/build-wasm.sh --locked
export CDC_PYTHON="${CDC_PYTHON:-$PWD/tests/.venv/bin/python}"
if [ "$profile" = soak ]; then
  "$CDC_PYTHON" -c 'import matplotlib' 2>/dev/null \
    || "$CDC_PYTHON" -m pip install --quiet --disable-pip-version-check 'matplotlib==3.10.8'
  exec target/release/cdc-bench soak --work .work/bench-soak --report .work/bench-soak.json "$@"
fi
# the Kafka jars and Iceberg's Spark runtime (for the Spark MERGE INTO contender)
source tests/kafka.sh
upstream_install
kafka=()
if [ "${BENCH_KAFKA:-1}" = 1 ]; then
  start_kafka
  trap kafka_stop EXIT
  kafka=(--kafka "$CDC_TEST_KAFKA_BOOTSTRAP")
fi
target/release/cdc-bench run --profile "$profile" "${kafka[@]}" \
  --work ".work/bench-$profile" --report ".work/bench-$profile.json" "$@"
