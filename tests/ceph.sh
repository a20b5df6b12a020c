# A single-node Ceph cluster with its S3 gateway (RADOS Gateway) on loopback, from Debian's
# packages, for the object-store tests: one monitor, one in-memory OSD, radosgw serving plain
# HTTP on 7480 and HTTPS (a throwaway CA made here) on 7443.
#
#   source tests/ceph.sh && start_ceph     # exports CDC_TEST_S3_* for the tests
#   bash tests/ceph.sh rgw-stop | rgw-start | stop
#
# The OSD keeps its data in memory: stopping the gateway keeps the objects, stopping the
# cluster loses them.
CEPH_DIR=${CEPH_DIR:-/tmp/cdc-test-ceph}
CEPH_MON=127.0.0.1:6789
RGW_HTTP=127.0.0.1:7480
RGW_HTTPS=127.0.0.1:7443
CEPH_ACCESS_KEY=cdc-test-access
CEPH_SECRET_KEY=cdc-test-secret-0123456789

ceph_cmd() { ceph --conf "$CEPH_DIR/ceph.conf" "$@"; }

ceph_wait() { # seconds, description, command...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  echo "ceph: $what did not come up within ${secs}s; logs in $CEPH_DIR" >&2
  return 1
}

source "$(dirname "${BASH_SOURCE[0]}")/process.sh"
ceph_pid_alive() { pid_alive "$1"; }

ceph_write_config() {
  cat >"$CEPH_DIR/ceph.conf" <<EOF
[global]
fsid = $(cat "$CEPH_DIR/fsid")
mon host = $CEPH_MON
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
osd objectstore = memstore
memstore device bytes = 2147483648
# a test cluster: never refuse to start because the disk is nearly full
mon data avail crit = 0
mon data avail warn = 0
osd crush update on start = false
osd class update on start = false
run dir = $CEPH_DIR/run
admin socket = $CEPH_DIR/run/\$name.asok
log file = $CEPH_DIR/log/\$name.log
mon data = $CEPH_DIR/mon/\$name
osd data = $CEPH_DIR/osd/\$name
[client.rgw.a]
rgw frontends = beast endpoint=$RGW_HTTP ssl_endpoint=$RGW_HTTPS ssl_certificate=$CEPH_DIR/tls/server.pem ssl_private_key=$CEPH_DIR/tls/server.key
rgw data = $CEPH_DIR/rgw
EOF
}

ceph_make_tls() {
  local d=$CEPH_DIR/tls
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=cdc-test-ca" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null 2>&1
}

rgw_start() {
  ceph_pid_alive "$CEPH_DIR/rgw.pid" && return 0
  radosgw -f --conf "$CEPH_DIR/ceph.conf" -n client.rgw.a >>"$CEPH_DIR/log/rgw.out" 2>&1 &
  echo $! >"$CEPH_DIR/rgw.pid"
  ceph_wait 60 "radosgw" curl -sf -o /dev/null "http://$RGW_HTTP/"
}

rgw_stop() { pid_stop "$CEPH_DIR/rgw.pid" 30; }

# An S3 request signed with the test user's keys: s3_request METHOD PATH [curl args…]
s3_request() {
  local method=$1 path=$2; shift 2
  curl -sS --fail-with-body -X "$method" --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$CEPH_ACCESS_KEY:$CEPH_SECRET_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    "$@" "http://$RGW_HTTP/$path"
}

# The keys of every object in a bucket, one a line.
s3_keys() {
  local bucket=$1 query="max-keys=1000" page
  while :; do
    page=$(s3_request GET "$bucket?$query") || return 1
    { grep -o '<Key>[^<]*</Key>' <<<"$page" || true; } | sed 's/<Key>\(.*\)<\/Key>/\1/'
    grep -q '<IsTruncated>true</IsTruncated>' <<<"$page" || break
    # the last key, percent-encoded as the signature's canonical query wants it
    query="marker=$(grep -o '<Key>[^<]*</Key>' <<<"$page" | tail -n 1 \
      | sed 's/<Key>\(.*\)<\/Key>/\1/; s|/|%2F|g; s|=|%3D|g')&max-keys=1000"
  done
}

ceph_export() {
  export CDC_TEST_S3_ENDPOINT="http://$RGW_HTTP"
  export CDC_TEST_S3_TLS_ENDPOINT="https://$RGW_HTTPS"
  export CDC_TEST_S3_CA_FILE="$CEPH_DIR/tls/ca.pem"
  export CDC_TEST_S3_ACCESS_KEY=$CEPH_ACCESS_KEY
  export CDC_TEST_S3_SECRET_KEY=$CEPH_SECRET_KEY
  export CDC_TEST_CEPH_SCRIPT="$PWD/tests/ceph.sh"
}

start_ceph() {
  if ceph_pid_alive "$CEPH_DIR/mon.pid" && ceph_pid_alive "$CEPH_DIR/osd.pid"; then
    rgw_start && ceph_export && echo "Ceph S3 gateway at http://$RGW_HTTP (already running)"
    return
  fi
  if ! command -v radosgw >/dev/null 2>&1 || ! command -v ceph-osd >/dev/null 2>&1; then
    local SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      ceph-mon ceph-osd radosgw ceph-common openssl curl >/dev/null 2>&1
  fi
  stop_ceph
  rm -rf "$CEPH_DIR"
  mkdir -p "$CEPH_DIR"/{run,log,mon,osd/osd.0,rgw}
  cat /proc/sys/kernel/random/uuid >"$CEPH_DIR/fsid"
  ceph_make_tls
  ceph_write_config
  monmaptool --create --add a "$CEPH_MON" --fsid "$(cat "$CEPH_DIR/fsid")" "$CEPH_DIR/monmap" >/dev/null 2>&1
  ceph-mon --conf "$CEPH_DIR/ceph.conf" --mkfs -i a --monmap "$CEPH_DIR/monmap" >/dev/null 2>&1
  ceph-mon -f --conf "$CEPH_DIR/ceph.conf" -i a >>"$CEPH_DIR/log/mon.out" 2>&1 &
  echo $! >"$CEPH_DIR/mon.pid"
  ceph_wait 60 "ceph-mon" ceph_cmd -s --connect-timeout 5
  local uuid; uuid=$(cat /proc/sys/kernel/random/uuid)
  ceph_cmd osd create "$uuid" >/dev/null 2>&1
  ceph_cmd osd crush add-bucket localhost host >/dev/null 2>&1
  ceph_cmd osd crush move localhost root=default >/dev/null 2>&1
  ceph_cmd osd crush add osd.0 1 root=default host=localhost >/dev/null 2>&1
  ceph-osd --conf "$CEPH_DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$uuid" >>"$CEPH_DIR/log/osd.out" 2>&1
  ceph-osd -f --conf "$CEPH_DIR/ceph.conf" -i 0 >>"$CEPH_DIR/log/osd.out" 2>&1 &
  echo $! >"$CEPH_DIR/osd.pid"
  ceph_wait 60 "ceph-osd" sh -c "ceph --conf '$CEPH_DIR/ceph.conf' osd stat | grep -q '1 up'"
  rgw_start
  radosgw-admin --conf "$CEPH_DIR/ceph.conf" user create --uid=cdc-test --display-name=cdc-test \
    --access-key="$CEPH_ACCESS_KEY" --secret-key="$CEPH_SECRET_KEY" >/dev/null 2>&1
  ceph_export
  echo "Ceph S3 gateway at http://$RGW_HTTP and https://$RGW_HTTPS"
}

stop_ceph() {
  rgw_stop
  local name
  for name in osd mon; do
    pid_stop "$CEPH_DIR/$name.pid" 20
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    start) start_ceph ;;
    stop) stop_ceph ;;
    rgw-stop) rgw_stop ;;
    rgw-start) rgw_start ;;
    make-bucket) s3_request PUT "$2" >/dev/null ;;
    keys) s3_keys "$2" ;;
    *) echo "usage: $0 start|stop|rgw-stop|rgw-start|make-bucket NAME|keys BUCKET" >&2; exit 2 ;;
  esac
fi
