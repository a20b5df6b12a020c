//! Parquet files of a table: new data files (through the `iceberg` crate's writers, one
//! rolling writer per partition), position-delete files (one per data file they point
//! into), and reading back the key columns and deletes when the key index is rebuilt.

use crate::arrow_rows::{record_batch, Row};
use crate::schema::MetadataColumns;
use crate::MergeError;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::{arrow_struct_to_literal, schema_to_arrow_schema, PartitionValueCalculator};
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, Literal, NestedField, PartitionKey,
    PartitionSpecRef, PrimitiveType, Schema, SchemaRef, Struct, Type,
};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::{FileWriter, FileWriterBuilder, ParquetWriterBuilder};
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::HashMap;
use std::sync::Arc;

/// Field ids Iceberg reserves for position-delete files.
pub const DELETE_FILE_PATH_ID: i32 = i32::MAX - 101;
pub const DELETE_POS_ID: i32 = i32::MAX - 102;

/// Rows per record batch handed to the writer (the rolling writer rolls between batches).
const CHUNK_ROWS: usize = 8192;

/// How data files are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub target_file_size: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            target_file_size: 128 * 1024 * 1024,
        }
    }
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}

fn iceberg_err(context: &str) -> impl Fn(iceberg::Error) -> MergeError + '_ {
    move |e| MergeError::Io(format!("{context}: {e}"))
}

/// Row indices of one partition, with its partition value (`None`: unpartitioned).
type PartitionGroup = (Option<Struct>, Vec<usize>);

/// A data file just written and the rows it holds, as indices into the written slice, in
/// file order (index `i` of `rows` is at position `i`).
#[derive(Debug)]
pub struct Written {
    pub file: DataFile,
    pub rows: Vec<usize>,
}

/// Where data files go and what they look like.
pub struct DataWriter<'a> {
    pub file_io: &'a FileIO,
    pub location: &'a str,
    pub schema: SchemaRef,
    pub spec: PartitionSpecRef,
    pub options: &'a WriteOptions,
}

impl DataWriter<'_> {
    fn arrow_schema(&self) -> Result<ArrowSchemaRef, MergeError> {
        Ok(Arc::new(
            schema_to_arrow_schema(&self.schema).map_err(iceberg_err("table schema to Arrow"))?,
        ))
    }

    /// Writes `rows` into new data files, grouped by partition.
    pub async fn write(
        &self,
        rows: &[&Row],
        processed_at_us: i64,
    ) -> Result<Vec<Written>, MergeError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let arrow_schema = self.arrow_schema()?;
        let batch = record_batch(
            &arrow_schema,
            MetadataColumns::of(&self.schema),
            rows,
            processed_at_us,
        )?;
        let groups = self.partition_groups(&batch)?;
        let mut out = Vec::new();
        for (partition, indices) in groups {
            let take = UInt32Array::from_iter_values(indices.iter().map(|&i| i as u32));
            let columns = batch
                .columns()
                .iter()
                .map(|c| arrow_select::take::take(c.as_ref(), &take, None))
                .collect::<Result<Vec<ArrayRef>, _>>()
                .map_err(|e| MergeError::Arrow(e.to_string()))?;
            let part_batch = RecordBatch::try_new(arrow_schema.clone(), columns)
                .map_err(|e| MergeError::Arrow(e.to_string()))?;
            let files = self.write_partition(partition, &part_batch).await?;
            let mut next = 0usize;
            for file in files {
                let n = file.record_count() as usize;
                let rows = indices[next..next + n].to_vec();
                next += n;
                out.push(Written { file, rows });
            }
            if next != indices.len() {
                return Err(MergeError::Io(format!(
                    "the writer reported {next} rows for a partition of {}",
                    indices.len()
                )));
            }
        }
        Ok(out)
    }

    /// Row indices by partition value, in first-seen order.
    fn partition_groups(&self, batch: &RecordBatch) -> Result<Vec<PartitionGroup>, MergeError> {
        if self.spec.is_unpartitioned() {
            return Ok(vec![(None, (0..batch.num_rows()).collect())]);
        }
        let calc = PartitionValueCalculator::try_new(&self.spec, &self.schema)
            .map_err(iceberg_err("partition values"))?;
        let values = calc
            .calculate(batch)
            .map_err(iceberg_err("partition values"))?;
        let literals = arrow_struct_to_literal(&values, calc.partition_type())
            .map_err(iceberg_err("partition values"))?;
        let mut order: Vec<PartitionGroup> = Vec::new();
        let mut seen: HashMap<Struct, usize> = HashMap::new();
        for (i, lit) in literals.into_iter().enumerate() {
            let s = match lit {
                Some(Literal::Struct(s)) => s,
                _ => return Err(MergeError::Io("a row has no partition value".into())),
            };
            match seen.get(&s) {
                Some(&g) => order[g].1.push(i),
                None => {
                    seen.insert(s.clone(), order.len());
                    order.push((Some(s), vec![i]));
                }
            }
        }
        Ok(order)
    }

    async fn write_partition(
        &self,
        partition: Option<Struct>,
        batch: &RecordBatch,
    ) -> Result<Vec<DataFile>, MergeError> {
        let mut writer = self.open_partition(partition).await?;
        writer.write(batch).await?;
        writer.close().await
    }

    /// A rolling writer of data files for one partition (`None`: unpartitioned): batches in,
    /// files near the target size out, rows in the order written.
    pub async fn open_partition(
        &self,
        partition: Option<Struct>,
    ) -> Result<PartitionWriter, MergeError> {
        let parquet = ParquetWriterBuilder::new(writer_properties(), self.schema.clone());
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            self.options.target_file_size,
            self.file_io.clone(),
            DefaultLocationGenerator::with_data_location(format!("{}/data", self.location)),
            DefaultFileNameGenerator::new(
                format!("{}", uuid::Uuid::now_v7()),
                None,
                DataFileFormat::Parquet,
            ),
        );
        let key = partition
            .map(|data| PartitionKey::new((*self.spec).clone(), self.schema.clone(), data));
        let inner = DataFileWriterBuilder::new(rolling)
            .build(key)
            .await
            .map_err(iceberg_err("opening a data file"))?;
        Ok(PartitionWriter { inner })
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
            .ok_or_else(|| MergeError::Io("a position-delete file with no rows".into()))?;
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
        .map_err(|e| MergeError::Arrow(e.to_string()))?;
        let dir = first
            .rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or(self.location);
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
            .ok_or_else(|| MergeError::Io("the position delete writer produced no file".into()))?;
        builder
            .content(DataContentType::PositionDeletes)
            .partition(partition.clone())
            .partition_spec_id(self.spec.spec_id())
            .referenced_data_file((targets.len() == 1).then_some(first));
        builder
            .build()
            .map_err(|e| MergeError::Io(format!("position delete file: {e}")))
    }
}

type RollingDataWriter = iceberg::writer::base_writer::data_file_writer::DataFileWriter<
    ParquetWriterBuilder,
    DefaultLocationGenerator,
    DefaultFileNameGenerator,
>;

/// Data files of one partition being written.
pub struct PartitionWriter {
    inner: RollingDataWriter,
}

impl PartitionWriter {
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), MergeError> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = CHUNK_ROWS.min(batch.num_rows() - offset);
            self.inner
                .write(batch.slice(offset, len))
                .await
                .map_err(iceberg_err("writing a data file"))?;
            offset += len;
        }
        Ok(())
    }

    /// The files written, in order.
    pub async fn close(mut self) -> Result<Vec<DataFile>, MergeError> {
        self.inner
            .close()
            .await
            .map_err(iceberg_err("closing a data file"))
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
        .map_err(|e| MergeError::Schema(e.to_string()))
}

type ParquetFile = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes>;

async fn open_parquet(file_io: &FileIO, path: &str) -> Result<ParquetFile, MergeError> {
    let bytes = file_io
        .new_input(path)
        .map_err(iceberg_err(path))?
        .read()
        .await
        .map_err(iceberg_err(path))?;
    ParquetFile::try_new(bytes).map_err(|e| MergeError::Io(format!("{path}: {e}")))
}

/// Reads the named columns of a Parquet file (all its rows, in file order), in the order
/// asked.
pub async fn read_columns(
    file_io: &FileIO,
    path: &str,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, MergeError> {
    project(open_parquet(file_io, path).await?, path, columns)
}

fn project(
    file: ParquetFile,
    path: &str,
    columns: &[&str],
) -> Result<Vec<RecordBatch>, MergeError> {
    use parquet::arrow::ProjectionMask;
    let parquet_schema = file.parquet_schema();
    let leaves: Vec<usize> = columns
        .iter()
        .map(|name| {
            parquet_schema
                .columns()
                .iter()
                .position(|c| c.path().string() == *name)
                .ok_or_else(|| MergeError::Io(format!("{path}: no column `{name}`")))
        })
        .collect::<Result<_, _>>()?;
    let mask = ProjectionMask::leaves(parquet_schema, leaves);
    let reader = file
        .with_projection(mask)
        .with_batch_size(CHUNK_ROWS)
        .build()
        .map_err(|e| MergeError::Io(format!("{path}: {e}")))?;
    // the projection keeps the file's column order: put the columns in the asked order
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| MergeError::Io(format!("{path}: {e}")))?;
        let order = columns
            .iter()
            .map(|name| batch.schema().index_of(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MergeError::Io(format!("{path}: {e}")))?;
        out.push(
            batch
                .project(&order)
                .map_err(|e| MergeError::Arrow(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Every row of a data file, in file order, shaped like `arrow_schema` (the table's current
/// schema, or a part of it; columns matched by name): a column the file does not have (added
/// to the table after the file was written) reads null, a column written before a widening
/// (`int` -> `long`, `float` -> `double`, a wider decimal) is cast up.
pub async fn read_rows(
    file_io: &FileIO,
    path: &str,
    arrow_schema: &ArrowSchemaRef,
) -> Result<Vec<RecordBatch>, MergeError> {
    let file = open_parquet(file_io, path).await?;
    let rows = file.metadata().file_metadata().num_rows().max(0) as usize;
    let present = file.schema().clone();
    let names: Vec<&str> = arrow_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| present.field_with_name(n).is_ok())
        .collect();
    if names.is_empty() {
        // nothing of it is in the file: one batch of nulls
        let columns = arrow_schema
            .fields()
            .iter()
            .map(|f| arrow_array::new_null_array(f.data_type(), rows))
            .collect();
        return RecordBatch::try_new(arrow_schema.clone(), columns)
            .map(|b| vec![b])
            .map_err(|e| MergeError::Arrow(format!("{path}: {e}")));
    }
    project(file, path, &names)?
        .into_iter()
        .map(|b| {
            let columns = arrow_schema
                .fields()
                .iter()
                .map(|field| match names.iter().position(|n| n == field.name()) {
                    Some(i) if b.column(i).data_type() == field.data_type() => {
                        Ok(b.column(i).clone())
                    }
                    Some(i) => arrow_cast::cast(b.column(i), field.data_type())
                        .map_err(|e| MergeError::Arrow(format!("{path}: {}: {e}", field.name()))),
                    None => Ok(arrow_array::new_null_array(field.data_type(), b.num_rows())),
                })
                .collect::<Result<Vec<_>, MergeError>>()?;
            RecordBatch::try_new(arrow_schema.clone(), columns)
                .map_err(|e| MergeError::Arrow(format!("{path}: {e}")))
        })
        .collect()
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
            .ok_or_else(|| MergeError::Io(format!("{path}: file_path is not a string")))?;
        let pos = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| MergeError::Io(format!("{path}: pos is not a long")))?;
        for i in 0..batch.num_rows() {
            if paths.is_null(i) || pos.is_null(i) {
                continue;
            }
            let p = u32::try_from(pos.value(i))
                .map_err(|_| MergeError::Io(format!("{path}: position out of range")))?;
            out.entry(paths.value(i).to_owned()).or_default().push(p);
        }
    }
    Ok(out)
}
