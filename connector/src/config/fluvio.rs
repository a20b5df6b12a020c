//! Fluvio's connector contract: `apiVersion`, `meta` (name, type, topic, consumer, secrets)
//! and `transforms`, as `cdk deploy` reads them.

use super::size::ByteSize;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `meta.type` of this connector.
pub const CONNECTOR_TYPE: &str = "iceberg-cdc-sink";

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

impl Meta {
    pub(super) fn validate(&self, api_version: &str) -> Result<()> {
        if self.kind != CONNECTOR_TYPE {
            bail!("meta.type `{}` is not {CONNECTOR_TYPE}", self.kind);
        }
        for s in &self.secrets {
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
        // what cdk itself accepts: a topic name under 0.1.0, a topic spec under 0.2.0
        match (api_version, &self.topic) {
            ("0.1.0", TopicRef::Name(_)) | ("0.2.0", TopicRef::Spec(_)) => {}
            ("0.1.0", TopicRef::Spec(_)) => {
                bail!("apiVersion 0.1.0: meta.topic is a topic name (`topic: my-topic`)")
            }
            ("0.2.0", TopicRef::Name(name)) => bail!(
                "apiVersion 0.2.0: meta.topic is `{{meta: {{name: {name}}}}}`, not a name \
                 (cdk refuses it: \"invalid type: string, expected struct TopicConfig\"); \
                 or use apiVersion 0.1.0"
            ),
            (other, _) => bail!("apiVersion `{other}` is not supported (0.1.0 or 0.2.0)"),
        }
        let consumer = self.consumer.as_ref();
        if let Some(p) = consumer.and_then(|c| c.partition.as_ref()) {
            p.list()?;
        }
        let strategy = consumer
            .and_then(|c| c.offset.as_ref())
            .and_then(|o| o.strategy.as_deref());
        if let Some(strategy) = strategy {
            if !["manual", "auto", "none"].contains(&strategy) {
                bail!("meta.consumer.offset.strategy `{strategy}` is not manual, auto or none");
            }
        }
        Ok(())
    }
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
    pub(super) fn validate(&self) -> Result<()> {
        self.params()?;
        self.lookback()?;
        Ok(())
    }
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
