//! The direct Kafka source against librdkafka's mock cluster (a real Kafka-protocol server in
//! this process): Debezium topics of three tables with three partitions each, keyed messages,
//! tombstones and bad records produced by a real client; the connector as a process; tables
//! read back by PyIceberg and DuckDB equal to the model. Also `kill -9` at random moments (in
//! a consumer group), a second member joining the group mid-stream (partitions revoked from
//! the first while its transform stage is busy) and the broker down for 20 seconds:
//! exactly-once.

mod kafka;

use cdc_tests::stream::Generated;
use kafka::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::time::Duration;

/// Creates the `shop` topics on the mock cluster and produces the stream into them.
fn produce_on(
    cluster: &MockCluster<'_, DefaultProducerContext>,
    stream: &Generated,
) -> std::collections::BTreeMap<String, i64> {
    for topic in topics("shop") {
        cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    }
    produce(&cluster.bootstrap_servers(), "shop", stream)
}

#[test]
fn every_partition_of_every_topic_lands_exactly_once() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(4000, 11);
    let ends = produce_on(&cluster, &stream);
    let cfg = config(dir.path(), &cluster.bootstrap_servers(), "shop");
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends, &mut child);
    stop(child);
    check(dir.path(), &stream);

    // a restart resumes at the tables' offsets: nothing is applied again
    let before = durable_positions(dir.path());
    let mut child = start(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none());
    stop(child);
    assert_eq!(durable_positions(dir.path()), before);
    check(dir.path(), &stream);
}

#[test]
fn kill_nine_at_random_moments_then_exactly_once() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(20_000, 12);
    let ends = produce_on(&cluster, &stream);
    // in a consumer group: each restart joins it again
    let cfg = group_config(dir.path(), &cluster.bootstrap_servers(), "shop");
    kill_nine_ten_times(&cfg, 21, Duration::from_millis(800));
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends, &mut child);
    stop(child);
    check(dir.path(), &stream);
}

#[test]
fn a_second_member_joins_the_group_mid_stream_then_exactly_once() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // (librdkafka's mock cluster drops the oldest messages of a partition past 5 MB:
    // larger streams lose their beginning before anyone reads it)
    let stream = stream(20_000, 14);
    let ends = produce_on(&cluster, &stream);
    let cfg = group_config(dir.path(), &cluster.bootstrap_servers(), "shop");
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = Running(Some(start_logged(&cfg, &log_a)));
    // the second member joins once the first has committed something and is still reading
    let started = std::time::Instant::now();
    while durable_positions(dir.path()).values().sum::<i64>() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut b = Running(Some(start_logged(&cfg, &log_b)));
    let joined = durable_positions(dir.path()).values().sum::<i64>();
    let total: i64 = ends.values().sum();
    assert!(
        joined < total,
        "the first member finished before the second joined"
    );
    let first = a.0.as_mut().expect("the first member");
    wait_until_durable(dir.path(), &ends, first);
    stop(a.0.take().expect("the first member"));
    stop(b.0.take().expect("the second member"));
    check(dir.path(), &stream);
    let (a, b) = (
        std::fs::read_to_string(&log_a).unwrap(),
        std::fs::read_to_string(&log_b).unwrap(),
    );
    // the first member handed partitions over in time, and the second read some
    assert!(a.contains("partitions revoked"), "{a}");
    assert!(!a.contains("not committed within"), "{a}");
    let assigned_to_b = b
        .lines()
        .filter(|l| l.contains("partitions assigned"))
        .any(|l| l.contains("shop.public."));
    assert!(assigned_to_b, "{b}");
}

#[test]
fn the_broker_down_for_twenty_seconds_mid_run() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(6000, 13);
    // the first half before the outage, the second after it
    let (first, rest) = stream.split_at(stream.lines.len() / 2);
    let mut ends = produce_on(&cluster, &first);
    let cfg = config(dir.path(), &cluster.bootstrap_servers(), "shop");
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends, &mut child);
    cluster.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the connector gave up while the broker was down"
    );
    cluster.broker_up(1).unwrap();
    for (p, n) in produce(&cluster.bootstrap_servers(), "shop", &rest) {
        *ends.entry(p).or_default() += n;
    }
    wait_until_durable(dir.path(), &ends, &mut child);
    stop(child);
    check(dir.path(), &stream);
}
