//! Orphan removal: files under a table's `data/` and `metadata/` folders that no metadata
//! references (leftovers of failed or lost commits, metadata files that fell out of the
//! metadata log) and that are older than a safety window, so that a commit in flight (its
//! files written, its compare-and-swap not yet done) never loses a file.

use crate::commit::referenced_files;
use crate::io::storage::{Listed, Storage};
use crate::MergeError;
use iceberg::table::Table;
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanPolicy {
    /// Unreferenced files younger than this stay.
    pub older_than: Duration,
}

impl Default for OrphanPolicy {
    fn default() -> Self {
        OrphanPolicy {
            older_than: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanReport {
    pub files_listed: usize,
    pub orphans_deleted: usize,
    pub bytes_freed: u64,
    /// Unreferenced files kept because they are younger than the window.
    pub too_young: usize,
    pub delete_failures: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for OrphanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "listed {} files; deleted {} orphans ({} bytes, {} failed); {} unreferenced but younger than the window; {:.2} s",
            self.files_listed,
            self.orphans_deleted,
            self.bytes_freed,
            self.delete_failures,
            self.too_young,
            self.elapsed.as_secs_f64()
        )
    }
}

/// A location with its scheme dropped (`s3a://b/k` and `s3://b/k` are one object;
/// `file:///p`, Hadoop's `file:/p` (what Java catalogs write) and `/p` one file).
fn normalized(path: &str) -> &str {
    if let Some((_, rest)) = path.split_once("://") {
        return rest.trim_start_matches('/');
    }
    match path.split_once(":/") {
        Some((scheme, rest))
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            rest.trim_start_matches('/')
        }
        _ => path.trim_start_matches('/'),
    }
}

/// The listed files that are orphans at `cutoff`: not referenced, last written before it.
/// Returns (orphans, unreferenced files too young to go).
pub fn orphans<'a>(
    listed: &'a [Listed],
    referenced: &BTreeSet<String>,
    cutoff: SystemTime,
) -> (Vec<&'a Listed>, usize) {
    let referenced: BTreeSet<&str> = referenced.iter().map(|p| normalized(p)).collect();
    let mut young = 0;
    let mut out = Vec::new();
    for l in listed {
        if referenced.contains(normalized(&l.path)) {
            continue;
        }
        if l.modified < cutoff {
            out.push(l);
        } else {
            young += 1;
        }
    }
    (out, young)
}

/// Deletes the table's orphan files.
pub async fn remove_orphans(
    storage: &Storage,
    table: &Table,
    policy: &OrphanPolicy,
) -> Result<OrphanReport, MergeError> {
    let started = Instant::now();
    // metadata first, listing second: a file committed between the two is young
    let referenced = referenced_files(table).await?;
    let location = table.metadata().location().trim_end_matches('/');
    let mut listed = Vec::new();
    for folder in ["data", "metadata"] {
        listed.extend(storage.list(&format!("{location}/{folder}")).await?);
    }
    let cutoff = SystemTime::now()
        .checked_sub(policy.older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let (found, too_young) = orphans(&listed, &referenced, cutoff);
    let mut report = OrphanReport {
        files_listed: listed.len(),
        too_young,
        ..OrphanReport::default()
    };
    for orphan in found {
        match table.file_io().delete(&orphan.path).await {
            Ok(()) => {
                report.orphans_deleted += 1;
                report.bytes_freed += orphan.size;
                tracing::debug!(path = orphan.path, "orphan deleted");
            }
            Err(e) => {
                report.delete_failures += 1;
                tracing::warn!(path = orphan.path, error = %e, "an orphan could not be deleted");
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(path: &str, age_s: u64) -> Listed {
        Listed {
            path: path.into(),
            size: 10,
            modified: SystemTime::now() - Duration::from_secs(age_s),
        }
    }

    #[test]
    fn only_old_unreferenced_files_go() {
        let files = [
            listed("s3://b/t/data/live.parquet", 10_000),
            listed("s3://b/t/data/old-orphan.parquet", 10_000),
            listed("s3://b/t/data/new-orphan.parquet", 10),
            listed("file:///w/t/metadata/00001.metadata.json", 10_000),
            // a REST catalog's Java server names its metadata files the Hadoop way
            listed("file:///w/t/metadata/00002.metadata.json", 10_000),
        ];
        let referenced: BTreeSet<String> = [
            "s3a://b/t/data/live.parquet".to_owned(),
            "/w/t/metadata/00001.metadata.json".to_owned(),
            "file:/w/t/metadata/00002.metadata.json".to_owned(),
        ]
        .into();
        let cutoff = SystemTime::now() - Duration::from_secs(3600);
        let (gone, young) = orphans(&files, &referenced, cutoff);
        let gone: Vec<&str> = gone.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(gone, ["s3://b/t/data/old-orphan.parquet"]);
        assert_eq!(young, 1);
    }
}
