//! One CDC table: its Iceberg table, the key index over its live rows, and `apply`, which
//! turns a batch of CDC records into one atomic snapshot of upserts and deletes.
//!
//! Here: opening and creating a table, and `apply` with its retries after a lost
//! compare-and-swap. Beside it: [`plan`] (the newest change per key), [`reconcile`] (admitting records, schema evolution),
//! [`registry`] (live files and the key index rebuilt from them), [`apply`] (one commit
//! attempt), [`maintain`] (maintenance
//! with the index moved along), [`key_index`] and [`tombstones`].

mod apply;
pub mod key_index;
mod maintain;
pub mod plan;
pub mod reconcile;
mod registry;
pub mod tombstones;

pub use crate::history::newest_in_history;

use crate::catalog::Catalog;
use crate::io::WriteOptions;
use crate::schema::{
    partition_spec, table_schema, untyped_columns, MetadataColumns, Partitioning, TimeColumns,
};
use crate::MergeError;
use debezium_cdc::record::{ChangeRecord, Column};
use iceberg::spec::Schema;
use iceberg::table::Table;
use iceberg::{TableCreation, TableIdent};
use key_index::{KeyColumns, KeyIndex};
use reconcile::{Evolved, SchemaChanges};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

/// How tables are laid out and written.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Partitioning of new tables; `None`: the metadata columns' default
    /// (`month(_cdc_processed_at)`, or the old job's `year`, `month`).
    pub partitioning: Option<Partitioning>,
    /// Metadata columns of new tables.
    pub metadata_columns: MetadataColumns,
    pub write: WriteOptions,
    /// Attempts at one commit when others commit concurrently.
    pub max_commit_attempts: u32,
    /// What a change of the source's schema does to the table.
    pub schema_changes: SchemaChanges,
    /// How long the LSN of a deleted key is kept (across restarts) to stop replays of older
    /// events from bringing the row back.
    pub tombstone_retention: std::time::Duration,
    /// How new time-of-day columns are stored.
    pub time_columns: TimeColumns,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            partitioning: None,
            metadata_columns: MetadataColumns::default(),
            write: WriteOptions::default(),
            max_commit_attempts: 10,
            schema_changes: SchemaChanges::default(),
            tombstone_retention: std::time::Duration::from_secs(7 * 24 * 3600),
            time_columns: TimeColumns::Time,
        }
    }
}

/// What one `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub upserts: u64,
    pub deletes: u64,
    /// Events skipped because the table held a newer change for their key.
    pub stale: u64,
    pub truncated: bool,
    pub data_files: usize,
    pub delete_files: usize,
    /// Commit attempts lost to concurrent commits.
    pub conflicts: u32,
    pub snapshot_id: Option<i64>,
    /// Rows written with unchanged-TOAST columns (Debezium's placeholder) that neither the
    /// batch nor the table held a value for, so they were written as null: up to
    /// [`UNRESOLVED_SAMPLE`] of their keys, and how many there were. Under `REPLICA
    /// IDENTITY DEFAULT` a primary-key change sends the new key's row with placeholders.
    pub unresolved_unchanged: (u64, Vec<String>),
}

/// How many keys [`Applied::unresolved_unchanged`] names.
pub const UNRESOLVED_SAMPLE: usize = 5;

pub struct CdcTable {
    table: Table,
    /// The Arrow form of the table's current schema, for checking records.
    arrow_schema: arrow_schema::SchemaRef,
    keys: KeyColumns,
    /// The last column list and key columns records were checked with, and what they make
    /// of the current schema: most records carry the same ones as the record before.
    last_columns: Option<LastColumns>,
    index: KeyIndex,
    /// The data files the key index refers to by number.
    files: registry::Files,
    options: TableOptions,
}

impl CdcTable {
    /// Opens an existing table and rebuilds its key index from its files.
    pub async fn open(
        catalog: &Catalog,
        ident: &TableIdent,
        options: TableOptions,
    ) -> Result<Option<CdcTable>, MergeError> {
        match catalog.load(ident).await? {
            Some(table) => CdcTable::load(table, options).await.map(Some),
            None => Ok(None),
        }
    }

    /// Creates the table from the first change record seen for it: columns from its
    /// `columns` (or, without a schema, string columns named after its row image), the
    /// primary key from its key.
    pub async fn create(
        catalog: &Catalog,
        ident: &TableIdent,
        first: &ChangeRecord,
        options: TableOptions,
    ) -> Result<CdcTable, MergeError> {
        let key: Vec<String> = first.key.keys().cloned().collect();
        if key.is_empty() {
            return Err(MergeError::schema(format!(
                "{ident}: the first record has no primary key"
            )));
        }
        let columns = match &first.columns {
            Some(c) => c.to_vec(),
            None => {
                let image = first.after.as_ref().or(first.before.as_ref());
                let names: Vec<String> = image
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_else(|| key.clone());
                untyped_columns(&names, &key)
            }
        };
        let meta = options.metadata_columns;
        let schema = table_schema(&columns, &key, meta, options.time_columns)?;
        let partitioning = options
            .partitioning
            .clone()
            .unwrap_or_else(|| meta.default_partitioning());
        let spec = partition_spec(&schema, &partitioning)?;
        let creation = TableCreation::builder()
            .name(ident.name().to_owned())
            .schema(schema)
            .partition_spec(spec)
            .properties(HashMap::from([(
                "write.parquet.compression-codec".to_owned(),
                "zstd".to_owned(),
            )]))
            .build();
        let table = catalog.create(ident, creation).await?;
        CdcTable::new(table, options)
    }

    /// A table loaded from the catalog, its key index rebuilt from its files.
    pub async fn load(table: Table, options: TableOptions) -> Result<CdcTable, MergeError> {
        let mut t = CdcTable::new(table, options)?;
        t.rebuild_index().await?;
        Ok(t)
    }

    fn new(table: Table, options: TableOptions) -> Result<CdcTable, MergeError> {
        let keys = KeyColumns::of(table.metadata().current_schema())?;
        if keys.is_empty() {
            return Err(MergeError::schema(format!(
                "{} has no identifier fields (primary key)",
                table.identifier()
            )));
        }
        Ok(CdcTable {
            arrow_schema: arrow_schema_of(table.metadata().current_schema())?,
            table,
            keys,
            last_columns: None,
            index: KeyIndex::default(),
            files: registry::Files::default(),
            options,
        })
    }

    fn set_table(&mut self, table: Table) -> Result<(), MergeError> {
        let schema = table.metadata().current_schema();
        if schema.schema_id() != self.table.metadata().current_schema_id() {
            self.keys = KeyColumns::of(schema)?;
            self.arrow_schema = arrow_schema_of(schema)?;
            self.last_columns = None;
        }
        self.table = table;
        Ok(())
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn index(&self) -> &KeyIndex {
        &self.index
    }

    /// Data files the key index may point into (registered and not yet swept).
    pub fn registered_files(&self) -> usize {
        self.files.registered()
    }

    pub fn key_columns(&self) -> &KeyColumns {
        &self.keys
    }
    /// The summary properties of the newest snapshot whose summary has `key`, walking back
    /// from the current one (another writer's snapshots and compactions in between are
    /// passed over). Where the chain of parents ends at an expired snapshot, the walk goes on
    /// through the older snapshots the table still keeps (snapshot expiry keeps the newest
    /// snapshot of every connector).
    pub fn last_summary_with(&self, key: &str) -> Option<HashMap<String, String>> {
        let metadata = self.table.metadata();
        newest_in_history(metadata, |s| {
            s.summary().additional_properties.contains_key(key)
        })
        .map(|s| s.summary().additional_properties.clone())
    }

    /// Applies a batch (source order) as one snapshot. `properties` go into the snapshot
    /// summary (source offsets, connector id).
    pub async fn apply<R: Borrow<ChangeRecord>>(
        &mut self,
        catalog: &Catalog,
        records: &[R],
        properties: HashMap<String, String>,
    ) -> Result<Applied, MergeError> {
        self.apply_with(catalog, records, |_| properties.clone())
            .await
    }

    /// [`CdcTable::apply`], with the summary properties made from the table as the commit
    /// finds it (after any reload that a concurrent writer's commit caused): what other
    /// writers recorded can be carried on.
    pub async fn apply_with<R: Borrow<ChangeRecord>>(
        &mut self,
        catalog: &Catalog,
        records: &[R],
        properties: impl Fn(&CdcTable) -> HashMap<String, String>,
    ) -> Result<Applied, MergeError> {
        let mut conflicts = 0;
        loop {
            let properties = properties(self);
            match self.try_apply(catalog, records, properties).await? {
                Some(mut applied) => {
                    applied.conflicts = conflicts;
                    return Ok(applied);
                }
                None => {
                    conflicts += 1;
                    if conflicts >= self.options.max_commit_attempts {
                        return Err(MergeError::commit(format!(
                            "{}: lost {conflicts} commits in a row to concurrent writers",
                            self.table.identifier()
                        )));
                    }
                    tracing::info!(table = %self.table.identifier(), conflicts, "commit conflict; reloading");
                    self.reload(catalog).await?;
                }
            }
        }
    }
}

/// The column list of the last record [`CdcTable::check`]ed, its key columns, and what it
/// asked of the schema: the next record of the same list and key asks the same.
#[derive(Debug)]
struct LastColumns {
    columns: Arc<Vec<Column>>,
    key: Vec<String>,
    evolved: Option<Evolved>,
}

fn arrow_schema_of(schema: &Schema) -> Result<arrow_schema::SchemaRef, MergeError> {
    iceberg::arrow::schema_to_arrow_schema(schema)
        .map(Arc::new)
        .map_err(MergeError::schema_from("the table schema in Arrow"))
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
