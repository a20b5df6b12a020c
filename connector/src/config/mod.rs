//! The connector config: Fluvio's connector contract (`apiVersion`, `meta`, `transforms`) plus
//! our own `iceberg:` section, with `${{ secrets.NAME }}` rendered from the secret store.

mod catalog;
mod fluvio;
mod kafka;
mod maintenance;
mod metrics;
mod secrets;
mod size;
mod storage;
mod tables;

pub use catalog::*;
pub use fluvio::*;
pub use kafka::*;
pub use maintenance::*;
pub use metrics::*;
pub use secrets::*;
pub use size::*;
pub use storage::*;
pub use tables::*;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    pub maintenance: MaintenanceSection,
    /// The metrics and health endpoint (off by default).
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Local `.wasm` files for `transforms:` steps the connector runs itself (file source),
    /// by the name in `uses`.
    #[serde(default)]
    pub smartmodules: BTreeMap<String, PathBuf>,
    /// How the connector runs the debezium-cdc SmartModule itself (file and Kafka sources):
    /// its `.wasm` in Fluvio's engine (default), or its code compiled in.
    #[serde(default)]
    pub smartmodule_engine: SmartModuleEngine,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmartModuleEngine {
    #[default]
    Wasm,
    /// The SmartModule's own Rust code in-process: byte-identical output, without
    /// WebAssembly; only for the debezium-cdc SmartModule as the one transform.
    Native,
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

impl SourceConfig {
    fn validate(&self, consumer_group: &str) -> Result<()> {
        if let Some(k) = &self.kafka {
            if self.kind != SourceKind::Kafka {
                bail!("iceberg.source.kafka is set but source.type is not kafka");
            }
            k.validate(consumer_group)?;
        }
        if self.kind == SourceKind::File && self.path.is_none() {
            bail!("iceberg.source.path is required for the file source");
        }
        if let Some(f) = &self.format {
            if f != "value" && f != "key-value" {
                bail!("iceberg.source.format: `{f}` is not value or key-value");
            }
        }
        Ok(())
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

    /// Whether the connector runs the SmartModule's `.wasm` itself (file and Kafka sources on
    /// the default engine; with Fluvio the SPU runs it).
    pub fn runs_wasm_here(&self) -> bool {
        self.iceberg.source.kind != SourceKind::Fluvio
            && self.iceberg.smartmodule_engine == SmartModuleEngine::Wasm
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

    /// Where records that cannot be applied go: `iceberg.dead-letter`, else a file next to a
    /// SQLite catalog's database (`<meta.name>.dead-letters.jsonl`). Any other catalog needs
    /// the section: bad records are never only a log line.
    pub fn dead_letters(&self) -> Result<DeadLetterSection> {
        if let Some(dl) = &self.iceberg.dead_letter {
            return Ok(dl.clone());
        }
        let uri = &self.iceberg.catalog.uri;
        let database = uri
            .strip_prefix("sqlite:")
            // `sqlite://` then the path: `sqlite:///tmp/c.db` and `sqlite:////tmp/c.db` are
            // both /tmp/c.db; `sqlite:c.db` is relative
            .map(|p| p.strip_prefix("//").unwrap_or(p))
            .map(|p| p.split('?').next().unwrap_or(p))
            .filter(|p| !p.is_empty() && !p.starts_with(':'));
        let Some(database) = database else {
            bail!(
                "iceberg.dead-letter is required with this catalog (only a SQLite catalog has a \
                 folder to default to): give `file:` or `topic:`"
            );
        };
        let folder = Path::new(database).parent().unwrap_or(Path::new("."));
        let file = folder.join(format!("{}.dead-letters.jsonl", self.meta.name));
        Ok(DeadLetterSection {
            file: Some(file),
            topic: None,
        })
    }

    /// Each section checks itself; what spans sections is checked here.
    fn validate(&self) -> Result<()> {
        self.meta.validate(&self.api_version)?;
        for step in &self.transforms {
            step.validate()?;
        }
        let source = &self.iceberg.source;
        if source.kind != SourceKind::Fluvio {
            if let Some(step) = self.transforms.iter().find(|t| t.lookback.is_some()) {
                bail!(
                    "transforms: `{}` asks for lookback, which only the fluvio source provides",
                    step.uses
                );
            }
        }
        source.validate(&self.consumer_group())?;
        if self.iceberg.smartmodule_engine == SmartModuleEngine::Native {
            if source.kind == SourceKind::Fluvio {
                bail!(
                    "smartmodule-engine: native is for the file and kafka sources (with fluvio, the SPU runs the transforms)"
                );
            }
            let ours = self.transforms.len() == 1
                && self.transforms[0].uses == crate::transform::SMARTMODULE_NAME;
            if !ours {
                bail!(
                    "smartmodule-engine: native runs {} alone: the transforms list other SmartModules",
                    crate::transform::SMARTMODULE_NAME
                );
            }
        }
        self.iceberg.tables.validate()?;
        self.iceberg.batch.validate()?;
        self.iceberg.retries.validate()?;
        match &self.iceberg.dead_letter {
            Some(dl) => dl.validate()?,
            None => {
                self.dead_letters()?;
            }
        }
        let catalog = &self.iceberg.catalog;
        catalog.validate()?;
        self.iceberg
            .storage
            .validate(catalog.kind, &catalog.warehouse)?;
        self.iceberg.metrics.validate()?;
        self.iceberg.maintenance.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg_cdc_merge::schema::TimeColumns;
    use std::collections::HashMap;

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
    fn the_topic_takes_the_shape_cdk_takes_for_the_api_version() {
        let name_only = MINIMAL.replace("  topic:\n    meta:\n      name: cdc", "  topic: cdc");
        let v1 = name_only.replace("apiVersion: 0.2.0", "apiVersion: 0.1.0");
        assert_eq!(parse(&v1).unwrap().meta.topic.name(), "cdc");
        assert_eq!(parse(MINIMAL).unwrap().meta.topic.name(), "cdc");
        // cdk refuses both of these: "invalid type: string, expected struct TopicConfig"
        let err = format!("{:#}", parse(&name_only).unwrap_err());
        assert!(
            err.contains("apiVersion 0.2.0: meta.topic is `{meta: {name: cdc}}`"),
            "{err}"
        );
        let spec_under_v1 = MINIMAL.replace("apiVersion: 0.2.0", "apiVersion: 0.1.0");
        let err = format!("{:#}", parse(&spec_under_v1).unwrap_err());
        assert!(
            err.contains("apiVersion 0.1.0: meta.topic is a topic name"),
            "{err}"
        );
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
            )
            + "  dead-letter:\n    file: /tmp/dl.jsonl\n";
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

    /// A secret is a value: whatever it holds lands in its field as it is, in a plain, a
    /// single-quoted, a double-quoted or a folded block scalar, and nothing else of the config changes.
    #[test]
    fn secrets_go_into_values_whatever_they_hold() {
        let hard = [
            "p#ss: w'o\"rd",
            "line one\nline two",
            "}} ${{ not.a.ref",
            "ünïcødé ✓ #",
            "  spaced  ",
            "- [a, b]: {c: d}",
        ];
        for value in hard {
            for (before, after) in [
                ("", ""),
                ("'", "'"),
                ("\"", "\""),
                (">-\n      ", ""),
                ("|-  # a comment\n      ", ""),
            ] {
                let uri = format!("{before}postgres://u:${{{{ secrets.DB_PASS }}}}@h/db{after}");
                let text = MINIMAL
                    .replace("  topic:", "  secrets:\n    - name: DB_PASS\n  topic:")
                    .replace("sqlite:///tmp/c.db", &uri)
                    + "  dead-letter:\n    file: /tmp/dl.jsonl # ${{ secrets.NOT_DECLARED }}\n";
                let mut file = HashMap::new();
                file.insert("DB_PASS".to_owned(), value.to_owned());
                let c = ConnectorConfig::parse(&text, &Secrets { file: Some(file) })
                    .unwrap_or_else(|e| panic!("{value:?} in {uri}: {e:#}"));
                assert_eq!(c.iceberg.catalog.uri, format!("postgres://u:{value}@h/db"));
                assert_eq!(
                    c.iceberg.catalog.warehouse,
                    parse(MINIMAL).unwrap().iceberg.catalog.warehouse
                );
                assert_eq!(
                    c.dead_letters().unwrap().file,
                    Some(PathBuf::from("/tmp/dl.jsonl"))
                );
            }
        }
        // a whole-value secret in a flow mapping
        let text = MINIMAL.replace("  topic:", "  secrets:\n    - name: K\n  topic:")
            + "  dead-letter: { file: \"${{ secrets.K }}\" }\n";
        let mut file = HashMap::new();
        file.insert("K".to_owned(), "/tmp/a, b: {c}.jsonl".to_owned());
        let c = ConnectorConfig::parse(&text, &Secrets { file: Some(file) }).unwrap();
        assert_eq!(
            c.dead_letters().unwrap().file,
            Some(PathBuf::from("/tmp/a, b: {c}.jsonl"))
        );
    }

    #[test]
    fn dead_letters_default_next_to_a_sqlite_catalog_else_are_required() {
        let c = parse(MINIMAL).unwrap();
        let file = c.dead_letters().unwrap().file.unwrap();
        assert_eq!(file, PathBuf::from("/tmp/pg-to-iceberg.dead-letters.jsonl"));
        let relative =
            parse(&MINIMAL.replace("sqlite:///tmp/c.db", "sqlite:c.db?mode=rwc")).unwrap();
        let file = relative.dead_letters().unwrap().file.unwrap();
        assert_eq!(file, PathBuf::from("pg-to-iceberg.dead-letters.jsonl"));
        // four slashes: an absolute path (as in the container image's /var/lib/iceberg-cdc)
        let four =
            parse(&MINIMAL.replace("sqlite:///tmp/c.db", "sqlite:////var/lib/c.db")).unwrap();
        let file = four.dead_letters().unwrap().file.unwrap();
        assert!(file.is_absolute(), "{}", file.display());
        assert_eq!(file.parent(), Some(Path::new("//var/lib")));
        let pg = MINIMAL.replace("sqlite:///tmp/c.db", "postgres://u@h/db");
        let err = format!("{:#}", parse(&pg).unwrap_err());
        assert!(err.contains("iceberg.dead-letter is required"), "{err}");
        let named = pg.replace(
            "iceberg:\n",
            "iceberg:\n  dead-letter:\n    file: /var/dl.jsonl\n",
        );
        let c = parse(&named).unwrap();
        assert_eq!(
            c.dead_letters().unwrap().file,
            Some(PathBuf::from("/var/dl.jsonl"))
        );
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

    /// `Connector.toml` (what cdk shows of the `iceberg:` section) lists every section the
    /// parser takes and no other, and the reference `Connector.yaml` uses none it leaves out.
    #[test]
    fn connector_toml_describes_the_config() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let toml = std::fs::read_to_string(root.join("Connector.toml")).unwrap();
        let described: Vec<&str> = toml
            .lines()
            .filter_map(|l| l.strip_prefix("[custom.properties.")?.strip_suffix(']'))
            .collect();
        // each one is a section the parser knows: an unknown one is refused
        for key in &described {
            let text = MINIMAL.replace("iceberg:\n", &format!("iceberg:\n  {key}: {{}}\n"));
            let err = parse(&text)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(!err.contains("unknown field"), "{key}: {err}");
        }
        let refused = MINIMAL.replace("iceberg:\n", "iceberg:\n  no-such-section: {}\n");
        assert!(format!("{:#}", parse(&refused).unwrap_err()).contains("unknown field"));
        // every section of the reference config is described
        let reference: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(root.join("../Connector.yaml")).unwrap())
                .unwrap();
        let sections = reference["iceberg"].as_mapping().unwrap();
        for key in sections.keys().filter_map(|k| k.as_str()) {
            assert!(
                described.contains(&key),
                "Connector.toml does not describe `{key}`"
            );
        }
        // and every section the parser has (the fields of IcebergSection)
        for key in [
            "source",
            "catalog",
            "storage",
            "tables",
            "batch",
            "retries",
            "dead-letter",
            "maintenance",
            "metrics",
            "smartmodules",
            "smartmodule-engine",
        ] {
            assert!(
                described.contains(&key),
                "Connector.toml does not describe `{key}`"
            );
        }
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
    fn the_wasm_runs_here_on_the_file_and_kafka_sources_default_engine() {
        let file = MINIMAL.replace(
            "iceberg:\n",
            "transforms:\n  - uses: cdc-iceberg/debezium-cdc@0.1.0\niceberg:\n  source:\n    type: file\n    path: x\n",
        );
        assert!(parse(&file).unwrap().runs_wasm_here());
        let native = file.replace("iceberg:\n", "iceberg:\n  smartmodule-engine: native\n");
        assert!(!parse(&native).unwrap().runs_wasm_here());
        assert!(
            !parse(MINIMAL).unwrap().runs_wasm_here(),
            "fluvio: the SPU runs it"
        );
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
