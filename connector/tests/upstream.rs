//! The real upstream, end to end (the suite's centrepiece): a seeded SQL workload on
//! PostgreSQL (wal_level=logical) -> Debezium's PostgreSQL connector (pgoutput) in a Kafka
//! Connect standalone worker, JSON with schemas -> Apache Kafka (KRaft) -> two connector
//! processes in one consumer group -> Iceberg tables in a SQLite catalog. Then every table,
//! read by Spark SQL, PyIceberg and DuckDB, equals `SELECT *` of its PostgreSQL table.
//!
//! On the way: Debezium's snapshot of existing rows, schema changes mid-stream, a TRUNCATE,
//! primary-key updates, the Connect worker killed (Debezium re-sends from its last flushed
//! offset), connector processes `kill -9`ed (the group rebalances), the broker stopped for
//! 20 s, and Spark as a foreign writer (compaction and a property change) racing our
//! commits. `tests/run.sh` starts PostgreSQL, Kafka and Spark (tests/postgres.sh,
//! tests/kafka.sh, tests/spark.sh).

mod kafka;

use kafka::{durable_positions, Running};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::readers::{self, PyCatalog};
use testkit::workload::{self, Workload, PARTITION_COLUMN, TABLES};
use testkit::{spark, SinkConfig};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: `bash tests/run.sh` starts PostgreSQL, Kafka and Spark and sets it"
        )
    })
}

/// The servers `tests/run.sh` started.
struct Upstream {
    /// A database on the source server, to create others from.
    admin_uri: String,
    bootstrap: String,
    kafka_script: String,
    /// The Kafka/Connect/Debezium classpath.
    jars: PathBuf,
}

impl Upstream {
    fn from_env() -> Upstream {
        Upstream {
            admin_uri: var("CDC_TEST_POSTGRES_URI"),
            bootstrap: var("CDC_TEST_KAFKA_BOOTSTRAP"),
            kafka_script: var("CDC_TEST_KAFKA_SCRIPT"),
            jars: PathBuf::from(var("CDC_TEST_UPSTREAM_DIR")).join("kafka"),
        }
    }

    fn broker(&self, what: &str) {
        let status = Command::new("bash")
            .arg(&self.kafka_script)
            .arg(what)
            .status()
            .unwrap();
        assert!(status.success(), "tests/kafka.sh {what}");
    }

    /// High watermarks of the topics whose names start with `prefix.`, as `topic/partition`.
    fn ends(&self, prefix: &str) -> BTreeMap<String, i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let mut out = BTreeMap::new();
        for topic in metadata.topics() {
            if !topic.name().starts_with(&format!("{prefix}.")) {
                continue;
            }
            for p in topic.partitions() {
                // a topic Debezium just created may not have its leader yet: the broker
                // says so (NotLeaderForPartition, LeaderNotAvailable) until it has
                let mut tries = 0;
                let high = loop {
                    match consumer.fetch_watermarks(topic.name(), p.id(), Duration::from_secs(10)) {
                        Ok((_, high)) => break high,
                        Err(e) if tries < 60 => {
                            tries += 1;
                            eprintln!("watermarks of {}/{} (retrying): {e}", topic.name(), p.id());
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Err(e) => panic!("watermarks of {}/{}: {e}", topic.name(), p.id()),
                    }
                };
                out.insert(format!("{}/{}", topic.name(), p.id()), high);
            }
        }
        out
    }

    /// How many change events the topics of `prefix` hold more than once (the same key,
    /// operation and LSN): Debezium's re-sends after a restart.
    fn events_sent_twice(&self, prefix: &str) -> usize {
        use rdkafka::message::Message;
        let ends = self.ends(prefix);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("{prefix}-replays"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = rdkafka::TopicPartitionList::new();
        for p in ends.keys() {
            let (topic, n) = p.rsplit_once('/').unwrap();
            list.add_partition_offset(topic, n.parse().unwrap(), rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        let total: i64 = ends.values().sum();
        let mut seen = std::collections::HashSet::new();
        let (mut read, mut twice) = (0, 0);
        let started = Instant::now();
        while read < total && started.elapsed() < Duration::from_secs(60) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            read += 1;
            let Some(value) = m.payload() else { continue };
            let v: Value = serde_json::from_slice(value).unwrap_or_default();
            let payload = &v["payload"];
            let event = (
                m.topic().to_owned(),
                m.key().map(<[u8]>::to_vec),
                payload["op"].to_string(),
                payload["source"]["lsn"].to_string(),
            );
            if !seen.insert(event) {
                twice += 1;
            }
        }
        assert_eq!(read, total, "read {read} of {total} messages back");
        twice
    }
}

/// A Kafka Connect standalone worker running Debezium's PostgreSQL connector.
struct Connect {
    dir: PathBuf,
    jars: PathBuf,
    child: Option<Child>,
}

impl Connect {
    fn new(dir: &Path, up: &Upstream, database: &str, prefix: &str) -> Connect {
        std::fs::create_dir_all(dir).unwrap();
        let tables = TABLES.join(",");
        let (host, port) = source_host_port(&up.admin_uri);
        let worker = format!(
            "bootstrap.servers={bootstrap}\n\
             key.converter=org.apache.kafka.connect.json.JsonConverter\n\
             value.converter=org.apache.kafka.connect.json.JsonConverter\n\
             key.converter.schemas.enable=true\n\
             value.converter.schemas.enable=true\n\
             offset.storage.file.filename={dir}/offsets\n\
             offset.flush.interval.ms=1000\n\
             listeners=http://127.0.0.1:0\n\
             plugin.discovery=only_scan\n",
            bootstrap = up.bootstrap,
            dir = dir.display(),
        );
        // the settings the README gives users
        let debezium = format!(
            "name={prefix}\n\
             connector.class=io.debezium.connector.postgresql.PostgresConnector\n\
             tasks.max=1\n\
             plugin.name=pgoutput\n\
             database.hostname={host}\n\
             database.port={port}\n\
             database.user=debezium\n\
             database.password=debezium\n\
             database.dbname={database}\n\
             topic.prefix={prefix}\n\
             slot.name={prefix}\n\
             publication.name={prefix}\n\
             publication.autocreate.mode=filtered\n\
             table.include.list={tables}\n\
             snapshot.mode=initial\n\
             skipped.operations=none\n\
             topic.creation.default.replication.factor=1\n\
             topic.creation.default.partitions=3\n\
             topic.creation.groups=truncated\n\
             topic.creation.truncated.include={prefix}\\.public\\.order_lines\n\
             topic.creation.truncated.partitions=1\n",
        );
        std::fs::write(dir.join("worker.properties"), worker).unwrap();
        std::fs::write(dir.join("debezium.properties"), debezium).unwrap();
        Connect {
            dir: dir.to_owned(),
            jars: up.jars.clone(),
            child: None,
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("connect.log"))
            .unwrap();
        let child = Command::new("java")
            .args(["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                testkit::workspace()
                    .join("tests/upstream/log4j2.properties")
                    .display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.jars.display()))
            .arg("org.apache.kafka.connect.cli.ConnectStandalone")
            .arg(self.dir.join("worker.properties"))
            .arg(self.dir.join("debezium.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: offsets not yet flushed are lost, so Debezium re-sends from the last ones.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("Connect runs");
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(self.dir.join("connect.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!("the Connect worker exited ({status}); the log, newest first:\n{tail}");
        }
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        self.kill();
    }
}

fn source_host_port(uri: &str) -> (String, String) {
    let rest = uri.split_once('@').map_or(uri, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or_default();
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    (host.to_owned(), port.to_owned())
}

/// The connector's config: a consumer group over the Debezium topics of `prefix`, tables
/// partitioned by the month of `placed`, time-of-day columns as text (Spark reads them).
fn sink_config(dir: &Path, bootstrap: &str, prefix: &str) -> PathBuf {
    let source = format!(
        "    type: kafka\n    kafka:\n      bootstrap-servers: {bootstrap}\n      \
         group-id: {prefix}-iceberg\n      topic-pattern: '{prefix}\\..*'\n      \
         auto-offset-reset: earliest\n      assignment: group\n      options:\n        \
         topic.metadata.refresh.interval.ms: \"1000\"\n        \
         session.timeout.ms: \"6000\"\n        heartbeat.interval.ms: \"1000\"\n",
    );
    SinkConfig {
        catalog: String::new(),
        name: "upstream-test-sink",
        dir,
        source,
        warehouse: String::new(),
        params: "",
        extra: &format!(
            "  batch:\n    max-records: 500\n    interval-ms: 500\n  tables:\n    \
             partition-by: month({PARTITION_COLUMN})\n    time-columns: string\n"
        ),
    }
    .write()
}

/// Two connector processes in one consumer group.
struct Sinks {
    config: PathBuf,
    dir: PathBuf,
    members: [Running; 2],
}

impl Sinks {
    fn start(config: PathBuf, dir: &Path) -> Sinks {
        let member = |i: usize| {
            Running(Some(kafka::start_logged(
                &config,
                &dir.join(format!("sink-{i}.log")),
            )))
        };
        Sinks {
            members: [member(0), member(1)],
            config,
            dir: dir.to_owned(),
        }
    }

    /// `kill -9` of member `i`, then a new process in its place: the group rebalances.
    fn kill_nine_and_restart(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].0.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let log = self.dir.join(format!("sink-{i}.{}.log", unique()));
        self.members[i].0 = Some(kafka::start_logged(&self.config, &log));
    }

    fn assert_alive(&mut self) {
        for (i, m) in self.members.iter_mut().enumerate() {
            let child = m.0.as_mut().expect("member runs");
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "connector process {i} exited: {status} (logs in {})",
                    self.dir.display()
                );
            }
        }
    }

    fn wait_until_durable(&mut self, ends: &BTreeMap<String, i64>) {
        let started = Instant::now();
        loop {
            let at = durable_positions(&self.dir);
            if ends
                .iter()
                .all(|(p, end)| *end == 0 || at.get(p).is_some_and(|o| o >= end))
            {
                return;
            }
            self.assert_alive();
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "not durable after {:?}: at {at:?}, wanted {ends:?}",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn stop(mut self) {
        for m in self.members.iter_mut() {
            if let Some(child) = m.0.take() {
                kafka::stop(child);
            }
        }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Waits until Debezium has sent marker `id` (so everything committed before it), then
/// until the topics stop growing.
fn until_debezium_has_sent(up: &Upstream, prefix: &str, markers: i32, connect: &mut Connect) {
    let topic = format!("{prefix}.public.markers/");
    let started = Instant::now();
    loop {
        let sent: i64 = up
            .ends(prefix)
            .iter()
            .filter(|(p, _)| p.starts_with(&topic))
            .map(|(_, n)| n)
            .sum();
        if sent >= i64::from(markers) {
            break;
        }
        connect.assert_alive();
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "Debezium sent {sent} of {markers} markers in {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut last = up.ends(prefix);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = up.ends(prefix);
        if now == last {
            return;
        }
        last = now;
    }
}

/// Spark's own commits on our tables while the stream runs: a compaction that rewrites data
/// files with our position deletes applied, and a property change. Either may lose a race
/// with our commits (then Spark says so and this tries again); ours must never lose data.
fn spark_writes(catalog: &Value, rounds: usize) -> Vec<String> {
    let mut done = Vec::new();
    for round in 0..rounds {
        let statements = [
            "CALL cdc.system.rewrite_data_files(table => 'public.accounts', \
             options => map('min-input-files', '2', 'rewrite-all', 'true'))"
                .to_owned(),
            format!(
                "ALTER TABLE cdc.inventory.devices SET TBLPROPERTIES ('analytics.round' = '{round}')"
            ),
            "CALL cdc.system.rewrite_data_files(table => 'inventory.devices', \
             options => map('rewrite-all', 'true'))"
                .to_owned(),
        ];
        for sql in statements {
            for _attempt in 0..5 {
                match spark::sql(catalog, &sql) {
                    Ok(_) => {
                        done.push(sql.clone());
                        break;
                    }
                    Err(e) if e.contains("ValidationException") || e.contains("CommitFailed") => {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    Err(e) => panic!("Spark: {sql}: {e}"),
                }
            }
        }
    }
    done
}

#[test]
fn postgres_through_debezium_and_kafka_to_iceberg_equals_the_source_read_by_spark_pyiceberg_and_duckdb(
) {
    let up = Upstream::from_env();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let name = format!("e2e{}x{}", std::process::id(), unique() % 1_000_000_000);
    let source_uri = runtime
        .block_on(workload::create_database(&up.admin_uri, &name))
        .unwrap();
    let mut load = runtime
        .block_on(Workload::create(&source_uri, 20261201))
        .unwrap();
    // rows that exist before Debezium starts: its snapshot (op r)
    runtime.block_on(load.seed_rows(150)).unwrap();

    // kept when the test fails (its logs and tables), removed when it passes
    let dir = tempfile::Builder::new()
        .prefix("cdc-upstream-")
        .tempdir()
        .unwrap();
    let dir = Kept(dir.keep());
    let mut connect = Connect::new(&dir.path().join("connect"), &up, &name, &name);
    connect.start();
    let config = sink_config(dir.path(), &up.bootstrap, &name);
    let mut sinks = Sinks::start(config, dir.path());
    let warehouse = format!("file://{}/warehouse", dir.path().display());
    let catalog_uri = format!("sqlite://{}/catalog.db", dir.path().display());
    let spark_catalog = spark::catalog("cdc", &catalog_uri, &warehouse);

    // changes while Debezium snapshots (its worker takes seconds to start), then once it
    // streams: the faults below hit a live pipeline
    runtime.block_on(load.run(100)).unwrap();
    let markers = runtime.block_on(load.marker()).unwrap();
    until_debezium_has_sent(&up, &name, markers, &mut connect);
    runtime.block_on(load.run(300)).unwrap();
    sinks.kill_nine_and_restart(0);
    runtime.block_on(load.run(200)).unwrap();

    // the Connect worker killed while it streams changes (its offsets are flushed once a
    // second): Debezium resumes from its last flushed offset and sends changes again
    std::thread::scope(|s| {
        let changes = s.spawn(|| runtime.block_on(load.run(400)));
        std::thread::sleep(Duration::from_millis(700));
        connect.kill();
        changes.join().unwrap().unwrap();
    });
    connect.start();
    runtime.block_on(load.run(100)).unwrap();

    // DDL mid-stream
    runtime.block_on(load.change_schema()).unwrap();
    runtime.block_on(load.run(200)).unwrap();

    // Spark commits to our tables (which exist once the stream has caught up) while the
    // stream goes on
    let markers = runtime.block_on(load.marker()).unwrap();
    until_debezium_has_sent(&up, &name, markers, &mut connect);
    sinks.wait_until_durable(&up.ends(&name));
    let writes = std::thread::scope(|s| {
        let spark = s.spawn(|| spark_writes(&spark_catalog, 2));
        runtime.block_on(load.run(300)).unwrap();
        spark.join().unwrap()
    });
    assert!(!writes.is_empty(), "Spark committed nothing");

    // the broker down for 20 s while the database changes
    up.broker("stop");
    runtime.block_on(load.run(100)).unwrap();
    std::thread::sleep(Duration::from_secs(20));
    sinks.assert_alive();
    up.broker("start");

    runtime.block_on(load.truncate_lines(40)).unwrap();
    runtime.block_on(load.run(200)).unwrap();
    sinks.kill_nine_and_restart(1);
    runtime.block_on(load.run(150)).unwrap();
    sinks.kill_nine_and_restart(0);
    runtime.block_on(load.run(150)).unwrap();

    let markers = runtime.block_on(load.marker()).unwrap();
    until_debezium_has_sent(&up, &name, markers, &mut connect);
    let ends = up.ends(&name);
    sinks.wait_until_durable(&ends);
    sinks.stop();
    connect.kill();
    let resent = up.events_sent_twice(&name);
    assert!(
        resent > 0,
        "the Connect worker's kill made Debezium re-send nothing"
    );

    let catalog = PyCatalog {
        uri: &catalog_uri,
        name: "cdc",
        s3: None,
    };
    let tables: Vec<(String, String)> = TABLES
        .iter()
        .map(|t| (t.to_string(), t.to_string()))
        .collect();
    let report = readers::compare_with_source(&source_uri, &catalog, &warehouse, &tables);
    for (table, _) in &tables {
        let entry = &report[table.as_str()];
        assert!(
            entry["rows"].as_u64().unwrap_or(0) > 0 || table == "public.markers",
            "{table}: no rows in the source: {report}"
        );
        for reader in ["pyiceberg", "duckdb", "spark"] {
            assert_eq!(
                entry[reader], "equal",
                "{table} read by {reader} differs from PostgreSQL ({} transactions, Spark wrote {writes:?}); logs in {}",
                load.transactions,
                dir.path().display()
            );
        }
    }
    // nothing was dead-lettered: every change of a real source is one we take
    let dead = std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap_or_default();
    assert!(dead.is_empty(), "dead letters: {dead}");

    eprintln!(
        "Debezium sent {resent} events twice; {}",
        what_the_sinks_met(dir.path())
    );
    runtime.block_on(load.close());
    runtime
        .block_on(workload::drop_database(&up.admin_uri, &name))
        .unwrap();
    let _ = std::fs::remove_dir_all(dir.path());
}

/// From the connector processes' logs: how often a commit lost its compare-and-swap (to the
/// other member or to Spark) and how many replayed events were skipped.
fn what_the_sinks_met(dir: &Path) -> String {
    let mut conflicts = 0;
    let mut rebalances = 0;
    let mut stale = 0u64;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("sink-") {
            continue;
        }
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        conflicts += log.matches("commit conflict; reloading").count();
        rebalances += log.matches("partitions assigned").count();
        // the last summary line of each process: "…; N stale; …"
        if let Some(line) = log.lines().rev().find(|l| l.contains(" stale; ")) {
            let n = line
                .split("; ")
                .find_map(|part| part.strip_suffix(" stale"))
                .and_then(|n| n.trim().parse::<u64>().ok());
            stale += n.unwrap_or(0);
        }
    }
    format!(
        "the connector processes met {conflicts} commit conflicts, {rebalances} assignments \
         and skipped {stale} replayed (stale) events"
    )
}

/// A test directory left in place (a failed run's evidence).
struct Kept(PathBuf);

impl Kept {
    fn path(&self) -> &Path {
        &self.0
    }
}
