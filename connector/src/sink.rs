//! The run loop, one chain: source -> transform -> route -> batch -> merge/commit ->
//! acknowledge. Each stage is a module of its own ([`crate::source`], [`crate::transform`],
//! [`crate::route`] with [`crate::tables`], [`crate::batch`], [`crate::commit`]); the
//! [`crate::ledger`] follows every position from the read to durability and back to the
//! source. See ARCHITECTURE.md.

use crate::batch::{Batches, Limits, OpenBatch, Release};
use crate::commit::{commit, Committed};
use crate::config::ConnectorConfig;
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::ledger::{Ledger, Positions, CONNECTOR_KEY};
use crate::maintenance::{maintain_table, Schedule};
use crate::metrics::Metrics;
use crate::route::{Routed, Routes};
use crate::source::{Partition, Revocation, Source};
use crate::stats::{Progress, Stats};
use crate::tables::{Admission, Tables};
use crate::transform::{written, Arrival, Decoded, Transformed};
use anyhow::{anyhow, Context, Result};
use debezium_cdc::record::{CdcRecord, ChangeRecord};
use iceberg::TableIdent;
use iceberg_cdc_merge::Catalog;
use std::borrow::Cow;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct Sink {
    config: ConnectorConfig,
    catalog: Catalog,
    tables: Tables,
    batches: Batches,
    /// Committed batches go here to be freed.
    release: Release<OpenBatch>,
    limits: Limits,
    dead: DeadLetter,
    ledger: Ledger,
    routes: Routes,
    maintenance: Schedule,
    metrics: Metrics,
    pub stats: Stats,
}

impl Sink {
    pub async fn open(config: ConnectorConfig, metrics: Metrics) -> Result<Sink> {
        let catalog = Catalog::connect(&config.catalog_config()).await?;
        let b = &config.iceberg.batch;
        let limits = Limits {
            max_records: b.max_records,
            max_bytes: b.max_bytes.0,
            interval: Duration::from_millis(b.interval_ms),
            max_total_bytes: b.max_total_bytes.0,
        };
        let dead = DeadLetter::open(&config.dead_letters()?, metrics.clone()).await?;
        let mut ledger = Ledger::new(&config.meta.name);
        let mut tables = Tables::new(&config, metrics.clone())?;
        tables.load(&config, &catalog, &mut ledger).await?;
        metrics.tables_open();
        Ok(Sink {
            config,
            catalog,
            tables,
            batches: Batches::default(),
            release: Release::spawn(),
            limits,
            dead,
            ledger,
            routes: Routes::default(),
            maintenance: Schedule::default(),
            metrics,
            stats: Stats::default(),
        })
    }

    /// Where each partition resumes.
    pub fn resume_positions(&self) -> &Positions {
        self.ledger.resume()
    }

    /// Runs until the source ends or `stop` turns true; then commits what is open.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let mut source = crate::source::open(&self.config, self.ledger.resume()).await?;
        self.ledger.reading_from(source.starts());
        self.metrics.source_connected(true);
        let chains = if source.transforms_here() {
            // compiling the SmartModules takes seconds: a stop meanwhile ends the run at once
            let config = self.config.clone();
            let metrics = self.metrics.clone();
            let build =
                tokio::task::spawn_blocking(move || crate::transform::chains(&config, &metrics));
            tokio::select! {
                built = build => built.context("compiling the SmartModules")??,
                _ = stop.changed() => {
                    tracing::info!("stopped while compiling the SmartModules: nothing was read");
                    source.close(self.ledger.resume().clone()).await;
                    return Ok(());
                }
            }
        } else {
            Vec::new()
        };
        let chunks = source
            .chunks()
            .ok_or_else(|| anyhow!("the source has no chunks"))?;
        let mut arrivals = crate::transform::spawn(chains, chunks, source.revocations())?;
        let mut progress = Progress::new(&self.stats);
        loop {
            self.metrics.beat();
            let tick = tokio::time::sleep(self.limits.interval.min(Progress::EVERY) / 4);
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    tracing::info!("stop requested: committing open batches");
                    break;
                }
                arrival = arrivals.recv() => match arrival.transpose()? {
                    None => break,
                    Some(Arrival::Chunk(chunk)) => self.take_chunk(chunk, &stop).await?,
                    Some(Arrival::Revoked(r)) => self.revoke(r, source.as_ref()).await?,
                },
                _ = tick => {}
            }
            let due = self.batches.due(&self.limits, Instant::now());
            self.commit_all(&due).await?;
            if !due.is_empty() {
                self.acknowledge(source.as_ref());
            }
            self.maintain_due().await;
            self.stats.dead_lettered = self.dead.count;
            progress
                .report(
                    &self.stats,
                    &self.ledger,
                    &self.batches,
                    source.as_ref(),
                    &self.metrics,
                )
                .await;
        }
        self.commit_all(&self.batches.tables()).await?;
        // a source blocked on handing over a chunk lets go once nobody can take it
        drop(arrivals);
        source.close(self.ledger.resume().clone()).await;
        self.metrics.source_connected(false);
        self.dead.flush().await?;
        self.stats.dead_lettered = self.dead.count;
        Ok(())
    }

    /// One transformed source chunk: each record routed, admitted by its table and batched
    /// (or dead-lettered); a batch is committed as soon as it is full. A stop request ends
    /// the chunk early (a chunk can fill many batches, each a commit): the records not taken
    /// stay unread, and a restart reads them again.
    async fn take_chunk(&mut self, chunk: Transformed, stop: &watch::Receiver<bool>) -> Result<()> {
        let Transformed {
            partition,
            last,
            read,
            bytes,
            unreadable,
            records,
        } = chunk;
        self.stats.read += read as u64;
        self.metrics.read(partition.as_str(), read, bytes);
        for r in unreadable {
            let reason = r.defect.as_deref().unwrap_or("unreadable");
            let why = DeadLetterReason::Unreadable;
            self.dead
                .send(&r.partition, r.offset, why, reason, &r.value)
                .await?;
        }
        for record in records {
            // everything before this record is in a batch (or filtered out)
            self.ledger.read_to(&partition, record.offset);
            if *stop.borrow() {
                tracing::info!(%partition, at = record.offset, "stop requested: the rest of the chunk stays unread");
                return Ok(());
            }
            self.take_record(&partition, record).await?;
        }
        tracing::debug!(%partition, last, read, "chunk read");
        self.ledger.read_to(&partition, last + 1);
        Ok(())
    }

    /// One output record of the transform stage: route -> admission -> batch.
    async fn take_record(&mut self, p: &Partition, record: Decoded) -> Result<()> {
        let off = record.offset;
        let (ident, change) = match self
            .routes
            .route_record(&self.config.iceberg.tables, record.record)
        {
            Routed::Change(ident, change) => (ident, change),
            Routed::Nothing => return Ok(()),
            Routed::DeadLetter(why, reason) => {
                return self.dead.send(p, off, why, &reason, &record.value).await
            }
            Routed::Unroutable(change, reason) => {
                let why = DeadLetterReason::Unroutable;
                let value = payload(&record.value, &change);
                return self.dead.send(p, off, why, &reason, &value).await;
            }
        };
        let admission = self
            .tables
            .admit(
                &self.config,
                &self.catalog,
                &mut self.ledger,
                &ident,
                &change,
                (p, off),
            )
            .await?;
        match admission {
            Admission::Batch => {
                *self.stats.changes.entry(change.op.code()).or_default() += 1;
                self.metrics.change(&ident.to_string(), change.op);
                let bytes = record.bytes as u64;
                let held = self
                    .batches
                    .push(ident.clone(), change, p, off, bytes, Instant::now());
                if self.batches.full(&ident, &self.limits) {
                    self.commit(&ident).await?;
                }
                let over = self.batches.over_cap(&self.limits);
                if !over.is_empty() {
                    tracing::debug!(
                        tables = over.len(),
                        held = self.batches.held(),
                        last = held,
                        "open batches past max-total-bytes: committing the largest"
                    );
                    self.commit_all(&over).await?;
                }
                Ok(())
            }
            Admission::Skip => {
                self.stats.skipped_committed += 1;
                Ok(())
            }
            Admission::DeadLetter(reason) => {
                let why = DeadLetterReason::Rejected;
                let value = payload(&record.value, &change);
                self.dead.send(p, off, why, &reason, &value).await
            }
            Admission::Hold => {
                let value = payload(&record.value, &change);
                self.hold(&ident, p, off, &value).await
            }
            Admission::Pause(reason) => {
                // what came before the change is good: commit it, then stop the table here
                self.commit(&ident).await?;
                self.tables.pause(&ident, reason);
                let value = payload(&record.value, &change);
                self.hold(&ident, p, off, &value).await
            }
        }
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
        let reason = self.tables.paused(ident).unwrap_or_default();
        let reason = format!("table {ident} is paused: {reason}");
        let why = DeadLetterReason::Paused;
        self.dead.send(p, off, why, &reason, value).await
    }

    async fn commit_all(&mut self, tables: &[TableIdent]) -> Result<()> {
        for table in tables {
            self.commit(table).await?;
        }
        Ok(())
    }

    /// Commits one table's open batch; the ledger takes what became durable.
    async fn commit(&mut self, ident: &TableIdent) -> Result<()> {
        let checkpoint = self.ledger.checkpoint(&self.batches.waiting(Some(ident)));
        let Some(batch) = self.batches.take(ident) else {
            return Ok(());
        };
        self.dead.flush().await?;
        let open = self
            .tables
            .get_mut(ident)
            .ok_or_else(|| anyhow!("no table {ident}"))?;
        let retries = &self.config.iceberg.retries;
        let outcome = commit(
            &self.catalog,
            ident,
            &mut open.table,
            &batch,
            &self.ledger,
            &checkpoint,
            retries,
        )
        .await?;
        match outcome {
            Committed::Applied { applied, took } => {
                // ours, and what other members of the group committed to this table before us
                let summary = open.table.last_summary_with(CONNECTOR_KEY);
                self.ledger.committed(ident, summary.as_ref());
                self.stats.committed(&applied, took);
                let keys = open.table.index().len();
                self.metrics.committed(
                    &ident.to_string(),
                    batch.records.len(),
                    &applied,
                    took,
                    keys,
                );
            }
            Committed::Refused(reason) => {
                self.metrics.refused(&ident.to_string());
                self.tables.pause(ident, reason);
                for (record, (p, off)) in batch.records.iter().zip(&batch.positions) {
                    // a batch holds changes as decoded: each dead-letters as its JSON
                    let value = payload(&[], record);
                    self.hold(ident, p, *off, &value).await?;
                }
            }
        }
        self.release.release(batch);
        Ok(())
    }

    /// The checkpoint and where the tables are, to the source.
    fn acknowledge(&self, source: &dyn Source) {
        source.acknowledge(&self.ledger.checkpoint(&self.batches.waiting(None)));
        source.tables_at(self.ledger.tables_at());
    }

    /// Partitions going to another group member: it starts where the tables are, so
    /// everything read of them is committed first.
    async fn revoke(&mut self, r: Revocation, source: &dyn Source) -> Result<()> {
        self.commit_all(&self.batches.tables()).await?;
        source.acknowledge(self.ledger.resume());
        self.ledger.revoked(&r.partitions);
        let _ = r.done.send(());
        Ok(())
    }

    /// Maintains the first of this connector's tables whose maintenance is due (between
    /// batches; the key index moves along). A failure is logged and the table tried again
    /// one interval later: maintenance never holds the stream up, and nothing it does can
    /// lose a committed row.
    async fn maintain_due(&mut self) {
        let Some(ident) = self
            .maintenance
            .due(self.tables.scheduled(), Instant::now())
        else {
            return;
        };
        let Some(open) = self.tables.get_mut(&ident) else {
            return;
        };
        let t = &open.maintenance;
        let started = Instant::now();
        let outcome = maintain_table(&self.catalog, &ident, &mut open.table, &t.policy).await;
        if let Err(e) = &outcome {
            tracing::error!(table = %ident, "maintenance failed (next try in {:?}): {e:#}", t.interval);
        }
        self.metrics
            .maintained(&ident.to_string(), outcome.is_ok(), started.elapsed());
        self.maintenance.done(&ident, t.interval, Instant::now());
    }
}

/// What a dead letter of `change` carries: its JSON ([`written`]).
fn payload<'a>(value: &'a [u8], change: &ChangeRecord) -> Cow<'a, [u8]> {
    written(value, || {
        debezium_cdc::to_json(&CdcRecord::Change(Box::new(change.clone())))
    })
}
