//! The table's live data files and the key index over their rows: files registered as they
//! are written (and forgotten once no live row is left in them), and the whole index rebuilt
//! from the files, their position deletes and the tombstones in force (at start-up, after a
//! lost compare-and-swap, after another writer's compaction).

use super::CdcTable;
use crate::catalog::Catalog;
use crate::commit::live_files;
use crate::io::rows::value_at;
use crate::io::{read_position_deletes, read_rows};
use crate::schema::LSN_COLUMN;
use crate::table::key_index::{KeyIndex, Location, TOMBSTONE};
use crate::table::tombstones::{self, TOMBSTONES_KEY};
use crate::MergeError;
use arrow_array::Array;
use iceberg::spec::{DataContentType, DataFile, Struct};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// What the merge needs of a data file the key index points into: its path (position deletes
/// name it, unchanged values are read from it) and its partition (one position-delete file
/// per partition). Not its statistics: a table written for hours has hundreds of thousands.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FileEntry {
    pub path: String,
    pub partition: Struct,
}

/// Fewest files registered between two sweeps of the files no live row is left in.
const SWEEP_AFTER: usize = 1024;

/// The data files the key index refers to by number. Every commit registers its new files;
/// once as many have come as were live at the last sweep, the files without a live row are
/// forgotten and their numbers reused, so what is held follows the live files, not the
/// length of the stream.
#[derive(Debug, Default)]
pub(super) struct Files {
    slots: Vec<Option<FileEntry>>,
    ids: HashMap<String, u32>,
    free: Vec<u32>,
    added: usize,
    live: usize,
}

impl Files {
    pub fn register(&mut self, file: &DataFile) -> u32 {
        let entry = FileEntry {
            path: file.file_path().to_owned(),
            partition: file.partition().clone(),
        };
        let id = self.free.pop().unwrap_or(self.slots.len() as u32);
        self.ids.insert(entry.path.clone(), id);
        match self.slots.get_mut(id as usize) {
            Some(slot) => *slot = Some(entry),
            None => self.slots.push(Some(entry)),
        }
        self.added += 1;
        id
    }

    pub fn get(&self, id: u32) -> Option<&FileEntry> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    /// Forgets a file (rewritten by compaction); its number, if it had one. The number is
    /// reused only once a sweep finds no row of the index left on it.
    pub fn forget(&mut self, path: &str) -> Option<u32> {
        let id = self.ids.remove(path)?;
        if let Some(slot) = self.slots.get_mut(id as usize) {
            *slot = None;
        }
        Some(id)
    }

    pub fn clear(&mut self) {
        *self = Files::default();
    }

    /// Files registered and not forgotten.
    pub fn registered(&self) -> usize {
        self.ids.len()
    }

    /// Whether enough files came since the last sweep for another.
    fn sweep_due(&self) -> bool {
        self.added >= self.live.max(SWEEP_AFTER)
    }

    /// Forgets the files no entry of `index` is in, once enough new ones have come.
    pub fn sweep(&mut self, index: &KeyIndex) {
        if self.sweep_due() {
            let in_use = index.files_in_use(self.slots.len());
            self.keep(&in_use);
        }
    }

    /// Forgets the files `in_use` (by number) says no row of the index is in, and makes
    /// their numbers free.
    fn keep(&mut self, in_use: &[bool]) {
        self.free.clear();
        for (id, slot) in self.slots.iter_mut().enumerate() {
            if in_use.get(id).copied().unwrap_or(false) {
                continue;
            }
            if let Some(entry) = slot.take() {
                self.ids.remove(&entry.path);
            }
            self.free.push(id as u32);
        }
        self.added = 0;
        self.live = self.ids.len();
    }
}

impl CdcTable {
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
        let listed = tombstones::listed(
            self.last_summary_with(TOMBSTONES_KEY).as_ref(),
            self.table.metadata().location(),
        );
        for path in listed {
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
            let id = self.files.register(&f.file);
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

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{DataFileBuilder, DataFileFormat};

    fn file(n: usize) -> DataFile {
        DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(format!("file:///t/data/{n}.parquet"))
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::empty())
            .partition_spec_id(0)
            .record_count(1)
            .file_size_in_bytes(10)
            .build()
            .unwrap()
    }

    #[test]
    fn files_without_live_rows_are_forgotten_and_their_numbers_reused() {
        let mut files = Files::default();
        let ids: Vec<u32> = (0..SWEEP_AFTER).map(|n| files.register(&file(n))).collect();
        assert_eq!(ids, (0..SWEEP_AFTER as u32).collect::<Vec<_>>());
        assert!(files.sweep_due());
        // rows live in the even files only
        let in_use: Vec<bool> = (0..SWEEP_AFTER).map(|n| n % 2 == 0).collect();
        files.keep(&in_use);
        assert!(!files.sweep_due());
        assert_eq!(files.ids.len(), SWEEP_AFTER / 2);
        assert_eq!(
            files.get(2).map(|f| f.path.as_str()),
            Some("file:///t/data/2.parquet")
        );
        assert!(files.get(3).is_none());
        // a new file takes a freed number, never one in use
        let id = files.register(&file(5000));
        assert_eq!(id % 2, 1);
        assert_eq!(
            files.get(id).map(|f| f.path.as_str()),
            Some("file:///t/data/5000.parquet")
        );
        assert_eq!(
            files.slots.len(),
            SWEEP_AFTER,
            "no new number while one is free"
        );
    }

    #[test]
    fn a_forgotten_number_waits_for_a_sweep() {
        let mut files = Files::default();
        let a = files.register(&file(1));
        assert_eq!(files.forget("file:///t/data/1.parquet"), Some(a));
        assert!(files.get(a).is_none());
        // the index may still point at it until it is relocated: not handed out again
        let b = files.register(&file(2));
        assert_ne!(a, b);
        // a sweep that finds a row still on the forgotten number keeps it out of use
        files.keep(&[true, true]);
        let c = files.register(&file(3));
        assert_eq!(c, 2);
        files.keep(&[false, true, true]);
        assert_eq!(files.register(&file(4)), a);
    }
}
