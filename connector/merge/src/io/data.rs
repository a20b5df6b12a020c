//! New data files: the table's rows in Arrow, grouped by partition value, through the
//! `iceberg` crate's writer layers (Parquet file writer -> rolling file writer -> data file
//! writer), one rolling writer per partition.
//!
//! The partitioning layer is ours rather than the crate's `FanoutWriter`, which does the same
//! (one data file writer per partition value) but hands back the files of all partitions in
//! its map's order: the key index needs each row's file and position, so the rows of one
//! partition are written in one go and [`Written`] says which rows each file holds.

use super::rows::{record_batch, Row};
use super::CHUNK_ROWS;
use crate::schema::MetadataColumns;
use crate::MergeError;
use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::arrow::{arrow_struct_to_literal, schema_to_arrow_schema, PartitionValueCalculator};
use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, DataFileFormat, Literal, PartitionKey, PartitionSpecRef, SchemaRef, Struct,
};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::HashMap;
use std::sync::Arc;

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

pub(super) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}
pub(super) fn iceberg_err(context: &str) -> impl FnOnce(iceberg::Error) -> MergeError + '_ {
    MergeError::io_from(context)
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
        rows: &[&Row<'_>],
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
                .map_err(MergeError::arrow_from("the rows of one partition"))?;
            let part_batch = RecordBatch::try_new(arrow_schema.clone(), columns)
                .map_err(MergeError::arrow_from("the rows of one partition"))?;
            let files = self.write_partition(partition, &part_batch).await?;
            let mut next = 0usize;
            for file in files {
                let n = file.record_count() as usize;
                let rows = indices[next..next + n].to_vec();
                next += n;
                out.push(Written { file, rows });
            }
            if next != indices.len() {
                return Err(MergeError::io(format!(
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
                _ => return Err(MergeError::io("a row has no partition value")),
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
