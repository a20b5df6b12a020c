# What the server scripts of the tests share (sourced by ceph.sh, kafka.sh, spark.sh): a
# server process behind a pid file.

# pid_alive FILE: the process of FILE runs
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# pid_stop FILE [SECONDS]: SIGTERM, SIGKILL when it still runs after SECONDS (default 10),
# then FILE is removed
pid_stop() {
  pid_alive "$1" || { rm -f "$1"; return 0; }
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq $(( ${2:-10} * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}
