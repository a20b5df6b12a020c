# Starts a PostgreSQL server on loopback (Debian's package, installed when missing) for the
# catalog tests and as the source database of the end-to-end tests: wal_level=logical, so
# Debezium's PostgreSQL connector can stream it (pgoutput), and a replication role
# `debezium`. Exports CDC_TEST_POSTGRES_URI and CDC_TEST_SOURCE_POSTGRES. Sourced by
# tests/run.sh.
PG_PORT=${PG_PORT:-55432}

start_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    local SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  local data=/tmp/cdc-test-postgres
  local run_as=()
  if [ "$(id -u)" -eq 0 ]; then run_as=(runuser -u postgres --); fi
  local options="-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c wal_level=logical"
  options+=" -c max_replication_slots=20 -c max_wal_senders=20"
  if "${run_as[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 \
      && [ "$("$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc 'SHOW wal_level')" != logical ]; then
    # a server from before logical decoding was needed
    "${run_as[@]}" "$bin/pg_ctl" -D "$data" -w -o "$options" restart >/dev/null
  fi
  if ! "${run_as[@]}" "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    rm -rf "$data"
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres "$data"
    "${run_as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
    "${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -o "$options" start >/dev/null
  fi
  "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='cdc_test'" | grep -q 1 \
    || "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres cdc_test
  # the role Debezium connects as (replication, and reading the tables it snapshots)
  "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'debezium') THEN
        CREATE ROLE debezium WITH LOGIN REPLICATION SUPERUSER PASSWORD 'debezium';
      END IF; END \$\$"
  export CDC_TEST_POSTGRES_URI="postgres://postgres@127.0.0.1:$PG_PORT/cdc_test"
  export CDC_TEST_SOURCE_POSTGRES="127.0.0.1:$PG_PORT"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $CDC_TEST_POSTGRES_URI (wal_level=logical)"
}
