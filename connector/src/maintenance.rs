//! Table maintenance beside the stream: the schedule the run loop consults between batches,
//! and the `maintain` command.

use crate::config::{ConnectorConfig, Span, Task};
use crate::ledger;
use anyhow::{bail, Context, Result};
use iceberg::TableIdent;
use iceberg_cdc_merge::maintenance::{MaintenancePolicy, MaintenanceReport};
use iceberg_cdc_merge::{Catalog, CdcTable};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When each table is next maintained.
#[derive(Debug, Default)]
pub struct Schedule {
    next: HashMap<TableIdent, Instant>,
}

impl Schedule {
    /// The table most overdue at `now`, if any (the longest-waiting first, so a table
    /// never starves when runs come less often than the interval); a table seen for the
    /// first time is due one interval later.
    pub fn due<'a>(
        &mut self,
        tables: impl IntoIterator<Item = (&'a TableIdent, Duration)>,
        now: Instant,
    ) -> Option<TableIdent> {
        let mut most_overdue: Option<(Instant, &TableIdent)> = None;
        for (ident, interval) in tables {
            let next = *self.next.entry(ident.clone()).or_insert(now + interval);
            if next <= now && most_overdue.is_none_or(|(n, _)| next < n) {
                most_overdue = Some((next, ident));
            }
        }
        most_overdue.map(|(_, ident)| ident.clone())
    }

    pub fn done(&mut self, ident: &TableIdent, interval: Duration, now: Instant) {
        self.next.insert(ident.clone(), now + interval);
    }
}

/// The report as one log line per task.
pub fn log(table: &TableIdent, report: &MaintenanceReport) {
    if let Some(r) = &report.compaction {
        tracing::info!(%table, "maintenance: compaction: {r}");
    }
    if let Some(r) = &report.expiry {
        tracing::info!(%table, "maintenance: snapshot expiry: {r}");
    }
    if let Some(r) = &report.orphans {
        tracing::info!(%table, "maintenance: orphan removal: {r}");
    }
}

/// The `maintain` command: every table of the catalog (or the named ones), each task the
/// config switches on (or the ones named), one report per table on stdout.
pub async fn maintain_command(
    config: &ConnectorConfig,
    only_tables: &[String],
    only_tasks: &[Task],
    orphans_older_than: Option<Span>,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let section = &config.iceberg.maintenance;
    let catalog = Catalog::connect(&config.catalog_config()).await?;
    let mut idents = catalog.list_tables().await?;
    if !only_tables.is_empty() {
        idents.retain(|i| only_tables.contains(&i.to_string()));
        for name in only_tables {
            if !idents.iter().any(|i| &i.to_string() == name) {
                bail!("maintain: the catalog has no table `{name}`");
            }
        }
    }
    idents.sort_by_key(|i| i.to_string());
    let target = config.iceberg.tables.target_file_size.map(|b| b.0);
    for ident in idents {
        let mut settings =
            section.resolve(&ident, target, &ledger::maintenance_writer(), only_tasks);
        if let (Some(p), Some(window)) = (&mut settings.policy.orphans, orphans_older_than) {
            p.older_than = window.0;
        }
        let table = catalog.load_existing(&ident).await?;
        let (_, report) =
            iceberg_cdc_merge::maintenance::maintain(&catalog, table, &settings.policy)
                .await
                .with_context(|| format!("maintaining {ident}"))?;
        log(&ident, &report);
        writeln!(out, "{ident}:")?;
        if let Some(r) = &report.compaction {
            writeln!(out, "  compaction: {r}")?;
        }
        if let Some(r) = &report.expiry {
            writeln!(out, "  snapshot expiry: {r}")?;
        }
        if let Some(r) = &report.orphans {
            writeln!(out, "  orphan removal: {r}")?;
        }
    }
    Ok(())
}

/// Maintains one of the connector's own tables (its key index moves along).
pub async fn maintain_table(
    catalog: &Catalog,
    ident: &TableIdent,
    table: &mut CdcTable,
    policy: &MaintenancePolicy,
) -> Result<()> {
    let report = table
        .maintain(catalog, policy)
        .await
        .with_context(|| format!("maintaining {ident}"))?;
    log(ident, &report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(name: &str) -> TableIdent {
        TableIdent::from_strs(name.split('.')).unwrap()
    }

    #[test]
    fn schedule_waits_one_interval_then_repeats() {
        let mut s = Schedule::default();
        let t0 = Instant::now();
        let a = ident("a.b");
        let every = Duration::from_secs(10);
        assert_eq!(s.due([(&a, every)], t0), None);
        assert_eq!(s.due([(&a, every)], t0 + every), Some(a.clone()));
        s.done(&a, every, t0 + every);
        assert_eq!(s.due([(&a, every)], t0 + every), None);
        assert_eq!(s.due([(&a, every)], t0 + every * 2), Some(a.clone()));

        // runs rarer than the interval: the tables take turns
        let b = ident("a.c");
        let mut s = Schedule::default();
        let both = || [(&a, every), (&b, every)];
        assert_eq!(s.due(both(), t0), None);
        let mut seen = Vec::new();
        for turn in 1..=4u32 {
            let now = t0 + every * 3 * turn;
            let t = s.due(both(), now).unwrap();
            s.done(&t, every, now);
            seen.push(t);
        }
        assert_eq!(seen, [a.clone(), b.clone(), a, b]);
    }
}
