//! The normalized CDC record: the SmartModule's output and the sink's input.
//!
//! This is a stable contract (see the README, "The CDC record"): other Fluvio pipelines may
//! consume it too. Every record is one JSON object whose `kind` is `change` or `error`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Version of the record contract, carried in every record as `v`.
pub const CONTRACT_VERSION: u32 = 1;

/// One output record of the SmartModule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CdcRecord {
    Change(Box<ChangeRecord>),
    Error(ErrorRecord),
}

/// The operation of a change, as Debezium names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `c`: a row was inserted.
    #[serde(rename = "c")]
    Create,
    /// `u`: a row was updated.
    #[serde(rename = "u")]
    Update,
    /// `d`: a row was deleted.
    #[serde(rename = "d")]
    Delete,
    /// `r`: a row read by a snapshot.
    #[serde(rename = "r")]
    Read,
    /// `t`: the table was truncated.
    #[serde(rename = "t")]
    Truncate,
    /// `m`: a logical decoding message (`pg_logical_emit_message`).
    #[serde(rename = "m")]
    Message,
}

impl Op {
    pub fn code(self) -> char {
        match self {
            Op::Create => 'c',
            Op::Update => 'u',
            Op::Delete => 'd',
            Op::Read => 'r',
            Op::Truncate => 't',
            Op::Message => 'm',
        }
    }

    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            "m" => Op::Message,
            _ => return None,
        })
    }
}

/// One row change (or a truncate, or a logical message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Contract version.
    pub v: u32,
    pub op: Op,
    pub source: SourceTable,
    /// Primary key, column name -> normalized value, in key column order. Empty for
    /// truncates and messages.
    #[serde(default)]
    pub key: Map<String, Value>,
    /// Row image before the change, where Debezium sent one (deletes, updates under
    /// `REPLICA IDENTITY FULL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Map<String, Value>>,
    /// Row image after the change (creates, updates, reads). Columns listed in `unchanged`
    /// are absent from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Map<String, Value>>,
    /// Columns whose value did not change and was not sent (unchanged TOAST): the sink keeps
    /// the stored value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    pub position: Position,
    /// Column types, in table order, when the event carried a schema. Shared: the records
    /// of one schema hold one list (the sink holds many records at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Arc<Vec<Column>>>,
    /// The logical decoding message of an `m` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<LogicalMessage>,
    /// Events this SmartModule dropped since its previous output record, by reason
    /// (`tombstone`, `transaction`, `heartbeat`, `filtered`, `error`, `truncate`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped: BTreeMap<String, u64>,
}

/// Where a change came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceTable {
    /// Debezium's `connector` (`postgresql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Debezium's logical server name (`topic.prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl SourceTable {
    /// `schema.table`, or just `table`, or empty when the event named no table.
    pub fn qualified(&self) -> String {
        match (&self.schema, &self.table) {
            (Some(s), Some(t)) => format!("{s}.{t}"),
            (None, Some(t)) => t.clone(),
            _ => String::new(),
        }
    }
}

/// The position of a change in the source database's log and in time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// PostgreSQL log sequence number of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<u64>,
    /// PostgreSQL transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "txId")]
    pub tx_id: Option<u64>,
    /// Debezium's `sequence`: `[last committed LSN, current LSN]`, as strings (or null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<Vec<Option<String>>>,
    /// When the change was made in the database (`source.ts_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
    /// The same in microseconds, where Debezium sent it (`source.ts_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_us: Option<i64>,
    /// When Debezium processed the change (the envelope's `ts_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_ts_ms: Option<i64>,
    /// Debezium's `snapshot` marker (`true`, `first`, `last`, `incremental`, `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Debezium's transaction block, where `provide.transaction.metadata` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Value>,
    /// Offset of the input record in its Fluvio partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

/// A logical decoding message (`op` = `m`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalMessage {
    pub prefix: Option<String>,
    /// Base64 of the message content, as Debezium sent it.
    pub content: Option<String>,
}

/// A column of the source table and its type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(flatten)]
    pub ty: ColumnType,
    pub optional: bool,
    /// The Debezium or Kafka Connect logical type name this type was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical: Option<String>,
}

/// A column type in terms an Iceberg table can take without guessing. Values in the row
/// images are normalized to match (see the README for each type's JSON form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnType {
    Boolean,
    /// 8, 16 or 32 bit integer.
    Int,
    Long,
    Float,
    Double,
    String,
    /// Base64 in the row images.
    Binary,
    /// A decimal string in the row images. `scale` is absent for PostgreSQL's unconstrained
    /// `numeric` (Debezium's VariableScaleDecimal); `precision` is absent where not known.
    Decimal {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        precision: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scale: Option<u32>,
    },
    /// `YYYY-MM-DD`.
    Date,
    /// `HH:MM:SS.ffffff` (9 fractional digits for nanosecond sources).
    Time,
    /// A time with zone offset, as Debezium's ZonedTime string.
    Timetz,
    /// `YYYY-MM-DDTHH:MM:SS.ffffff`, no zone (PostgreSQL `timestamp`).
    Timestamp,
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, normalized to UTC (PostgreSQL `timestamptz`).
    Timestamptz,
    Uuid,
    /// JSON text, as a string.
    Json,
    List {
        element: Box<ElementType>,
    },
    Map {
        key: Box<ElementType>,
        value: Box<ElementType>,
    },
    Struct {
        fields: Vec<Column>,
    },
}

/// The type of a list element or map entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ElementType {
    #[serde(flatten)]
    pub ty: ColumnType,
    pub optional: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical: Option<String>,
}

/// A record the SmartModule could not turn into a change. The sink sends it to its
/// dead-letter destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub v: u32,
    /// What was wrong, for a person.
    pub reason: String,
    /// Offset of the input record in its Fluvio partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The input record's key, as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Original>,
    /// The input record's value, as it came.
    pub value: Original,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped: BTreeMap<String, u64>,
}

/// Original bytes: as text when they are UTF-8, else base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "encoding", content = "data", rename_all = "snake_case")]
pub enum Original {
    Utf8(String),
    Base64(String),
}

impl Original {
    pub fn from_bytes(bytes: &[u8]) -> Original {
        match std::str::from_utf8(bytes) {
            Ok(text) => Original::Utf8(text.to_owned()),
            Err(_) => {
                use base64::Engine as _;
                Original::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Original::Utf8(text) => Ok(text.as_bytes().to_vec()),
            Original::Base64(b64) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b64)
            }
        }
    }
}
