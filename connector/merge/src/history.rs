//! The table's history as snapshot summaries record it: the newest snapshot carrying a key
//! (through the parents and, past an expired one, the older snapshots still kept), and the
//! merge engine's own summary key, the list of tombstone files in force.

use std::collections::HashMap;

/// The snapshot-summary key listing the tombstone files in force.
pub const TOMBSTONES_KEY: &str = "cdc.tombstones";

/// The tombstone files a snapshot summary lists, as paths, for the table at `location`. An
/// entry is a file's name in the table's `metadata/` folder, or (as summaries were written
/// before 2026-12-07, and for a file elsewhere) its whole path.
pub fn listed(summary: Option<&HashMap<String, String>>, location: &str) -> Vec<String> {
    summary
        .and_then(|s| s.get(TOMBSTONES_KEY))
        .map(|list| {
            list.split(',')
                .filter(|p| !p.is_empty())
                .map(|entry| {
                    if entry.contains('/') {
                        entry.to_owned()
                    } else {
                        in_metadata(location, entry)
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The summary's list of tombstone files at `paths`: the name of each in the table's
/// `metadata/` folder (a hundred characters less than its path, in every snapshot the
/// table keeps), the whole path of any other.
pub fn listing(paths: &[String], location: &str) -> String {
    let folder = in_metadata(location, "");
    let entry = |path: &'_ String| -> String {
        let name = path
            .strip_prefix(&folder)
            .filter(|n| !n.is_empty() && !n.contains(['/', ',']));
        name.unwrap_or(path).to_owned()
    };
    paths.iter().map(entry).collect::<Vec<_>>().join(",")
}

/// The path of the file `name` in the `metadata/` folder of the table at `location`.
pub fn in_metadata(location: &str, name: &str) -> String {
    format!("{location}/metadata/{name}")
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
