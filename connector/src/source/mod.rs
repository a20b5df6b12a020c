//! Where Debezium messages come from: a file, a Fluvio topic, Kafka. Every source implements
//! [`Source`]: it hands over chunks of [`SourceRecord`]s (one partition per chunk, in order,
//! each record with the partition and offset that identify it), is told which positions
//! became durable in the tables (its acknowledgements: consumer offsets, for monitoring),
//! and, where partitions move between group members, announces revocations.

pub mod file;
pub mod fluvio;
pub mod kafka;

use crate::config::{ConnectorConfig, OffsetStart, SourceKind};
use anyhow::{bail, Result};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Source records read per chunk at most. Small: the transform stage holds a few chunks per
/// worker ahead of the run loop, raw and decoded, and while a commit runs they all fill; a
/// chunk of 2000 `products` messages is ~4.4 MB raw and ~6 MB decoded. The memory soak's
/// peak fell from 435 to 340 MiB with chunks of 250 instead of 2000, the `.wasm`'s speed
/// unchanged (BENCHMARKS.md).
pub const CHUNK: usize = 250;

/// What a source hands over: chunks of one partition each, in the partition's order. An
/// empty chunk or the channel's end is the end of the source; an error is its last item.
pub type Chunks = mpsc::Receiver<Result<Vec<SourceRecord>>>;

/// A running source.
pub trait Source: Send {
    /// Its chunks: the transform stage takes them once, at the start.
    fn chunks(&mut self) -> Option<Chunks>;

    /// Partitions about to be taken away (Kafka's group rebalances), taken once by the
    /// transform stage, which hands them on in order with the chunks.
    fn revocations(&mut self) -> Option<mpsc::Receiver<Revocation>> {
        None
    }

    /// Where each partition starts, for those the source positions itself (the file).
    fn starts(&self) -> BTreeMap<Partition, i64> {
        BTreeMap::new()
    }

    /// Whether the `transforms:` chain runs in this process (not in Fluvio's SPU).
    fn transforms_here(&self) -> bool {
        true
    }

    /// Per partition, the offset below which every record is durable in the tables.
    fn acknowledge(&self, _durable: &BTreeMap<Partition, i64>) {}

    /// Where the tables are, other writers' progress included: where a partition handed to
    /// this member later starts.
    fn tables_at(&self, _positions: &BTreeMap<Partition, i64>) {}

    /// Per partition, the offset after the newest record (for the lag), when known.
    fn high_watermarks(&self) -> BoxFuture<'_, Option<BTreeMap<Partition, i64>>> {
        Box::pin(async { None })
    }

    /// The last acknowledgement (`read`: everything before it is durable), then let go.
    fn close(self: Box<Self>, read: BTreeMap<Partition, i64>) -> BoxFuture<'static, ()>;
}

/// Partitions about to be taken away; the sink commits its open batches and answers on
/// `done`.
pub struct Revocation {
    pub partitions: Vec<Partition>,
    pub done: std::sync::mpsc::SyncSender<()>,
}

/// Opens the configured source, each partition resuming at its position in `resume`.
pub async fn open(
    config: &ConnectorConfig,
    resume: &BTreeMap<Partition, i64>,
) -> Result<Box<dyn Source>> {
    Ok(match config.iceberg.source.kind {
        SourceKind::File => {
            let section = &config.iceberg.source;
            let path = section.path.clone().unwrap_or_default();
            let format = file::LineFormat::parse(section.format.as_deref().unwrap_or("value"))?;
            let only = Partition::fluvio(0);
            let start = match resume.get(&only) {
                Some(&checkpoint) => checkpoint,
                None => match config.start() {
                    OffsetStart::Beginning => 0,
                    OffsetStart::Absolute(n) if n >= 0 => n,
                    other => bail!("offset start {other:?} does not apply to a file"),
                },
            };
            tracing::info!(path, start, "reading");
            Box::new(file::FileRun::open(&path, format, start, CHUNK)?)
        }
        SourceKind::Fluvio => {
            let source = fluvio::spawn(config, resume, CHUNK).await?;
            tracing::info!(topic = config.meta.topic.name(), "consuming");
            Box::new(source)
        }
        SourceKind::Kafka => {
            let section = config.iceberg.source.kafka.clone().unwrap_or_default();
            let group = config.consumer_group();
            let source = kafka::spawn(&section, &group, resume, CHUNK)?;
            tracing::info!(topics = ?section.subscription(), group, "consuming from Kafka");
            Box::new(source)
        }
    })
}

/// A stream a source reads in order: a Fluvio partition (`0`, `1`, …; a file is partition
/// `0`) or a Kafka topic partition (`topic/3`). Its name keys the offsets in the snapshot
/// summaries, so it must never change meaning.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition(Arc<str>);

impl Partition {
    pub fn fluvio(partition: u32) -> Partition {
        Partition(partition.to_string().into())
    }

    pub fn kafka(topic: &str, partition: i32) -> Partition {
        Partition(format!("{topic}/{partition}").into())
    }

    pub fn named(name: &str) -> Partition {
        Partition(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Fluvio partition number, when this is one.
    pub fn fluvio_number(&self) -> Option<u32> {
        self.0.parse().ok()
    }

    /// The Kafka topic and partition, when this is one.
    pub fn kafka_parts(&self) -> Option<(&str, i32)> {
        let (topic, p) = self.0.rsplit_once('/')?;
        Some((topic, p.parse().ok()?))
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message as read from a source: a Kafka message's key and value as the Fluvio Kafka
/// source presents them (a tombstone has an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub partition: Partition,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Why the source could not make a message of these bytes (`value` holds them as read):
    /// the sink dead-letters it and goes on.
    pub defect: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(Partition::fluvio(3).as_str(), "3");
        assert_eq!(Partition::fluvio(3).fluvio_number(), Some(3));
        let k = Partition::kafka("shop.public.orders", 2);
        assert_eq!(k.as_str(), "shop.public.orders/2");
        assert_eq!(k.kafka_parts(), Some(("shop.public.orders", 2)));
        assert_eq!(k.fluvio_number(), None);
    }
}
