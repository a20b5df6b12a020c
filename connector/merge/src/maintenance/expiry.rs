//! Snapshot expiry: snapshots older than an age are dropped from the table's metadata (the
//! newest few always stay, as do the current one, those branches and tags point at, and the
//! newest snapshot of every connector: the offsets it resumes from), then the manifest lists,
//! manifests, data and delete files that no kept snapshot reaches are deleted.

use crate::catalog::Catalog;
use crate::commit::{commit_metadata, snapshot_files, Outcome};
use crate::MergeError;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::table::Table;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// Snapshots younger than this stay.
    pub max_age: Duration,
    /// The newest this many snapshots stay, however old.
    pub min_snapshots: usize,
    /// A snapshot-summary key naming a writer (`cdc.connector`): for every value it takes,
    /// the newest snapshot carrying it stays, so that writer can still resume from the
    /// offsets in it.
    pub keep_newest_of: Option<String>,
    /// Compare-and-swap attempts when others commit meanwhile.
    pub max_attempts: u32,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        ExpiryPolicy {
            max_age: Duration::from_secs(3600),
            min_snapshots: 10,
            keep_newest_of: None,
            max_attempts: 10,
        }
    }
}

/// What an expiry did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    pub snapshots_before: usize,
    pub snapshots_after: usize,
    pub files_deleted: usize,
    /// Bytes of the deleted data, delete and manifest files (manifest lists not counted).
    pub bytes_freed: u64,
    /// Files that could not be deleted (left to orphan removal).
    pub delete_failures: usize,
    pub conflicts: u32,
    pub elapsed: Duration,
}

impl std::fmt::Display for ExpiryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "snapshots {} -> {}; deleted {} files ({} bytes, {} failed); {} conflicts; {:.2} s",
            self.snapshots_before,
            self.snapshots_after,
            self.files_deleted,
            self.bytes_freed,
            self.delete_failures,
            self.conflicts,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The snapshots `policy` expires at `now_ms` (milliseconds since the epoch).
pub fn expired(metadata: &TableMetadata, policy: &ExpiryPolicy, now_ms: i64) -> Vec<i64> {
    let mut by_age: Vec<_> = metadata.snapshots().collect();
    by_age.sort_by_key(|s| std::cmp::Reverse((s.sequence_number(), s.timestamp_ms())));
    let mut keep: BTreeSet<i64> = by_age
        .iter()
        .take(policy.min_snapshots.max(1))
        .map(|s| s.snapshot_id())
        .collect();
    keep.extend(metadata.current_snapshot_id());
    match ref_targets(metadata) {
        Some(targets) => keep.extend(targets),
        // refs unknown: expire nothing rather than a tagged snapshot
        None => return Vec::new(),
    }
    let cutoff = now_ms.saturating_sub(policy.max_age.as_millis() as i64);
    keep.extend(
        by_age
            .iter()
            .filter(|s| s.timestamp_ms() >= cutoff)
            .map(|s| s.snapshot_id()),
    );
    if let Some(key) = &policy.keep_newest_of {
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for s in &by_age {
            if let Some(writer) = s.summary().additional_properties.get(key) {
                newest.entry(writer.as_str()).or_insert(s.snapshot_id());
            }
        }
        keep.extend(newest.into_values());
    }
    by_age
        .iter()
        .map(|s| s.snapshot_id())
        .filter(|id| !keep.contains(id))
        .collect()
}

/// The snapshots branches and tags point at (the crate does not list refs: read them from
/// the metadata's JSON form).
fn ref_targets(metadata: &TableMetadata) -> Option<Vec<i64>> {
    let json = serde_json::to_value(metadata).ok()?;
    let refs = match json.get("refs") {
        None => return Some(Vec::new()),
        Some(r) => r.as_object()?,
    };
    refs.values()
        .map(|r| r.get("snapshot-id").and_then(|i| i.as_i64()))
        .collect()
}

/// Expires snapshots and deletes what only they reached.
pub async fn expire(
    catalog: &Catalog,
    table: &Table,
    policy: &ExpiryPolicy,
) -> Result<(Table, ExpiryReport), MergeError> {
    let started = Instant::now();
    let mut table = table.clone();
    let mut report = ExpiryReport {
        snapshots_before: table.metadata().snapshots().count(),
        ..ExpiryReport::default()
    };
    loop {
        let ids = expired(table.metadata(), policy, now_ms());
        if ids.is_empty() {
            report.snapshots_after = table.metadata().snapshots().count();
            report.elapsed = started.elapsed();
            return Ok((table, report));
        }
        let before: BTreeMap<String, u64> =
            snapshot_files(&table, table.metadata().snapshots()).await?;
        let base_location = table.metadata_location().map(str::to_owned);
        let built =
            TableMetadataBuilder::new_from_metadata(table.metadata().clone(), base_location)
                .remove_snapshots(&ids)
                .build()
                .map_err(MergeError::commit_from("expiring snapshots"))?;
        match commit_metadata(catalog, &table, built).await? {
            Outcome::Conflict => {
                report.conflicts += 1;
                if report.conflicts >= policy.max_attempts {
                    return Err(MergeError::commit(format!(
                        "{}: snapshot expiry lost {} commits in a row to concurrent writers",
                        table.identifier(),
                        report.conflicts
                    )));
                }
                table = catalog.load_existing(table.identifier()).await?;
            }
            Outcome::Committed(new_table) => {
                let after = snapshot_files(&new_table, new_table.metadata().snapshots()).await?;
                for (path, size) in before.iter().filter(|(p, _)| !after.contains_key(*p)) {
                    match new_table.file_io().delete(path).await {
                        Ok(()) => {
                            report.files_deleted += 1;
                            report.bytes_freed += size;
                        }
                        Err(e) => {
                            report.delete_failures += 1;
                            tracing::warn!(path, error = %e, "an expired file could not be deleted");
                        }
                    }
                }
                report.snapshots_after = new_table.metadata().snapshots().count();
                report.elapsed = started.elapsed();
                return Ok((*new_table, report));
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
