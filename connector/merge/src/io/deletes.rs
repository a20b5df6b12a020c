//! Position-delete files: written one per partition for the rows a batch replaces or
//! deletes (a file that points into a single data file names it), and read back when the
//! key index is rebuilt.

use super::data::{iceberg_err, side_by_side, writer_properties, DataWriter};
use super::read::read_columns;
use crate::MergeError;
use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::io::FileIO;
use iceberg::spec::{DataContentType, DataFile, NestedField, PrimitiveType, Schema, Struct, Type};
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};
use std::collections::HashMap;
use std::sync::Arc;

/// Field ids Iceberg reserves for position-delete files.
pub const DELETE_FILE_PATH_ID: i32 = i32::MAX - 101;
pub const DELETE_POS_ID: i32 = i32::MAX - 102;

impl DataWriter {
    /// One position-delete file per partition ([`Self::write_position_deletes`]), written
    /// side by side.
    pub async fn write_position_deletes_by_partition(
        &self,
        by_partition: HashMap<Struct, Vec<(String, Vec<u32>)>>,
    ) -> Result<Vec<DataFile>, MergeError> {
        let jobs = by_partition.into_iter().map(|(partition, mut targets)| {
            let writer = self.clone();
            async move {
                writer
                    .write_position_deletes(&partition, &mut targets)
                    .await
            }
        });
        side_by_side(jobs).await
    }

    /// Writes one position-delete file for the data files of one partition: per data file
    /// (path), its deleted rows. Rows are sorted by path, then position, as the spec asks.
    /// A file that points into a single data file names it (`referenced_data_file`).
    pub async fn write_position_deletes(
        &self,
        partition: &Struct,
        targets: &mut [(String, Vec<u32>)],
    ) -> Result<DataFile, MergeError> {
        targets.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (_, positions) in targets.iter_mut() {
            positions.sort_unstable();
        }
        let first = targets
            .first()
            .map(|(p, _)| p.clone())
            .ok_or_else(|| MergeError::io("a position-delete file with no rows"))?;
        let schema = Arc::new(position_delete_schema()?);
        let arrow_schema: ArrowSchemaRef = Arc::new(
            schema_to_arrow_schema(&schema).map_err(iceberg_err("position delete schema"))?,
        );
        let paths: Vec<&str> = targets
            .iter()
            .flat_map(|(path, ps)| ps.iter().map(move |_| path.as_str()))
            .collect();
        let positions: Vec<i64> = targets
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|&p| i64::from(p)))
            .collect();
        let batch = RecordBatch::try_new(
            arrow_schema,
            vec![
                Arc::new(StringArray::from_iter_values(paths)),
                Arc::new(Int64Array::from_iter_values(positions)),
            ],
        )
        .map_err(MergeError::arrow_from("position deletes"))?;
        let dir = first
            .rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or(&self.location);
        let location = format!("{dir}/{}-deletes.parquet", uuid::Uuid::now_v7());
        let output = self
            .file_io
            .new_output(&location)
            .map_err(iceberg_err("position delete file"))?;
        let mut writer = ParquetWriterBuilder::new(writer_properties(), schema)
            .build(output)
            .await
            .map_err(iceberg_err("position delete file"))?;
        writer
            .write(&batch)
            .await
            .map_err(iceberg_err("writing position deletes"))?;
        let mut builders = writer
            .close()
            .await
            .map_err(iceberg_err("closing position deletes"))?;
        let mut builder = builders
            .pop()
            .ok_or_else(|| MergeError::io("the position delete writer produced no file"))?;
        builder
            .content(DataContentType::PositionDeletes)
            .partition(partition.clone())
            .partition_spec_id(self.spec.spec_id())
            .referenced_data_file((targets.len() == 1).then_some(first));
        builder
            .build()
            .map_err(MergeError::io_from("position delete file"))
    }
}

/// `file_path` and `pos`, with Iceberg's reserved ids.
pub fn position_delete_schema() -> Result<Schema, MergeError> {
    Schema::builder()
        .with_fields(vec![
            Arc::new(NestedField::required(
                DELETE_FILE_PATH_ID,
                "file_path",
                Type::Primitive(PrimitiveType::String),
            )),
            Arc::new(NestedField::required(
                DELETE_POS_ID,
                "pos",
                Type::Primitive(PrimitiveType::Long),
            )),
        ])
        .build()
        .map_err(MergeError::schema_from("the position-delete schema"))
}

/// The positions a position-delete file removes, by data file path.
pub async fn read_position_deletes(
    file_io: &FileIO,
    path: &str,
) -> Result<HashMap<String, Vec<u32>>, MergeError> {
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    for batch in read_columns(file_io, path, &["file_path", "pos"]).await? {
        let paths = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| MergeError::io(format!("{path}: file_path is not a string")))?;
        let pos = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| MergeError::io(format!("{path}: pos is not a long")))?;
        for i in 0..batch.num_rows() {
            if paths.is_null(i) || pos.is_null(i) {
                continue;
            }
            let p = u32::try_from(pos.value(i))
                .map_err(|_| MergeError::io(format!("{path}: position out of range")))?;
            out.entry(paths.value(i).to_owned()).or_default().push(p);
        }
    }
    Ok(out)
}
