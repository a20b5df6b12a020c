//! What the Kafka tests share (librdkafka's mock cluster and Apache Kafka): the stream,
//! producing it, the connector's config and process, and checking the tables.

#![allow(dead_code)]

use iceberg_cdc_merge::{Catalog, CatalogConfig};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use testkit::readers::{self, PyCatalog};
use testkit::stream::{generate, table_rows, Generated, Spec};
use testkit::SinkConfig;

/// A setting of the servers `tests/run.sh` starts (`what` names them), or a panic saying so.
pub fn env_var(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: `bash tests/run.sh` starts {what} and sets it")
    })
}

/// `.` as a regular expression wants it.
fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// The Debezium topics of a logical server, for creating them.
pub fn topics(server: &str) -> Vec<String> {
    tables().iter().map(|t| format!("{server}.{t}")).collect()
}

pub const PARTITIONS: i32 = 3;

/// A Debezium server name of the caller's own on the broker at `bootstrap`, with its topics
/// created ([`PARTITIONS`] each).
pub fn new_server(bootstrap: &str, purpose: &str) -> String {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let server = format!("{purpose}{}x{nanos}", std::process::id());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let names = topics(&server);
    let new: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let results = futures::executor::block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .unwrap();
    for r in results {
        assert!(r.is_ok(), "creating a topic: {r:?}");
    }
    server
}

pub fn tables() -> Vec<String> {
    vec![
        "public.orders".to_owned(),
        "public.items".to_owned(),
        "sales.refunds".to_owned(),
    ]
}

pub fn stream(events: usize, seed: u64) -> Generated {
    generate(&Spec {
        events,
        keys: 400,
        tables: tables(),
        seed,
        bad_every: Some(397),
        two_column_key: false,
        ..Spec::default()
    })
}

/// A key's partition: the same for every event of the key, so per-key order holds.
pub fn partition_of(key: &[u8]) -> i32 {
    let h = key.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    (h % PARTITIONS as u64) as i32
}

pub fn config(dir: &Path, bootstrap: &str, server: &str) -> PathBuf {
    let source = format!(
        "    type: kafka\n    kafka:\n      bootstrap-servers: {bootstrap}\n      \
         group-id: {server}-iceberg\n      topic-pattern: '{pattern}\\..*'\n      \
         auto-offset-reset: earliest\n      options:\n        \
         topic.metadata.refresh.interval.ms: \"500\"\n",
        pattern = regex_escape(server),
    );
    SinkConfig {
        catalog: String::new(),
        name: "kafka-test-sink",
        dir,
        source,
        warehouse: String::new(),
        params: "",
        extra: "  batch:\n    max-records: 300\n    interval-ms: 500\n  tables:\n    partition-by: month(day)\n",
    }
    .write()
}

/// [`config`] with a consumer-group subscription instead of manual assignment.
pub fn group_config(dir: &Path, bootstrap: &str, server: &str) -> PathBuf {
    let path = config(dir, bootstrap, server);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "      auto-offset-reset: earliest\n",
        "      auto-offset-reset: earliest\n      assignment: group\n",
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env_remove("BOOTSTRAP_SERVER_URL")
        .spawn()
        .unwrap()
}

/// A connector process killed when dropped, so that a failing test leaves none behind.
pub struct Running(pub Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// [`start`], logging at `info` to `log`.
pub fn start_logged(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,iceberg_cdc_sink=debug")
        .env("NO_COLOR", "1")
        .env_remove("BOOTSTRAP_SERVER_URL")
        .stderr(std::fs::File::create(log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn catalog(dir: &Path) -> Catalog {
    Catalog::connect(&CatalogConfig {
        name: "cdc".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: format!("file://{}/warehouse", dir.display()),
        s3: Default::default(),
        rest: None,
    })
    .await
    .unwrap()
}

/// The tables of the test catalog in `dir`, as `namespace.table`.
pub fn table_names(dir: &Path) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut names: Vec<String> = catalog(dir)
            .await
            .list_tables()
            .await
            .unwrap()
            .iter()
            .map(|t| t.to_string())
            .collect();
        names.sort();
        names
    })
}

/// Per partition, the highest position below which the tables hold everything.
pub fn durable_positions(dir: &Path) -> BTreeMap<String, i64> {
    if !dir.join("catalog.db").exists() {
        return BTreeMap::new();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let catalog = catalog(dir).await;
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
pub fn wait_until_durable(dir: &Path, ends: &BTreeMap<String, i64>, child: &mut Child) {
    let started = Instant::now();
    loop {
        let at = durable_positions(dir);
        if ends
            .iter()
            .all(|(p, end)| at.get(p).is_some_and(|o| o >= end))
        {
            return;
        }
        let exited = child.try_wait().unwrap();
        if exited.is_some() || started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "not durable ({exited:?} after {:?}): at {at:?}, wanted {ends:?}",
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Starts the connector and kills it with SIGKILL, ten times, each after `at_least` plus up
/// to 2.5 s (random, from `seed`).
pub fn kill_nine_ten_times(config: &Path, seed: u64, at_least: Duration) {
    let mut rng = testkit::Lcg(seed);
    for _ in 0..10 {
        let mut child = start(config);
        std::thread::sleep(at_least + Duration::from_millis(rng.below(2500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
}

pub fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "connector exited with {status} after SIGTERM"
    );
}

/// A table of the test catalog in `dir` as PyIceberg and DuckDB read it, by id:
/// `(pyiceberg, duckdb)`.
pub fn read_table(dir: &Path, table: &str) -> (Value, Value) {
    let uri = format!("sqlite://{}/catalog.db", dir.display());
    let catalog = PyCatalog {
        uri: &uri,
        name: "cdc",
        s3: None,
    };
    readers::read_by_id(&catalog, table, &["id", "name", "price", "qty", "day"])
}

pub fn check(dir: &Path, stream: &Generated) {
    for table in tables() {
        let (py, duck) = read_table(dir, &table);
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

/// Produces the stream into the Debezium topics `<server>.<schema>.<table>` (which exist),
/// each key to its partition; returns how many messages went to each partition.
pub fn produce(bootstrap: &str, server: &str, stream: &Generated) -> BTreeMap<String, i64> {
    produce_where(bootstrap, server, stream, |_| true)
}

/// [`produce`], only the messages of the topics `wanted` takes.
pub fn produce_where(
    bootstrap: &str,
    server: &str,
    stream: &Generated,
    wanted: impl Fn(&str) -> bool,
) -> BTreeMap<String, i64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for (topic, key, value) in stream.kafka_messages(server) {
        if !wanted(&topic) {
            continue;
        }
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

/// The offsets the consumer group `group` holds for `partitions` (`topic/n` names), as
/// another client of the group reads them; a partition without one is left out.
pub fn group_offsets(bootstrap: &str, group: &str, partitions: &[String]) -> BTreeMap<String, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for name in partitions {
        let (topic, n) = name.rsplit_once('/').unwrap();
        tpl.add_partition(topic, n.parse().unwrap());
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((format!("{}/{}", e.topic(), e.partition()), o)),
            _ => None,
        })
        .collect()
}
