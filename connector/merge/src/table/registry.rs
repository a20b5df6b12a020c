//! The table's live data files and the key index over their rows: files registered as they
//! are written, and the whole index rebuilt from the files, their position deletes and the
//! tombstones in force (at start-up, after a lost compare-and-swap, after another writer's
//! compaction).

use super::CdcTable;
use crate::catalog::Catalog;
use crate::commit::live_files;
use crate::io::rows::value_at;
use crate::io::{read_position_deletes, read_rows};
use crate::schema::LSN_COLUMN;
use crate::table::key_index::{Location, TOMBSTONE};
use crate::table::tombstones::{self, TOMBSTONES_KEY};
use crate::MergeError;
use arrow_array::Array;
use iceberg::spec::{DataContentType, DataFile};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

impl CdcTable {
    pub(super) fn register(&mut self, file: DataFile) -> u32 {
        let id = self.files.len() as u32;
        self.file_ids.insert(file.file_path().to_owned(), id);
        self.files.push(Some(file));
        id
    }

    /// The table as the catalog has it now, with its index rebuilt (after a lost
    /// compare-and-swap).
    pub(super) async fn reload(&mut self, catalog: &Catalog) -> Result<(), MergeError> {
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
    pub(super) fn tombstone_cutoff(&self) -> u32 {
        let retention =
            u32::try_from(self.options.tombstone_retention.as_secs()).unwrap_or(u32::MAX);
        tombstones::now_secs().saturating_sub(retention)
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
            return Err(MergeError::schema(format!(
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
                    .map_err(MergeError::schema_from(format!("key column `{n}`")))
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
}
