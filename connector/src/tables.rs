//! The tables the connector writes: opened at start-up (only those whose newest connector
//! summary is ours), opened or created when the first change of a new one arrives, and
//! paused when they cannot go on. Admission of each change: is it already held, can the
//! table take it, or whose fault is it that it cannot.

use crate::config::{parse_partition_by, ConnectorConfig, TableMaintenance};
use crate::ledger::{self, Ledger};
use crate::metrics::Metrics;
use crate::retry::retrying;
use anyhow::Result;
use debezium_cdc::record::{ChangeRecord, Op};
use iceberg::TableIdent;
use iceberg_cdc_merge::io::WriteOptions;
use iceberg_cdc_merge::schema::{MetadataColumns, Partitioning};
use iceberg_cdc_merge::{Catalog, CdcTable, TableOptions};
use std::collections::HashMap;

/// One open table.
pub struct OpenTable {
    pub table: CdcTable,
    /// Its `iceberg.maintenance` settings, resolved once.
    pub maintenance: TableMaintenance,
}

/// What becomes of one change.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Into the table's batch.
    Batch,
    /// Nothing to do: the table holds it already, or it truncates a table that does not
    /// exist yet.
    Skip,
    /// This record cannot be written (its fault): dead-letter it, the rest goes on.
    DeadLetter(String),
    /// The table is paused: dead-letter it and hold its position back.
    Hold,
    /// The table cannot take it and must stop here: commit what came before, pause the
    /// table for this reason, hold this change.
    Pause(String),
}

pub struct Tables {
    options: TableOptions,
    open: HashMap<TableIdent, OpenTable>,
    /// Tables that cannot go on until an operator acts, and why: their changes are
    /// dead-lettered and held back from the checkpoint, so a restart reads them again.
    paused: HashMap<TableIdent, String>,
    metrics: Metrics,
}

impl Tables {
    pub fn new(config: &ConnectorConfig, metrics: Metrics) -> Result<Tables> {
        Ok(Tables {
            options: table_options(config)?,
            open: HashMap::new(),
            paused: HashMap::new(),
            metrics,
        })
    }

    /// Opens every table this connector has committed to, with what it holds. Tables of the
    /// catalog that it did not write (an analyst's, another connector's) are left alone: not
    /// even their files are read.
    pub async fn load(
        &mut self,
        config: &ConnectorConfig,
        catalog: &Catalog,
        ledger: &mut Ledger,
    ) -> Result<()> {
        for ident in catalog.list_tables().await? {
            let Some(table) = catalog.load(&ident).await? else {
                continue;
            };
            let Some(summary) = ledger.ours(table.metadata()) else {
                continue;
            };
            ledger.resume_table(&ident, &summary);
            let options = self.options_for(config, &ident);
            let doing = format!("opening {ident}");
            let loaded = retrying(&config.iceberg.retries, &doing, || {
                CdcTable::load(table.clone(), options.clone())
            });
            let table = match loaded.await? {
                Ok(t) => t,
                Err(e) => {
                    self.pause(&ident, format!("it cannot be opened: {e}"));
                    continue;
                }
            };
            let offsets = ledger.held(&ident).map(ledger::offsets_json);
            tracing::info!(table = %ident, offsets = offsets.unwrap_or_default(), "resuming");
            self.insert(config, &ident, table);
        }
        Ok(())
    }

    /// What becomes of `change`, a change of `ident` at `offset` of `partition`; opens or
    /// creates the table when it is its first.
    pub async fn admit(
        &mut self,
        config: &ConnectorConfig,
        catalog: &Catalog,
        ledger: &mut Ledger,
        ident: &TableIdent,
        change: &ChangeRecord,
        at: (&crate::source::Partition, i64),
    ) -> Result<Admission> {
        if ledger.holds(ident, at.0, at.1) {
            // paused or not
            return Ok(Admission::Skip);
        }
        if self.paused.contains_key(ident) {
            return Ok(Admission::Hold);
        }
        if !self.open.contains_key(ident) {
            if change.op == Op::Truncate {
                // nothing to empty yet
                return Ok(Admission::Skip);
            }
            let table = match self.open_or_create(config, catalog, ident, change).await? {
                Ok(table) => table,
                Err(admission) => return Ok(admission),
            };
            ledger.open_table(ident);
            self.insert(config, ident, table);
        }
        let Some(open) = self.open.get_mut(ident) else {
            anyhow::bail!("table {ident} vanished");
        };
        Ok(match open.table.check(change) {
            Ok(()) => Admission::Batch,
            Err(e) if e.is_record() => Admission::DeadLetter(e.to_string()),
            Err(e) => Admission::Pause(e.to_string()),
        })
    }

    /// Opens `ident`, or creates it from `change`, its first change; retried while the
    /// failure may pass (the store or the catalog away). When the table cannot be had, what
    /// becomes of `change`: dead-lettered when it cannot make the table (a later change may),
    /// held when the table exists but cannot be opened (the table is paused).
    async fn open_or_create(
        &mut self,
        config: &ConnectorConfig,
        catalog: &Catalog,
        ident: &TableIdent,
        change: &ChangeRecord,
    ) -> Result<Result<CdcTable, Admission>> {
        let options = self.options_for(config, ident);
        let retries = &config.iceberg.retries;
        let doing = format!("opening {ident}");
        let opened = retrying(retries, &doing, || {
            CdcTable::open(catalog, ident, options.clone())
        });
        match opened.await? {
            Ok(Some(table)) => return Ok(Ok(table)),
            Ok(None) => {}
            Err(e) => {
                self.pause(ident, format!("it cannot be opened: {e}"));
                return Ok(Err(Admission::Hold));
            }
        }
        let doing = format!("creating {ident}");
        let created = retrying(retries, &doing, || {
            CdcTable::create(catalog, ident, change, options.clone())
        });
        Ok(created
            .await?
            .map_err(|e| Admission::DeadLetter(format!("creating {ident}: {e}"))))
    }

    /// Pauses a table: said once, at ERROR; from now on its changes are dead-lettered and
    /// held back; the other tables go on.
    pub fn pause(&mut self, ident: &TableIdent, reason: String) {
        if self.paused.contains_key(ident) {
            return;
        }
        tracing::error!(
            table = %ident,
            "table paused: {reason}. Its changes go to the dead-letter destination and are not \
             counted as applied: fix the table, then restart the connector to apply them \
             (README, \"Schema changes\")"
        );
        self.paused.insert(ident.clone(), reason);
        self.metrics.paused(&ident.to_string());
    }

    /// Why a table is paused.
    pub fn paused(&self, ident: &TableIdent) -> Option<&str> {
        self.paused.get(ident).map(String::as_str)
    }

    pub fn get_mut(&mut self, ident: &TableIdent) -> Option<&mut OpenTable> {
        self.open.get_mut(ident)
    }

    /// The open tables that are not paused, with their maintenance interval, for the
    /// schedule.
    pub fn scheduled(&self) -> impl Iterator<Item = (&TableIdent, std::time::Duration)> {
        self.open
            .iter()
            .filter(|(i, t)| t.maintenance.scheduled && !self.paused.contains_key(*i))
            .map(|(i, t)| (i, t.maintenance.interval))
    }

    fn insert(&mut self, config: &ConnectorConfig, ident: &TableIdent, table: CdcTable) {
        let target = config.iceberg.tables.target_file_size.map(|b| b.0);
        let maintenance =
            config
                .iceberg
                .maintenance
                .resolve(ident, target, &ledger::maintenance_writer(), &[]);
        self.metrics
            .table_opened(&ident.to_string(), table.index().len());
        self.open
            .insert(ident.clone(), OpenTable { table, maintenance });
    }

    /// The table options of one table (its schema-change behaviour).
    fn options_for(&self, config: &ConnectorConfig, ident: &TableIdent) -> TableOptions {
        TableOptions {
            schema_changes: config.iceberg.tables.schema_changes_of(ident),
            ..self.options.clone()
        }
    }
}

/// How the connector's tables are laid out and written, from `iceberg.tables`.
fn table_options(config: &ConnectorConfig) -> Result<TableOptions> {
    let t = &config.iceberg.tables;
    let metadata_columns = if t.legacy_columns {
        MetadataColumns::Legacy
    } else {
        MetadataColumns::Cdc
    };
    let partitioning = match &t.partition_by {
        None => None,
        Some(p) => Some(match parse_partition_by(p)? {
            None => Partitioning::None,
            Some((column, transform)) => Partitioning::Column { column, transform },
        }),
    };
    let mut write = WriteOptions::default();
    if let Some(size) = t.target_file_size {
        write.target_file_size = size.0 as usize;
    }
    let defaults = TableOptions::default();
    Ok(TableOptions {
        partitioning,
        metadata_columns,
        write,
        tombstone_retention: t
            .tombstone_retention
            .unwrap_or(defaults.tombstone_retention),
        time_columns: t.time_columns.0,
        ..defaults
    })
}
