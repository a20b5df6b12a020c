//! Reading Parquet files of a table back: chosen columns in file order, or whole rows shaped
//! like the table's current schema (columns added later read null, widened ones cast up).

use super::data::iceberg_err;
use super::CHUNK_ROWS;
use crate::MergeError;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef as ArrowSchemaRef;
use iceberg::io::FileIO;

type ParquetFile = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes>;

async fn open_parquet(file_io: &FileIO, path: &str) -> Result<ParquetFile, MergeError> {
    let bytes = file_io
        .new_input(path)
        .map_err(iceberg_err(path))?
        .read()
        .await
        .map_err(iceberg_err(path))?;
    ParquetFile::try_new(bytes).map_err(MergeError::io_from(path))
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
                .ok_or_else(|| MergeError::io(format!("{path}: no column `{name}`")))
        })
        .collect::<Result<_, _>>()?;
    let mask = ProjectionMask::leaves(parquet_schema, leaves);
    let reader = file
        .with_projection(mask)
        .with_batch_size(CHUNK_ROWS)
        .build()
        .map_err(MergeError::io_from(path))?;
    // the projection keeps the file's column order: put the columns in the asked order
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(MergeError::io_from(path))?;
        let order = columns
            .iter()
            .map(|name| batch.schema().index_of(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(MergeError::io_from(path))?;
        out.push(
            batch
                .project(&order)
                .map_err(MergeError::arrow_from(path))?,
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
            .map_err(MergeError::arrow_from(path));
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
                    Some(i) => arrow_cast::cast(b.column(i), field.data_type()).map_err(|e| {
                        MergeError::arrow_from(format!("{path}: {}", field.name()))(e)
                    }),
                    None => Ok(arrow_array::new_null_array(field.data_type(), b.num_rows())),
                })
                .collect::<Result<Vec<_>, MergeError>>()?;
            RecordBatch::try_new(arrow_schema.clone(), columns)
                .map_err(MergeError::arrow_from(path))
        })
        .collect()
}
