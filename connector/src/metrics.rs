//! What the connector counts while it runs, for Prometheus (`/metrics`) and for Fluvio's
//! connector-metrics socket; and what `/health` and `/ready` answer. Every stage reports here
//! through [`Metrics`] (cheap to clone, atomics inside); [`crate::endpoint`] serves it.
//!
//! The names are stable; README "Metrics and health" lists them.

use crate::dead_letter::DeadLetterReason;
use debezium_cdc::record::Op;
use iceberg_cdc_merge::Applied;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every metric name starts with this.
pub const PREFIX: &str = "iceberg_cdc";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableOp {
    table: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableOutcome {
    table: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The `op` label: Debezium's code of the operation.
fn op_label(op: Op) -> &'static str {
    match op {
        Op::Create => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Read => "r",
        Op::Truncate => "t",
        Op::Message => "m",
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Registers `metric` under `name` and hands it back (clones share the values).
fn register<M>(r: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    r.register(name, help, metric.clone());
    metric
}

fn seconds() -> Histogram {
    // 5 ms .. ~80 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

fn sizes() -> Histogram {
    // 1 .. ~1M changes
    Histogram::new(exponential_buckets(1.0, 4.0, 11))
}

struct Inner {
    registry: Registry,
    records_read: Family<PartitionLabel, Counter>,
    /// All partitions' (not registered: the sum of `records_read`).
    records_total: Counter,
    bytes_read: Counter,
    changes: Family<TableOp, Counter>,
    dead_letters: Family<ReasonLabel, Counter>,
    commits: Family<TableOutcome, Counter>,
    commit_seconds: Histograms<TableLabel>,
    commit_conflicts: Family<TableLabel, Counter>,
    batch_changes: Histograms<TableLabel>,
    rows_upserted: Family<TableLabel, Counter>,
    rows_deleted: Family<TableLabel, Counter>,
    source_lag: Family<PartitionLabel, Gauge>,
    table_paused: Family<TableLabel, Gauge>,
    key_index_keys: Family<TableLabel, Gauge>,
    renewals: Counter,
    transformed_bytes: Counter,
    transformed_records: Counter,
    transform_calls: Counter,
    transform_micros: Counter,
    maintenance_runs: Family<TableOutcome, Counter>,
    maintenance_seconds: Histograms<TableLabel>,
    scraped: Arc<AtScrape>,
    health: Health,
}

/// What is worked out when scraped: seconds since each table's last commit, the process'
/// resident memory.
#[derive(Debug, Default)]
struct AtScrape {
    last_commit: Mutex<HashMap<String, Instant>>,
}

impl Collector for AtScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let since: Vec<(String, f64)> = match self.last_commit.lock() {
            Ok(last) => last
                .iter()
                .map(|(t, at)| (t.clone(), at.elapsed().as_secs_f64()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let name = format!("{PREFIX}_seconds_since_last_commit");
        let mut family = encoder.encode_descriptor(
            &name,
            "Seconds since the table's last commit by this process",
            None,
            MetricType::Gauge,
        )?;
        for (table, s) in since {
            ConstGauge::new(s).encode(family.encode_family(&TableLabel { table })?)?;
        }
        if let Some(rss) = resident_bytes() {
            let m = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory of the process, in bytes",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(rss as i64).encode(m)?;
        }
        Ok(())
    }
}

/// The process' resident memory (`VmRSS` of /proc/self/status), where there is a /proc.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What `/health` and `/ready` answer from.
struct Health {
    started: Instant,
    /// Milliseconds after `started` of the run loop's last round.
    beat_ms: AtomicU64,
    tables_open: AtomicBool,
    source_connected: AtomicBool,
    paused: Mutex<Vec<String>>,
}

/// The run's metrics; clones share them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let scraped = Arc::new(AtScrape::default());
        root.register_collector(Box::new(Arc::clone(&scraped)));
        let r = root.sub_registry_with_prefix(PREFIX);
        let inner = Inner {
            records_read: register(r, "source_records_read", "Source records read, per source partition", Family::default()),
            records_total: Counter::default(),
            bytes_read: register(r, "source_bytes_read", "Bytes of source records read (keys and values)", Counter::default()),
            changes: register(r, "changes", "Changes batched for a table, by Debezium operation (c, u, d, r, t)", Family::default()),
            dead_letters: register(r, "dead_letters", "Records sent to the dead-letter destination, by reason", Family::default()),
            commits: register(r, "commits", "Commits of a batch to a table: applied, or refused (the table is paused)", Family::default()),
            commit_seconds: register(r, "commit_duration_seconds", "Time to commit a batch, retries included", Family::new_with_constructor(seconds)),
            commit_conflicts: register(r, "commit_conflicts", "Commit attempts lost to a concurrent commit (and retried)", Family::default()),
            batch_changes: register(r, "batch_changes", "Changes in each committed batch", Family::new_with_constructor(sizes)),
            rows_upserted: register(r, "rows_upserted", "Rows inserted or updated", Family::default()),
            rows_deleted: register(r, "rows_deleted", "Rows deleted", Family::default()),
            source_lag: register(r, "source_lag_records", "Records in the source partition not yet read (high watermark minus position), \
             updated with the progress line", Family::default()),
            table_paused: register(r, "table_paused", "1 while the table is paused (its changes go to the dead-letter destination)", Family::default()),
            key_index_keys: register(r, "key_index_keys", "Keys in the table's primary-key index: live rows and the tombstones of deleted ones", Family::default()),
            renewals: register(r, "smartmodule_renewals", "SmartModule instances replaced by fresh ones (after a call failed on one: its memory limit reached, or a trap)", Counter::default()),
            transformed_bytes: register(r, "smartmodule_bytes_in", "Bytes fed to the SmartModule chain in this process", Counter::default()),
            transformed_records: register(r, "smartmodule_records_out", "Records the SmartModule chain put out in this process", Counter::default()),
            transform_calls: register(r, "smartmodule_invocations", "Calls of the SmartModule chain (one per source chunk)", Counter::default()),
            transform_micros: register(r, "smartmodule_microseconds", "Time spent in the SmartModule chain, in microseconds", Counter::default()),
            maintenance_runs: register(r, "maintenance_runs", "Scheduled maintenance runs, by outcome (done, failed)", Family::default()),
            maintenance_seconds: register(r, "maintenance_duration_seconds", "Time of a scheduled maintenance run", Family::new_with_constructor(seconds)),
            scraped,
            health: Health {
                started: Instant::now(),
                beat_ms: AtomicU64::new(0),
                tables_open: AtomicBool::new(false),
                source_connected: AtomicBool::new(false),
                paused: Mutex::new(Vec::new()),
            },
            registry: root,
        };
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The Prometheus text exposition (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // writing to a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    pub fn read(&self, partition: &str, records: usize, bytes: usize) {
        let label = PartitionLabel {
            partition: partition.to_owned(),
        };
        self.inner
            .records_read
            .get_or_create(&label)
            .inc_by(records as u64);
        self.inner.records_total.inc_by(records as u64);
        self.inner.bytes_read.inc_by(bytes as u64);
    }

    /// One change batched (once per record: no allocation for the operation).
    pub fn change(&self, table: &str, op: Op) {
        let label = TableOp {
            table: table.to_owned(),
            op: op_label(op),
        };
        self.inner.changes.get_or_create(&label).inc();
    }

    pub fn dead_letter(&self, reason: DeadLetterReason) {
        let label = ReasonLabel {
            reason: reason.label(),
        };
        self.inner.dead_letters.get_or_create(&label).inc();
    }

    /// A batch of `changes` committed: what it did, how long it took, the key index after.
    pub fn committed(
        &self,
        table: &str,
        changes: usize,
        applied: &Applied,
        took: Duration,
        keys: usize,
    ) {
        let t = TableLabel {
            table: table.to_owned(),
        };
        let i = &self.inner;
        i.commits
            .get_or_create(&TableOutcome {
                table: table.to_owned(),
                outcome: "applied",
            })
            .inc();
        i.commit_seconds
            .get_or_create(&t)
            .observe(took.as_secs_f64());
        i.commit_conflicts
            .get_or_create(&t)
            .inc_by(u64::from(applied.conflicts));
        i.batch_changes.get_or_create(&t).observe(changes as f64);
        i.rows_upserted.get_or_create(&t).inc_by(applied.upserts);
        i.rows_deleted.get_or_create(&t).inc_by(applied.deletes);
        i.key_index_keys.get_or_create(&t).set(keys as i64);
        if let Ok(mut last) = i.scraped.last_commit.lock() {
            last.insert(table.to_owned(), Instant::now());
        }
    }

    /// A batch the table refused (it pauses).
    pub fn refused(&self, table: &str) {
        let label = TableOutcome {
            table: table.to_owned(),
            outcome: "refused",
        };
        self.inner.commits.get_or_create(&label).inc();
    }

    /// A table opened (or created): its key index's size.
    pub fn table_opened(&self, table: &str, keys: usize) {
        let t = TableLabel {
            table: table.to_owned(),
        };
        self.inner.key_index_keys.get_or_create(&t).set(keys as i64);
        self.inner.table_paused.get_or_create(&t).set(0);
    }

    pub fn paused(&self, table: &str) {
        let t = TableLabel {
            table: table.to_owned(),
        };
        self.inner.table_paused.get_or_create(&t).set(1);
        if let Ok(mut p) = self.inner.health.paused.lock() {
            if !p.iter().any(|x| x == table) {
                p.push(table.to_owned());
            }
        }
    }

    pub fn lag(&self, partition: &str, records: i64) {
        let label = PartitionLabel {
            partition: partition.to_owned(),
        };
        self.inner.source_lag.get_or_create(&label).set(records);
    }

    pub fn renewed(&self) {
        self.inner.renewals.inc();
    }

    /// One call of the SmartModule chain.
    pub fn transformed(&self, bytes_in: usize, records_out: usize, took: Duration) {
        let i = &self.inner;
        i.transformed_bytes.inc_by(bytes_in as u64);
        i.transformed_records.inc_by(records_out as u64);
        i.transform_calls.inc();
        i.transform_micros.inc_by(took.as_micros() as u64);
    }

    pub fn maintained(&self, table: &str, done: bool, took: Duration) {
        let label = TableOutcome {
            table: table.to_owned(),
            outcome: if done { "done" } else { "failed" },
        };
        self.inner.maintenance_runs.get_or_create(&label).inc();
        self.inner
            .maintenance_seconds
            .get_or_create(&TableLabel {
                table: table.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The run loop came round.
    pub fn beat(&self) {
        let h = &self.inner.health;
        h.beat_ms
            .store(h.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn tables_open(&self) {
        self.beat();
        self.inner.health.tables_open.store(true, Ordering::Relaxed);
    }

    pub fn source_connected(&self, connected: bool) {
        self.inner
            .health
            .source_connected
            .store(connected, Ordering::Relaxed);
    }

    /// `/health`: `Ok` while the run loop came round within `stall_after`.
    pub fn health(&self, stall_after: Duration) -> Result<String, String> {
        let h = &self.inner.health;
        let beat = Duration::from_millis(h.beat_ms.load(Ordering::Relaxed));
        let quiet = h.started.elapsed().saturating_sub(beat);
        if quiet > stall_after {
            Err(format!(
                "the run loop has not come round for {}s",
                quiet.as_secs()
            ))
        } else {
            Ok("alive".to_owned())
        }
    }

    /// `/ready`: `Ok` once the tables are open and the source connected, while no table is
    /// paused; else what is missing.
    pub fn ready(&self) -> Result<String, String> {
        let h = &self.inner.health;
        let mut missing = Vec::new();
        if !h.tables_open.load(Ordering::Relaxed) {
            missing.push("the tables are being opened".to_owned());
        }
        if !h.source_connected.load(Ordering::Relaxed) {
            missing.push("the source is not connected".to_owned());
        }
        if let Ok(p) = h.paused.lock() {
            if !p.is_empty() {
                missing.push(format!("paused: {}", p.join(", ")));
            }
        }
        if missing.is_empty() {
            Ok("ready".to_owned())
        } else {
            Err(missing.join("; "))
        }
    }

    /// Fluvio's connector-metrics document: what its own connectors report on their socket
    /// (`consumer`, `producer_connector`, `producer_client`, `smartmodules`), from the same
    /// counters as `/metrics`.
    pub fn fluvio_document(&self, smartmodule: &str) -> serde_json::Value {
        let i = &self.inner;
        let micros = i.transform_micros.get();
        json!({
            "consumer": {"records": i.records_total.get(), "bytes": i.bytes_read.get()},
            "producer_connector": {"records": 0, "bytes": 0},
            "producer_client": {"records": 0, "bytes": 0},
            "smartmodules": {
                smartmodule: {
                    "bytes_in": i.transformed_bytes.get(),
                    "records_out": i.transformed_records.get(),
                    "records_err": self.dead_letters_of(DeadLetterReason::Refused),
                    "invocation_count": i.transform_calls.get(),
                    "fuel_used": 0,
                    "cpu_ms": micros / 1000,
                    "smartmodule_names": [smartmodule],
                }
            }
        })
    }

    fn dead_letters_of(&self, reason: DeadLetterReason) -> u64 {
        self.inner
            .dead_letters
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .get()
    }
}
