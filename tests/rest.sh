# Apache Iceberg's own REST catalog server (RESTCatalogServer: a JDBC catalog on SQLite behind
# the REST spec's handlers) for the REST-catalog tests, two of them: one over a local
# warehouse, one over a bucket on the test Ceph (start Ceph first: tests/ceph.sh). Jars from
# Maven Central through tests/upstream/rest-catalog/pom.xml into .work/upstream/rest-catalog
# (41 jars, 144 MB, about 10 s once in ~/.m2); each server starts in about 2 s.
#
#   source tests/rest.sh && start_rest_catalog   # exports CDC_TEST_REST_* for the tests
REST_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REST_DIR=${REST_DIR:-/tmp/cdc-test-rest}
REST_LIB=$REST_REPO/.work/upstream/rest-catalog
REST_LOCAL_PORT=${REST_LOCAL_PORT:-29181}
REST_CEPH_PORT=${REST_CEPH_PORT:-29182}
REST_BUCKET=rest-warehouse

source "$REST_REPO/tests/process.sh"

rest_install() {
  local pom=$REST_REPO/tests/upstream/rest-catalog/pom.xml stamp
  stamp=$(sha256sum "$pom" | cut -c1-16)
  [ -f "$REST_LIB/$stamp" ] && return 0
  rm -rf "$REST_LIB"
  mvn -q -B -f "$pom" -Dupstream.dir="$REST_LIB" dependency:copy-dependencies@rest-catalog
  touch "$REST_LIB/$stamp"
}

# rest_server NAME PORT WAREHOUSE [CATALOG_x=value ...]: one server, its catalog database and
# log under $REST_DIR/NAME. The server reads its catalog properties from CATALOG_*
# variables (`__` stands for `-`, `_` for `.`): CATALOG_REST_PORT is rest.port.
rest_server() {
  local name=$1 port=$2 warehouse=$3; shift 3
  local dir=$REST_DIR/$name
  pid_stop "$dir/server.pid"
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && exec env CATALOG_URI="jdbc:sqlite:$dir/catalog.db" CATALOG_WAREHOUSE="$warehouse" \
      CATALOG_JDBC_USER=iceberg CATALOG_JDBC_PASSWORD=iceberg CATALOG_REST_PORT="$port" "$@" \
      java -Xms64m -Xmx384m -XX:+UseSerialGC -cp "$REST_LIB/*" \
      org.apache.iceberg.rest.RESTCatalogServer >>"$dir/server.log" 2>&1) &
  echo $! >"$dir/server.pid"
  for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    pid_alive "$dir/server.pid" || break
    sleep 0.1
  done
  echo "the REST catalog $name did not open 127.0.0.1:$port; see $dir/server.log" >&2
  return 1
}

stop_rest_catalog() {
  pid_stop "$REST_DIR/local/server.pid"
  pid_stop "$REST_DIR/ceph/server.pid"
}

start_rest_catalog() {
  : "${CDC_TEST_S3_ENDPOINT:?start Ceph first (source tests/ceph.sh && start_ceph)}"
  rest_install
  mkdir -p "$REST_DIR/warehouse-local"
  rest_server local "$REST_LOCAL_PORT" "file://$REST_DIR/warehouse-local"
  bash "$REST_REPO/tests/ceph.sh" make-bucket "$REST_BUCKET"
  # the AWS SDK of Iceberg 1.10 sends checksum trailers on every PutObject, which this
  # Ceph gateway answers with 400: checksums only where an operation requires them
  AWS_REGION=us-east-1 rest_server ceph "$REST_CEPH_PORT" "s3://$REST_BUCKET/warehouse" \
    CATALOG_IO__IMPL=org.apache.iceberg.aws.s3.S3FileIO \
    CATALOG_S3_ENDPOINT="$CDC_TEST_S3_ENDPOINT" CATALOG_S3_PATH__STYLE__ACCESS=true \
    CATALOG_S3_ACCESS__KEY__ID="$CDC_TEST_S3_ACCESS_KEY" \
    CATALOG_S3_SECRET__ACCESS__KEY="$CDC_TEST_S3_SECRET_KEY" CATALOG_CLIENT_REGION=us-east-1 \
    AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
  export CDC_TEST_REST_LOCAL="http://127.0.0.1:$REST_LOCAL_PORT"
  export CDC_TEST_REST_LOCAL_WAREHOUSE="file://$REST_DIR/warehouse-local"
  export CDC_TEST_REST_CEPH="http://127.0.0.1:$REST_CEPH_PORT"
  export CDC_TEST_REST_CEPH_WAREHOUSE="s3://$REST_BUCKET/warehouse"
  echo "Iceberg REST catalogs at $CDC_TEST_REST_LOCAL (local) and $CDC_TEST_REST_CEPH (Ceph)"
}
