//! Where Debezium messages come from. Every source yields [`SourceRecord`]s in order, each
//! with the partition and offset that identify it in its stream.

pub mod file;
pub mod fluvio;

/// One message as read from a source: a Kafka message's key and value as the Fluvio Kafka
/// source presents them (a tombstone has an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub partition: u32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Why the source could not make a message of these bytes (`value` holds them as read):
    /// the sink dead-letters it and goes on.
    pub defect: Option<String>,
}
