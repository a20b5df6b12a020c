//! Table maintenance: [`compaction`] (small files and files with deletes rewritten),
//! [`expiry`] (old snapshots and what only they reach) and [`orphans`] (files no metadata
//! references), in that order, each switched on by its own policy.

pub mod compaction;
pub mod expiry;
pub mod orphans;

use crate::catalog::Catalog;
use crate::maintenance::compaction::{compact, CompactionPolicy, CompactionReport};
use crate::maintenance::expiry::{expire, ExpiryPolicy, ExpiryReport};
use crate::maintenance::orphans::{remove_orphans, OrphanPolicy, OrphanReport};
use crate::MergeError;
use iceberg::table::Table;

/// What maintenance does to one table; `None` switches a task off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenancePolicy {
    pub compaction: Option<CompactionPolicy>,
    pub expiry: Option<ExpiryPolicy>,
    pub orphans: Option<OrphanPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub compaction: Option<CompactionReport>,
    pub expiry: Option<ExpiryReport>,
    pub orphans: Option<OrphanReport>,
}

/// Expiry and orphan removal: the tasks that leave the live files alone.
pub async fn tidy(
    catalog: &Catalog,
    table: Table,
    policy: &MaintenancePolicy,
    report: &mut MaintenanceReport,
) -> Result<Table, MergeError> {
    let mut table = table;
    if let Some(p) = &policy.expiry {
        let (t, r) = expire(catalog, &table, p).await?;
        tracing::info!(table = %t.identifier(), "snapshot expiry: {r}");
        table = t;
        report.expiry = Some(r);
    }
    if let Some(p) = &policy.orphans {
        let r = remove_orphans(catalog.storage(), &table, p).await?;
        tracing::info!(table = %table.identifier(), "orphan removal: {r}");
        report.orphans = Some(r);
    }
    Ok(table)
}

/// Every task `policy` switches on, for a table no key index follows (the `maintain`
/// command). The connector maintains its own tables through [`crate::CdcTable::maintain`].
pub async fn maintain(
    catalog: &Catalog,
    table: Table,
    policy: &MaintenancePolicy,
) -> Result<(Table, MaintenanceReport), MergeError> {
    let mut report = MaintenanceReport::default();
    let mut table = table;
    if let Some(p) = &policy.compaction {
        let out = compact(catalog, &table, p).await?;
        tracing::info!(table = %out.table.identifier(), "compaction: {}", out.report);
        table = out.table;
        report.compaction = Some(out.report);
    }
    let table = tidy(catalog, table, policy, &mut report).await?;
    Ok((table, report))
}
