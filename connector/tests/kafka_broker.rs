//! The direct Kafka source against Apache Kafka on loopback (a single-node KRaft broker from
//! Maven Central's jars, started by `tests/run.sh` through `tests/kafka.sh`): topics
//! created and messages produced by a real client, the connector as a process, tables read
//! back by PyIceberg and DuckDB equal to the model, across `kill -9` at random moments and
//! a broker stopped for 20 seconds.

mod kafka;

use kafka::*;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// One test at a time: one of them stops the broker.
static BROKER: Mutex<()> = Mutex::new(());

struct Broker {
    bootstrap: String,
    script: String,
}

fn var(name: &str) -> String {
    env_var(name, "Kafka (tests/kafka.sh)")
}

impl Broker {
    fn from_env() -> Broker {
        Broker {
            bootstrap: var("CDC_TEST_KAFKA_BOOTSTRAP"),
            script: var("CDC_TEST_KAFKA_SCRIPT"),
        }
    }

    fn script(&self, what: &str) {
        let status = Command::new("bash")
            .arg(&self.script)
            .arg(what)
            .status()
            .unwrap();
        assert!(status.success(), "tests/kafka.sh {what}");
    }

    /// The broker is down while the returned guard lives (it starts again on drop).
    fn outage(&self) -> Outage<'_> {
        self.script("stop");
        Outage(self)
    }

    /// A Debezium server name of this test's own, with its topics created.
    fn new_server(&self, purpose: &str) -> String {
        new_server(&self.bootstrap, purpose)
    }
}

struct Outage<'a>(&'a Broker);

impl Outage<'_> {
    fn end(self) {
        self.0.script("start");
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        // idempotent after `end`; never panics (this may run while a test unwinds)
        let _ = Command::new("bash")
            .arg(&self.0.script)
            .arg("start")
            .status();
    }
}

/// Manual assignment (the default): a restart after `kill -9` reads at once (a consumer group
/// would wait for the killed member's session to time out first).
#[test]
fn debezium_topics_through_a_real_broker_exactly_once_across_kill_nine() {
    let _serial = BROKER.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Broker::from_env();
    let server = broker.new_server("kill");
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(6000, 21);
    let ends = produce(&broker.bootstrap, &server, &stream);
    let cfg = config(dir.path(), &broker.bootstrap, &server);
    kill_nine_ten_times(&cfg, 5, Duration::from_millis(1000));
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends, &mut child);
    stop(child);
    check(dir.path(), &stream);
}

/// The group's offsets are monitoring only (never read back), committed after the table
/// commits that make them durable: once every message is in the tables, the group holds each
/// partition's end, as any lag monitor reads it.
#[test]
fn the_group_offsets_reach_the_end_once_the_tables_hold_everything() {
    let _serial = BROKER.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Broker::from_env();
    let server = broker.new_server("lag");
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(3000, 24);
    let ends = produce(&broker.bootstrap, &server, &stream);
    let cfg = config(dir.path(), &broker.bootstrap, &server);
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends, &mut child);
    let partitions: Vec<String> = ends.keys().cloned().collect();
    let group = format!("{server}-iceberg");
    let started = std::time::Instant::now();
    let mut held = group_offsets(&broker.bootstrap, &group, &partitions);
    while held != ends && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(300));
        held = group_offsets(&broker.bootstrap, &group, &partitions);
    }
    stop(child);
    assert_eq!(
        held, ends,
        "the group's offsets against each partition's end"
    );
    check(dir.path(), &stream);
}

#[test]
fn debezium_topics_through_a_real_broker_with_the_broker_stopped_for_twenty_seconds() {
    let _serial = BROKER.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Broker::from_env();
    let server = broker.new_server("outage");
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(4000, 22);
    let (first, rest) = stream.split_at(stream.lines.len() / 2);
    let mut ends = produce(&broker.bootstrap, &server, &first);
    let cfg = config(dir.path(), &broker.bootstrap, &server);
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends, &mut child);
    let outage = broker.outage();
    std::thread::sleep(Duration::from_secs(20));
    let during = child.try_wait().unwrap();
    outage.end();
    assert!(
        during.is_none(),
        "the connector gave up while the broker was down"
    );
    for (p, n) in produce(&broker.bootstrap, &server, &rest) {
        *ends.entry(p).or_default() += n;
    }
    wait_until_durable(dir.path(), &ends, &mut child);
    stop(child);
    check(dir.path(), &stream);
}
