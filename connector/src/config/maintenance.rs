//! `iceberg.maintenance`: defaults, then per-table overrides, resolved into one table's
//! policies.
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

use super::size::{ByteSize, Span};
use anyhow::{bail, Result};
use iceberg::TableIdent;
use iceberg_cdc_merge::maintenance::compaction::{CarrySummary, CompactionPolicy};
use iceberg_cdc_merge::maintenance::expiry::ExpiryPolicy;
use iceberg_cdc_merge::maintenance::orphans::OrphanPolicy;
use iceberg_cdc_merge::maintenance::MaintenancePolicy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

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

/// What the tables' writer asks of maintenance: that expiry keep the newest snapshot of
/// every writer named under `keep_newest_of` (its resume point), and what compaction
/// carries on of the writer's summary properties.
#[derive(Debug, Clone)]
pub struct Writer {
    pub keep_newest_of: String,
    pub carry: CarrySummary,
}

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

    /// The settings of `table`. `writer`: what the tables' writer (the connector's ledger)
    /// asks maintenance to keep. `only`: the tasks to run whatever their `enabled` says (the
    /// `maintain --only` command); empty: as configured.
    pub fn resolve(
        &self,
        table: &TableIdent,
        target_file_size: Option<u64>,
        writer: &Writer,
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
                carry: Some(writer.carry.clone()),
            }
        });
        let expiry = on(Task::Expiry, pick!(expiry.enabled)).then(|| {
            let default = ExpiryPolicy::default();
            ExpiryPolicy {
                max_age: pick!(expiry.max_snapshot_age)
                    .map(|s| s.0)
                    .unwrap_or(default.max_age),
                min_snapshots: pick!(expiry.min_snapshots).unwrap_or(default.min_snapshots),
                keep_newest_of: Some(writer.keep_newest_of.clone()),
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

/// Which tasks the `maintain` command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    Compaction,
    Expiry,
    Orphans,
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

    fn writer(key: &str) -> Writer {
        Writer {
            keep_newest_of: key.to_owned(),
            carry: CarrySummary::new(|_| Default::default()),
        }
    }

    #[test]
    fn defaults_section_and_table_overrides() {
        let s = section("{}");
        let t = s.resolve(&ident("public.orders"), None, &writer("cdc.connector"), &[]);
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
        let other = s.resolve(&ident("public.items"), Some(1 << 20), &writer("k"), &[]);
        assert_eq!(other.interval, Duration::from_secs(30));
        let c = other.policy.compaction.unwrap();
        assert_eq!((c.target_file_size, c.small_file_size), (1 << 20, 8 << 20));
        assert_eq!(c.min_input_files, 3);
        assert_eq!(other.policy.expiry.unwrap().min_snapshots, 4);
        assert!(other.policy.orphans.is_some());
        let orders = s.resolve(&ident("public.orders"), None, &writer("k"), &[]);
        assert_eq!(orders.interval, Duration::from_secs(3600));
        assert!(orders.policy.orphans.is_none());
        let c = orders.policy.compaction.unwrap();
        assert_eq!((c.min_input_files, c.small_file_size), (9, 8 << 20));
        assert!(
            !s.resolve(&ident("public.quiet"), None, &writer("k"), &[])
                .scheduled
        );
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
}
