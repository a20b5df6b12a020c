//! Files of a table: [`rows`] (CDC rows <-> Arrow), [`data`] (new data files through the
//! `iceberg` crate's writers), [`deletes`] (position-delete files), [`read`] (Parquet files
//! read back) and [`storage`] (the warehouse: local or S3, checked at start-up).

pub mod data;
pub mod deletes;
pub mod read;
pub mod rows;
pub mod storage;

pub use data::{DataWriter, PartitionWriter, WriteOptions, Written};
pub use deletes::{position_delete_schema, read_position_deletes};
pub use read::{read_columns, read_rows};

/// Rows per record batch handed to a writer (the rolling writer rolls between batches) or
/// read from a file.
const CHUNK_ROWS: usize = 8192;
