//! `iceberg.source.kafka`: the direct Kafka source's settings, and the librdkafka client
//! settings made of them.

use anyhow::{anyhow, bail, Result};
use rdkafka::config::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

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
    pub(super) fn validate(&self, consumer_group: &str) -> Result<()> {
        if self.bootstrap_servers.is_none() {
            bail!("iceberg.source.kafka.bootstrap-servers is required (or BOOTSTRAP_SERVER_URL)");
        }
        if self.topics.is_empty() && self.topic_pattern.is_none() {
            bail!("iceberg.source.kafka: give topics or topic-pattern");
        }
        if !["earliest", "latest"].contains(&self.auto_offset_reset.as_str()) {
            bail!(
                "iceberg.source.kafka.auto-offset-reset `{}` is not earliest or latest",
                self.auto_offset_reset
            );
        }
        client_config(self, consumer_group).map(|_| ())
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

/// Messages librdkafka fetches ahead of the connector, in KiB: at ~2 KB a Debezium message
/// with schemas, ~8000 messages, half a second of the quick benchmark's Kafka rate.
const PREFETCH_KBYTES: &str = "16384";

/// The librdkafka settings of a section: ours, then the pass-through `options` (which may
/// not turn on auto-commit: offsets move only after table commits).
pub fn client_config(section: &KafkaSection, group: &str) -> Result<ClientConfig> {
    let servers = section.bootstrap_servers.as_deref().ok_or_else(|| {
        anyhow!("iceberg.source.kafka.bootstrap-servers is not set (nor BOOTSTRAP_SERVER_URL)")
    })?;
    if section
        .options
        .get("partition.assignment.strategy")
        .is_some_and(|s| s.contains("cooperative"))
        || section.options.contains_key("group.protocol")
    {
        // positioning on assignment replaces the whole assignment: eager rebalances only
        bail!("kafka options: cooperative and KIP-848 rebalancing are not supported (leave partition.assignment.strategy and group.protocol at their defaults)");
    }
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers)
        .set("group.id", group)
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", section.auto_offset_reset.as_str())
        // librdkafka prefetches up to 64 MiB by default: part of the connector's memory that
        // no cap of ours sees (an option may set it again); and at its default a full queue
        // stops fetching for a whole second, which halved the speed with the smaller queue
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
        .set("fetch.queue.backoff.ms", "20");
    for (k, v) in &section.options {
        c.set(k, v);
    }
    // every partition is positioned explicitly; an offset that goes out of range while it
    // is read (retention overtaking the reader) is an error, not a silent jump
    if section.options.contains_key("auto.offset.reset") {
        tracing::warn!("kafka option auto.offset.reset is ignored: see auto-offset-reset");
    }
    c.set("auto.offset.reset", "error");
    for (key, value) in [
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
    ] {
        if section.options.get(key).is_some_and(|v| v != value) {
            tracing::warn!(
                "kafka option {key} is ignored: offsets are committed after each table commit"
            );
        }
        c.set(key, value);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_is_bounded_unless_an_option_says_otherwise() {
        let mut section = KafkaSection {
            bootstrap_servers: Some("k:1".into()),
            ..KafkaSection::default()
        };
        let c = client_config(&section, "g").unwrap();
        assert_eq!(c.get("queued.max.messages.kbytes"), Some(PREFETCH_KBYTES));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("20"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        section
            .options
            .insert("queued.max.messages.kbytes".into(), "65536".into());
        let c = client_config(&section, "g").unwrap();
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("65536"));
    }
}
