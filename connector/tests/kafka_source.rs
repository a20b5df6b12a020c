//! The direct Kafka source against librdkafka's mock cluster (a real Kafka-protocol server in
//! this process): Debezium topics of three tables with three partitions each, keyed messages,
//! tombstones and bad records produced by a real client; the connector as a process; tables
//! read back by PyIceberg and DuckDB equal to the model. Also `kill -9` at random moments (in
//! a consumer group), a second member joining the group mid-stream (partitions revoked from
//! the first while its transform stage is busy) and the broker down for 20 seconds:
//! exactly-once.

mod kafka;

use kafka::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::time::Duration;
use testkit::stream::Generated;

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

/// Waits until `log` has a line containing `what`.
fn wait_for_line(log: &std::path::Path, what: &str) {
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(what)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no `{what}` in the log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `auto-offset-reset: latest` is for what exists at the very first start: the messages
/// already in the topics then are skipped, but the topic Debezium creates for a new table
/// afterwards is read from its first record (messages produced right after its creation,
/// before the connector noticed it, included).
#[test]
fn a_topic_created_after_start_is_read_from_its_first_record() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(3000, 15);
    let refunds = |t: &str| t.ends_with(".sales.refunds");
    for topic in topics("shop").into_iter().filter(|t| !refunds(t)) {
        cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    // what is there before the very first start: `latest` skips it
    produce_where(&bootstrap, "shop", &stream, |t| !refunds(t));
    let cfg = config(dir.path(), &bootstrap, "shop");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("auto-offset-reset: earliest", "auto-offset-reset: latest");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("connector.log");
    let mut child = Running(Some(start_logged(&cfg, &log)));
    wait_for_line(&log, "reading");
    cluster
        .create_topic("shop.sales.refunds", PARTITIONS, 1)
        .unwrap();
    let ends = produce_where(&bootstrap, "shop", &stream, refunds);
    let running = child.0.as_mut().expect("the connector");
    wait_until_durable(dir.path(), &ends, running);
    stop(child.0.take().expect("the connector"));
    let (py, duck) = read_table(dir.path(), "sales.refunds");
    let want = testkit::stream::table_rows(&stream.model, "sales.refunds");
    assert_eq!(py, want, "PyIceberg");
    assert_eq!(duck, want, "DuckDB");
    assert_eq!(
        table_names(dir.path()),
        ["sales.refunds"],
        "the messages there at the first start were skipped (latest)"
    );
}

/// A position the tables hold that the broker no longer has (here: the topic recreated
/// empty) is an error naming topic, partition and both offsets; that partition is not read
/// (no silent reset) and the other topics keep flowing. Listed under `reset-partitions`, it
/// is read again from the broker's earliest offset.
#[test]
fn an_offset_the_broker_no_longer_has_is_a_named_error_and_the_other_topics_flow() {
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(4000, 16);
    let (first, rest) = stream.split_at(stream.lines.len() / 2);
    let refunds = |t: &str| t.ends_with(".sales.refunds");
    // the first half lands through one cluster
    let a = MockCluster::new(1).unwrap();
    let ends_a = produce_on(&a, &first);
    let cfg = config(dir.path(), &a.bootstrap_servers(), "shop");
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends_a, &mut child);
    stop(child);
    let refunds_before = read_table(dir.path(), "sales.refunds").0;

    // then the brokers are replaced: orders and items hold the same messages, refunds was
    // recreated empty
    let b = MockCluster::new(1).unwrap();
    for topic in topics("shop") {
        b.create_topic(&topic, PARTITIONS, 1).unwrap();
    }
    let bootstrap = b.bootstrap_servers();
    let mut ends = produce_where(&bootstrap, "shop", &first, |t| !refunds(t));
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&a.bootstrap_servers(), &bootstrap);
    std::fs::write(&cfg, &text).unwrap();
    let log = dir.path().join("connector.log");
    let mut child = Running(Some(start_logged(&cfg, &log)));
    for (p, n) in produce_where(&bootstrap, "shop", &rest, |t| !refunds(t)) {
        *ends.entry(p).or_default() += n;
    }
    let running = child.0.as_mut().expect("the connector");
    wait_until_durable(dir.path(), &ends, running);
    std::thread::sleep(Duration::from_secs(2));
    let logged = std::fs::read_to_string(&log).unwrap();
    let errors: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("the tables hold offset"))
        .collect();
    for p in 0..PARTITIONS {
        let at = ends_a[&format!("shop.sales.refunds/{p}")];
        let named = format!(
            "shop.sales.refunds/{p}: the tables hold offset {at} but the broker has offsets 0.."
        );
        // once; a partition whose offsets the broker could not tell at that moment is
        // positioned as the tables say and stopped by librdkafka's out-of-range error
        // instead (auto.offset.reset is `error`): never a silent reset either way
        assert!(
            errors.iter().filter(|l| l.contains(&named)).count() <= 1,
            "once, at ERROR: {errors:?}"
        );
    }
    assert!(!errors.is_empty(), "no partition named: {logged}");
    assert!(errors.iter().all(|l| l.contains("ERROR")), "{errors:?}");
    stop(child.0.take().expect("the connector"));
    for table in ["public.orders", "public.items"] {
        let (py, duck) = read_table(dir.path(), table);
        let want = testkit::stream::table_rows(&stream.model, table);
        assert_eq!(py, want, "PyIceberg, {table}");
        assert_eq!(duck, want, "DuckDB, {table}");
    }
    let refunds_after = read_table(dir.path(), "sales.refunds").0;
    assert_eq!(
        refunds_after, refunds_before,
        "nothing read from the recreated topic"
    );

    // the recreated topic fills up again; the operator accepts the loss: it is read from
    // its first record
    produce_where(&bootstrap, "shop", &rest, refunds);
    std::fs::write(
        &cfg,
        text.replace(
            "      auto-offset-reset: earliest\n",
            "      auto-offset-reset: earliest\n      reset-partitions: [shop.sales.refunds/0, shop.sales.refunds/1, shop.sales.refunds/2]\n",
        ),
    )
    .unwrap();
    let mut child = start(&cfg);
    let started = std::time::Instant::now();
    while read_table(dir.path(), "sales.refunds").0 == refunds_before {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "refunds not read again"
        );
        assert!(child.try_wait().unwrap().is_none());
        std::thread::sleep(Duration::from_secs(1));
    }
    stop(child);
}
