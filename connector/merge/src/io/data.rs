//! New data files: the table's rows in Arrow, grouped by partition value, through the
//! `iceberg` crate's writer layers (Parquet file writer -> rolling file writer -> data file
//! writer), one rolling writer per partition.
//!
//! The partitioning layer is ours rather than the crate's `FanoutWriter`, which does the same
//! (one data file writer per partition value) but hands back the files of all partitions in
//! its map's order: the key index needs each row's file and position, so the rows of one
//! partition are written in one go and [`Written`] says which rows each file holds.
//!
//! Partitions are written side by side, [`WRITERS`] at a time, each on a task of its own (the
//! runtime's workers encode while the run loop's thread waits for the commit).

use super::rows::{record_batch, Row};
use super::CHUNK_ROWS;
use crate::schema::MetadataColumns;
use crate::MergeError;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::{arrow_struct_to_literal, schema_to_arrow_schema, PartitionValueCalculator};
use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, DataFileFormat, Literal, NestedField, NestedFieldRef, PartitionKey, PartitionSpec,
    PartitionSpecRef, Schema, SchemaRef, Struct, Type,
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
use std::collections::{HashMap, HashSet};
use std::future::Future;
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

/// `schema` cut to its top-level fields that hold a source column of `spec`: what the
/// partition values are computed from.
fn partition_sources(schema: &Schema, spec: &PartitionSpec) -> Result<Schema, MergeError> {
    let ids: HashSet<i32> = spec.fields().iter().map(|f| f.source_id).collect();
    let fields: Vec<NestedFieldRef> = schema
        .as_struct()
        .fields()
        .iter()
        .filter(|f| holds_any(f, &ids))
        .cloned()
        .collect();
    Schema::builder()
        .with_schema_id(schema.schema_id())
        .with_fields(fields)
        .build()
        .map_err(iceberg_err("the partition source columns"))
}

/// Whether `field` is one of `ids` or has one of them inside.
fn holds_any(field: &NestedField, ids: &HashSet<i32>) -> bool {
    ids.contains(&field.id)
        || match field.field_type.as_ref() {
            Type::Struct(s) => s.fields().iter().any(|f| holds_any(f, ids)),
            Type::List(l) => holds_any(&l.element_field, ids),
            Type::Map(m) => holds_any(&m.key_field, ids) || holds_any(&m.value_field, ids),
            Type::Primitive(_) => false,
        }
}

/// Where data files go and what they look like.
#[derive(Clone)]
pub struct DataWriter {
    pub file_io: FileIO,
    pub location: String,
    pub schema: SchemaRef,
    pub spec: PartitionSpecRef,
    pub options: WriteOptions,
}

/// Partition files written at once: the machine this was measured on has two cores.
pub const WRITERS: usize = 2;

/// Runs `jobs` on the runtime, at most [`WRITERS`] at a time, and hands back their results in
/// the order of `jobs`; the first error ends it (the jobs still running are aborted, what
/// they wrote is never committed).
pub(super) async fn side_by_side<T, J>(
    jobs: impl IntoIterator<Item = J>,
) -> Result<Vec<T>, MergeError>
where
    T: Send + 'static,
    J: Future<Output = Result<T, MergeError>> + Send + 'static,
{
    futures::stream::iter(jobs)
        .map(|job| Aborting(tokio::spawn(job)))
        .buffered(WRITERS)
        .try_collect()
        .await
}

/// A spawned job, aborted when dropped before its end.
struct Aborting<T>(tokio::task::JoinHandle<Result<T, MergeError>>);

impl<T> Future for Aborting<T> {
    type Output = Result<T, MergeError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(if e.is_panic() {
                    // a bug, met again on the same rows: the table's error, not a retry
                    MergeError::arrow(format!("a file writer panicked: {e}"))
                } else {
                    MergeError::io(format!("a file writer stopped: {e}"))
                })
            })
        })
    }
}

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl DataWriter {
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
        let meta = MetadataColumns::of(&self.schema);
        let groups = self.partition_groups(rows, meta, processed_at_us)?;
        // a partition's rows go to Arrow just before its writer starts (`side_by_side` takes
        // the next job when one ends): the Arrow form of at most [`WRITERS`] + 1 partitions
        // exists at once, never the whole batch's
        let jobs = groups.into_iter().map(|(partition, indices)| {
            let writer = self.clone();
            let part: Vec<&Row> = indices.iter().map(|&i| rows[i]).collect();
            let batch = record_batch(&arrow_schema, meta, &part, processed_at_us);
            async move {
                let files = writer.write_partition(partition, &batch?).await?;
                Ok((files, indices))
            }
        });
        let mut out = Vec::new();
        for (files, indices) in side_by_side(jobs).await? {
            let reported: usize = files.iter().map(|f| f.record_count() as usize).sum();
            if reported != indices.len() {
                return Err(MergeError::io(format!(
                    "the writer reported {reported} rows for a partition of {}",
                    indices.len()
                )));
            }
            let mut next = 0usize;
            for file in files {
                let n = file.record_count() as usize;
                out.push(Written {
                    file,
                    rows: indices[next..next + n].to_vec(),
                });
                next += n;
            }
        }
        Ok(out)
    }

    /// Row indices by partition value, in first-seen order. The values come from the rows'
    /// partition source columns alone, in Arrow.
    fn partition_groups(
        &self,
        rows: &[&Row<'_>],
        meta: MetadataColumns,
        processed_at_us: i64,
    ) -> Result<Vec<PartitionGroup>, MergeError> {
        if self.spec.is_unpartitioned() {
            return Ok(vec![(None, (0..rows.len()).collect())]);
        }
        let sources = partition_sources(&self.schema, &self.spec)?;
        let calc = PartitionValueCalculator::try_new(&self.spec, &sources)
            .map_err(iceberg_err("partition values"))?;
        let arrow_sources =
            Arc::new(schema_to_arrow_schema(&sources).map_err(iceberg_err("partition values"))?);
        let batch = record_batch(&arrow_sources, meta, rows, processed_at_us)?;
        let values = calc
            .calculate(&batch)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    type Job = futures::future::BoxFuture<'static, Result<(), MergeError>>;

    /// Jobs that each sleep `ms[i]`, counting how many run at once.
    fn sleepers(
        ms: &[u64],
        running: &Arc<AtomicUsize>,
        most: &Arc<AtomicUsize>,
    ) -> Vec<impl Future<Output = Result<usize, MergeError>> + Send + 'static> {
        ms.iter()
            .enumerate()
            .map(|(i, &ms)| {
                let (running, most) = (Arc::clone(running), Arc::clone(most));
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(i)
                }
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_are_written_two_at_a_time_and_handed_back_in_their_order() {
        let (running, most) = Default::default();
        // the later jobs end first
        let jobs = sleepers(&[80, 60, 40, 20, 1, 1], &running, &most);
        let order = side_by_side(jobs).await.expect("every job");
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(most.load(Ordering::SeqCst), WRITERS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_failed_partition_ends_the_write_and_stops_the_one_beside_it() {
        let finished = Arc::new(AtomicUsize::new(0));
        let slow = {
            let finished = Arc::clone(&finished);
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        };
        let failing = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err(MergeError::io("the disk is full"))
        };
        let jobs: Vec<Job> = vec![Box::pin(failing), Box::pin(slow)];
        let err = side_by_side(jobs).await.expect_err("the failure");
        assert!(err.to_string().contains("the disk is full"), "{err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "the other job was aborted"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_panics_is_an_error_not_a_crash() {
        let jobs: Vec<Job> = vec![Box::pin(async { panic!("a bug in an encoder") })];
        let err = side_by_side(jobs).await.expect_err("the panic as an error");
        assert!(err.to_string().contains("a file writer panicked"), "{err}");
        assert!(err.to_string().contains("a bug in an encoder"), "{err}");
        // the same rows would meet the same bug: the table stops, nothing retries it
        assert_eq!(err.class(), crate::ErrorClass::Table);
    }
}
