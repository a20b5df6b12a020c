//! The run loop: source -> transform -> route -> batch -> merge -> commit.
//!
//! Exactly-once into the tables: each commit stores, in its snapshot summary, the source
//! offsets it covers (`cdc.offsets`, per partition the next offset) and the low watermark
//! below which every record of every table was durable (`cdc.checkpoint`). On start the sink
//! reads them back, resumes each partition at the highest checkpoint, and skips, per table,
//! what that table already holds. The Fluvio consumer offsets only mirror progress.

use crate::batch::{Batches, Limits};
use crate::config::{parse_partition_by, ConnectorConfig, OffsetStart, SourceKind};
use crate::dead_letter::DeadLetter;
use crate::maintenance::{maintain_table, Schedule, TableMaintenance};
use crate::router::route;
use crate::source::file::{FileSource, LineFormat};
use crate::source::fluvio::OffsetMirror;
use crate::source::kafka::{KafkaHandle, Revocation};
use crate::source::Partition;
use crate::transform::{Arrival, Chain, Decoded, Step, Transformed};
use anyhow::{anyhow, bail, Context, Result};
use debezium_cdc::record::{CdcRecord, Op};
use iceberg::TableIdent;
use iceberg_cdc_merge::files::WriteOptions;
use iceberg_cdc_merge::schema::{MetadataColumns, Partitioning};
use iceberg_cdc_merge::table::newest_in_history;
use iceberg_cdc_merge::{Catalog, CdcTable, TableOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const CONNECTOR_KEY: &str = "cdc.connector";
pub const OFFSETS_KEY: &str = "cdc.offsets";
pub const CHECKPOINT_KEY: &str = "cdc.checkpoint";

/// Where `smartmodule/build-wasm.sh` puts our SmartModule.
pub const DEFAULT_WASM: &str = "target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm";
pub const SMARTMODULE_NAME: &str = "cdc-iceberg/debezium-cdc@0.1.0";

/// Source records read per loop turn.
const CHUNK: usize = 2000;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub read: u64,
    pub changes: BTreeMap<char, u64>,
    pub dead_lettered: u64,
    pub stale: u64,
    pub skipped_committed: u64,
    pub commits: u64,
    pub last_commit_ms: Option<u128>,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ops: Vec<String> = self
            .changes
            .iter()
            .map(|(op, n)| format!("{op}={n}"))
            .collect();
        write!(
            f,
            "read {} messages; changes [{}]; {} commits (last {} ms); {} dead-lettered; {} stale; {} already committed",
            self.read,
            ops.join(" "),
            self.commits,
            self.last_commit_ms.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            self.dead_lettered,
            self.stale,
            self.skipped_committed,
        )
    }
}

struct TableState {
    table: CdcTable,
    /// partition -> next offset this table already holds.
    committed: BTreeMap<Partition, i64>,
    /// Its `iceberg.maintenance` settings, resolved once.
    maintenance: TableMaintenance,
}

pub struct Sink {
    config: ConnectorConfig,
    catalog: Catalog,
    options: TableOptions,
    tables: HashMap<TableIdent, TableState>,
    batches: Batches,
    limits: Limits,
    dead: DeadLetter,
    next_read: BTreeMap<Partition, i64>,
    maintenance: Schedule,
    /// Tables that cannot go on until an operator acts, and why: their changes are
    /// dead-lettered and held back from the checkpoint, so a restart reads them again.
    paused: HashMap<TableIdent, String>,
    /// Per partition, the highest checkpoint the tables' newest commits record (this
    /// member's and the other group members'): where a partition assigned later starts.
    tables_at: BTreeMap<Partition, i64>,
    pub stats: Stats,
}

/// Offsets by partition name: `{"0":13}` (Fluvio, a file), `{"shop.public.orders/2":881}`
/// (Kafka).
fn offsets_json(offsets: &BTreeMap<Partition, i64>) -> String {
    let named: BTreeMap<&str, i64> = offsets.iter().map(|(p, o)| (p.as_str(), *o)).collect();
    serde_json::to_string(&named).unwrap_or_else(|_| "{}".into())
}

fn parse_offsets(text: Option<&String>) -> BTreeMap<Partition, i64> {
    text.and_then(|t| serde_json::from_str::<BTreeMap<String, i64>>(t).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(p, o)| (Partition::named(&p), o))
        .collect()
}

/// The summary properties of a commit: this connector's name, the offsets the table holds
/// and the checkpoint. Members of one consumer group (one connector name, partitions split
/// between them) commit to the same tables, each knowing its own partitions: each partition
/// goes in at the higher of ours and what the table's newest commit of this connector says,
/// so no member's commit hides another's progress. (A partition has one owner at a time and
/// its positions only grow, so the higher one is the true one.)
fn summary_properties(
    name: &str,
    current: Option<&HashMap<String, String>>,
    offsets: &BTreeMap<Partition, i64>,
    checkpoint: &BTreeMap<Partition, i64>,
) -> HashMap<String, String> {
    let ours = current.filter(|c| c.get(CONNECTOR_KEY).map(String::as_str) == Some(name));
    let carried = |key: &str, mine: &BTreeMap<Partition, i64>| {
        let mut merged = parse_offsets(ours.and_then(|c| c.get(key)));
        for (p, &o) in mine {
            let at = merged.entry(p.clone()).or_insert(o);
            *at = (*at).max(o);
        }
        offsets_json(&merged)
    };
    HashMap::from([
        (CONNECTOR_KEY.to_owned(), name.to_owned()),
        (OFFSETS_KEY.to_owned(), carried(OFFSETS_KEY, offsets)),
        (
            CHECKPOINT_KEY.to_owned(),
            carried(CHECKPOINT_KEY, checkpoint),
        ),
    ])
}

/// Where progress goes besides the tables: the source's own offsets, for monitoring.
enum Progress {
    None,
    Fluvio(OffsetMirror),
    Kafka(KafkaHandle),
}

impl Progress {
    fn durable(&self, watermarks: &BTreeMap<Partition, i64>) {
        match self {
            Progress::None => {}
            Progress::Fluvio(m) => m.durable(watermarks),
            Progress::Kafka(k) => k.durable(watermarks),
        }
    }

    /// Where the tables are (with other group members' progress): for later assignments.
    fn tables_at(&self, positions: &BTreeMap<Partition, i64>) {
        if let Progress::Kafka(k) = self {
            k.tables_at(positions);
        }
    }

    async fn high_watermarks(&self) -> Option<BTreeMap<Partition, i64>> {
        match self {
            Progress::Fluvio(m) => {
                tokio::time::timeout(Duration::from_secs(2), m.high_watermarks())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            _ => None,
        }
    }

    async fn close(self, next_read: &BTreeMap<Partition, i64>) {
        match self {
            Progress::None => {}
            Progress::Fluvio(m) => {
                m.durable(next_read);
                m.settle(Duration::from_secs(10)).await;
            }
            Progress::Kafka(k) => {
                k.durable(next_read);
                let _ = tokio::task::spawn_blocking(move || k.close()).await;
            }
        }
    }

    /// The revocations of partitions (Kafka rebalances), for the transform stage to hand on
    /// in order with the chunks.
    fn take_revocations(&mut self) -> Option<tokio::sync::mpsc::Receiver<Revocation>> {
        match self {
            Progress::Kafka(k) => k.take_revocations(),
            _ => None,
        }
    }
}

impl Sink {
    pub async fn open(config: ConnectorConfig) -> Result<Sink> {
        let c = &config.iceberg;
        let catalog = Catalog::connect(&config.catalog_config()).await?;
        let metadata_columns = if c.tables.legacy_columns {
            MetadataColumns::Legacy
        } else {
            MetadataColumns::Cdc
        };
        let partitioning = match &c.tables.partition_by {
            None => None,
            Some(p) => Some(match parse_partition_by(p)? {
                None => Partitioning::None,
                Some((column, transform)) => Partitioning::Column { column, transform },
            }),
        };
        let mut write = WriteOptions::default();
        if let Some(size) = c.tables.target_file_size {
            write.target_file_size = size.0 as usize;
        }
        let defaults = TableOptions::default();
        let options = TableOptions {
            partitioning,
            metadata_columns,
            write,
            tombstone_retention: c
                .tables
                .tombstone_retention
                .unwrap_or(defaults.tombstone_retention),
            time_columns: c.tables.time_columns.0,
            ..defaults
        };
        let limits = Limits {
            max_records: c.batch.max_records,
            max_bytes: c.batch.max_bytes.0,
            interval: Duration::from_millis(c.batch.interval_ms),
        };
        let dead = match c.dead_letter.as_ref().and_then(|d| d.topic.as_deref()) {
            Some(topic) => DeadLetter::to_topic(topic).await?,
            None => DeadLetter::to_file(c.dead_letter.as_ref().and_then(|d| d.file.clone()))?,
        };
        let mut sink = Sink {
            config,
            catalog,
            options,
            tables: HashMap::new(),
            batches: Batches::default(),
            limits,
            dead,
            next_read: BTreeMap::new(),
            maintenance: Schedule::default(),
            paused: HashMap::new(),
            tables_at: BTreeMap::new(),
            stats: Stats::default(),
        };
        sink.load_committed_tables().await?;
        Ok(sink)
    }

    /// Opens every table this connector has committed to, with the offsets it holds. Tables
    /// of the catalog that it did not write (an analyst's, another connector's) are left
    /// alone: not even their files are read.
    async fn load_committed_tables(&mut self) -> Result<()> {
        let name = self.config.meta.name.clone();
        for ident in self.catalog.list_tables().await? {
            let Some(table) = self.catalog.load(&ident).await? else {
                continue;
            };
            let ours = newest_in_history(table.metadata(), |s| {
                s.summary()
                    .additional_properties
                    .contains_key(CONNECTOR_KEY)
            })
            .map(|s| s.summary().additional_properties.clone())
            .filter(|summary| summary.get(CONNECTOR_KEY) == Some(&name));
            let Some(summary) = ours else {
                continue;
            };
            let committed = parse_offsets(summary.get(OFFSETS_KEY));
            for (p, w) in parse_offsets(summary.get(CHECKPOINT_KEY)) {
                let start = self.next_read.entry(p).or_insert(w);
                *start = (*start).max(w);
            }
            let table = match CdcTable::load(table, self.options_for(&ident)).await {
                Ok(t) => t,
                Err(e) if !e.is_retryable() => {
                    self.pause(&ident, format!("it cannot be opened: {e}"));
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("opening {ident}")),
            };
            tracing::info!(table = %ident, offsets = %offsets_json(&committed), "resuming");
            let state = self.table_state(&ident, table, committed);
            self.tables.insert(ident, state);
        }
        Ok(())
    }

    /// The table options of one table (its schema-change behaviour).
    fn options_for(&self, ident: &TableIdent) -> TableOptions {
        TableOptions {
            schema_changes: self.config.iceberg.tables.schema_changes_of(ident),
            ..self.options.clone()
        }
    }

    /// Pauses a table: said once, at ERROR; from now on its changes are dead-lettered and
    /// held back (see [`Batches::hold`]); the other tables go on.
    fn pause(&mut self, ident: &TableIdent, reason: String) {
        tracing::error!(
            table = %ident,
            "table paused: {reason}. Its changes go to the dead-letter destination and are not \
             counted as applied: fix the table, then restart the connector to apply them \
             (README, \"Schema changes\")"
        );
        self.paused.insert(ident.clone(), reason);
    }

    /// Dead-letters one change of a paused table and holds its position back.
    async fn hold(
        &mut self,
        ident: &TableIdent,
        p: &Partition,
        off: i64,
        value: &[u8],
    ) -> Result<()> {
        self.batches.hold(ident, p, off);
        let reason = self.paused.get(ident).cloned().unwrap_or_default();
        self.dead
            .send(p, off, &format!("table {ident} is paused: {reason}"), value)
            .await
    }

    /// Where each partition resumes.
    pub fn resume_positions(&self) -> &BTreeMap<Partition, i64> {
        &self.next_read
    }

    /// The `transforms:` chain, one instance per transform worker.
    fn chains(&self) -> Result<Vec<Chain>> {
        let steps = self
            .config
            .transforms
            .iter()
            .map(|t| {
                let wasm = match self.config.iceberg.smartmodules.get(&t.uses) {
                    Some(path) => path.clone(),
                    None if t.uses == SMARTMODULE_NAME => PathBuf::from(DEFAULT_WASM),
                    None => bail!(
                        "transforms: `{}` has no local .wasm; add it under iceberg.smartmodules",
                        t.uses
                    ),
                };
                Ok(Step {
                    name: t.uses.clone(),
                    wasm,
                    params: t.params()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if steps.is_empty() {
            bail!("the file source needs the debezium-cdc SmartModule under transforms:");
        }
        (0..crate::transform::workers())
            .map(|_| Chain::new(&steps))
            .collect()
    }

    /// Runs until the source ends or `stop` turns true; then commits what is open.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let (chunks, chains, mut progress) = match self.config.iceberg.source.kind {
            SourceKind::File => {
                let source_cfg = &self.config.iceberg.source;
                let path = source_cfg.path.clone().unwrap_or_default();
                let format = LineFormat::parse(source_cfg.format.as_deref().unwrap_or("value"))?;
                let only = Partition::fluvio(0);
                let start = match self.next_read.get(&only) {
                    Some(&checkpoint) => checkpoint,
                    None => match self.config.start() {
                        OffsetStart::Beginning => 0,
                        OffsetStart::Absolute(n) if n >= 0 => n,
                        other => bail!("offset start {other:?} does not apply to a file"),
                    },
                };
                let source = FileSource::open(&path, format, start)?;
                self.next_read.insert(only, start);
                tracing::info!(path, start, "reading");
                (
                    crate::source::file::spawn(source, CHUNK),
                    self.chains()?,
                    Progress::None,
                )
            }
            SourceKind::Fluvio => {
                let (rx, mirror) =
                    crate::source::fluvio::spawn(&self.config, &self.next_read, CHUNK).await?;
                tracing::info!(topic = self.config.meta.topic.name(), "consuming");
                (rx, Vec::new(), Progress::Fluvio(mirror))
            }
            SourceKind::Kafka => {
                let section = self.config.iceberg.source.kafka.clone().unwrap_or_default();
                let group = self.config.consumer_group();
                let (rx, handle) =
                    crate::source::kafka::spawn(&section, &group, &self.next_read, CHUNK)?;
                tracing::info!(topics = ?section.subscription(), group, "consuming from Kafka");
                (rx, self.chains()?, Progress::Kafka(handle))
            }
        };
        let revocations = progress.take_revocations();
        let mut arrivals = crate::transform::spawn(chains, chunks, revocations)?;
        let mut last_progress = Instant::now();
        let mut read_at_last_progress = self.stats.read;
        loop {
            let tick = tokio::time::sleep(self.limits.interval.min(PROGRESS_EVERY) / 4);
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    tracing::info!("stop requested: committing open batches");
                    break;
                }
                arrival = arrivals.recv() => match arrival {
                    None => break,
                    Some(arrival) => match arrival? {
                        Arrival::Chunk(chunk) => self.take_chunk(chunk).await?,
                        Arrival::Revoked(r) => {
                            // the partitions go to another member: it starts where the
                            // tables are, so everything read of them is committed first
                            for table in self.batches.tables() {
                                self.commit(&table).await?;
                            }
                            progress.durable(&self.next_read);
                            for p in &r.partitions {
                                self.next_read.remove(p);
                            }
                            let _ = r.done.send(());
                        }
                    },
                },
                _ = tick => {}
            }
            let due = self.batches.due(&self.limits, Instant::now());
            for table in &due {
                self.commit(table).await?;
            }
            if !due.is_empty() {
                progress.durable(&self.batches.low_watermark(None, &self.next_read));
                progress.tables_at(&self.tables_at);
            }
            self.maintain_due().await;
            if last_progress.elapsed() >= PROGRESS_EVERY {
                let rate = (self.stats.read - read_at_last_progress) as f64
                    / last_progress.elapsed().as_secs_f64();
                let lag = progress.high_watermarks().await.map(|hw| {
                    hw.iter()
                        .map(|(p, h)| (h - self.next_read.get(p).copied().unwrap_or(0)).max(0))
                        .sum::<i64>()
                });
                tracing::info!(
                    lag = ?lag,
                    open = self.batches.records(),
                    position = ?self.next_read,
                    dead_lettered = self.dead.count,
                    "progress: {rate:.0} messages/s; {}",
                    self.stats
                );
                last_progress = Instant::now();
                read_at_last_progress = self.stats.read;
            }
        }
        for table in self.batches.tables() {
            self.commit(&table).await?;
        }
        // a source blocked on handing over a chunk lets go once nobody can take it
        drop(arrivals);
        progress.close(&self.next_read).await;
        self.dead.flush().await?;
        self.stats.dead_lettered = self.dead.count;
        Ok(())
    }

    /// Maintains the first of this connector's tables whose maintenance is due (between
    /// batches; the key index moves along). A failure is logged and the table tried again
    /// one interval later: maintenance never holds the stream up, and nothing it does can
    /// lose a committed row.
    async fn maintain_due(&mut self) {
        let scheduled = self
            .tables
            .iter()
            .filter(|(i, s)| s.maintenance.scheduled && !self.paused.contains_key(*i))
            .map(|(i, s)| (i, s.maintenance.interval));
        let Some(ident) = self.maintenance.due(scheduled, Instant::now()) else {
            return;
        };
        let Some(state) = self.tables.get_mut(&ident) else {
            return;
        };
        let t = &state.maintenance;
        if let Err(e) = maintain_table(&self.catalog, &ident, &mut state.table, &t.policy).await {
            tracing::error!(table = %ident, "maintenance failed (next try in {:?}): {e:#}", t.interval);
        }
        self.maintenance.done(&ident, t.interval, Instant::now());
    }

    fn table_state(
        &self,
        ident: &TableIdent,
        table: CdcTable,
        committed: BTreeMap<Partition, i64>,
    ) -> TableState {
        let target = self.config.iceberg.tables.target_file_size.map(|b| b.0);
        TableState {
            table,
            committed,
            maintenance: self
                .config
                .iceberg
                .maintenance
                .resolve(ident, target, CONNECTOR_KEY, &[]),
        }
    }

    /// One transformed source chunk: its records into batches (or dead letters), a batch
    /// committed as soon as it is full.
    async fn take_chunk(&mut self, chunk: Transformed) -> Result<()> {
        let Transformed {
            partition,
            last,
            read,
            unreadable,
            records,
        } = chunk;
        self.stats.read += read as u64;
        for r in unreadable {
            let reason = r.defect.as_deref().unwrap_or("unreadable");
            self.dead
                .send(&r.partition, r.offset, reason, &r.value)
                .await?;
        }
        for record in records {
            // everything before this record is in a batch (or filtered out)
            self.next_read.insert(partition.clone(), record.offset);
            if let Some(table) = self.accept(&partition, record).await? {
                if self.batches.full(&table, &self.limits) {
                    self.commit(&table).await?;
                }
            }
        }
        tracing::debug!(%partition, last, read, "chunk read");
        self.next_read.insert(partition, last + 1);
        Ok(())
    }

    /// One SmartModule output record: routed into a batch, or dead-lettered.
    /// Returns the table the change went to.
    async fn accept(&mut self, p: &Partition, record: Decoded) -> Result<Option<TableIdent>> {
        let off = record.offset;
        let p = p.clone();
        let parsed = match record.record {
            Ok(r) => r,
            Err(reason) => {
                return self
                    .dead
                    .send(&p, off, &reason, &record.value)
                    .await
                    .map(|()| None);
            }
        };
        let change = match parsed {
            CdcRecord::Error(e) => {
                return self
                    .dead
                    .send(&p, off, &e.reason, &record.value)
                    .await
                    .map(|()| None)
            }
            CdcRecord::Change(c) => *c,
        };
        if change.op == Op::Message {
            return Ok(None);
        }
        let ident = match route(&self.config.iceberg.tables, &change.source) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .dead
                    .send(&p, off, &format!("{e:#}"), &record.value)
                    .await
                    .map(|()| None)
            }
        };
        let holds_it = |s: &TableState| s.committed.get(&p).is_some_and(|&next| off < next);
        if self.tables.get(&ident).is_some_and(holds_it) {
            // the table holds it already (paused or not)
            self.stats.skipped_committed += 1;
            return Ok(None);
        }
        if self.paused.contains_key(&ident) {
            self.hold(&ident, &p, off, &record.value).await?;
            return Ok(None);
        }
        if !self.tables.contains_key(&ident) {
            if change.op == Op::Truncate {
                // nothing to empty yet
                return Ok(None);
            }
            let options = self.options_for(&ident);
            let table = match CdcTable::open(&self.catalog, &ident, options.clone()).await {
                Ok(Some(t)) => t,
                Ok(None) => match CdcTable::create(&self.catalog, &ident, &change, options).await {
                    Ok(t) => t,
                    Err(e) if !e.is_retryable() => {
                        // this record cannot make the table; a later one may
                        return self
                            .dead
                            .send(&p, off, &format!("creating {ident}: {e}"), &record.value)
                            .await
                            .map(|()| None);
                    }
                    Err(e) => return Err(e).with_context(|| format!("creating {ident}")),
                },
                Err(e) if !e.is_retryable() => {
                    self.pause(&ident, format!("it cannot be opened: {e}"));
                    self.hold(&ident, &p, off, &record.value).await?;
                    return Ok(None);
                }
                Err(e) => return Err(e).with_context(|| format!("opening {ident}")),
            };
            self.tables.insert(
                ident.clone(),
                self.table_state(&ident, table, BTreeMap::new()),
            );
        }
        let state = self
            .tables
            .get_mut(&ident)
            .ok_or_else(|| anyhow!("table {ident} vanished"))?;
        match state.table.check(&change) {
            Ok(()) => {}
            Err(e) if e.is_record() => {
                return self
                    .dead
                    .send(&p, off, &e.to_string(), &record.value)
                    .await
                    .map(|()| None);
            }
            Err(e) => {
                // what came before the change is good: commit it, then stop the table here
                self.commit(&ident).await?;
                if !self.paused.contains_key(&ident) {
                    self.pause(&ident, e.to_string());
                }
                self.hold(&ident, &p, off, &record.value).await?;
                return Ok(None);
            }
        }
        *self.stats.changes.entry(change.op.code()).or_default() += 1;
        let bytes = record.value.len() as u64;
        self.batches
            .push(ident.clone(), change, &p, off, bytes, Instant::now());
        Ok(Some(ident))
    }

    /// Commits one table's open batch, with retries; after the last failed attempt the error
    /// goes up and no offset moves, so a restart replays the batch.
    async fn commit(&mut self, ident: &TableIdent) -> Result<()> {
        let watermark = self.batches.low_watermark(Some(ident), &self.next_read);
        let Some(batch) = self.batches.take(ident) else {
            return Ok(());
        };
        self.dead.flush().await?;
        let state = self
            .tables
            .get_mut(ident)
            .ok_or_else(|| anyhow!("no table {ident}"))?;
        let mut offsets = state.committed.clone();
        for (p, (_, last)) in &batch.span {
            offsets.insert(p.clone(), last + 1);
        }
        let name = &self.config.meta.name;
        let properties = |table: &CdcTable| {
            summary_properties(
                name,
                table.last_summary_with(CONNECTOR_KEY).as_ref(),
                &offsets,
                &watermark,
            )
        };
        let retries = &self.config.iceberg.retries;
        let started = Instant::now();
        let mut attempt = 0;
        let applied = loop {
            attempt += 1;
            match state
                .table
                .apply_with(&self.catalog, &batch.records, properties)
                .await
            {
                Ok(applied) => break applied,
                Err(e) if !e.is_retryable() => {
                    // no retry makes this batch fit the table: the table pauses, the batch
                    // goes to the dead-letter destination and stays unapplied
                    let reason = format!("committing {} records failed: {e}", batch.records.len());
                    self.pause(ident, reason);
                    for (record, (p, off)) in batch.records.iter().zip(&batch.positions) {
                        let value = serde_json::to_vec(record).unwrap_or_default();
                        self.hold(ident, p, *off, &value).await?;
                    }
                    return Ok(());
                }
                Err(e) if attempt < retries.attempts => {
                    let wait = Duration::from_millis(
                        retries
                            .backoff_ms
                            .saturating_mul(1 << (attempt - 1).min(10)),
                    );
                    tracing::warn!(table = %ident, attempt, error = %e, "commit failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    return Err(anyhow!(e)).with_context(|| {
                        format!(
                            "committing {} records to {ident} failed {attempt} times",
                            batch.records.len()
                        )
                    })
                }
            }
        };
        // ours, and what other members of the group committed to this table before us
        let summary = state.table.last_summary_with(CONNECTOR_KEY);
        state.committed = parse_offsets(summary.as_ref().and_then(|s| s.get(OFFSETS_KEY)));
        // where the tables are, with the other members' progress: a partition handed to
        // this member later starts there, not where this member last saw it
        for (p, w) in parse_offsets(summary.as_ref().and_then(|s| s.get(CHECKPOINT_KEY))) {
            let at = self.tables_at.entry(p).or_insert(w);
            *at = (*at).max(w);
        }
        self.stats.commits += 1;
        self.stats.stale += applied.stale;
        let (unresolved, keys) = &applied.unresolved_unchanged;
        if *unresolved > 0 {
            tracing::warn!(
                table = %ident,
                rows = unresolved,
                ?keys,
                "rows written with null in place of unchanged TOAST values: Debezium sent its \
                 placeholder for rows the table does not hold (a primary-key change under \
                 REPLICA IDENTITY DEFAULT); set REPLICA IDENTITY FULL on tables whose keys \
                 change (README, \"The merge engine\")"
            );
        }
        self.stats.last_commit_ms = Some(started.elapsed().as_millis());
        tracing::debug!(
            table = %ident,
            records = batch.records.len(),
            commit_ms = started.elapsed().as_millis() as u64,
            age_ms = batch.opened.elapsed().as_millis() as u64,
            ?applied,
            "committed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(pairs: &[(&str, i64)]) -> BTreeMap<Partition, i64> {
        pairs
            .iter()
            .map(|(p, o)| (Partition::named(p), *o))
            .collect()
    }

    #[test]
    fn a_commit_carries_the_other_members_partitions_at_their_highest() {
        // the table's newest commit is the other member's: t/1 and t/2 are its partitions
        let theirs = HashMap::from([
            (CONNECTOR_KEY.to_owned(), "sink".to_owned()),
            (
                OFFSETS_KEY.to_owned(),
                r#"{"t/0":10,"t/1":500,"t/2":700}"#.to_owned(),
            ),
            (
                CHECKPOINT_KEY.to_owned(),
                r#"{"t/0":10,"t/1":480,"t/2":690}"#.to_owned(),
            ),
        ]);
        // ours knows t/1 only as it was when we started, and t/0 as its owner
        let offsets = positions(&[("t/0", 300), ("t/1", 200)]);
        let checkpoint = positions(&[("t/0", 290), ("t/1", 200)]);
        let props = summary_properties("sink", Some(&theirs), &offsets, &checkpoint);
        assert_eq!(props[CONNECTOR_KEY], "sink");
        assert_eq!(props[OFFSETS_KEY], r#"{"t/0":300,"t/1":500,"t/2":700}"#);
        assert_eq!(props[CHECKPOINT_KEY], r#"{"t/0":290,"t/1":480,"t/2":690}"#);

        // another connector's commit to the same table is not ours to carry
        let other = HashMap::from([
            (CONNECTOR_KEY.to_owned(), "other".to_owned()),
            (OFFSETS_KEY.to_owned(), r#"{"t/9":5}"#.to_owned()),
        ]);
        let props = summary_properties("sink", Some(&other), &offsets, &checkpoint);
        assert_eq!(props[OFFSETS_KEY], r#"{"t/0":300,"t/1":200}"#);
        let props = summary_properties("sink", None, &offsets, &checkpoint);
        assert_eq!(props[CHECKPOINT_KEY], r#"{"t/0":290,"t/1":200}"#);
    }
}
