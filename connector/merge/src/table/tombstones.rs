//! The LSNs of deleted keys, kept across restarts: without them a replayed older event
//! (Debezium re-sending from its last flushed offset after a crash, a consumer-group member
//! committing late) would bring a deleted row back in some snapshot.
//!
//! Each commit that deletes keys writes a small Parquet file of them (`key`, the delete's
//! `lsn`, `deleted_at` in seconds) under the table's `metadata/`, and its snapshot summary
//! lists every such file still in force (`cdc.tombstones`, comma-separated names in that
//! folder; every snapshot the table keeps carries the list, so it is kept short). When the list
//! reaches [`MAX_FILES`], the commit writes one file of every tombstone the index holds
//! instead, leaving out those older than the retention: memory and files stay bounded by the
//! deletes of one retention period (`TableOptions::tombstone_retention`, 7 days by default:
//! far longer than any replay window of Debezium or a consumer group).

pub use crate::history::{listed, listing, TOMBSTONES_KEY};
use crate::table::key_index::Key;
use crate::MergeError;
use arrow_array::{Array, BinaryArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use iceberg::io::FileIO;
use std::sync::Arc;

/// Files listed before the next deleting commit consolidates them into one.
pub const MAX_FILES: usize = 32;

/// A deleted key, the LSN of its delete, and when (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub key: Key,
    pub lsn: i64,
    pub deleted_at: u32,
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("lsn", DataType::Int64, false),
        Field::new("deleted_at", DataType::Int64, false),
    ]))
}

fn encode(key: &Key) -> Vec<u8> {
    match key {
        Key::Int(i) => {
            let mut b = vec![0u8];
            b.extend_from_slice(&i.to_be_bytes());
            b
        }
        Key::Bytes(bytes) => {
            let mut b = vec![1u8];
            b.extend_from_slice(bytes);
            b
        }
    }
}

fn decode(bytes: &[u8]) -> Option<Key> {
    match bytes.split_first()? {
        (0, rest) => Some(Key::Int(i64::from_be_bytes(rest.try_into().ok()?))),
        (1, rest) => Some(Key::Bytes(rest.into())),
        _ => None,
    }
}

fn io(path: &str) -> impl FnOnce(iceberg::Error) -> MergeError + '_ {
    MergeError::io_from(path)
}

/// Writes `tombstones` as a new file under `table_location/metadata/`; returns its path.
pub async fn write(
    file_io: &FileIO,
    table_location: &str,
    tombstones: &[Tombstone],
) -> Result<String, MergeError> {
    let path = crate::history::in_metadata(
        table_location,
        &format!("cdc-tombstones-{}.parquet", uuid::Uuid::now_v7()),
    );
    let keys = BinaryArray::from_iter_values(tombstones.iter().map(|t| encode(&t.key)));
    let lsns = Int64Array::from_iter_values(tombstones.iter().map(|t| t.lsn));
    let at = Int64Array::from_iter_values(tombstones.iter().map(|t| i64::from(t.deleted_at)));
    let batch = RecordBatch::try_new(schema(), vec![Arc::new(keys), Arc::new(lsns), Arc::new(at)])
        .map_err(MergeError::arrow_from("tombstones"))?;
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema(), None)
        .map_err(MergeError::io_from(path.as_str()))?;
    writer
        .write(&batch)
        .and_then(|_| writer.close().map(|_| ()))
        .map_err(MergeError::io_from(path.as_str()))?;
    file_io
        .new_output(&path)
        .map_err(io(&path))?
        .write(bytes.into())
        .await
        .map_err(io(&path))?;
    Ok(path)
}

/// The tombstones of one file.
pub async fn read(file_io: &FileIO, path: &str) -> Result<Vec<Tombstone>, MergeError> {
    let mut out = Vec::new();
    for batch in crate::io::read_columns(file_io, path, &["key", "lsn", "deleted_at"]).await? {
        let bad = || MergeError::io(format!("{path}: not a tombstone file"));
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(bad)?;
        let lsns = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(bad)?;
        let at = batch
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(bad)?;
        for i in 0..batch.num_rows() {
            if keys.is_null(i) {
                continue;
            }
            out.push(Tombstone {
                key: decode(keys.value(i)).ok_or_else(bad)?,
                lsn: lsns.value(i),
                deleted_at: u32::try_from(at.value(i)).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// Seconds since the epoch, as tombstones keep them.
pub fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for key in [
            Key::Int(-7),
            Key::Int(i64::MAX),
            Key::Bytes(b"[\"a\",1]".to_vec().into()),
        ] {
            assert_eq!(decode(&encode(&key)), Some(key));
        }
        assert_eq!(decode(&[9, 1]), None);
        assert_eq!(decode(&[0, 1]), None);
    }

    fn summary(list: &str) -> std::collections::HashMap<String, String> {
        std::collections::HashMap::from([(TOMBSTONES_KEY.to_owned(), list.to_owned())])
    }

    #[test]
    fn summaries_list_files_by_name_in_the_metadata_folder() {
        for location in [
            "s3://bucket/shop/items",
            "file:///tmp/w/shop/items",
            "s3://b/t/",
        ] {
            let paths = vec![
                crate::history::in_metadata(location, "cdc-tombstones-1.parquet"),
                crate::history::in_metadata(location, "cdc-tombstones-2.parquet"),
                // not in the table's metadata folder: listed whole
                "s3://elsewhere/metadata/cdc-tombstones-3.parquet".to_owned(),
                crate::history::in_metadata(location, "deeper/cdc-tombstones-4.parquet"),
            ];
            let list = listing(&paths, location);
            assert!(
                list.starts_with("cdc-tombstones-1.parquet,cdc-tombstones-2.parquet,s3://"),
                "{list}"
            );
            assert_eq!(listed(Some(&summary(&list)), location), paths);
        }
        assert!(listed(None, "s3://b/t").is_empty());
        assert!(listed(Some(&summary("")), "s3://b/t").is_empty());
    }

    #[test]
    fn summaries_of_full_paths_are_still_read() {
        let old =
            "s3://b/t/metadata/cdc-tombstones-1.parquet,s3://b/t/metadata/cdc-tombstones-2.parquet";
        assert_eq!(
            listed(Some(&summary(old)), "s3://b/t"),
            old.split(',').collect::<Vec<_>>()
        );
        // and written again as names
        let paths = listed(Some(&summary(old)), "s3://b/t");
        assert_eq!(
            listing(&paths, "s3://b/t"),
            "cdc-tombstones-1.parquet,cdc-tombstones-2.parquet"
        );
    }
}
