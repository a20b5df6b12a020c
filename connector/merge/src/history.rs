//! The table's history as snapshot summaries record it: the newest snapshot carrying a key
//! (through the parents and, past an expired one, the older snapshots still kept), and the
//! merge engine's own summary key, the list of tombstone files in force.

use std::collections::HashMap;

/// The snapshot-summary key listing the tombstone files in force.
pub const TOMBSTONES_KEY: &str = "cdc.tombstones";

/// The files a snapshot summary lists.
pub fn listed(summary: Option<&HashMap<String, String>>) -> Vec<String> {
    summary
        .and_then(|s| s.get(TOMBSTONES_KEY))
        .map(|list| {
            list.split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
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
