#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md, in one command (after `bash tests/run.sh` has set up the
# Python readers, the wasm toolchain and tansu once):
#
#   bash bench/run.sh quick              # about two minutes
#   bash bench/run.sh full [options]     # 5M events over 1M keys unless options say otherwise
#
# Extra options go to `cdc-bench run` (e.g. --events 2200000 --keys 1000000). The report
# lands in .work/bench-<profile>.json; the table is printed.
#
# The Kafka contender (tansu on loopback) runs in the quick profile. In the full one it is
# left out unless BENCH_KAFKA=1: tansu keeps topics in SQLite, and with the full stream's
# 11.5 GB in it (a 20 GB database) it served ~120 messages/s, so that contender would run
# for hours and measure the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-quick}"
shift || true
cargo build --release --locked -p iceberg-cdc-sink -p cdc-bench
bash smartmodule/build-wasm.sh --locked
export CDC_PYTHON="${CDC_PYTHON:-$PWD/tests/.venv/bin/python}"
kafka=()
if [ "$profile" = quick ] || [ "${BENCH_KAFKA:-0}" = 1 ]; then
  source tests/tansu.sh
  start_tansu
  trap tansu_stop EXIT
  kafka=(--kafka "$CDC_TEST_KAFKA_BOOTSTRAP")
fi
target/release/cdc-bench run --profile "$profile" "${kafka[@]}" \
  --work ".work/bench-$profile" --report ".work/bench-$profile.json" "$@"
