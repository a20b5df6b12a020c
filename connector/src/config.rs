//! The connector config: Fluvio's connector contract (`apiVersion`, `meta`, `transforms`) plus
//! our own `iceberg:` section, with `${{ secrets.NAME }}` rendered from the secret store.

use anyhow::{anyhow, bail, Context, Result};
use iceberg_cdc_merge::evolve::SchemaChanges;
use iceberg_cdc_merge::schema::TimeColumns;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `meta.type` of this connector.
pub const CONNECTOR_TYPE: &str = "iceberg-cdc-sink";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectorConfig {
    pub api_version: String,
    pub meta: Meta,
    #[serde(default)]
    pub transforms: Vec<TransformStep>,
    pub iceberg: IcebergSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Meta {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
    /// 0.1.0: a topic name; 0.2.0: `{meta: {name}, partition: …, retention: …}`.
    pub topic: TopicRef,
    #[serde(default)]
    pub consumer: Option<Consumer>,
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TopicRef {
    Name(String),
    Spec(TopicSpec),
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopicSpec {
    pub meta: TopicMeta,
    /// `partition`, `retention`, …: how cdk creates the topic, not ours to read.
    #[serde(flatten)]
    #[allow(dead_code)]
    pub creation: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMeta {
    pub name: String,
}

impl TopicRef {
    pub fn name(&self) -> &str {
        match self {
            TopicRef::Name(n) => n,
            TopicRef::Spec(s) => &s.meta.name,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Consumer {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub partition: Option<Partitions>,
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    #[serde(default)]
    pub offset: Option<OffsetConfig>,
}

/// `all`, one partition, or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Partitions {
    One(u32),
    Many(Vec<u32>),
    Named(String),
}

impl Partitions {
    /// `None`: every partition of the topic.
    pub fn list(&self) -> Result<Option<Vec<u32>>> {
        match self {
            Partitions::One(p) => Ok(Some(vec![*p])),
            Partitions::Many(ps) => Ok(Some(ps.clone())),
            Partitions::Named(s) if s == "all" => Ok(None),
            Partitions::Named(s) => {
                bail!("meta.consumer.partition: `{s}` is not a number, a list or `all`")
            }
        }
    }
}

/// `1048576`, `"1 MB"`, `"512KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_bytes(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| anyhow!("`{text}` is not a size"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => bail!("`{other}` is not a size unit (B, KB, KiB, MB, MiB, GB, GiB)"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("`{text}` is too large"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OffsetConfig {
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub start: Option<OffsetStart>,
    #[serde(default)]
    pub flush_period: Option<FlushPeriod>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffsetStart {
    Beginning,
    End,
    #[serde(untagged)]
    Absolute(i64),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushPeriod {
    #[serde(default)]
    pub secs: u64,
    #[serde(default)]
    pub nanos: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
}

/// A `transforms:` entry: passed to the SPU as a SmartModule invocation (Fluvio source), or
/// run in-process (file source).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformStep {
    pub uses: String,
    #[serde(default)]
    pub with: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub lookback: Option<serde_yaml::Value>,
}

impl TransformStep {
    /// `lookback: {last: N}` as the SPU takes it (`age` is not supported).
    pub fn lookback(&self) -> Result<Option<u64>> {
        let Some(lookback) = &self.lookback else {
            return Ok(None);
        };
        let last = lookback
            .get("last")
            .and_then(serde_yaml::Value::as_u64)
            .ok_or_else(|| {
                anyhow!(
                    "transforms: `{}` lookback needs `last: <records>`",
                    self.uses
                )
            })?;
        if lookback.get("age").is_some() {
            bail!(
                "transforms: `{}` lookback `age` is not supported; use `last`",
                self.uses
            );
        }
        Ok(Some(last))
    }

    /// Params as Fluvio passes them: strings (other scalars in their YAML text; maps and lists
    /// as JSON).
    pub fn params(&self) -> Result<BTreeMap<String, String>> {
        self.with
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_yaml::Value::String(s) => s.clone(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    serde_yaml::Value::Number(n) => n.to_string(),
                    other => serde_json::to_string(other)
                        .with_context(|| format!("transforms: param `{k}` of `{}`", self.uses))?,
                };
                Ok((k.clone(), text))
            })
            .collect()
    }
}

/// Our own section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IcebergSection {
    #[serde(default)]
    pub source: SourceConfig,
    pub catalog: CatalogSection,
    /// The S3-compatible store of an `s3://` warehouse.
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub tables: TablesSection,
    #[serde(default)]
    pub batch: BatchSection,
    #[serde(default)]
    pub retries: RetrySection,
    #[serde(default)]
    pub dead_letter: Option<DeadLetterSection>,
    /// Compaction, snapshot expiry and orphan removal on a schedule.
    #[serde(default)]
    pub maintenance: crate::maintenance::MaintenanceSection,
    /// Local `.wasm` files for `transforms:` steps the connector runs itself (file source),
    /// by the name in `uses`.
    #[serde(default)]
    pub smartmodules: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SourceConfig {
    /// `fluvio` (default) or `file`.
    #[serde(default, rename = "type")]
    pub kind: SourceKind,
    /// For `file`: the path, or `-` for stdin.
    #[serde(default)]
    pub path: Option<String>,
    /// For `file`: `value` or `key-value`.
    #[serde(default)]
    pub format: Option<String>,
    /// For `kafka`.
    #[serde(default)]
    pub kafka: Option<KafkaSection>,
}

/// The direct Kafka source.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaSection {
    /// `host:port,…`; left out, the old job's `BOOTSTRAP_SERVER_URL`.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// The consumer group; left out, `meta.consumer.id`, else `meta.name`. (The old job's
    /// was `spark-iceberg-consumer`.)
    #[serde(default)]
    pub group_id: Option<String>,
    /// Topics by name (Debezium writes one per table).
    #[serde(default)]
    pub topics: Vec<String>,
    /// And/or by regular expression, e.g. `shop\.public\..*`.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Where the partitions that exist at the very first start (no table holds anything
    /// yet) begin: `latest` (the old job's default) or `earliest`. A partition that appears
    /// later (a topic Debezium creates for a new table, a partition added) is read from its
    /// beginning whatever this says.
    #[serde(default = "default_offset_reset")]
    pub auto_offset_reset: String,
    /// Partitions (`topic/N`) whose offset in the tables the broker no longer has (retention,
    /// a recreated topic) and that the operator accepts to read again from the broker's
    /// earliest offset. Without it such a partition is not read, with an error naming it.
    #[serde(default)]
    pub reset_partitions: Vec<String>,
    /// `manual` (default: this connector reads every matching partition, no group
    /// membership) or `group` (a consumer-group subscription, to spread topics over several
    /// connectors).
    #[serde(default)]
    pub assignment: KafkaAssignment,
    /// librdkafka settings passed through: TLS, SASL, timeouts (`security.protocol`,
    /// `sasl.password: ${{ secrets.KAFKA_PASSWORD }}`, …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaAssignment {
    #[default]
    Manual,
    Group,
}

fn default_offset_reset() -> String {
    "latest".into()
}

impl std::fmt::Debug for KafkaSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "key", "token"]
                    .iter()
                    .any(|s| k.contains(s));
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaSection")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("topic_pattern", &self.topic_pattern)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("reset_partitions", &self.reset_partitions)
            .field("assignment", &self.assignment)
            .field("options", &options)
            .finish()
    }
}

impl KafkaSection {
    /// What to subscribe to: the topics, and the pattern as librdkafka's `^regex`.
    pub fn subscription(&self) -> Vec<String> {
        let mut out = self.topics.clone();
        if let Some(p) = &self.topic_pattern {
            out.push(if p.starts_with('^') {
                p.clone()
            } else {
                format!("^{p}")
            });
        }
        out
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    #[default]
    Fluvio,
    File,
    Kafka,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CatalogSection {
    #[serde(default = "default_catalog_name")]
    pub name: String,
    /// `sqlite:///path/catalog.db` or `postgres://user:pass@host/db`.
    pub uri: String,
    /// `file:///path/warehouse` or `s3://bucket/prefix`.
    pub warehouse: String,
}

fn default_catalog_name() -> String {
    "cdc".into()
}

/// The object store of an `s3://` warehouse. Keys left out fall back to the old job's
/// variables (secret store first, then the environment): `S3_ACCESS_KEY`, `S3_SECRET_KEY`,
/// and `EXTERNAL_IP` for the endpoint (`host`, `host:port` or a URL; port 7480, Ceph's
/// gateway, when none is given).
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Defaults to on when an endpoint is set (Ceph, MinIO), off for AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    /// A PEM file with the CA that signed the endpoint's certificate (trusted in addition
    /// to the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for StorageSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSection")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl StorageSection {
    /// Fills what is left out from the old job's variables.
    fn with_fallbacks(mut self, secrets: &Secrets) -> StorageSection {
        let old = |name: &str| {
            secrets
                .get(name)
                .or_else(|| std::env::var(name).ok())
                .filter(|v| !v.trim().is_empty())
        };
        if self.access_key.is_none() {
            self.access_key = old("S3_ACCESS_KEY");
        }
        if self.secret_key.is_none() {
            self.secret_key = old("S3_SECRET_KEY");
        }
        if self.endpoint.is_none() {
            self.endpoint = old("EXTERNAL_IP").map(|ip| endpoint_from_external_ip(&ip));
        }
        self
    }

    pub fn s3(&self) -> iceberg_cdc_merge::S3Settings {
        iceberg_cdc_merge::S3Settings {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            session_token: self.session_token.clone(),
        }
    }
}

/// The old job's `EXTERNAL_IP` as an endpoint: `10.0.0.5` -> `http://10.0.0.5:7480`;
/// `host:port` and URLs are kept.
fn endpoint_from_external_ip(ip: &str) -> String {
    let ip = ip.trim();
    if ip.contains("://") {
        ip.to_owned()
    } else if ip.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("http://[{ip}]:7480")
    } else if ip.parse::<std::net::SocketAddr>().is_ok()
        || ip
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.contains(':') && port.parse::<u16>().is_ok())
    {
        format!("http://{ip}")
    } else {
        format!("http://{ip}:7480")
    }
}

impl ConnectorConfig {
    /// Where the catalog and the warehouse are, for the merge engine.
    pub fn catalog_config(&self) -> iceberg_cdc_merge::CatalogConfig {
        let c = &self.iceberg.catalog;
        iceberg_cdc_merge::CatalogConfig {
            name: c.name.clone(),
            uri: c.uri.clone(),
            warehouse: c.warehouse.clone(),
            s3: self.iceberg.storage.s3(),
        }
    }
}

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
}

fn default_max_records() -> usize {
    100_000
}
fn default_max_bytes() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_interval_ms() -> u64 {
    1000
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            interval_ms: default_interval_ms(),
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

/// The secret store: `NAME=value` lines from `--secrets`, else the environment.
#[derive(Debug, Default)]
pub struct Secrets {
    file: Option<HashMap<String, String>>,
}

impl Secrets {
    pub fn from_file(path: &Path) -> Result<Secrets> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading secrets file {}", path.display()))?;
        let mut map = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| anyhow!("{} line {}: not NAME=value", path.display(), n + 1))?;
            map.insert(k.trim().to_owned(), v.to_owned());
        }
        Ok(Secrets { file: Some(map) })
    }

    pub fn from_env() -> Secrets {
        Secrets { file: None }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        match &self.file {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }
}

/// Renders `${{ secrets.NAME }}` for the names declared under `meta.secrets`; an undeclared
/// or missing name is an error that names it (never its value).
pub fn render_secrets(text: &str, declared: &[String], secrets: &Secrets) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("an unterminated `${{{{` in the config"))?;
        let expr = after[..end].trim();
        let name = expr
            .strip_prefix("secrets.")
            .ok_or_else(|| anyhow!("`${{{{ {expr} }}}}`: only `secrets.NAME` can be referenced"))?
            .trim();
        if !declared.iter().any(|d| d == name) {
            bail!("secret `{name}` is used but not listed under meta.secrets");
        }
        let value = secrets
            .get(name)
            .ok_or_else(|| anyhow!("secret `{name}` has no value (secrets file or environment)"))?;
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The secret names a config declares, read before rendering.
fn declared_secrets(text: &str) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Outer {
        meta: Option<MetaSecrets>,
    }
    #[derive(Deserialize)]
    struct MetaSecrets {
        #[serde(default)]
        secrets: Vec<SecretRef>,
    }
    // the text still holds `${{ … }}`, which is valid YAML inside a scalar
    let outer: Outer = serde_yaml::from_str(text).context("the config is not valid YAML")?;
    Ok(outer
        .meta
        .map(|m| m.secrets.into_iter().map(|s| s.name).collect())
        .unwrap_or_default())
}

impl ConnectorConfig {
    /// The consumer group (Kafka) or consumer id (Fluvio): `iceberg.source.kafka.group-id`,
    /// else `meta.consumer.id`, else `meta.name`.
    pub fn consumer_group(&self) -> String {
        self.iceberg
            .source
            .kafka
            .as_ref()
            .and_then(|k| k.group_id.clone())
            .or_else(|| self.meta.consumer.as_ref().and_then(|c| c.id.clone()))
            .unwrap_or_else(|| self.meta.name.clone())
    }

    pub fn offset(&self) -> Option<&OffsetConfig> {
        self.meta.consumer.as_ref().and_then(|c| c.offset.as_ref())
    }

    /// Where to start when no table holds a checkpoint yet.
    pub fn start(&self) -> OffsetStart {
        self.offset()
            .and_then(|o| o.start.clone())
            .unwrap_or(OffsetStart::Beginning)
    }

    /// One line for the log: what this connector is and reads.
    pub fn describe(&self) -> String {
        let consumer = self.meta.consumer.as_ref();
        format!(
            "{} {} v{}: topic `{}`, consumer `{}`, partitions {:?}, max-bytes {:?}, start {:?}, flush every {:?}, source {:?}",
            self.meta.kind,
            self.meta.name,
            self.meta.version,
            self.meta.topic.name(),
            consumer.and_then(|c| c.id.as_deref()).unwrap_or(&self.meta.name),
            consumer.and_then(|c| c.partition.clone()),
            consumer.and_then(|c| c.max_bytes).map(|b| b.0),
            self.start(),
            self.offset()
                .and_then(|o| o.flush_period.as_ref())
                .map(|f| Duration::new(f.secs, f.nanos)),
            self.iceberg.source.kind,
        )
    }

    pub fn parse(text: &str, secrets: &Secrets) -> Result<ConnectorConfig> {
        let declared = declared_secrets(text)?;
        let rendered = render_secrets(text, &declared, secrets)?;
        let mut config: ConnectorConfig =
            serde_yaml::from_str(&rendered).map_err(|e| anyhow!("config: {e}"))?;
        if config.iceberg.source.kind == SourceKind::Kafka {
            let kafka = config
                .iceberg
                .source
                .kafka
                .get_or_insert_with(Default::default);
            if kafka.bootstrap_servers.is_none() {
                kafka.bootstrap_servers = secrets
                    .get("BOOTSTRAP_SERVER_URL")
                    .or_else(|| std::env::var("BOOTSTRAP_SERVER_URL").ok())
                    .filter(|v| !v.trim().is_empty());
            }
        }
        if config.iceberg.catalog.warehouse.starts_with("s3") {
            config.iceberg.storage = config.iceberg.storage.with_fallbacks(secrets);
        }
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path, secrets: &Secrets) -> Result<ConnectorConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        ConnectorConfig::parse(&text, secrets).with_context(|| format!("in {}", path.display()))
    }

    fn validate(&self) -> Result<()> {
        self.iceberg.maintenance.validate()?;
        if self.meta.kind != CONNECTOR_TYPE {
            bail!("meta.type `{}` is not {CONNECTOR_TYPE}", self.meta.kind);
        }
        for s in &self.meta.secrets {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                bail!(
                    "meta.secrets: `{}` is not a secret name (letters, digits, _)",
                    s.name
                );
            }
        }
        match self.api_version.as_str() {
            "0.1.0" | "0.2.0" => {}
            other => bail!("apiVersion `{other}` is not supported (0.1.0 or 0.2.0)"),
        }
        if let Some(p) = self
            .meta
            .consumer
            .as_ref()
            .and_then(|c| c.partition.as_ref())
        {
            p.list()?;
        }
        if let Some(strategy) = self.offset().and_then(|o| o.strategy.as_deref()) {
            if !["manual", "auto", "none"].contains(&strategy) {
                bail!("meta.consumer.offset.strategy `{strategy}` is not manual, auto or none");
            }
        }
        if self.iceberg.source.kind != SourceKind::Fluvio {
            if let Some(step) = self.transforms.iter().find(|t| t.lookback.is_some()) {
                bail!(
                    "transforms: `{}` asks for lookback, which only the fluvio source provides",
                    step.uses
                );
            }
        }
        if let Some(k) = &self.iceberg.source.kafka {
            if self.iceberg.source.kind != SourceKind::Kafka {
                bail!("iceberg.source.kafka is set but source.type is not kafka");
            }
            if k.bootstrap_servers.is_none() {
                bail!(
                    "iceberg.source.kafka.bootstrap-servers is required (or BOOTSTRAP_SERVER_URL)"
                );
            }
            if k.topics.is_empty() && k.topic_pattern.is_none() {
                bail!("iceberg.source.kafka: give topics or topic-pattern");
            }
            if !["earliest", "latest"].contains(&k.auto_offset_reset.as_str()) {
                bail!(
                    "iceberg.source.kafka.auto-offset-reset `{}` is not earliest or latest",
                    k.auto_offset_reset
                );
            }
            crate::source::kafka::client_config(k, &self.consumer_group())?;
        }
        let b = &self.iceberg.batch;
        if b.max_records == 0 || b.max_bytes.0 == 0 || b.interval_ms == 0 {
            bail!("iceberg.batch: max-records, max-bytes and interval-ms must be above zero");
        }
        if self.iceberg.retries.attempts == 0 {
            bail!("iceberg.retries.attempts must be at least 1");
        }
        if let Some(p) = &self.iceberg.tables.partition_by {
            parse_partition_by(p)?;
        }
        if self.iceberg.source.kind == SourceKind::File && self.iceberg.source.path.is_none() {
            bail!("iceberg.source.path is required for the file source");
        }
        if let Some(f) = &self.iceberg.source.format {
            if f != "value" && f != "key-value" {
                bail!("iceberg.source.format: `{f}` is not value or key-value");
            }
        }
        if let Some(ca) = &self.iceberg.storage.ca_file {
            if !ca.is_file() {
                bail!("iceberg.storage.ca-file {} is not a file", ca.display());
            }
        }
        iceberg_cdc_merge::Storage::new(
            &self.iceberg.catalog.warehouse,
            &self.iceberg.storage.s3(),
        )
        .map_err(|e| anyhow!("iceberg.catalog.warehouse: {e}"))?;
        if let Some(dl) = &self.iceberg.dead_letter {
            if dl.file.is_some() == dl.topic.is_some() {
                bail!("iceberg.dead-letter: give exactly one of file or topic");
            }
        }
        for step in &self.transforms {
            step.params()?;
            step.lookback()?;
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
apiVersion: 0.2.0
meta:
  name: pg-to-iceberg
  type: iceberg-cdc-sink
  version: 0.1.0
  topic:
    meta:
      name: cdc
iceberg:
  catalog:
    uri: sqlite:///tmp/c.db
    warehouse: file:///tmp/w
"#;

    fn parse(text: &str) -> Result<ConnectorConfig> {
        ConnectorConfig::parse(text, &Secrets::default())
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.meta.topic.name(), "cdc");
        assert_eq!(c.iceberg.batch.max_records, 100_000);
        assert_eq!(c.iceberg.retries.attempts, 3);
        assert_eq!(c.iceberg.tables.namespace, "{schema}");
        assert_eq!(c.iceberg.source.kind, SourceKind::Fluvio);
    }

    #[test]
    fn s3_storage_from_the_section_or_the_old_jobs_variables() {
        let s3 = MINIMAL.replace("file:///tmp/w", "s3://lake/warehouse");
        // the old job's variables fill what the section leaves out
        let old = Secrets {
            file: Some(HashMap::from([
                ("S3_ACCESS_KEY".to_owned(), "old-access".to_owned()),
                ("S3_SECRET_KEY".to_owned(), "old-secret".to_owned()),
                ("EXTERNAL_IP".to_owned(), "10.1.2.3".to_owned()),
            ])),
        };
        let c = ConnectorConfig::parse(&s3, &old).unwrap();
        let cc = c.catalog_config();
        assert_eq!(cc.warehouse, "s3://lake/warehouse");
        assert_eq!(cc.s3.endpoint.as_deref(), Some("http://10.1.2.3:7480"));
        assert_eq!(cc.s3.access_key.as_deref(), Some("old-access"));
        assert_eq!(cc.s3.secret_key.as_deref(), Some("old-secret"));
        assert!(!format!("{:?}", c.iceberg.storage).contains("old-secret"));
        // the section wins, and secrets render into it
        let text = s3.replace("  type: iceberg-cdc-sink\n", "  type: iceberg-cdc-sink\n  secrets:\n    - name: CEPH_SECRET\n")
            + "  storage:\n    endpoint: https://ceph.internal:8443\n    region: eu-1\n    path-style: false\n    access-key: new-access\n    secret-key: ${{ secrets.CEPH_SECRET }}\n";
        let mut with_secret = old;
        if let Some(map) = with_secret.file.as_mut() {
            map.insert("CEPH_SECRET".into(), "from-the-store".into());
        }
        let c = ConnectorConfig::parse(&text, &with_secret).unwrap();
        let s = c.catalog_config().s3;
        assert_eq!(s.endpoint.as_deref(), Some("https://ceph.internal:8443"));
        assert_eq!(s.region.as_deref(), Some("eu-1"));
        assert_eq!(s.path_style, Some(false));
        assert_eq!(s.access_key.as_deref(), Some("new-access"));
        assert_eq!(s.secret_key.as_deref(), Some("from-the-store"));
        // a local warehouse takes nothing from the S3 variables
        let c = ConnectorConfig::parse(MINIMAL, &with_secret).unwrap();
        assert_eq!(c.catalog_config().s3, Default::default());
    }

    #[test]
    fn kafka_source_settings() {
        let base = MINIMAL.replace(
            "iceberg:\n",
            "iceberg:\n  source:\n    type: kafka\n    kafka:\n      topics: [shop.public.products]\n",
        );
        let store = |pairs: &[(&str, &str)]| Secrets {
            file: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        };
        // the old job's variable gives the brokers
        let c =
            ConnectorConfig::parse(&base, &store(&[("BOOTSTRAP_SERVER_URL", "k1:9092")])).unwrap();
        let k = c.iceberg.source.kafka.as_ref().unwrap();
        assert_eq!(k.bootstrap_servers.as_deref(), Some("k1:9092"));
        assert_eq!(k.auto_offset_reset, "latest");
        assert_eq!(c.consumer_group(), "pg-to-iceberg");
        for (text, says) in [
            (base.clone(), "BOOTSTRAP_SERVER_URL"),
            (
                base.replace(
                    "      topics: [shop.public.products]\n",
                    "      bootstrap-servers: k:1\n",
                ),
                "topics or topic-pattern",
            ),
            (
                base.replace(
                    "      topics:",
                    "      bootstrap-servers: k:1\n      auto-offset-reset: middle\n      topics:",
                ),
                "auto-offset-reset `middle`",
            ),
            (
                base.replace("type: kafka", "type: file\n    path: x"),
                "source.type is not kafka",
            ),
            (
                base.replace(
                    "      topics:",
                    "      bootstrap-servers: k:1\n      group: g\n      topics:",
                ),
                "unknown field `group`",
            ),
            (
                base.replace(
                    "      topics:",
                    "      bootstrap-servers: k:1\n      options:\n        partition.assignment.strategy: cooperative-sticky\n      topics:",
                ),
                "cooperative",
            ),
        ] {
            let e = format!(
                "{:#}",
                ConnectorConfig::parse(&text, &store(&[])).unwrap_err()
            );
            assert!(e.contains(says), "{says}: {e}");
        }
    }

    #[test]
    fn external_ip_forms() {
        assert_eq!(
            endpoint_from_external_ip("10.0.0.5"),
            "http://10.0.0.5:7480"
        );
        assert_eq!(
            endpoint_from_external_ip("10.0.0.5:9000"),
            "http://10.0.0.5:9000"
        );
        assert_eq!(
            endpoint_from_external_ip("ceph.lan"),
            "http://ceph.lan:7480"
        );
        assert_eq!(
            endpoint_from_external_ip("ceph.lan:80"),
            "http://ceph.lan:80"
        );
        assert_eq!(
            endpoint_from_external_ip("fd00::5"),
            "http://[fd00::5]:7480"
        );
        assert_eq!(
            endpoint_from_external_ip("[fd00::5]:9000"),
            "http://[fd00::5]:9000"
        );
        assert_eq!(
            endpoint_from_external_ip("https://s3.example.com"),
            "https://s3.example.com"
        );
    }

    #[test]
    fn bad_storage_settings_are_named() {
        for (text, says) in [
            (
                MINIMAL.replace("file:///tmp/w", "gs://bucket/w"),
                "file:///path or s3://bucket/prefix",
            ),
            (
                MINIMAL.replace("file:///tmp/w", "s3://lake/w")
                    + "  storage:\n    ca-file: /nonexistent/ca.pem\n",
                "ca-file /nonexistent/ca.pem is not a file",
            ),
            (
                MINIMAL.replace("file:///tmp/w", "s3://lake/w")
                    + "  storage:\n    endpoint-url: http://x\n",
                "endpoint-url",
            ),
            (
                MINIMAL.replace("file:///tmp/w", "s3://lake/w")
                    + "  storage:\n    path-style: sometimes\n",
                "path-style",
            ),
        ] {
            let e = format!("{:#}", parse(&text).unwrap_err());
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn api_0_1_0_topic_is_a_string() {
        let text = MINIMAL
            .replace("apiVersion: 0.2.0", "apiVersion: 0.1.0")
            .replace("  topic:\n    meta:\n      name: cdc", "  topic: cdc");
        assert_eq!(parse(&text).unwrap().meta.topic.name(), "cdc");
    }

    #[test]
    fn consumer_partitions_and_offsets() {
        let text = MINIMAL.replace(
            "iceberg:",
            "  consumer:\n    id: c1\n    partition: [0, 2]\n    max-bytes: 1 MB\n    offset:\n      strategy: manual\n      start: beginning\n      flush-period:\n        secs: 10\niceberg:",
        );
        let c = parse(&text).unwrap();
        let consumer = c.meta.consumer.unwrap();
        assert_eq!(
            consumer.partition.unwrap().list().unwrap(),
            Some(vec![0, 2])
        );
        assert_eq!(consumer.max_bytes, Some(ByteSize(1_000_000)));
        assert_eq!(consumer.offset.unwrap().start, Some(OffsetStart::Beginning));
        for (p, expect) in [("all", None), ("3", Some(vec![3]))] {
            let t = MINIMAL.replace(
                "iceberg:",
                &format!("  consumer:\n    partition: {p}\niceberg:"),
            );
            assert_eq!(
                parse(&t)
                    .unwrap()
                    .meta
                    .consumer
                    .unwrap()
                    .partition
                    .unwrap()
                    .list()
                    .unwrap(),
                expect
            );
        }
    }

    #[test]
    fn transforms_params_become_strings() {
        let text = MINIMAL.replace(
            "iceberg:",
            "transforms:\n  - uses: cdc-iceberg/debezium-cdc@0.1.0\n    with:\n      operations: c,u\n      strict: true\n      limit: 3\niceberg:",
        );
        let c = parse(&text).unwrap();
        let p = c.transforms[0].params().unwrap();
        assert_eq!(p["operations"], "c,u");
        assert_eq!(p["strict"], "true");
        assert_eq!(p["limit"], "3");
    }

    #[test]
    fn malformed_configs_name_the_problem() {
        let cases = [
            (
                MINIMAL.replace("  catalog:\n", "  catalogue: {}\n  catalog:\n"),
                "catalogue",
            ),
            (MINIMAL.replace("    uri: sqlite:///tmp/c.db\n", ""), "uri"),
            (
                MINIMAL.replace("apiVersion: 0.2.0", "apiVersion: 9"),
                "apiVersion",
            ),
            (MINIMAL.replace("iceberg:", "  bogus: 1\niceberg:"), "bogus"),
            (
                MINIMAL.replace("iceberg:\n", "iceberg:\n  batch:\n    max-records: lots\n"),
                "max-records",
            ),
            (
                MINIMAL.replace("iceberg:\n", "iceberg:\n  batch:\n    max-records: 0\n"),
                "above zero",
            ),
            (
                MINIMAL.replace(
                    "iceberg:\n",
                    "iceberg:\n  tables:\n    partition-by: week(x)\n",
                ),
                "week",
            ),
            (
                MINIMAL.replace(
                    "iceberg:\n",
                    "iceberg:\n  tables:\n    time-columns: text\n",
                ),
                "time or string",
            ),
            (
                MINIMAL.replace("iceberg:\n", "iceberg:\n  source:\n    type: file\n"),
                "path",
            ),
            (
                MINIMAL.replace("iceberg:\n", "iceberg:\n  dead-letter: {}\n"),
                "exactly one",
            ),
            (MINIMAL.replace("name: cdc", "name: [cdc"), "YAML"),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
    }

    #[test]
    fn secrets_render_only_when_declared() {
        let text = MINIMAL
            .replace("  topic:", "  secrets:\n    - name: DB_PASS\n  topic:")
            .replace(
                "sqlite:///tmp/c.db",
                "postgres://u:${{ secrets.DB_PASS }}@h/db",
            );
        let mut file = HashMap::new();
        file.insert("DB_PASS".to_owned(), "s3cr3t".to_owned());
        let secrets = Secrets { file: Some(file) };
        let c = ConnectorConfig::parse(&text, &secrets).unwrap();
        assert_eq!(c.iceberg.catalog.uri, "postgres://u:s3cr3t@h/db");

        let missing = ConnectorConfig::parse(
            &text,
            &Secrets {
                file: Some(HashMap::new()),
            },
        );
        let err = format!("{:#}", missing.unwrap_err());
        assert!(err.contains("`DB_PASS` has no value"), "{err}");

        let undeclared = MINIMAL.replace("sqlite:///tmp/c.db", "${{ secrets.OTHER }}");
        let err = format!(
            "{:#}",
            ConnectorConfig::parse(&undeclared, &secrets).unwrap_err()
        );
        assert!(err.contains("`OTHER` is used but not listed"), "{err}");
        assert!(!err.contains("s3cr3t"));
    }

    #[test]
    fn secrets_file_format() {
        let dir = std::env::temp_dir().join(format!("secrets-{}", std::process::id()));
        std::fs::write(&dir, "# comment\nA=1\nB = two=2\n").unwrap();
        let s = Secrets::from_file(&dir).unwrap();
        assert_eq!(s.get("A").as_deref(), Some("1"));
        assert_eq!(s.get("B").as_deref(), Some(" two=2"));
        std::fs::write(&dir, "no equals sign\n").unwrap();
        assert!(Secrets::from_file(&dir)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        std::fs::remove_file(&dir).ok();
    }

    /// Every config we ship parses.
    #[test]
    fn shipped_configs_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut secrets = HashMap::new();
        secrets.insert("S3_ACCESS_KEY".to_owned(), "key".to_owned());
        secrets.insert("S3_SECRET_KEY".to_owned(), "secret".to_owned());
        let secrets = Secrets {
            file: Some(secrets),
        };
        let c = ConnectorConfig::load(&root.join("Connector.yaml"), &secrets).unwrap();
        assert_eq!(c.meta.topic.name(), "postgres-cdc");
        assert_eq!(c.transforms[0].uses, "cdc-iceberg/debezium-cdc@0.1.0");
        assert_eq!(c.iceberg.tables.map["public.products"], "shop.products");
        assert_eq!(c.iceberg.tables.target_file_size, Some(ByteSize(128 << 20)));
        let s3 = c.catalog_config().s3;
        assert_eq!(s3.secret_key.as_deref(), Some("secret"));
        let mut with_kafka = secrets;
        if let Some(map) = with_kafka.file.as_mut() {
            map.insert("KAFKA_PASSWORD".into(), "pw".into());
        }
        let k = ConnectorConfig::load(&root.join("connector/Connector.kafka.yaml"), &with_kafka)
            .unwrap();
        assert_eq!(k.iceberg.source.kind, SourceKind::Kafka);
        assert_eq!(k.consumer_group(), "spark-iceberg-consumer");
        let section = k.iceberg.source.kafka.as_ref().unwrap();
        assert_eq!(
            section.subscription(),
            vec![r"^shop\.public\..*".to_owned()]
        );
        assert_eq!(section.options["sasl.password"], "pw");
        assert!(!format!("{section:?}").contains("pw\""));
        assert_eq!(
            s3.endpoint.as_deref(),
            Some("http://ceph-rgw.internal:7480")
        );
    }

    #[test]
    fn partition_by() {
        use iceberg::spec::Transform;
        assert_eq!(parse_partition_by("none").unwrap(), None);
        assert_eq!(
            parse_partition_by("month(created_at)").unwrap(),
            Some(("created_at".into(), Transform::Month))
        );
        assert_eq!(
            parse_partition_by("region").unwrap(),
            Some(("region".into(), Transform::Identity))
        );
        assert!(parse_partition_by("month(").is_err());
    }

    #[test]
    fn time_columns() {
        let c = parse(&MINIMAL.replace(
            "iceberg:\n",
            "iceberg:\n  tables:\n    time-columns: string\n",
        ))
        .unwrap();
        assert_eq!(c.iceberg.tables.time_columns.0, TimeColumns::Text);
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.iceberg.tables.time_columns.0, TimeColumns::Time);
    }
}
