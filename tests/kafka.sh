# Apache Kafka for the tests: a single-node KRaft broker (broker and controller in one JVM)
# on loopback, and the classpath Kafka Connect with Debezium's PostgreSQL connector runs
# from. Jars from Maven Central through tests/upstream/pom.xml into .work/upstream (about
# 60 MB, seconds once in ~/.m2); no distribution tarball, no Docker.
#
#   source tests/kafka.sh && start_kafka    # exports CDC_TEST_KAFKA_BOOTSTRAP and friends
#   bash tests/kafka.sh stop | start         # the broker-outage tests
KAFKA_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_DIR=${KAFKA_DIR:-/tmp/cdc-test-kafka}
KAFKA_PORT=${KAFKA_PORT:-29092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-29093}
UPSTREAM_DIR=$KAFKA_REPO/.work/upstream

source "$KAFKA_REPO/tests/process.sh"

kafka_alive() { pid_alive "$KAFKA_DIR/broker.pid"; }

# the jars, copied again whenever the pom changes
upstream_install() {
  local stamp; stamp=$(sha256sum "$KAFKA_REPO/tests/upstream/pom.xml" | cut -c1-16)
  [ -f "$UPSTREAM_DIR/$stamp" ] && return 0
  rm -rf "$UPSTREAM_DIR"
  mvn -q -B -f "$KAFKA_REPO/tests/upstream/pom.xml" -Dupstream.dir="$UPSTREAM_DIR" \
    dependency:copy-dependencies@kafka dependency:copy@spark
  touch "$UPSTREAM_DIR/$stamp"
}

kafka_java() { (exec_kafka_java "$@"); }

# the JVM in place of the calling (sub)shell
exec_kafka_java() {
  exec java -Xms128m -Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_REPO/tests/upstream/log4j2.properties" \
    -cp "$UPSTREAM_DIR/kafka/*" "$@"
}

kafka_start() {
  kafka_alive && return 0
  mkdir -p "$KAFKA_DIR"
  (exec_kafka_java kafka.Kafka "$KAFKA_DIR/server.properties" >>"$KAFKA_DIR/broker.log" 2>&1) &
  echo $! >"$KAFKA_DIR/broker.pid"
  for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then return 0; fi
    kafka_alive || break
    sleep 0.1
  done
  echo "Kafka did not open 127.0.0.1:$KAFKA_PORT; see $KAFKA_DIR/broker.log" >&2
  return 1
}

kafka_stop() { pid_stop "$KAFKA_DIR/broker.pid" 30; }

start_kafka() {
  upstream_install
  kafka_stop
  rm -rf "$KAFKA_DIR"
  mkdir -p "$KAFKA_DIR/data"
  cat >"$KAFKA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
  kafka_java kafka.tools.StorageTool format -t "$(kafka_java kafka.tools.StorageTool random-uuid)" \
    -c "$KAFKA_DIR/server.properties" >>"$KAFKA_DIR/broker.log" 2>&1
  kafka_start || return 1
  export CDC_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
  export CDC_TEST_KAFKA_SCRIPT="$KAFKA_REPO/tests/kafka.sh"
  export CDC_TEST_UPSTREAM_DIR=$UPSTREAM_DIR
  echo "Apache Kafka $(basename "$UPSTREAM_DIR"/kafka/kafka_2.13-*.jar .jar | cut -d- -f2) (KRaft) at $CDC_TEST_KAFKA_BOOTSTRAP"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    start) kafka_start ;;
    stop) kafka_stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
  esac
fi
