//! Compaction: the small data files of a partition, and the data files that carry position
//! deletes, rewritten into files near the target size without their deleted rows; committed
//! as one `replace` snapshot that also drops the position-delete files that only pointed into
//! the rewritten files.
//!
//! Three steps, so that a writer committing meanwhile can be checked against:
//! [`select`] (pure: which files), [`prepare`] (read, filter, write the new files; nothing
//! visible yet) and [`commit`] (the catalog's compare-and-swap; when another commit landed
//! since the files were read, [`still_valid`] decides whether the rewrite can go on top of it
//! or must be dropped: it must, when that commit deleted or replaced a row of a rewritten
//! file, since the rewrite holds the old row).

use crate::catalog::Catalog;
use crate::commit::{commit as commit_snapshot, discard, live_files, Changes, LiveFile, Outcome};
use crate::history::{newest_in_history, TOMBSTONES_KEY};
use crate::io::{read_position_deletes, read_rows, DataWriter, WriteOptions};
use crate::MergeError;
use arrow_array::BooleanArray;
use iceberg::spec::{DataContentType, DataFile, Operation, Struct, TableMetadata};
use iceberg::table::Table;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The summary key that marks a maintenance snapshot (`compaction`).
pub const MAINTENANCE_KEY: &str = "cdc.maintenance";

/// When and how much to compact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Size of the files written.
    pub target_file_size: u64,
    /// Data files below this size are small.
    pub small_file_size: u64,
    /// A partition without deletes is rewritten once it has this many small files.
    pub min_input_files: usize,
    /// Input read by one run at most (the rest waits for the next run).
    pub max_input_bytes: u64,
    /// Rewrites attempted when concurrent commits invalidate one.
    pub max_attempts: u32,
    /// What a writer's snapshots record that the compaction's snapshot carries on (the rows
    /// are the same, so the writer's source positions still hold, and snapshot expiry need
    /// not keep the older snapshot, and with it every file the compaction replaced, for the
    /// writer's sake). The merge engine's own properties (the tombstone list) are always
    /// carried.
    pub carry: Option<CarrySummary>,
}

/// Makes, from the table a rewrite commits on, the summary properties its writer wants
/// carried through a compaction (the connector's ledger: its name and source positions).
#[derive(Clone)]
pub struct CarrySummary(Arc<CarryFn>);

type CarryFn = dyn Fn(&TableMetadata) -> HashMap<String, String> + Send + Sync;

impl CarrySummary {
    pub fn new(
        f: impl Fn(&TableMetadata) -> HashMap<String, String> + Send + Sync + 'static,
    ) -> CarrySummary {
        CarrySummary(Arc::new(f))
    }

    pub fn properties(&self, metadata: &TableMetadata) -> HashMap<String, String> {
        (self.0)(metadata)
    }
}

impl std::fmt::Debug for CarrySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CarrySummary(..)")
    }
}

/// Two are equal when they are the same function.
impl PartialEq for CarrySummary {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CarrySummary {}

impl Default for CompactionPolicy {
    fn default() -> Self {
        let target = WriteOptions::default().target_file_size as u64;
        CompactionPolicy {
            target_file_size: target,
            small_file_size: target / 4 * 3,
            min_input_files: 5,
            max_input_bytes: 1 << 30,
            max_attempts: 3,
            carry: None,
        }
    }
}

/// One live data file as compaction weighs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStats {
    pub path: String,
    pub spec_id: i32,
    pub partition: Struct,
    pub size: u64,
    pub records: u64,
    /// Rows of it that live position deletes remove.
    pub deleted: u64,
}

/// Which data files to rewrite, grouped by partition (indices into `files`), most urgent
/// first: files with deletes are always candidates (every read pays for their delete files),
/// small files once a partition has `min_input_files` of them. Files of other partition
/// specs than `spec_id` (the one new files are written with) are left alone.
pub fn select(files: &[FileStats], spec_id: i32, policy: &CompactionPolicy) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        if f.spec_id == spec_id && (f.deleted > 0 || f.size < policy.small_file_size) {
            groups
                .entry(format!("{:?}", f.partition))
                .or_default()
                .push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = groups
        .into_values()
        .filter(|g| {
            g.iter().any(|&i| files[i].deleted > 0) || g.len() >= policy.min_input_files.max(2)
        })
        .collect();
    let deleted = |g: &Vec<usize>| g.iter().map(|&i| files[i].deleted).sum::<u64>();
    groups.sort_by(|a, b| deleted(b).cmp(&deleted(a)).then(b.len().cmp(&a.len())));
    // within a group: the largest share of deleted rows first, then the smallest files
    let share = |f: &FileStats| f.deleted as f64 / f.records.max(1) as f64;
    for g in &mut groups {
        g.sort_by(|&a, &b| {
            share(&files[b])
                .total_cmp(&share(&files[a]))
                .then(files[a].size.cmp(&files[b].size))
        });
    }
    let mut budget = policy.max_input_bytes;
    let mut out = Vec::new();
    for g in groups {
        let mut taken = Vec::new();
        for i in g {
            if files[i].size > budget && !(out.is_empty() && taken.is_empty()) {
                break;
            }
            budget = budget.saturating_sub(files[i].size);
            taken.push(i);
        }
        let worth = taken.len() >= 2 || taken.iter().any(|&i| files[i].deleted > 0);
        if worth {
            out.push(taken);
        }
        if budget == 0 {
            break;
        }
    }
    out
}

/// Where the rows of one rewritten file went: per old position, `(index into
/// [`Rewrite::added`], new position)`, or `None` for a deleted row.
pub type Moves = Vec<Option<(u32, u32)>>;

/// New files written for a rewrite, not visible yet.
pub struct Rewrite {
    /// The table the files were read from.
    pub base: Table,
    /// Data files rewritten.
    pub rewritten: HashSet<String>,
    /// Files the commit removes: the rewritten data files and the delete files that only
    /// point into them.
    pub removed: HashSet<String>,
    /// Delete files live when the files were read.
    seen_deletes: HashSet<String>,
    pub added: Vec<DataFile>,
    pub moves: HashMap<String, Moves>,
    pub report: CompactionReport,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub data_files_before: usize,
    pub delete_files_before: usize,
    pub data_files_after: usize,
    pub delete_files_after: usize,
    pub files_rewritten: usize,
    pub delete_files_removed: usize,
    pub files_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub rows_read: u64,
    /// Deleted rows dropped from the rewritten files.
    pub rows_dropped: u64,
    pub rows_written: u64,
    /// Rewrites given up because a concurrent commit changed rows of their files.
    pub conflicts: u32,
    pub snapshot_id: Option<i64>,
    pub elapsed: Duration,
}

impl std::fmt::Display for CompactionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data files {} -> {}, delete files {} -> {}; rewrote {} files ({} rows, {} deleted rows dropped) into {}; read {} bytes, wrote {}; {} conflicts; {:.2} s",
            self.data_files_before,
            self.data_files_after,
            self.delete_files_before,
            self.delete_files_after,
            self.files_rewritten,
            self.rows_read,
            self.rows_dropped,
            self.files_written,
            self.bytes_read,
            self.bytes_written,
            self.conflicts,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Live files of a table with the positions their delete files remove.
struct LiveState {
    data: Vec<LiveFile>,
    deletes: Vec<LiveFile>,
    /// delete file -> the data files it points into
    targets: HashMap<String, HashSet<String>>,
    /// data file -> deleted positions
    deleted: HashMap<String, HashSet<u32>>,
}

async fn live_state(table: &Table) -> Result<LiveState, MergeError> {
    let mut state = LiveState {
        data: Vec::new(),
        deletes: Vec::new(),
        targets: HashMap::new(),
        deleted: HashMap::new(),
    };
    for f in live_files(table).await? {
        match f.file.content_type() {
            DataContentType::Data => state.data.push(f),
            DataContentType::PositionDeletes => {
                let path = f.file.file_path().to_owned();
                let mut targets = HashSet::new();
                for (data, positions) in read_position_deletes(table.file_io(), &path).await? {
                    state
                        .deleted
                        .entry(data.clone())
                        .or_default()
                        .extend(positions);
                    targets.insert(data);
                }
                state.targets.insert(path, targets);
                state.deletes.push(f);
            }
            DataContentType::EqualityDeletes => {
                return Err(MergeError::schema(format!(
                    "{} has equality delete files, which compaction does not rewrite",
                    table.identifier()
                )))
            }
        }
    }
    Ok(state)
}

/// Reads the selected files and writes their live rows into new files. `None`: nothing is
/// worth rewriting.
pub async fn prepare(
    table: &Table,
    policy: &CompactionPolicy,
) -> Result<Option<Rewrite>, MergeError> {
    let started = Instant::now();
    let state = live_state(table).await?;
    let metadata = table.metadata();
    let spec = metadata.default_partition_spec().clone();
    let stats: Vec<FileStats> = state
        .data
        .iter()
        .map(|f| FileStats {
            path: f.file.file_path().to_owned(),
            spec_id: f.spec_id,
            partition: f.file.partition().clone(),
            size: f.file.file_size_in_bytes(),
            records: f.file.record_count(),
            deleted: state
                .deleted
                .get(f.file.file_path())
                .map_or(0, |d| d.len() as u64),
        })
        .collect();
    let groups = select(&stats, spec.spec_id(), policy);
    if groups.is_empty() {
        return Ok(None);
    }
    let arrow_schema = std::sync::Arc::new(
        iceberg::arrow::schema_to_arrow_schema(metadata.current_schema())
            .map_err(MergeError::schema_from("the table schema in Arrow"))?,
    );
    let write = WriteOptions {
        target_file_size: policy.target_file_size as usize,
    };
    let writer = DataWriter {
        file_io: table.file_io().clone(),
        location: metadata.location().to_owned(),
        schema: metadata.current_schema().clone(),
        spec: spec.clone(),
        options: write,
    };
    let mut report = CompactionReport {
        data_files_before: state.data.len(),
        delete_files_before: state.deletes.len(),
        ..CompactionReport::default()
    };
    let mut rewritten = HashSet::new();
    let mut added: Vec<DataFile> = Vec::new();
    let mut moves: HashMap<String, Moves> = HashMap::new();
    for group in groups {
        let partition = (!spec.is_unpartitioned()).then(|| stats[group[0]].partition.clone());
        let mut out = writer.open_partition(partition).await?;
        // old file -> per old position, the row's place in this group's output
        let mut order: Vec<(String, Vec<Option<u32>>)> = Vec::new();
        let mut next: u32 = 0;
        for &i in &group {
            let path = &stats[i].path;
            let gone = state.deleted.get(path);
            let mut places = Vec::with_capacity(stats[i].records as usize);
            for batch in read_rows(table.file_io(), path, &arrow_schema).await? {
                let base = places.len() as u32;
                let keep: BooleanArray = (0..batch.num_rows() as u32)
                    .map(|r| Some(!gone.is_some_and(|g| g.contains(&(base + r)))))
                    .collect();
                for k in keep.values().iter() {
                    places.push(k.then(|| {
                        next += 1;
                        next - 1
                    }));
                }
                let kept = arrow_select::filter::filter_record_batch(&batch, &keep)
                    .map_err(MergeError::arrow_from("dropping deleted rows"))?;
                report.rows_read += batch.num_rows() as u64;
                report.rows_written += kept.num_rows() as u64;
                out.write(&kept).await?;
            }
            report.bytes_read += stats[i].size;
            rewritten.insert(path.clone());
            order.push((path.clone(), places));
        }
        let files = out.close().await?;
        // the n-th row written is in the file whose cumulative count passes n
        let first = added.len() as u32;
        let mut ends = Vec::with_capacity(files.len());
        let mut total = 0u64;
        for f in &files {
            total += f.record_count();
            ends.push(total);
            report.bytes_written += f.file_size_in_bytes();
        }
        if total != u64::from(next) {
            return Err(MergeError::io(format!(
                "compaction wrote {total} rows of {next}"
            )));
        }
        for (path, places) in order {
            let placed = places
                .into_iter()
                .map(|p| {
                    p.map(|n| {
                        let file = ends.partition_point(|&end| end <= u64::from(n));
                        let start = if file == 0 { 0 } else { ends[file - 1] };
                        (first + file as u32, (u64::from(n) - start) as u32)
                    })
                })
                .collect();
            moves.insert(path, placed);
        }
        added.extend(files);
    }
    let mut removed = rewritten.clone();
    for (delete_file, targets) in &state.targets {
        if targets.iter().all(|t| rewritten.contains(t)) {
            removed.insert(delete_file.clone());
            report.delete_files_removed += 1;
        }
    }
    report.rows_dropped = report.rows_read - report.rows_written;
    report.files_rewritten = rewritten.len();
    report.files_written = added.len();
    report.data_files_after = report.data_files_before - rewritten.len() + added.len();
    report.delete_files_after = report.delete_files_before - report.delete_files_removed;
    report.elapsed = started.elapsed();
    Ok(Some(Rewrite {
        base: table.clone(),
        rewritten,
        removed,
        seen_deletes: state
            .deletes
            .iter()
            .map(|f| f.file.file_path().to_owned())
            .collect(),
        added,
        moves,
        report,
    }))
}

/// Whether `rewrite` may still be committed on `current`: every file it removes is still
/// live, and no delete file added since it read its files points into one of them (such a
/// delete removed or replaced a row the rewrite still holds).
pub async fn still_valid(rewrite: &Rewrite, current: &Table) -> Result<Option<String>, MergeError> {
    let live = live_files(current).await?;
    let paths: HashSet<&str> = live.iter().map(|f| f.file.file_path()).collect();
    if let Some(gone) = rewrite.removed.iter().find(|p| !paths.contains(p.as_str())) {
        return Ok(Some(format!("{gone} was removed by a concurrent commit")));
    }
    for f in &live {
        let path = f.file.file_path();
        match f.file.content_type() {
            DataContentType::Data => {}
            _ if rewrite.seen_deletes.contains(path) => {}
            DataContentType::EqualityDeletes => {
                return Ok(Some(format!(
                    "{path}: a concurrent commit added equality deletes"
                )))
            }
            DataContentType::PositionDeletes => {
                let hits = match f.file.referenced_data_file() {
                    Some(target) => rewrite.rewritten.contains(&target),
                    None => read_position_deletes(current.file_io(), path)
                        .await?
                        .keys()
                        .any(|t| rewrite.rewritten.contains(t)),
                };
                if hits {
                    return Ok(Some(format!(
                        "a concurrent commit deleted rows of a rewritten file ({path})"
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// How a rewrite ended.
pub enum Committed {
    /// On the table it was read from: the moves describe the new table exactly.
    OnBase(Box<Table>),
    /// On a table other writers committed to since (their changes did not touch the
    /// rewritten rows).
    Rebased(Box<Table>),
    /// Given up: a concurrent commit changed rows of the rewritten files. The new files are
    /// deleted again.
    Dropped(String),
}

/// The summary properties a compaction snapshot on `table` carries: the merge engine's
/// tombstone list as the newest snapshot has it, and what the writer's
/// [`CompactionPolicy::carry`] makes of the table.
pub fn carried_summary(table: &Table, carry: Option<&CarrySummary>) -> HashMap<String, String> {
    let mut out = HashMap::from([(MAINTENANCE_KEY.to_owned(), "compaction".to_owned())]);
    let metadata = table.metadata();
    if let Some(s) = newest_in_history(metadata, |s| {
        s.summary()
            .additional_properties
            .contains_key(TOMBSTONES_KEY)
    }) {
        if let Some(list) = s.summary().additional_properties.get(TOMBSTONES_KEY) {
            out.insert(TOMBSTONES_KEY.to_owned(), list.clone());
        }
    }
    for (k, v) in carry.map(|c| c.properties(metadata)).unwrap_or_default() {
        out.entry(k).or_insert(v);
    }
    out
}

/// Commits a prepared rewrite as a `replace` snapshot.
pub async fn commit(
    catalog: &Catalog,
    rewrite: &Rewrite,
    policy: &CompactionPolicy,
) -> Result<Committed, MergeError> {
    let mut table = rewrite.base.clone();
    let mut rebased = false;
    for _ in 0..policy.max_attempts.max(1) * 4 {
        let changes = Changes {
            added_data: rewrite.added.clone(),
            added_deletes: Vec::new(),
            removed: rewrite.removed.clone(),
            operation: Some(Operation::Replace),
            properties: carried_summary(&table, policy.carry.as_ref()),
            schema: None,
        };
        match commit_snapshot(catalog, &table, changes).await? {
            Outcome::Committed(t) if rebased => return Ok(Committed::Rebased(t)),
            Outcome::Committed(t) => return Ok(Committed::OnBase(t)),
            Outcome::Conflict => {
                table = catalog.load_existing(table.identifier()).await?;
                if let Some(reason) = still_valid(rewrite, &table).await? {
                    discard(table.file_io(), &rewrite.added).await;
                    return Ok(Committed::Dropped(reason));
                }
                rebased = true;
            }
        }
    }
    discard(table.file_io(), &rewrite.added).await;
    Ok(Committed::Dropped(
        "lost the compare-and-swap too often to concurrent commits".into(),
    ))
}

/// What [`compact`] leaves.
pub struct Compacted {
    /// The table as it is now (as loaded last when nothing landed).
    pub table: Table,
    pub report: CompactionReport,
    /// The rewrite, when it landed directly on the table it read: its moves then describe
    /// the new table exactly (a key index can follow them instead of being rebuilt).
    pub on_base: Option<Rewrite>,
}

/// Prepares and commits rewrites until one lands, nothing is left to do, or the attempts
/// run out.
pub async fn compact(
    catalog: &Catalog,
    table: &Table,
    policy: &CompactionPolicy,
) -> Result<Compacted, MergeError> {
    let started = Instant::now();
    let mut table = table.clone();
    let mut conflicts = 0;
    loop {
        let nothing = |table: Table, conflicts| Compacted {
            table,
            report: CompactionReport {
                conflicts,
                elapsed: started.elapsed(),
                ..CompactionReport::default()
            },
            on_base: None,
        };
        let Some(rewrite) = prepare(&table, policy).await? else {
            return Ok(nothing(table, conflicts));
        };
        let (new_table, on_base) = match commit(catalog, &rewrite, policy).await? {
            Committed::OnBase(t) => (*t, true),
            Committed::Rebased(t) => (*t, false),
            Committed::Dropped(reason) => {
                conflicts += 1;
                tracing::info!(table = %table.identifier(), reason, "compaction dropped");
                table = catalog.load_existing(table.identifier()).await?;
                if conflicts >= policy.max_attempts {
                    return Ok(nothing(table, conflicts));
                }
                continue;
            }
        };
        let mut report = rewrite.report.clone();
        report.conflicts = conflicts;
        report.snapshot_id = new_table.metadata().current_snapshot_id();
        report.elapsed = started.elapsed();
        return Ok(Compacted {
            table: new_table,
            report,
            on_base: on_base.then_some(rewrite),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::Literal;

    fn file(part: i32, size: u64, records: u64, deleted: u64) -> FileStats {
        FileStats {
            path: format!("f{part}-{size}-{deleted}"),
            spec_id: 0,
            partition: Struct::from_iter([Some(Literal::int(part))]),
            size,
            records,
            deleted,
        }
    }

    fn policy() -> CompactionPolicy {
        CompactionPolicy {
            target_file_size: 1000,
            small_file_size: 750,
            min_input_files: 3,
            max_input_bytes: 10_000,
            max_attempts: 3,
            carry: None,
        }
    }

    #[test]
    fn small_files_wait_for_enough_of_them() {
        let two = [file(1, 10, 5, 0), file(1, 20, 5, 0)];
        assert!(select(&two, 0, &policy()).is_empty());
        let three = [file(1, 10, 5, 0), file(1, 20, 5, 0), file(1, 30, 5, 0)];
        assert_eq!(select(&three, 0, &policy()), vec![vec![0, 1, 2]]);
        // large files without deletes are never touched
        let large = [file(1, 900, 5, 0), file(1, 900, 5, 0), file(1, 900, 5, 0)];
        assert!(select(&large, 0, &policy()).is_empty());
    }

    #[test]
    fn files_with_deletes_always_and_first() {
        let files = [
            file(1, 10, 10, 0),
            file(1, 20, 10, 0),
            file(1, 30, 10, 0),
            file(2, 900, 10, 1),
        ];
        let groups = select(&files, 0, &policy());
        assert_eq!(groups, vec![vec![3], vec![0, 1, 2]]);
        // the file with the larger deleted share goes first inside its partition
        let files = [file(1, 900, 10, 1), file(1, 800, 10, 5)];
        assert_eq!(select(&files, 0, &policy()), vec![vec![1, 0]]);
    }

    #[test]
    fn a_run_reads_at_most_its_budget_but_always_something() {
        let mut p = policy();
        p.max_input_bytes = 25;
        let files = [file(1, 10, 5, 1), file(1, 10, 5, 1), file(1, 10, 5, 1)];
        assert_eq!(select(&files, 0, &p).iter().flatten().count(), 2);
        p.max_input_bytes = 1;
        let files = [file(1, 900, 5, 1)];
        assert_eq!(select(&files, 0, &p), vec![vec![0]]);
    }

    #[test]
    fn other_specs_are_left_alone() {
        let mut f = file(1, 10, 5, 1);
        f.spec_id = 1;
        assert!(select(&[f], 0, &policy()).is_empty());
    }
}
