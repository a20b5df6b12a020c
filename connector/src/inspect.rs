//! `inspect`: what landed, without another tool: each table's snapshots with the offsets
//! each committed, and its current rows.

use crate::config::ConnectorConfig;
use crate::ledger::{CHECKPOINT_KEY, CONNECTOR_KEY, OFFSETS_KEY};
use anyhow::{Context, Result};
use futures::TryStreamExt;
use iceberg::TableIdent;
use iceberg_cdc_merge::io::rows::value_at;
use iceberg_cdc_merge::Catalog;
use serde_json::{Map, Value};
use std::io::Write;

pub async fn inspect(
    config: &ConnectorConfig,
    only: Option<&str>,
    rows: usize,
    out: &mut dyn Write,
) -> Result<()> {
    let c = &config.iceberg.catalog;
    let catalog = Catalog::connect(&config.catalog_config()).await?;
    let mut tables = catalog.list_tables().await?;
    tables.sort_by_key(|t| t.to_string());
    if let Some(name) = only {
        let wanted =
            TableIdent::from_strs(name.split('.')).with_context(|| format!("table `{name}`"))?;
        tables.retain(|t| *t == wanted);
        if tables.is_empty() {
            anyhow::bail!("no table `{name}` in catalog `{}`", c.name);
        }
    }
    for ident in tables {
        let Some(table) = catalog.load(&ident).await? else {
            continue;
        };
        let metadata = table.metadata();
        writeln!(
            out,
            "table {ident}  ({})",
            table.metadata_location().unwrap_or("-")
        )?;
        let mut snapshots: Vec<_> = metadata.snapshots().collect();
        snapshots.sort_by_key(|s| s.sequence_number());
        for s in snapshots {
            let p = &s.summary().additional_properties;
            let get = |k: &str| p.get(k).cloned().unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "  snapshot {} seq {} {} {}  +{} rows +{} deletes  connector {} offsets {} checkpoint {}",
                s.snapshot_id(),
                s.sequence_number(),
                s.timestamp().map(|t| t.to_rfc3339()).unwrap_or_default(),
                s.summary().operation.as_str(),
                get("added-records"),
                get("added-position-deletes"),
                get(CONNECTOR_KEY),
                get(OFFSETS_KEY),
                get(CHECKPOINT_KEY),
            )?;
        }
        if metadata.current_snapshot().is_none() {
            writeln!(out, "  (no rows)")?;
            continue;
        }
        let batches: Vec<_> = table
            .scan()
            .build()
            .context("planning the scan")?
            .to_arrow()
            .await
            .context("reading")?
            .try_collect()
            .await
            .context("reading")?;
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        writeln!(out, "  {total} rows")?;
        let mut shown = 0;
        'outer: for b in &batches {
            for i in 0..b.num_rows() {
                if shown == rows {
                    break 'outer;
                }
                let mut row = Map::new();
                for (c, field) in b.schema().fields().iter().enumerate() {
                    row.insert(
                        field.name().clone(),
                        value_at(b.column(c).as_ref(), i).unwrap_or(Value::Null),
                    );
                }
                writeln!(out, "  {}", Value::Object(row))?;
                shown += 1;
            }
        }
        if total > shown {
            writeln!(out, "  … {} more", total - shown)?;
        }
    }
    Ok(())
}
