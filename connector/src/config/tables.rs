//! `iceberg.tables` (naming, layout and schema behaviour of the tables), `iceberg.batch`,
//! `iceberg.retries` and `iceberg.dead-letter`.

use super::size::ByteSize;
use anyhow::{anyhow, bail, Result};
use iceberg_cdc_merge::schema::TimeColumns;
use iceberg_cdc_merge::SchemaChanges;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TablesSection {
    /// Namespace template: `{db}`, `{schema}`, `{table}`, `{server}`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Table name template.
    #[serde(default = "default_table")]
    pub name: String,
    /// Explicit routes, `schema.table` -> `namespace.table`; they win over the templates.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// `none`, or `<transform>(<column>)` with transform year, month, day, hour or identity.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// The old job's `operation`, `processing_time`, `year`, `month` columns.
    #[serde(default)]
    pub legacy_columns: bool,
    #[serde(default)]
    pub target_file_size: Option<ByteSize>,
    /// What a change of a source table's schema does: `evolve` (the default: the table
    /// follows where Iceberg can, pauses where it cannot), `pause` or `dead-letter`.
    #[serde(default)]
    pub schema_changes: SchemaChangesSetting,
    /// The same per table, by the table's Iceberg name (`public.items: pause`).
    #[serde(default)]
    pub schema_changes_per_table: BTreeMap<String, SchemaChangesSetting>,
    /// How long the LSN of a deleted key is kept, across restarts, so that a replayed older
    /// event cannot bring the row back (`7d` by default; `humantime` durations).
    #[serde(default, with = "humantime_serde_opt")]
    pub tombstone_retention: Option<Duration>,
    /// How new time-of-day columns are stored: `time` (Iceberg's type, the default) or
    /// `string` (`HH:MM:SS.ffffff`), for tables Spark reads: Iceberg's Spark runtime refuses
    /// to load a table with a `time` column.
    #[serde(default)]
    pub time_columns: TimeColumnsSetting,
}

/// `time` or `string`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeColumnsSetting(pub TimeColumns);

impl<'de> Deserialize<'de> for TimeColumnsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "time" => Ok(TimeColumnsSetting(TimeColumns::Time)),
            "string" => Ok(TimeColumnsSetting(TimeColumns::Text)),
            other => Err(serde::de::Error::custom(format!(
                "time-columns: `{other}` is not time or string"
            ))),
        }
    }
}

mod humantime_serde_opt {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t)
                .map_err(|e| serde::de::Error::custom(format!("tombstone-retention `{t}`: {e}")))
        })
        .transpose()
    }
}

/// `evolve`, `pause` or `dead-letter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaChangesSetting(pub SchemaChanges);

impl<'de> Deserialize<'de> for SchemaChangesSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(SchemaChangesSetting)
            .map_err(|e: String| serde::de::Error::custom(format!("schema-changes: {e}")))
    }
}

impl TablesSection {
    pub(super) fn validate(&self) -> Result<()> {
        if let Some(p) = &self.partition_by {
            parse_partition_by(p)?;
        }
        Ok(())
    }
}

impl BatchSection {
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_records == 0
            || self.max_bytes.0 == 0
            || self.interval_ms == 0
            || self.max_total_bytes.0 == 0
        {
            bail!(
                "iceberg.batch: max-records, max-bytes, interval-ms and max-total-bytes must be above zero"
            );
        }
        Ok(())
    }
}

impl RetrySection {
    pub(super) fn validate(&self) -> Result<()> {
        if self.attempts == 0 {
            bail!("iceberg.retries.attempts must be at least 1");
        }
        Ok(())
    }
}

impl DeadLetterSection {
    pub(super) fn validate(&self) -> Result<()> {
        if self.file.is_some() == self.topic.is_some() {
            bail!("iceberg.dead-letter: give exactly one of file or topic");
        }
        Ok(())
    }
}

impl TablesSection {
    /// The schema-change behaviour of one table.
    pub fn schema_changes_of(&self, table: &iceberg::TableIdent) -> SchemaChanges {
        self.schema_changes_per_table
            .get(&table.to_string())
            .unwrap_or(&self.schema_changes)
            .0
    }
}

fn default_namespace() -> String {
    "{schema}".into()
}
fn default_table() -> String {
    "{table}".into()
}

impl Default for TablesSection {
    fn default() -> Self {
        TablesSection {
            namespace: default_namespace(),
            name: default_table(),
            map: BTreeMap::new(),
            partition_by: None,
            legacy_columns: false,
            target_file_size: None,
            schema_changes: SchemaChangesSetting::default(),
            schema_changes_per_table: BTreeMap::new(),
            tombstone_retention: None,
            time_columns: TimeColumnsSetting::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BatchSection {
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// The commit interval.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// The memory all open batches may hold together (their decoded records, estimated:
    /// two to three times their JSON): past it, the largest batches are committed early,
    /// however many tables are open.
    #[serde(default = "default_max_total_bytes")]
    pub max_total_bytes: ByteSize,
}

fn default_max_records() -> usize {
    100_000
}
fn default_max_bytes() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_interval_ms() -> u64 {
    1000
}
/// 64 MiB: with 128 MiB the `.wasm` path peaked past 400 MB on 5M `products` events, and
/// with 96 MiB the Kafka `.wasm` contender once did (402 MB); at 64 MiB the `.wasm` path
/// peaks ~50 MB lower for ~5-8% of the speed (BENCHMARKS.md, bounded memory).
fn default_max_total_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            interval_ms: default_interval_ms(),
            max_total_bytes: default_max_total_bytes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetrySection {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    500
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            attempts: default_attempts(),
            backoff_ms: default_backoff_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeadLetterSection {
    /// A JSON-lines file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A Fluvio topic.
    #[serde(default)]
    pub topic: Option<String>,
}

/// `none` | `month(col)` | `year(col)` | `day(col)` | `hour(col)` | `identity(col)` | `col`.
pub fn parse_partition_by(text: &str) -> Result<Option<(String, iceberg::spec::Transform)>> {
    use iceberg::spec::Transform;
    let t = text.trim();
    if t == "none" {
        return Ok(None);
    }
    let (transform, column) = match t.split_once('(') {
        Some((f, rest)) => {
            let col = rest
                .strip_suffix(')')
                .ok_or_else(|| anyhow!("partition-by `{t}`: missing `)`"))?;
            let transform = match f.trim() {
                "year" => Transform::Year,
                "month" => Transform::Month,
                "day" => Transform::Day,
                "hour" => Transform::Hour,
                "identity" => Transform::Identity,
                other => {
                    bail!("partition-by `{t}`: `{other}` is not year, month, day, hour or identity")
                }
            };
            (transform, col.trim())
        }
        None => (Transform::Identity, t),
    };
    if column.is_empty() {
        bail!("partition-by `{t}` names no column");
    }
    Ok(Some((column.to_owned(), transform)))
}
