//! The append-only ceiling: the same stream parsed (the SmartModule's code, natively),
//! every after-image written to Parquet and fast-appended, batch by batch, by our own
//! writer and commit: no key index, no de-duplication, no deletes. What is left between it
//! and the connector is the cost of exact upserts.

use anyhow::{Context, Result};
use debezium_cdc::params::Settings;
use debezium_cdc::record::{CdcRecord, ChangeRecord};
use debezium_cdc::Transformer;
use iceberg::spec::Transform;
use iceberg::table::Table;
use iceberg::TableIdent;
use iceberg_cdc_merge::commit::{commit, Changes, Outcome};
use iceberg_cdc_merge::io::rows::Row;
use iceberg_cdc_merge::io::{DataWriter, WriteOptions};
use iceberg_cdc_merge::schema::Partitioning;
use iceberg_cdc_merge::{Catalog, CdcTable, TableOptions};
use std::io::BufRead;
use std::path::Path;

pub async fn run(input: &Path, dir: &Path, batch: usize, table: &str) -> Result<()> {
    let catalog = Catalog::connect(&crate::catalog(dir)).await?;
    let ident = TableIdent::from_strs(table.split('.'))?;
    let mut transformer = Transformer::new(Settings::default());
    let mut pending: Vec<ChangeRecord> = Vec::with_capacity(batch);
    let mut target: Option<Table> = None;
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?,
    );
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        let (key, value) = line.split_once('\t').unwrap_or(("", &line));
        if value.is_empty() {
            continue;
        }
        if let Some(CdcRecord::Change(c)) =
            transformer.process(Some(key.as_bytes()), value.as_bytes(), Some(n as i64))
        {
            if c.after.is_some() {
                pending.push(*c);
            }
        }
        if pending.len() >= batch {
            append(&catalog, &ident, &mut target, &mut pending).await?;
        }
    }
    append(&catalog, &ident, &mut target, &mut pending).await
}

async fn append(
    catalog: &Catalog,
    ident: &TableIdent,
    target: &mut Option<Table>,
    pending: &mut Vec<ChangeRecord>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let table = match target.take() {
        Some(t) => t,
        None => {
            let options = TableOptions {
                partitioning: Some(Partitioning::Column {
                    column: "listed_on".into(),
                    transform: Transform::Month,
                }),
                ..TableOptions::default()
            };
            CdcTable::create(catalog, ident, &pending[0], options)
                .await?
                .table()
                .clone()
        }
    };
    let rows: Vec<Row> = pending
        .drain(..)
        .map(|c| Row {
            op: c.op.code(),
            lsn: c.position.lsn.and_then(|l| i64::try_from(l).ok()),
            source_ts_us: c.position.ts_ms.map(|ms| ms.saturating_mul(1000)),
            values: std::borrow::Cow::Owned(c.after.unwrap_or_default()),
        })
        .collect();
    let refs: Vec<&Row> = rows.iter().collect();
    let metadata = table.metadata();
    let writer = DataWriter {
        file_io: table.file_io().clone(),
        location: metadata.location().to_owned(),
        schema: metadata.current_schema().clone(),
        spec: metadata.default_partition_spec().clone(),
        options: WriteOptions::default(),
    };
    let now = chrono::Utc::now().timestamp_micros();
    let written = writer.write(&refs, now).await?;
    let changes = Changes {
        added_data: written.into_iter().map(|w| w.file).collect(),
        ..Changes::default()
    };
    match commit(catalog, &table, changes).await? {
        Outcome::Committed(t) => *target = Some(*t),
        Outcome::Conflict => anyhow::bail!("nobody else writes this table"),
    }
    Ok(())
}
