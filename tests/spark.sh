# Spark SQL for the tests: one SparkSession (pyspark from tests/.venv, local[2], Iceberg's
# Spark runtime and the JDBC drivers from tests/upstream/pom.xml) serving queries on
# loopback for the whole run (tests/readers/spark_service.py). Needs tests/kafka.sh's
# upstream_install first.
#
#   source tests/spark.sh && start_spark    # exports CDC_TEST_SPARK
SPARK_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SPARK_DIR=${SPARK_DIR:-/tmp/cdc-test-spark}
SPARK_PORT=${SPARK_PORT:-29095}

source "$SPARK_REPO/tests/process.sh"

spark_alive() { pid_alive "$SPARK_DIR/spark.pid"; }
stop_spark() { pid_stop "$SPARK_DIR/spark.pid"; }

start_spark() {
  stop_spark
  rm -rf "$SPARK_DIR"
  mkdir -p "$SPARK_DIR"
  (cd "$SPARK_DIR" && TZ=UTC exec "$SPARK_REPO/tests/.venv/bin/python" \
      "$SPARK_REPO/tests/readers/spark_service.py" --port "$SPARK_PORT" \
      --jars "$SPARK_REPO/.work/upstream/spark" >>"$SPARK_DIR/spark.log" 2>&1) &
  echo $! >"$SPARK_DIR/spark.pid"
  for _ in $(seq 1200); do
    if grep -q "ready on" "$SPARK_DIR/spark.log" 2>/dev/null; then
      export CDC_TEST_SPARK=127.0.0.1:$SPARK_PORT
      grep "ready on" "$SPARK_DIR/spark.log"
      return 0
    fi
    spark_alive || break
    sleep 0.1
  done
  echo "Spark did not start; see $SPARK_DIR/spark.log" >&2
  return 1
}
