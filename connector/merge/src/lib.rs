//! The merge engine: batches of normalized CDC records (the `debezium-cdc` SmartModule's
//! output) applied to Iceberg tables with exact upsert and delete semantics, one atomic
//! snapshot per batch, readable by every Iceberg engine.
//!
//! Data path of one batch, through [`table`]: its plan (the newest change per key), the key
//! index (which stored rows each change replaces), the schema following the source -> [`io`]
//! (Parquet data files and position deletes) -> [`commit`] (manifests, snapshot, metadata,
//! the [`catalog`]'s compare-and-swap). [`history`] reads what snapshot summaries record.
//!
//! Beside the writer, [`maintenance`]: compaction, snapshot expiry and orphan removal.
//! Errors: [`MergeError`], each of a class ([`ErrorClass`]) that says whether to retry,
//! pause the table or dead-letter the record.

pub mod catalog;
pub mod commit;
mod error;
pub mod history;
pub mod io;
pub mod maintenance;
pub mod schema;
pub mod table;

pub use catalog::{Catalog, CatalogConfig};
pub use error::{Cause, ErrorClass, MergeError};
pub use io::storage::{S3Settings, Storage};
pub use table::reconcile::SchemaChanges;
pub use table::{Applied, CdcTable, TableOptions};
