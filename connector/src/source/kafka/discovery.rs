//! `manual` assignment: the partitions of every matching topic (by name or pattern), taken
//! by this connector itself, and looked for again every few seconds (Debezium creates a
//! topic per new table).

use super::{CdcContext, Shared};
use crate::config::KafkaSection;
use crate::source::Partition;
use anyhow::{Context as _, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often `manual` assignment looks for new topics and partitions.
const DISCOVER_EVERY: Duration = Duration::from_secs(5);

/// `manual` assignment: which topics match, and the partitions taken so far.
pub(super) struct Discovery {
    names: Vec<String>,
    pattern: Option<regex::Regex>,
    assigned: std::collections::BTreeSet<Partition>,
    last: Option<Instant>,
}

impl Discovery {
    pub(super) fn new(section: &KafkaSection) -> Result<Discovery> {
        let pattern = section
            .topic_pattern
            .as_deref()
            .map(|p| regex::Regex::new(&format!("^(?:{})", p.trim_start_matches('^'))))
            .transpose()
            .context("iceberg.source.kafka.topic-pattern")?;
        Ok(Discovery {
            names: section.topics.clone(),
            pattern,
            assigned: Default::default(),
            last: None,
        })
    }

    pub(super) fn matches(&self, topic: &str) -> bool {
        self.names.iter().any(|n| n == topic)
            || (!topic.starts_with("__")
                && self.pattern.as_ref().is_some_and(|p| p.is_match(topic)))
    }

    pub(super) fn due(&self) -> bool {
        self.last.is_none_or(|at| at.elapsed() >= DISCOVER_EVERY)
    }

    /// Takes the matching partitions not taken yet, each where the tables say.
    pub(super) fn run(
        &mut self,
        consumer: &BaseConsumer<CdcContext>,
        shared: &Shared,
    ) -> Result<()> {
        self.last = Some(Instant::now());
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .context("reading the topics' metadata")?;
        let mut tpl = TopicPartitionList::new();
        let mut taken = Vec::new();
        for topic in metadata.topics() {
            if topic.error().is_some() || !self.matches(topic.name()) {
                continue;
            }
            for p in topic.partitions() {
                let partition = Partition::kafka(topic.name(), p.id());
                if self.assigned.contains(&partition) {
                    continue;
                }
                let Some(offset) = shared.start_of(consumer, &partition) else {
                    continue;
                };
                tpl.add_partition_offset(topic.name(), p.id(), offset)?;
                taken.push(partition);
            }
        }
        shared.started.store(true, Ordering::SeqCst);
        if taken.is_empty() {
            return Ok(());
        }
        consumer
            .incremental_assign(&tpl)
            .context("taking the topics' partitions")?;
        tracing::info!(partitions = ?taken, "reading");
        self.assigned.extend(taken);
        Ok(())
    }
}
