//! The merge and commit stage: one table's open batch applied as one snapshot, its summary
//! carrying the ledger's properties, retried with backoff while the failure may pass.

use crate::batch::OpenBatch;
use crate::config::RetrySection;
use crate::ledger::{Ledger, Positions, CONNECTOR_KEY};
use crate::retry::Retries;
use anyhow::{anyhow, Context, Result};
use iceberg::TableIdent;
use iceberg_cdc_merge::{Applied, Catalog, CdcTable};
use std::time::{Duration, Instant};

/// How a batch's commit ended (a failure that outlived the retries is an error: no offset
/// moves, and a restart replays the batch).
#[derive(Debug)]
pub enum Committed {
    /// In the table.
    Applied { applied: Applied, took: Duration },
    /// No retry makes this batch fit the table: it pauses for this reason, and the batch
    /// stays unapplied (dead-lettered and held back).
    Refused(String),
}

/// Commits `batch` to `table`, its summary made by the ledger from the table as each attempt
/// finds it (`checkpoint`: the checkpoint once this batch is in).
pub async fn commit(
    catalog: &Catalog,
    ident: &TableIdent,
    table: &mut CdcTable,
    batch: &OpenBatch,
    ledger: &Ledger,
    checkpoint: &Positions,
    retries: &RetrySection,
) -> Result<Committed> {
    let properties = |table: &CdcTable| {
        let current = table.last_summary_with(CONNECTOR_KEY);
        ledger.properties(ident, &batch.span, checkpoint, current.as_ref())
    };
    let started = Instant::now();
    let mut retries = Retries::new(retries);
    let applied = loop {
        match table.apply_with(catalog, &batch.records, properties).await {
            Ok(applied) => break applied,
            Err(e) if !e.is_retryable() => {
                let reason = format!("committing {} records failed: {e}", batch.records.len());
                return Ok(Committed::Refused(reason));
            }
            Err(e) => match retries.after_failure() {
                Some(wait) => {
                    let attempt = retries.failed();
                    tracing::warn!(table = %ident, attempt, error = %e, "commit failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                None => {
                    return Err(anyhow!(e)).with_context(|| {
                        format!(
                            "committing {} records to {ident} failed {} times",
                            batch.records.len(),
                            retries.failed()
                        )
                    })
                }
            },
        }
    };
    report_unresolved(ident, &applied);
    tracing::debug!(
        table = %ident,
        records = batch.records.len(),
        commit_ms = started.elapsed().as_millis() as u64,
        age_ms = batch.opened.elapsed().as_millis() as u64,
        ?applied,
        "committed"
    );
    Ok(Committed::Applied {
        applied,
        took: started.elapsed(),
    })
}

/// Rows written with null for unchanged-TOAST values the table did not hold: said at WARN.
fn report_unresolved(ident: &TableIdent, applied: &Applied) {
    let (unresolved, keys) = &applied.unresolved_unchanged;
    if *unresolved > 0 {
        tracing::warn!(
            table = %ident,
            rows = unresolved,
            ?keys,
            "rows written with null in place of unchanged TOAST values: Debezium sent its \
             placeholder for rows the table does not hold (a primary-key change under \
             REPLICA IDENTITY DEFAULT); set REPLICA IDENTITY FULL on tables whose keys \
             change (README, \"The merge engine\")"
        );
    }
}
