//! `apply`'s one attempt: the batch planned against the key index, unchanged-TOAST columns
//! filled from the stored rows, new data files and one position-delete file per partition
//! written, the tombstones of deleted keys listed, the snapshot committed, and the index
//! moved to the new files.

use super::{now_us, Applied, CdcTable, UNRESOLVED_SAMPLE};
use crate::catalog::Catalog;
use crate::commit::{commit, discard, live_files, Changes, Outcome};
use crate::io::rows::{value_at, Row};
use crate::io::{read_rows, DataWriter};
use crate::table::key_index::{Key, KeyColumns, Location};
use crate::table::plan::{plan, Action, KeyChange, Plan};
use crate::table::tombstones::{self, Tombstone, TOMBSTONES_KEY};
use crate::MergeError;
use debezium_cdc::record::ChangeRecord;
use iceberg::spec::{DataFile, Struct};
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

impl CdcTable {
    /// The tombstone files the commit of `plan` lists, and the one it writes (if any): the
    /// list carried on, with a file of this batch's deletes added, or, once the list is
    /// long, one file of every tombstone in force.
    async fn tombstone_files(
        &self,
        plan: &Plan<'_>,
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
            tombstones::listed(
                self.last_summary_with(TOMBSTONES_KEY).as_ref(),
                self.table.metadata().location(),
            )
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

    pub(super) async fn try_apply<R: Borrow<ChangeRecord>>(
        &mut self,
        catalog: &Catalog,
        records: &[R],
        mut properties: HashMap<String, String>,
    ) -> Result<Option<Applied>, MergeError> {
        let mut plan = plan(records, &self.keys, |k| self.index.get(k))?;
        let mut applied = Applied {
            stale: plan.stale,
            truncated: plan.truncate,
            ..Applied::default()
        };

        // rows replaced or deleted, by data file
        let mut deletes: HashMap<u32, Vec<u32>> = HashMap::new();
        if !plan.truncate {
            for change in &plan.changes {
                if let Some(loc) = change.stored.filter(Location::is_live) {
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
            file_io: self.table.file_io().clone(),
            location: metadata.location().to_owned(),
            schema: evolved
                .clone()
                .unwrap_or_else(|| metadata.current_schema().clone()),
            spec: metadata.default_partition_spec().clone(),
            options: self.options.write.clone(),
        };
        let processed_at = now_us();
        let written = writer.write(&rows, processed_at).await?;
        // one position-delete file per partition (not per data file: at a million keys a
        // batch touches a thousand data files)
        let mut by_partition: HashMap<Struct, Vec<(String, Vec<u32>)>> = HashMap::new();
        for (file_id, positions) in deletes {
            let Some(data_file) = self.files.get(file_id) else {
                return Err(MergeError::commit(format!(
                    "key index points at unknown file {file_id}"
                )));
            };
            by_partition
                .entry(data_file.partition.clone())
                .or_default()
                .push((data_file.path.clone(), positions));
        }
        let delete_files = writer
            .write_position_deletes_by_partition(by_partition)
            .await?;
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
        let listing = tombstones::listing(&tombstone_list, self.table.metadata().location());
        properties.insert(TOMBSTONES_KEY.to_owned(), listing);
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
        for w in &written {
            let id = self.files.register(&w.file);
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
        self.files.sweep(&self.index);
        Ok(Some(applied))
    }

    /// Fills unchanged-TOAST columns from the stored rows.
    async fn carry_unchanged(
        &self,
        changes: &mut [KeyChange<'_>],
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
                if let Some(loc) = change.stored.filter(Location::is_live) {
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
            let Some(file) = self.files.get(file_id) else {
                continue;
            };
            targets.sort_unstable();
            let batches = read_rows(self.table.file_io(), &file.path, &projected).await?;
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
                                    .to_mut()
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
fn unresolved_unchanged(changes: &[KeyChange], keys: &KeyColumns) -> (u64, Vec<String>) {
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
