# The tansu Kafka-protocol broker (from crates.io, SQLite storage) on loopback, for the
# Kafka tests: installed once into .work/tools (a cargo build of about 12 minutes).
#
#   source tests/tansu.sh && start_tansu    # exports CDC_TEST_KAFKA_BOOTSTRAP
#   bash tests/tansu.sh stop | start         # the broker-outage test
TANSU_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANSU_DIR=${TANSU_DIR:-/tmp/cdc-test-tansu}
TANSU_ADDR=127.0.0.1:19092
TANSU_BIN=$TANSU_REPO/.work/tools/bin/tansu

tansu_alive() { [ -f "$TANSU_DIR/tansu.pid" ] && kill -0 "$(cat "$TANSU_DIR/tansu.pid")" 2>/dev/null; }

tansu_start() {
  tansu_alive && return 0
  mkdir -p "$TANSU_DIR"
  (cd "$TANSU_DIR" && exec "$TANSU_BIN" broker \
      --listener-url "tcp://$TANSU_ADDR" --advertised-listener-url "tcp://$TANSU_ADDR" \
      --storage-engine sqlite://tansu.db >>"$TANSU_DIR/tansu.log" 2>&1) &
  echo $! >"$TANSU_DIR/tansu.pid"
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/${TANSU_ADDR%:*}/${TANSU_ADDR#*:}") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "tansu did not open $TANSU_ADDR; see $TANSU_DIR/tansu.log" >&2
  return 1
}

tansu_stop() {
  tansu_alive || return 0
  local pid; pid=$(cat "$TANSU_DIR/tansu.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$TANSU_DIR/tansu.pid"
}

start_tansu() {
  if [ ! -x "$TANSU_BIN" ]; then
    cargo install tansu@0.6.0 --locked --features libsql --root "$TANSU_REPO/.work/tools" --quiet
  fi
  tansu_stop
  rm -rf "$TANSU_DIR"
  tansu_start
  export CDC_TEST_KAFKA_BOOTSTRAP=$TANSU_ADDR
  export CDC_TEST_TANSU_SCRIPT="$TANSU_REPO/tests/tansu.sh"
  echo "tansu (Kafka protocol) at $TANSU_ADDR"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    start) tansu_start ;;
    stop) tansu_stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
  esac
fi
