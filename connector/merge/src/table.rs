//! One CDC table: its Iceberg table, its key index, and `apply`, which turns a batch of CDC
//! records into one atomic snapshot of upserts and deletes.

use crate::arrow_rows::{value_at, Row};
use crate::catalog::Catalog;
use crate::commit::{commit, discard, live_files, Changes, Outcome};
use crate::compaction::{self, CompactionPolicy, CompactionReport, Rewrite};
use crate::evolve::{make_optional, reconcile, same_columns, SchemaChanges};
use crate::files::{read_position_deletes, read_rows, DataWriter, WriteOptions};
use crate::key_index::{Key, KeyColumns, KeyIndex, Location, TOMBSTONE};
use crate::maintenance::{tidy, MaintenancePolicy, MaintenanceReport};
use crate::plan::{plan, Action};
use crate::schema::{
    partition_spec, table_schema, untyped_columns, MetadataColumns, Partitioning, TimeColumns,
    LSN_COLUMN,
};
use crate::tombstones::{self, Tombstone, TOMBSTONES_KEY};
use crate::MergeError;
use arrow_array::Array;
use debezium_cdc::record::{ChangeRecord, Column, Op};
use iceberg::spec::{DataContentType, DataFile, Schema, Struct};
use iceberg::table::Table;
use iceberg::{TableCreation, TableIdent};
use std::collections::{BTreeSet, HashMap, HashSet};
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
    last_columns: Option<(Vec<Column>, Vec<String>, Option<Evolved>)>,
    index: KeyIndex,
    /// Live data files; the key index refers to them by position here.
    files: Vec<Option<DataFile>>,
    file_ids: HashMap<String, u32>,
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
            return Err(MergeError::Schema(format!(
                "{ident}: the first record has no primary key"
            )));
        }
        let columns = match &first.columns {
            Some(c) => c.clone(),
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
            return Err(MergeError::Schema(format!(
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
            files: Vec::new(),
            file_ids: HashMap::new(),
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

    pub fn key_columns(&self) -> &KeyColumns {
        &self.keys
    }

    fn register(&mut self, file: DataFile) -> u32 {
        let id = self.files.len() as u32;
        self.file_ids.insert(file.file_path().to_owned(), id);
        self.files.push(Some(file));
        id
    }

    /// Checks that a change can be written to this table: its key encodes, its schema is
    /// the table's or one the table evolves to (by `schema_changes`), its values convert to
    /// the column types. A [`MergeError::Value`] is this record's fault (dead-letter it);
    /// a [`MergeError::Schema`] the table's (it cannot go on until an operator acts).
    pub fn check(&mut self, record: &ChangeRecord) -> Result<(), MergeError> {
        if matches!(record.op, Op::Truncate | Op::Message) {
            return Ok(());
        }
        let arrow = match self.evolution(record)? {
            None => self.arrow_schema.clone(),
            Some(evolved) => match self.options.schema_changes {
                SchemaChanges::Evolve => evolved.arrow,
                SchemaChanges::Pause => {
                    return Err(MergeError::Schema(format!(
                        "{}: the source's schema changed ({}) and schema-changes is `pause`",
                        self.table.identifier(),
                        evolved.change
                    )))
                }
                SchemaChanges::DeadLetter => {
                    return Err(MergeError::Value {
                        column: evolved.change.clone(),
                        reason: format!(
                            "the source's schema changed and {} keeps its schema (schema-changes: dead-letter)",
                            self.table.identifier()
                        ),
                    })
                }
            },
        };
        self.keys.encode(&record.key)?;
        if let Some(after) = &record.after {
            for (name, value) in after {
                let field = arrow.field_with_name(name).map_err(|_| MergeError::Value {
                    column: name.clone(),
                    reason: format!("not a column of {}", self.table.identifier()),
                })?;
                if value.is_null() && !field.is_nullable() {
                    return Err(MergeError::Value {
                        column: name.clone(),
                        reason: "null in a required column".into(),
                    });
                }
                crate::arrow_rows::array(name, field.data_type(), std::slice::from_ref(value))?;
            }
        }
        Ok(())
    }

    /// What the current schema must become for `record` (`None`: it takes it as it is).
    fn evolution(&mut self, record: &ChangeRecord) -> Result<Option<Evolved>, MergeError> {
        if let (Some((seen, key, evolved)), Some(columns)) = (&self.last_columns, &record.columns) {
            if seen == columns && key.iter().eq(record.key.keys()) {
                return Ok(evolved.clone());
            }
        }
        let metadata = self.table.metadata();
        let current = metadata.current_schema();
        let times = self.options.time_columns;
        let evolved = match reconcile(current, metadata.last_column_id(), record, times) {
            Ok(None) => None,
            Ok(Some(schema)) => Some(Evolved {
                arrow: arrow_schema_of(&schema)?,
                change: crate::evolve::describe(current, &schema),
            }),
            Err(incompatible) => {
                let reason = format!("{}: {incompatible}", self.table.identifier());
                return Err(match self.options.schema_changes {
                    SchemaChanges::DeadLetter => MergeError::Value {
                        column: incompatible.column,
                        reason: format!(
                            "{reason} (schema-changes: dead-letter keeps the table's schema)"
                        ),
                    },
                    _ => MergeError::Schema(reason),
                });
            }
        };
        if let Some(columns) = &record.columns {
            let key = record.key.keys().cloned().collect();
            self.last_columns = Some((columns.clone(), key, evolved.clone()));
        }
        Ok(evolved)
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

    /// Compacts the table (see [`crate::compaction`]) and moves the key index along: the
    /// rows of rewritten files get their new file and position. When other writers committed
    /// meanwhile, the index is rebuilt from the new table instead.
    pub async fn compact(
        &mut self,
        catalog: &Catalog,
        policy: &CompactionPolicy,
    ) -> Result<CompactionReport, MergeError> {
        let before = self.table.metadata_location().map(str::to_owned);
        let out = compaction::compact(catalog, &self.table, policy).await?;
        match &out.on_base {
            Some(rewrite) if rewrite.base.metadata_location() == before.as_deref() => {
                self.follow_rewrite(rewrite);
                self.set_table(out.table)?;
            }
            _ if out.table.metadata_location() != before.as_deref() => {
                self.set_table(out.table)?;
                self.rebuild_index().await?;
            }
            _ => {}
        }
        Ok(out.report)
    }

    /// Runs the maintenance `policy` switches on: compaction with the index moved along,
    /// then snapshot expiry and orphan removal.
    pub async fn maintain(
        &mut self,
        catalog: &Catalog,
        policy: &MaintenancePolicy,
    ) -> Result<MaintenanceReport, MergeError> {
        let mut report = MaintenanceReport::default();
        if let Some(p) = &policy.compaction {
            let r = self.compact(catalog, p).await?;
            tracing::info!(table = %self.table.identifier(), "compaction: {r}");
            report.compaction = Some(r);
        }
        let table = tidy(catalog, self.table.clone(), policy, &mut report).await?;
        self.set_table(table)?;
        Ok(report)
    }

    /// The index after a rewrite committed on the table it was read from.
    fn follow_rewrite(&mut self, rewrite: &Rewrite) {
        let new_ids: Vec<u32> = rewrite
            .added
            .iter()
            .map(|f| self.register(f.clone()))
            .collect();
        let mut moved: HashMap<u32, &compaction::Moves> = HashMap::new();
        for (path, moves) in &rewrite.moves {
            if let Some(id) = self.file_ids.remove(path) {
                moved.insert(id, moves);
                if let Some(slot) = self.files.get_mut(id as usize) {
                    *slot = None;
                }
            }
        }
        self.index.relocate(|loc| {
            let (file, pos) = moved.get(&loc.file)?.get(loc.pos as usize).copied()??;
            Some(Location {
                file: new_ids[file as usize],
                pos,
                lsn: loc.lsn,
            })
        });
    }

    /// The table as the catalog has it now, with its index rebuilt (after a lost
    /// compare-and-swap).
    async fn reload(&mut self, catalog: &Catalog) -> Result<(), MergeError> {
        let table = catalog.load_existing(self.table.identifier()).await?;
        self.set_table(table)?;
        self.rebuild_index().await
    }

    /// Reads the key columns and LSNs of every live data file, less its position deletes,
    /// then the tombstones in force (a live row wins over a tombstone of its key).
    pub async fn rebuild_index(&mut self) -> Result<(), MergeError> {
        self.rebuild_live().await?;
        let cutoff = self.tombstone_cutoff();
        let file_io = self.table.file_io().clone();
        for path in tombstones::listed(self.last_summary_with(TOMBSTONES_KEY).as_ref()) {
            for t in tombstones::read(&file_io, &path).await? {
                let newer = match self.index.get(&t.key) {
                    None => true,
                    Some(l) => l.file == TOMBSTONE && l.lsn < t.lsn,
                };
                if newer && t.deleted_at >= cutoff {
                    self.index.tombstone(t.key, t.lsn, t.deleted_at);
                }
            }
        }
        Ok(())
    }

    /// Deletes before this (seconds since the epoch) are past the tombstone retention.
    fn tombstone_cutoff(&self) -> u32 {
        let retention =
            u32::try_from(self.options.tombstone_retention.as_secs()).unwrap_or(u32::MAX);
        tombstones::now_secs().saturating_sub(retention)
    }

    /// The tombstone files the commit of `plan` lists, and the one it writes (if any): the
    /// list carried on, with a file of this batch's deletes added, or, once the list is
    /// long, one file of every tombstone in force.
    async fn tombstone_files(
        &self,
        plan: &crate::plan::Plan,
        now: u32,
    ) -> Result<(Vec<String>, Option<String>), MergeError> {
        let deleted: Vec<Tombstone> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .filter_map(|c| {
                c.lsn.map(|lsn| Tombstone {
                    key: c.key.clone(),
                    lsn,
                    deleted_at: now,
                })
            })
            .collect();
        // a truncate forgets every earlier tombstone; the deletes after it in the batch count
        let mut list = if plan.truncate {
            Vec::new()
        } else {
            tombstones::listed(self.last_summary_with(TOMBSTONES_KEY).as_ref())
        };
        if deleted.is_empty() {
            return Ok((list, None));
        }
        let location = self.table.metadata().location();
        let file_io = self.table.file_io();
        if list.len() < tombstones::MAX_FILES {
            let path = tombstones::write(file_io, location, &deleted).await?;
            list.push(path.clone());
            return Ok((list, Some(path)));
        }
        // consolidate: what the index holds (less this batch's keys and what is past the
        // retention), and this batch's deletes
        let cutoff = self.tombstone_cutoff();
        let changed: HashSet<&Key> = plan.changes.iter().map(|c| &c.key).collect();
        let mut all: Vec<Tombstone> = self
            .index
            .tombstones()
            .into_iter()
            .filter(|t| !plan.truncate && t.deleted_at >= cutoff && !changed.contains(&t.key))
            .collect();
        all.extend(deleted);
        let path = tombstones::write(file_io, location, &all).await?;
        Ok((vec![path.clone()], Some(path)))
    }

    /// The live rows of the data files, into an empty index.
    async fn rebuild_live(&mut self) -> Result<(), MergeError> {
        self.index.clear();
        self.files.clear();
        self.file_ids.clear();
        let live = live_files(&self.table).await?;
        let file_io = self.table.file_io().clone();
        let mut deleted: HashMap<String, HashSet<u32>> = HashMap::new();
        for f in live
            .iter()
            .filter(|f| f.file.content_type() == DataContentType::PositionDeletes)
        {
            for (path, positions) in read_position_deletes(&file_io, f.file.file_path()).await? {
                deleted.entry(path).or_default().extend(positions);
            }
        }
        if live
            .iter()
            .any(|f| f.file.content_type() == DataContentType::EqualityDeletes)
        {
            return Err(MergeError::Schema(format!(
                "{} has equality delete files, which this connector does not apply",
                self.table.identifier()
            )));
        }
        let keys = self.keys.clone();
        // the key columns as the table has them now (older files are cast up), and the LSN
        // (null in a table that never had the column: another writer's)
        let mut fields = keys
            .names()
            .map(|n| {
                self.arrow_schema
                    .field_with_name(n)
                    .map(|f| Arc::new(f.clone()))
                    .map_err(|e| MergeError::Schema(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        fields.push(Arc::new(arrow_schema::Field::new(
            LSN_COLUMN,
            arrow_schema::DataType::Int64,
            true,
        )));
        let projected = Arc::new(arrow_schema::Schema::new(fields));
        for f in live
            .into_iter()
            .filter(|f| f.file.content_type() == DataContentType::Data)
        {
            let path = f.file.file_path().to_owned();
            let id = self.register(f.file);
            let gone = deleted.get(&path);
            let mut pos: u32 = 0;
            for batch in read_rows(&file_io, &path, &projected).await? {
                let lsn = batch.column(keys.len());
                for row in 0..batch.num_rows() {
                    let here = pos;
                    pos += 1;
                    if gone.is_some_and(|g| g.contains(&here)) {
                        continue;
                    }
                    let values = (0..keys.len())
                        .map(|c| value_at(batch.column(c).as_ref(), row))
                        .collect::<Result<Vec<_>, _>>()?;
                    let key = keys.encode_read(&values);
                    let lsn = if lsn.is_null(row) {
                        i64::MIN
                    } else {
                        value_at(lsn.as_ref(), row)?.as_i64().unwrap_or(i64::MIN)
                    };
                    let loc = Location {
                        file: id,
                        pos: here,
                        lsn,
                    };
                    if let Some(prev) = self.index.insert(key.clone(), loc) {
                        // two live rows for one key: keep the newer change
                        if prev.lsn > loc.lsn {
                            self.index.insert(key, prev);
                        }
                        tracing::warn!(table = %self.table.identifier(), ?values, "two live rows for one key");
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a batch (source order) as one snapshot. `properties` go into the snapshot
    /// summary (source offsets, connector id).
    pub async fn apply(
        &mut self,
        catalog: &Catalog,
        records: &[ChangeRecord],
        properties: HashMap<String, String>,
    ) -> Result<Applied, MergeError> {
        self.apply_with(catalog, records, |_| properties.clone())
            .await
    }

    /// [`CdcTable::apply`], with the summary properties made from the table as the commit
    /// finds it (after any reload that a concurrent writer's commit caused): what other
    /// writers recorded can be carried on.
    pub async fn apply_with(
        &mut self,
        catalog: &Catalog,
        records: &[ChangeRecord],
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
                        return Err(MergeError::Commit(format!(
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

    async fn try_apply(
        &mut self,
        catalog: &Catalog,
        records: &[ChangeRecord],
        mut properties: HashMap<String, String>,
    ) -> Result<Option<Applied>, MergeError> {
        let mut plan = plan(records, &self.keys, |k| self.index.get(k).map(|l| l.lsn))?;
        let mut applied = Applied {
            stale: plan.stale,
            truncated: plan.truncate,
            ..Applied::default()
        };

        // rows replaced or deleted, by data file
        let mut deletes: HashMap<u32, Vec<u32>> = HashMap::new();
        if !plan.truncate {
            for change in &plan.changes {
                if let Some(loc) = self.index.live(&change.key) {
                    deletes.entry(loc.file).or_default().push(loc.pos);
                }
            }
        }
        self.carry_unchanged(&mut plan.changes, plan.truncate)
            .await?;
        applied.unresolved_unchanged = unresolved_unchanged(&plan.changes, &self.keys);
        let evolved = self.evolve_for(records, &plan.changes)?;

        let mut upsert_keys: Vec<Key> = Vec::new();
        let mut rows: Vec<&Row> = Vec::new();
        for change in &plan.changes {
            match &change.action {
                Action::Upsert { row, .. } => {
                    upsert_keys.push(change.key.clone());
                    rows.push(row);
                    applied.upserts += 1;
                }
                Action::Delete => applied.deletes += 1,
            }
        }

        let metadata = self.table.metadata();
        let writer = DataWriter {
            file_io: self.table.file_io(),
            location: metadata.location(),
            schema: evolved
                .clone()
                .unwrap_or_else(|| metadata.current_schema().clone()),
            spec: metadata.default_partition_spec().clone(),
            options: &self.options.write,
        };
        let processed_at = now_us();
        let written = writer.write(&rows, processed_at).await?;
        // one position-delete file per partition (not per data file: at a million keys a
        // batch touches a thousand data files)
        let mut by_partition: HashMap<Struct, Vec<(String, Vec<u32>)>> = HashMap::new();
        for (file_id, positions) in deletes {
            let Some(Some(data_file)) = self.files.get(file_id as usize) else {
                return Err(MergeError::Commit(format!(
                    "key index points at unknown file {file_id}"
                )));
            };
            by_partition
                .entry(data_file.partition().clone())
                .or_default()
                .push((data_file.file_path().to_owned(), positions));
        }
        let mut delete_files = Vec::new();
        for (partition, mut targets) in by_partition {
            delete_files.push(
                writer
                    .write_position_deletes(&partition, &mut targets)
                    .await?,
            );
        }
        let removed: HashSet<String> = if plan.truncate {
            live_files(&self.table)
                .await?
                .into_iter()
                .map(|f| f.file.file_path().to_owned())
                .collect()
        } else {
            HashSet::new()
        };
        let now = tombstones::now_secs();
        let (tombstone_list, tombstone_file) = self.tombstone_files(&plan, now).await?;
        let consolidated = tombstone_list.len() == 1 && tombstone_file.is_some();
        properties.insert(TOMBSTONES_KEY.to_owned(), tombstone_list.join(","));
        applied.data_files = written.len();
        applied.delete_files = delete_files.len();
        let changes = Changes {
            added_data: written.iter().map(|w| w.file.clone()).collect(),
            added_deletes: delete_files,
            removed,
            operation: None,
            properties,
            schema: evolved,
        };
        let added: Vec<DataFile> = changes
            .added_data
            .iter()
            .chain(&changes.added_deletes)
            .cloned()
            .collect();
        let table = match commit(catalog, &self.table, changes).await? {
            Outcome::Committed(table) => *table,
            Outcome::Conflict => {
                discard(self.table.file_io(), &added).await;
                if let Some(path) = &tombstone_file {
                    let _ = self.table.file_io().delete(path).await;
                }
                return Ok(None);
            }
        };
        applied.snapshot_id = table.metadata().current_snapshot_id();
        self.set_table(table)?;

        // the index follows the commit
        if plan.truncate {
            self.index.clear();
            self.files.clear();
            self.file_ids.clear();
        }
        for change in &plan.changes {
            if change.action == Action::Delete {
                match change.lsn {
                    Some(lsn) => self.index.tombstone(change.key.clone(), lsn, now),
                    None => {
                        self.index.remove(&change.key);
                    }
                }
            }
        }
        for w in written {
            let id = self.register(w.file);
            for (pos, &row) in w.rows.iter().enumerate() {
                let lsn = rows[row].lsn.unwrap_or(i64::MIN);
                self.index.insert(
                    upsert_keys[row].clone(),
                    Location {
                        file: id,
                        pos: pos as u32,
                        lsn,
                    },
                );
            }
        }
        if consolidated {
            self.index.forget_tombstones_before(self.tombstone_cutoff());
        }
        Ok(Some(applied))
    }

    /// The schema this batch is written with when it is not the current one: every
    /// record's columns reconciled in turn (with `schema-changes: evolve`; otherwise
    /// [`CdcTable::check`] let through only records the table takes as it is), and required
    /// columns that a row leaves empty made optional. Folded over the table as the commit
    /// finds it, so a reload after a lost compare-and-swap evolves another writer's schema.
    fn evolve_for(
        &self,
        records: &[ChangeRecord],
        changes: &[crate::plan::KeyChange],
    ) -> Result<Option<Arc<Schema>>, MergeError> {
        if self.options.schema_changes != SchemaChanges::Evolve {
            return Ok(None);
        }
        let metadata = self.table.metadata();
        let current = metadata.current_schema();
        let table = self.table.identifier();
        let incompatible =
            |e: crate::evolve::Incompatible| MergeError::Schema(format!("{table}: {e}"));
        let mut schema: Option<Schema> = None;
        let mut seen: Option<&Vec<Column>> = None;
        for r in records {
            if matches!(r.op, Op::Truncate | Op::Message) {
                continue;
            }
            if r.columns.is_some() && r.columns.as_ref() == seen {
                continue;
            }
            seen = r.columns.as_ref();
            let base = schema.as_ref().unwrap_or(current);
            if let Some(s) = reconcile(
                base,
                metadata.last_column_id(),
                r,
                self.options.time_columns,
            )
            .map_err(incompatible)?
            {
                schema = Some(s);
            }
        }
        let base = schema.as_ref().unwrap_or(current);
        let key: BTreeSet<&str> = self.keys.names().collect();
        let meta = MetadataColumns::of(base);
        let empty: BTreeSet<String> = base
            .as_struct()
            .fields()
            .iter()
            .filter(|f| f.required && !key.contains(f.name.as_str()) && !meta.reserved(&f.name))
            .filter(|f| {
                changes.iter().any(|c| match &c.action {
                    Action::Upsert { row, .. } => row
                        .values
                        .get(&f.name)
                        .is_none_or(serde_json::Value::is_null),
                    Action::Delete => false,
                })
            })
            .map(|f| f.name.clone())
            .collect();
        if let Some(s) = make_optional(base, &empty).map_err(incompatible)? {
            schema = Some(s);
        }
        let Some(schema) = schema.filter(|s| !same_columns(s, current)) else {
            return Ok(None);
        };
        // the id of an identical schema the table had before, else a new one
        let id = metadata
            .schemas_iter()
            .find(|s| same_columns(s, &schema))
            .map(|s| s.schema_id())
            .unwrap_or_else(|| {
                metadata
                    .schemas_iter()
                    .map(|s| s.schema_id())
                    .max()
                    .unwrap_or(0)
                    + 1
            });
        let schema = schema
            .into_builder()
            .with_schema_id(id)
            .build()
            .map_err(|e| MergeError::Schema(e.to_string()))?;
        tracing::info!(
            table = %table,
            schema_id = id,
            "schema evolves: {}",
            crate::evolve::describe(current, &schema)
        );
        Ok(Some(Arc::new(schema)))
    }

    /// Fills unchanged-TOAST columns from the stored rows.
    async fn carry_unchanged(
        &self,
        changes: &mut [crate::plan::KeyChange],
        truncated: bool,
    ) -> Result<(), MergeError> {
        // (file, pos) -> (change index, columns)
        let mut wanted: HashMap<u32, Vec<(u32, usize)>> = HashMap::new();
        let mut columns: HashSet<String> = HashSet::new();
        for (i, change) in changes.iter().enumerate() {
            if let Action::Upsert { carry, .. } = &change.action {
                if carry.is_empty() || truncated {
                    continue;
                }
                if let Some(loc) = self.index.live(&change.key) {
                    wanted.entry(loc.file).or_default().push((loc.pos, i));
                    columns.extend(carry.iter().cloned());
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        // the carried columns as the table has them (older files may lack some: null)
        let fields: Vec<arrow_schema::FieldRef> = self
            .arrow_schema
            .fields()
            .iter()
            .filter(|f| columns.contains(f.name()))
            .cloned()
            .collect();
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let projected = Arc::new(arrow_schema::Schema::new(fields));
        for (file_id, mut targets) in wanted {
            let Some(Some(file)) = self.files.get(file_id as usize) else {
                continue;
            };
            targets.sort_unstable();
            let batches = read_rows(self.table.file_io(), file.file_path(), &projected).await?;
            let mut base = 0u32;
            let mut t = 0;
            for batch in batches {
                let n = batch.num_rows() as u32;
                while t < targets.len() && targets[t].0 < base + n {
                    let (pos, change) = targets[t];
                    let row = (pos - base) as usize;
                    if let Action::Upsert { row: r, carry } = &mut changes[change].action {
                        for col in carry.drain(..) {
                            if let Some(c) = names.iter().position(|n| *n == col) {
                                r.values
                                    .insert(col, value_at(batch.column(c).as_ref(), row)?);
                            }
                        }
                    }
                    t += 1;
                }
                base += n;
            }
        }
        Ok(())
    }
}

/// The upserts whose unchanged-TOAST columns [`CdcTable::carry_unchanged`] found no value
/// for: how many, and up to [`UNRESOLVED_SAMPLE`] of them as `key=value … (columns)`.
fn unresolved_unchanged(
    changes: &[crate::plan::KeyChange],
    keys: &KeyColumns,
) -> (u64, Vec<String>) {
    let mut count = 0;
    let mut sample = Vec::new();
    for change in changes {
        let Action::Upsert { carry, row } = &change.action else {
            continue;
        };
        if carry.is_empty() {
            continue;
        }
        count += 1;
        if sample.len() < UNRESOLVED_SAMPLE {
            let key: Vec<String> = keys
                .names()
                .map(|k| {
                    format!(
                        "{k}={}",
                        row.values.get(k).unwrap_or(&serde_json::Value::Null)
                    )
                })
                .collect();
            sample.push(format!("{} ({})", key.join(" "), carry.join(", ")));
        }
    }
    (count, sample)
}

/// A schema a record's columns evolve the table to: its Arrow form (for checking values) and
/// what changed (for messages).
#[derive(Debug, Clone)]
struct Evolved {
    arrow: arrow_schema::SchemaRef,
    change: String,
}

/// The newest snapshot matching `wanted` in the current snapshot's history: its chain of
/// parents, then, where that chain ends at an expired snapshot, the older snapshots still
/// kept, newest first.
pub fn newest_in_history(
    metadata: &iceberg::spec::TableMetadata,
    wanted: impl Fn(&iceberg::spec::Snapshot) -> bool,
) -> Option<&iceberg::spec::SnapshotRef> {
    let mut snapshot = metadata.current_snapshot();
    let mut oldest_seen = i64::MAX;
    while let Some(s) = snapshot {
        if wanted(s) {
            return Some(s);
        }
        oldest_seen = s.sequence_number();
        snapshot = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p));
    }
    let mut older: Vec<&iceberg::spec::SnapshotRef> = metadata
        .snapshots()
        .filter(|s| s.sequence_number() < oldest_seen)
        .collect();
    older.sort_by_key(|s| std::cmp::Reverse(s.sequence_number()));
    older.into_iter().find(|s| wanted(s))
}

fn arrow_schema_of(schema: &Schema) -> Result<arrow_schema::SchemaRef, MergeError> {
    iceberg::arrow::schema_to_arrow_schema(schema)
        .map(std::sync::Arc::new)
        .map_err(|e| MergeError::Schema(e.to_string()))
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
