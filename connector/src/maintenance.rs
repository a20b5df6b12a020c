//! Table maintenance beside the stream: the `iceberg.maintenance` section (defaults, then
//! per-table overrides), the schedule the run loop consults between batches, and the
//! `maintain` command.
//!
//! ```yaml
//! iceberg:
//!   maintenance:
//!     enabled: true          # the schedule's off switch (`maintain` runs regardless)
//!     interval: 10m          # per table, the first run one interval after start
//!     compaction: { small-file-size: 96MiB, min-input-files: 5, max-input-bytes: 1GiB }
//!     expiry: { max-snapshot-age: 1h, min-snapshots: 10 }
//!     orphans: { older-than: 1d }
//!     tables:
//!       public.orders: { interval: 1h, orphans: { enabled: false } }
//! ```

use crate::config::{ByteSize, ConnectorConfig};
use anyhow::{anyhow, bail, Context, Result};
use iceberg::TableIdent;
use iceberg_cdc_merge::compaction::CompactionPolicy;
use iceberg_cdc_merge::expiry::ExpiryPolicy;
use iceberg_cdc_merge::maintenance::{MaintenancePolicy, MaintenanceReport};
use iceberg_cdc_merge::orphans::OrphanPolicy;
use iceberg_cdc_merge::{Catalog, CdcTable};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// `30s`, `10m`, `1h`, `1d`, `2h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_span(&text).map_err(serde::de::Error::custom)
    }
}

pub fn parse_span(text: &str) -> Result<Span> {
    humantime::parse_duration(text.trim())
        .map(Span)
        .map_err(|e| anyhow!("`{text}` is not a duration (30s, 10m, 1h, 1d): {e}"))
}

/// `iceberg.maintenance` (and, with the same fields less `tables`, one table's overrides).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MaintenanceSection {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub interval: Option<Span>,
    #[serde(default)]
    pub compaction: CompactionSection,
    #[serde(default)]
    pub expiry: ExpirySection,
    #[serde(default)]
    pub orphans: OrphanSection,
    /// Overrides by table (`namespace.table`).
    #[serde(default)]
    pub tables: BTreeMap<String, MaintenanceSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CompactionSection {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Defaults to `tables.target-file-size` (128 MiB).
    #[serde(default)]
    pub target_file_size: Option<ByteSize>,
    /// Defaults to three quarters of the target size.
    #[serde(default)]
    pub small_file_size: Option<ByteSize>,
    #[serde(default)]
    pub min_input_files: Option<usize>,
    #[serde(default)]
    pub max_input_bytes: Option<ByteSize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ExpirySection {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub max_snapshot_age: Option<Span>,
    #[serde(default)]
    pub min_snapshots: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OrphanSection {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub older_than: Option<Span>,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// One table's settings: its override over the section's, over the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMaintenance {
    pub scheduled: bool,
    pub interval: Duration,
    pub policy: MaintenancePolicy,
}

impl MaintenanceSection {
    /// Checks the table names of the overrides and that no override nests `tables`.
    pub fn validate(&self) -> Result<()> {
        for (name, t) in &self.tables {
            if name.split('.').count() < 2 || name.split('.').any(str::is_empty) {
                bail!("maintenance.tables: `{name}` is not namespace.table");
            }
            if !t.tables.is_empty() {
                bail!("maintenance.tables.{name}: overrides cannot have `tables`");
            }
        }
        Ok(())
    }

    /// The settings of `table`. `connector_key` names the summary key whose newest
    /// snapshot per writer expiry keeps (the connector's resume point). `only`: the tasks
    /// to run whatever their `enabled` says (the `maintain --only` command); empty: as
    /// configured.
    pub fn resolve(
        &self,
        table: &TableIdent,
        target_file_size: Option<u64>,
        connector_key: &str,
        only: &[Task],
    ) -> TableMaintenance {
        let name = table.to_string();
        let o = self.tables.get(&name);
        // the table's value, else the section's
        macro_rules! pick {
            ($($field:ident).+) => {
                o.and_then(|o| o.$($field).+).or(self.$($field).+)
            };
        }
        let on = |task: Task, enabled: Option<bool>| {
            if only.is_empty() {
                enabled.unwrap_or(true)
            } else {
                only.contains(&task)
            }
        };
        let compaction = on(Task::Compaction, pick!(compaction.enabled)).then(|| {
            let default = CompactionPolicy::default();
            let target = pick!(compaction.target_file_size)
                .map(|b| b.0)
                .or(target_file_size)
                .unwrap_or(default.target_file_size);
            CompactionPolicy {
                target_file_size: target,
                small_file_size: pick!(compaction.small_file_size)
                    .map(|b| b.0)
                    .unwrap_or(target / 4 * 3),
                min_input_files: pick!(compaction.min_input_files)
                    .unwrap_or(default.min_input_files),
                max_input_bytes: pick!(compaction.max_input_bytes)
                    .map(|b| b.0)
                    .unwrap_or(default.max_input_bytes),
                max_attempts: default.max_attempts,
                carry_summary_of: Some(connector_key.to_owned()),
            }
        });
        let expiry = on(Task::Expiry, pick!(expiry.enabled)).then(|| {
            let default = ExpiryPolicy::default();
            ExpiryPolicy {
                max_age: pick!(expiry.max_snapshot_age)
                    .map(|s| s.0)
                    .unwrap_or(default.max_age),
                min_snapshots: pick!(expiry.min_snapshots).unwrap_or(default.min_snapshots),
                keep_newest_of: Some(connector_key.to_owned()),
                max_attempts: default.max_attempts,
            }
        });
        let orphans = on(Task::Orphans, pick!(orphans.enabled)).then(|| OrphanPolicy {
            older_than: pick!(orphans.older_than)
                .map(|s| s.0)
                .unwrap_or(OrphanPolicy::default().older_than),
        });
        TableMaintenance {
            scheduled: pick!(enabled).unwrap_or(true),
            interval: pick!(interval).map(|s| s.0).unwrap_or(DEFAULT_INTERVAL),
            policy: MaintenancePolicy {
                compaction,
                expiry,
                orphans,
            },
        }
    }
}

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

/// Which tasks the `maintain` command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    Compaction,
    Expiry,
    Orphans,
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
        let mut settings = section.resolve(&ident, target, crate::sink::CONNECTOR_KEY, only_tasks);
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

    fn section(yaml: &str) -> MaintenanceSection {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn ident(name: &str) -> TableIdent {
        TableIdent::from_strs(name.split('.')).unwrap()
    }

    #[test]
    fn defaults_section_and_table_overrides() {
        let s = section("{}");
        let t = s.resolve(&ident("public.orders"), None, "cdc.connector", &[]);
        assert!(t.scheduled);
        assert_eq!(t.interval, DEFAULT_INTERVAL);
        let c = t.policy.compaction.unwrap();
        assert_eq!(c.target_file_size, 128 << 20);
        assert_eq!(c.small_file_size, 96 << 20);
        let e = t.policy.expiry.unwrap();
        assert_eq!(e.max_age, Duration::from_secs(3600));
        assert_eq!(e.keep_newest_of.as_deref(), Some("cdc.connector"));
        assert_eq!(
            t.policy.orphans.unwrap().older_than,
            Duration::from_secs(86400)
        );

        let s = section(
            "interval: 30s\n\
             compaction: { small-file-size: 8MiB, min-input-files: 3 }\n\
             expiry: { max-snapshot-age: 2h, min-snapshots: 4 }\n\
             tables:\n  \
               public.orders: { interval: 1h, orphans: { enabled: false }, compaction: { min-input-files: 9 } }\n  \
               public.quiet: { enabled: false }\n",
        );
        s.validate().unwrap();
        let other = s.resolve(&ident("public.items"), Some(1 << 20), "k", &[]);
        assert_eq!(other.interval, Duration::from_secs(30));
        let c = other.policy.compaction.unwrap();
        assert_eq!((c.target_file_size, c.small_file_size), (1 << 20, 8 << 20));
        assert_eq!(c.min_input_files, 3);
        assert_eq!(other.policy.expiry.unwrap().min_snapshots, 4);
        assert!(other.policy.orphans.is_some());
        let orders = s.resolve(&ident("public.orders"), None, "k", &[]);
        assert_eq!(orders.interval, Duration::from_secs(3600));
        assert!(orders.policy.orphans.is_none());
        let c = orders.policy.compaction.unwrap();
        assert_eq!((c.min_input_files, c.small_file_size), (9, 8 << 20));
        assert!(!s.resolve(&ident("public.quiet"), None, "k", &[]).scheduled);
    }

    #[test]
    fn bad_sections_are_refused() {
        assert!(serde_yaml::from_str::<MaintenanceSection>("interval: soon").is_err());
        assert!(serde_yaml::from_str::<MaintenanceSection>("expiry: { max-age: 1h }").is_err());
        assert!(section("tables: { orders: {} }").validate().is_err());
        assert!(section("tables: { a.b: { tables: { c.d: {} } } }")
            .validate()
            .is_err());
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
