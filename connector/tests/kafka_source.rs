//! The direct Kafka source against librdkafka's mock cluster (a real Kafka-protocol server in
//! this process): Debezium topics of three tables with three partitions each, keyed messages,
//! tombstones and bad records produced by a real client; the connector as a process; tables
//! read back by PyIceberg and DuckDB equal to the model. Also `kill -9` at random moments and
//! the broker down for 20 seconds: exactly-once.

use cdc_tests::readers::{self, PyCatalog};
use cdc_tests::stream::{generate, table_rows, Generated, Spec};
use cdc_tests::wasm_path;
use iceberg_cdc_merge::{Catalog, CatalogConfig};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;

fn tables() -> Vec<String> {
    vec![
        "public.orders".to_owned(),
        "public.items".to_owned(),
        "sales.refunds".to_owned(),
    ]
}

fn stream(events: usize, seed: u64) -> Generated {
    generate(&Spec {
        events,
        keys: 400,
        tables: tables(),
        seed,
        bad_every: Some(397),
    })
}

/// A key's partition: the same for every event of the key, so per-key order holds.
fn partition_of(key: &[u8]) -> i32 {
    let h = key.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    (h % PARTITIONS as u64) as i32
}

/// Creates the topics and produces the stream; returns the end offset of every partition.
fn produce(
    cluster: &MockCluster<'_, DefaultProducerContext>,
    stream: &Generated,
) -> BTreeMap<String, i64> {
    for t in tables() {
        cluster
            .create_topic(&format!("shop.{t}"), PARTITIONS, 1)
            .unwrap();
    }
    produce_more(cluster, stream)
}

fn config(dir: &Path, bootstrap: &str) -> PathBuf {
    let text = format!(
        r#"apiVersion: 0.2.0
meta:
  name: kafka-test-sink
  type: iceberg-cdc-sink
  version: 0.1.0
  topic: unused
transforms:
  - uses: cdc-iceberg/debezium-cdc@0.1.0
iceberg:
  source:
    type: kafka
    kafka:
      bootstrap-servers: {bootstrap}
      group-id: spark-iceberg-consumer
      topic-pattern: 'shop\..*'
      auto-offset-reset: earliest
      options:
        topic.metadata.refresh.interval.ms: "500"
  catalog:
    uri: sqlite://{dir}/catalog.db
    warehouse: file://{dir}/warehouse
  batch:
    max-records: 300
    interval-ms: 500
  tables:
    partition-by: month(day)
  dead-letter:
    file: {dir}/dead-letter.jsonl
  smartmodules:
    cdc-iceberg/debezium-cdc@0.1.0: {wasm}
"#,
        dir = dir.display(),
        wasm = wasm_path().display(),
    );
    let path = dir.join("connector.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env_remove("BOOTSTRAP_SERVER_URL")
        .spawn()
        .unwrap()
}

/// Per partition, the highest position below which the tables hold everything.
fn durable_positions(dir: &Path) -> BTreeMap<String, i64> {
    if !dir.join("catalog.db").exists() {
        return BTreeMap::new();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let catalog = Catalog::connect(&CatalogConfig {
            name: "cdc".into(),
            uri: format!("sqlite://{}/catalog.db", dir.display()),
            warehouse: format!("file://{}/warehouse", dir.display()),
            s3: Default::default(),
        })
        .await
        .unwrap();
        let mut out: BTreeMap<String, i64> = BTreeMap::new();
        for ident in catalog.list_tables().await.unwrap() {
            let Some(table) = catalog.load(&ident).await.unwrap() else {
                continue;
            };
            let Some(snapshot) = table.metadata().current_snapshot() else {
                continue;
            };
            let checkpoint = snapshot
                .summary()
                .additional_properties
                .get("cdc.checkpoint")
                .and_then(|t| serde_json::from_str::<BTreeMap<String, i64>>(t).ok())
                .unwrap_or_default();
            for (p, o) in checkpoint {
                let e = out.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
        out
    })
}

/// Waits until the tables hold every produced message (or the connector exits).
fn wait_until_durable(dir: &Path, ends: &BTreeMap<String, i64>, child: &mut Child) {
    let started = Instant::now();
    loop {
        let at = durable_positions(dir);
        if ends
            .iter()
            .all(|(p, end)| at.get(p).is_some_and(|o| o >= end))
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the connector exited ({status}) at {at:?}, wanted {ends:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not durable after 3 minutes: {at:?}, wanted {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "connector exited with {status} after SIGTERM"
    );
}

fn check(dir: &Path, stream: &Generated) {
    let uri = format!("sqlite://{}/catalog.db", dir.display());
    let catalog = PyCatalog {
        uri: &uri,
        name: "cdc",
        s3: None,
    };
    for table in tables() {
        let (py, duck) =
            readers::read_by_id(&catalog, &table, &["id", "name", "price", "qty", "day"]);
        let want = table_rows(&stream.model, &table);
        assert_eq!(py, want, "PyIceberg, {table}");
        assert_eq!(duck, want, "DuckDB, {table}");
    }
    // every bad message is dead-lettered, by topic, partition and offset
    let dead: BTreeSet<(String, i64, i64)> = std::fs::read_to_string(dir.join("dead-letter.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["topic"].as_str().unwrap_or_default().to_owned(),
                v["partition"].as_i64().unwrap_or(-1),
                v["offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(dead.len(), stream.bad.len(), "{dead:?}");
}

#[test]
fn every_partition_of_every_topic_lands_exactly_once() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(4000, 11);
    let ends = produce(&cluster, &stream);
    let cfg = config(dir.path(), &cluster.bootstrap_servers());
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
    let ends = produce(&cluster, &stream);
    let cfg = config(dir.path(), &cluster.bootstrap_servers());
    let mut seed: u64 = 21;
    for _ in 0..10 {
        let mut child = start(&cfg);
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis(800 + (seed >> 33) % 2500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends, &mut child);
    stop(child);
    check(dir.path(), &stream);
}

#[test]
fn the_broker_down_for_twenty_seconds_mid_run() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(6000, 13);
    let half = stream.lines.len() / 2;
    // the first half before the outage, the second while the broker is down
    let first = Generated {
        lines: stream.lines[..half].to_vec(),
        model: Default::default(),
        bad: Vec::new(),
        table_of: stream.table_of[..half].to_vec(),
    };
    let rest = Generated {
        lines: stream.lines[half..].to_vec(),
        model: Default::default(),
        bad: Vec::new(),
        table_of: stream.table_of[half..].to_vec(),
    };
    let mut ends = produce(&cluster, &first);
    let cfg = config(dir.path(), &cluster.bootstrap_servers());
    let mut child = start(&cfg);
    wait_until_durable(dir.path(), &ends, &mut child);
    cluster.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the connector gave up while the broker was down"
    );
    cluster.broker_up(1).unwrap();
    for (p, n) in produce_more(&cluster, &rest) {
        *ends.entry(p).or_default() += n;
    }
    wait_until_durable(dir.path(), &ends, &mut child);
    stop(child);
    check(dir.path(), &stream);
}

/// [`produce`] into topics that exist already.
fn produce_more(
    cluster: &MockCluster<'_, DefaultProducerContext>,
    stream: &Generated,
) -> BTreeMap<String, i64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for (topic, key, value) in stream.kafka_messages() {
        let partition = partition_of(&key);
        let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(&topic)
            .key(&key)
            .partition(partition);
        if let Some(v) = value.as_ref() {
            record = record.payload(v);
        }
        while let Err((_, back)) = producer.send(record) {
            producer.poll(Duration::from_millis(10));
            record = back;
        }
        *counts.entry(format!("{topic}/{partition}")).or_default() += 1;
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    counts
}
