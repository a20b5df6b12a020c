//! The merge engine: batches of normalized CDC records (the `debezium-cdc` SmartModule's
//! output) applied to Iceberg tables with exact upsert and delete semantics, one atomic
//! snapshot per batch, readable by every Iceberg engine.
//!
//! Data path of one batch: [`plan`] (newest change per key) -> [`files`] (Parquet data files
//! and position deletes located through the [`key_index`]) -> [`commit`] (manifests, snapshot,
//! metadata, the [`catalog`]'s compare-and-swap).
//!
//! Beside the writer, [`maintenance`]: [`compaction`] (small files and files with deletes
//! rewritten, the key index moved along), [`expiry`] (old snapshots and what only they
//! reach) and [`orphans`] (files no metadata references).

pub mod arrow_rows;
pub mod catalog;
pub mod commit;
pub mod compaction;
pub mod evolve;
pub mod expiry;
pub mod files;
pub mod key_index;
pub mod maintenance;
pub mod orphans;
pub mod plan;
pub mod schema;
pub mod storage;
pub mod table;
pub mod tombstones;

pub use catalog::{Catalog, CatalogConfig};
pub use storage::{S3Settings, Storage};
pub use table::{Applied, CdcTable, TableOptions};

/// What went wrong, by whose fault: one record's ([`MergeError::Value`]: dead-letter it,
/// the rest goes on), one table's (`Schema`, `Arrow`: the table cannot go on until an
/// operator acts; the others keep flowing), or a passing one (`Io`, `Catalog`, `Commit`:
/// retry, and stop only after the retry budget, without moving an offset).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("schema: {0}")]
    Schema(String),
    #[error("column `{column}`: {reason}")]
    Value { column: String, reason: String },
    #[error("arrow: {0}")]
    Arrow(String),
    #[error("storage: {0}")]
    Io(String),
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("commit: {0}")]
    Commit(String),
}

impl MergeError {
    /// A failure that may pass (storage, catalog, a commit race): worth retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MergeError::Io(_) | MergeError::Catalog(_) | MergeError::Commit(_)
        )
    }

    /// A failure of one record only.
    pub fn is_record(&self) -> bool {
        matches!(self, MergeError::Value { .. })
    }
}
