//! Where Debezium messages come from. Every source yields [`SourceRecord`]s in order, each
//! with the partition and offset that identify it in its stream.

pub mod file;
pub mod fluvio;
pub mod kafka;

use std::fmt;
use std::sync::Arc;

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
