//! Reads one Debezium message (Kafka key and value, as the Fluvio Kafka source copies them)
//! into a [`ChangeRecord`], or says why it is skipped or bad.
//!
//! Shapes recognized: the change event envelope (`before`/`after`/`source`/`op`), with or
//! without the JSON converter's `{"schema":…,"payload":…}` wrapper; rows flattened by
//! `ExtractNewRecordState` (`__op`, `__deleted`, `__table`, …); tombstones; transaction
//! BEGIN/END events; heartbeats.

use crate::converter::{self, RowSchema, Schemas};
use crate::envelope;
use crate::params::{InputFormat, Settings, TruncateAction};
use crate::record::{ChangeRecord, LogicalMessage, Op, Position, SourceTable, CONTRACT_VERSION};
use crate::schema::{describe, ConnectSchema, ValueError};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a message produced no change record, without being bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    Tombstone,
    Transaction,
    Heartbeat,
    /// Left out by the `operations`, `include` or `exclude` parameters.
    Filtered,
    /// A truncate, with `truncate=drop`.
    Truncate,
}

impl Skip {
    pub fn label(self) -> &'static str {
        match self {
            Skip::Tombstone => "tombstone",
            Skip::Transaction => "transaction",
            Skip::Heartbeat => "heartbeat",
            Skip::Filtered => "filtered",
            Skip::Truncate => "truncate",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Change(Box<ChangeRecord>),
    Skip(Skip),
}

/// What was wrong with a bad message. The text is the reason in the error record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadMessage {
    #[error("value is not valid JSON: {0}")]
    Json(String),
    #[error("key is not valid JSON: {0}")]
    KeyJson(String),
    #[error("value is {0}, not a JSON object")]
    NotAnObject(String),
    #[error("not a Debezium change event: no `op` and no `__op`/`__deleted` field")]
    Unrecognized,
    #[error("unknown operation `{0}`")]
    UnknownOp(String),
    #[error("a `{0}` event without an `after` row image")]
    MissingAfter(char),
    #[error("`{field}` is {got}, expected {expected}")]
    Field {
        field: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("schema: {0}")]
    Schema(String),
    #[error("{image}: {source}")]
    Value {
        image: &'static str,
        source: ValueError,
    },
    #[error("no primary key: the record has no key and `key_columns` names none for table `{0}`")]
    NoKey(String),
    #[error("key column `{0}` is not in the row image")]
    KeyColumnMissing(String),
    #[error("record key is {0}, not a JSON object")]
    KeyNotAnObject(String),
    #[error("a truncate of `{0}` (the `truncate` parameter is `error`)")]
    Truncate(String),
}

/// Parses one message. `offset` is the input record's offset, carried into the position;
/// `schemas` remembers the schemas of earlier messages.
pub fn parse(
    settings: &Settings,
    schemas: &mut Schemas,
    key: Option<&[u8]>,
    value: &[u8],
    offset: Option<i64>,
) -> Result<Parsed, BadMessage> {
    parse_known_envelope(settings, schemas, key, value, offset)
        .unwrap_or_else(|| parse_as_tree(settings, schemas, key, value, offset))
}

/// [`parse`] of a change event envelope in the wrapper of a schema seen before, read from
/// its text without a tree of its payload; `None` for any other message.
pub fn parse_known_envelope(
    settings: &Settings,
    schemas: &mut Schemas,
    key: Option<&[u8]>,
    value: &[u8],
    offset: Option<i64>,
) -> Option<Result<Parsed, BadMessage>> {
    let event = read_known_envelope(settings, schemas, value)?;
    Some(finish(settings, schemas, event, key, offset))
}

/// A change event envelope in the wrapper of a schema seen before, read from its text
/// without a tree of its payload ([`envelope`]); `None` for any other message, and for
/// anything the tree's reading would say differently of (that reading then says it).
fn read_known_envelope(settings: &Settings, schemas: &mut Schemas, value: &[u8]) -> Option<Event> {
    if settings.format == InputFormat::Flattened {
        return None;
    }
    let (known, payload) = schemas.known_wrapper(value)?;
    let row_schema = match &known.parsed {
        Ok(_) => known.envelope_row.clone(),
        Err(_) => return None,
    };
    let payload = std::str::from_utf8(payload).ok()?;
    let read = envelope::read(payload, row_schema.as_ref().map(|row| &row.schema))?;
    let source = read.source.unwrap_or_default();
    let position = Position {
        lsn: source.lsn,
        tx_id: source.tx_id,
        sequence: match &source.sequence {
            Some(text) => sequence_text(text).ok()?,
            None => None,
        },
        ts_ms: source.ts_ms,
        ts_us: source.ts_us,
        snapshot: source.snapshot,
        event_ts_ms: read.ts_ms,
        transaction: read.transaction,
        ..Position::default()
    };
    Some(Event {
        op: read.op,
        source: SourceTable {
            connector: named(source.connector),
            name: named(source.name),
            db: named(source.db),
            schema: named(source.schema),
            table: named(source.table),
        },
        position,
        message: logical_message(read.op, read.message.as_ref()),
        before: read.before,
        after: read.after,
        normalized: row_schema.is_some(),
        row_schema,
    })
}

/// [`parse`] by way of a tree of the payload: the reading of every message that
/// [`read_known_envelope`] does not read, and the reference it is tested against.
pub fn parse_as_tree(
    settings: &Settings,
    schemas: &mut Schemas,
    key: Option<&[u8]>,
    value: &[u8],
    offset: Option<i64>,
) -> Result<Parsed, BadMessage> {
    if value.iter().all(u8::is_ascii_whitespace) {
        return Ok(Parsed::Skip(Skip::Tombstone));
    }
    let (schema, payload) =
        converter::read(value, schemas).map_err(|e| BadMessage::Json(e.to_string()))?;
    let payload = match payload {
        Value::Null => return Ok(Parsed::Skip(Skip::Tombstone)),
        Value::Object(obj) => obj,
        other => return Err(BadMessage::NotAnObject(describe(&other))),
    };
    let schema_name = schema.as_ref().and_then(|s| s.name.as_deref());
    if let Some(skip) = control_event(&payload, schema_name) {
        return Ok(Parsed::Skip(skip));
    }
    if let Some(Err(e)) = schema.as_ref().map(|s| &s.parsed) {
        return Err(BadMessage::Schema(e.clone()));
    }
    let event = match shape(settings.format, &payload, schema_name) {
        Some(Shape::Envelope) => {
            read_envelope(payload, schema.and_then(|s| s.envelope_row.clone()))?
        }
        Some(Shape::Flattened) => {
            read_flattened(payload, schema.and_then(|s| s.flattened_row.clone()))?
        }
        None => return Err(BadMessage::Unrecognized),
    };
    finish(settings, schemas, event, key, offset)
}

/// Transaction BEGIN/END events and heartbeats.
fn control_event(payload: &Map<String, Value>, schema_name: Option<&str>) -> Option<Skip> {
    if payload.contains_key("op") {
        return None;
    }
    let status = payload.get("status").and_then(Value::as_str);
    if matches!(status, Some("BEGIN" | "END")) && payload.contains_key("id") {
        return Some(Skip::Transaction);
    }
    let heartbeat_schema = schema_name.is_some_and(|n| n.ends_with(".Heartbeat"));
    let only_ts = payload.len() == 1 && payload.contains_key("ts_ms");
    if heartbeat_schema || only_ts {
        return Some(Skip::Heartbeat);
    }
    None
}

enum Shape {
    Envelope,
    Flattened,
}

fn shape(
    format: InputFormat,
    payload: &Map<String, Value>,
    schema_name: Option<&str>,
) -> Option<Shape> {
    match format {
        InputFormat::Envelope => Some(Shape::Envelope),
        InputFormat::Flattened => Some(Shape::Flattened),
        InputFormat::Auto => {
            let flattened = payload.contains_key("__op")
                || payload.contains_key("__deleted")
                || schema_name.is_some_and(|n| n.ends_with(".Value"));
            if payload.contains_key("op") {
                Some(Shape::Envelope)
            } else if flattened {
                Some(Shape::Flattened)
            } else {
                None
            }
        }
    }
}

/// What the envelope or the flattened row said, before key resolution and filtering.
struct Event {
    op: Op,
    source: SourceTable,
    position: Position,
    before: Option<Map<String, Value>>,
    after: Option<Map<String, Value>>,
    /// Whether `before` and `after` are already normalized by `row_schema`.
    normalized: bool,
    row_schema: Option<Arc<RowSchema>>,
    message: Option<LogicalMessage>,
}

fn read_envelope(
    mut payload: Map<String, Value>,
    row_schema: Option<Arc<RowSchema>>,
) -> Result<Event, BadMessage> {
    let op_text = match payload.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(BadMessage::Field {
                field: "op",
                expected: "a string",
                got: describe(other),
            })
        }
        None => return Err(BadMessage::Unrecognized),
    };
    let op = Op::from_code(op_text).ok_or_else(|| BadMessage::UnknownOp(op_text.to_owned()))?;
    let source = match payload.get("source") {
        None | Some(Value::Null) => &EMPTY,
        Some(Value::Object(obj)) => obj,
        Some(other) => {
            return Err(BadMessage::Field {
                field: "source",
                expected: "an object",
                got: describe(other),
            })
        }
    };
    let mut position = source_position(source)?;
    position.event_ts_ms = opt_i64(&payload, "ts_ms", "ts_ms")?;
    position.transaction = payload.get("transaction").filter(|t| !t.is_null()).cloned();
    let message = logical_message(op, payload.get("message"));
    let source = source_table(source);
    let before = row_image(&mut payload, "before")?;
    let after = row_image(&mut payload, "after")?;
    Ok(Event {
        op,
        source,
        position,
        before,
        after,
        normalized: false,
        row_schema,
        message,
    })
}

/// The logical decoding message of an `m` event.
fn logical_message(op: Op, message: Option<&Value>) -> Option<LogicalMessage> {
    match message {
        Some(Value::Object(m)) if op == Op::Message => Some(LogicalMessage {
            prefix: m.get("prefix").and_then(Value::as_str).map(str::to_owned),
            content: m.get("content").and_then(Value::as_str).map(str::to_owned),
        }),
        _ => None,
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// Takes the `before` or `after` image out of the payload.
fn row_image(
    payload: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<Map<String, Value>>, BadMessage> {
    match payload.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(obj)) => Ok(Some(obj)),
        Some(other) => Err(BadMessage::Field {
            field,
            expected: "an object or null",
            got: describe(&other),
        }),
    }
}

/// A name of `source`, none when Debezium left it empty.
fn named(text: Option<String>) -> Option<String> {
    text.filter(|t| !t.is_empty())
}

fn source_table(source: &Map<String, Value>) -> SourceTable {
    let text = |k: &str| named(source.get(k).and_then(Value::as_str).map(str::to_owned));
    SourceTable {
        connector: text("connector"),
        name: text("name"),
        db: text("db"),
        schema: text("schema"),
        table: text("table"),
    }
}

fn source_position(source: &Map<String, Value>) -> Result<Position, BadMessage> {
    Ok(Position {
        lsn: opt_u64(source, "lsn", "source.lsn")?,
        tx_id: opt_u64(source, "txId", "source.txId")?,
        sequence: sequence(source.get("sequence"))?,
        ts_ms: opt_i64(source, "ts_ms", "source.ts_ms")?,
        ts_us: opt_i64(source, "ts_us", "source.ts_us")?,
        snapshot: match source.get("snapshot") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        },
        ..Position::default()
    })
}

/// Debezium's PostgreSQL `sequence` is a JSON array inside a string: `"[\"1\",\"2\"]"`.
fn sequence(value: Option<&Value>) -> Result<Option<Vec<Option<String>>>, BadMessage> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => sequence_text(text),
        Some(Value::Array(items)) => sequence_items(items.clone()),
        Some(other) => Err(bad_sequence(describe(other))),
    }
}

/// `sequence` as the text of a JSON array.
fn sequence_text(text: &str) -> Result<Option<Vec<Option<String>>>, BadMessage> {
    let items: Vec<Value> =
        serde_json::from_str(text).map_err(|_| bad_sequence(format!("{text:?}")))?;
    sequence_items(items)
}

fn sequence_items(items: Vec<Value>) -> Result<Option<Vec<Option<String>>>, BadMessage> {
    items
        .into_iter()
        .map(|item| match item {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(bad_sequence(describe(&other))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn bad_sequence(got: String) -> BadMessage {
    BadMessage::Field {
        field: "source.sequence",
        expected: "a JSON array of LSN strings",
        got,
    }
}

fn opt_u64(
    obj: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<u64>, BadMessage> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| BadMessage::Field {
            field,
            expected: "a non-negative integer",
            got: describe(v),
        }),
    }
}

fn opt_i64(
    obj: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Option<i64>, BadMessage> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| BadMessage::Field {
            field,
            expected: "an integer",
            got: describe(v),
        }),
    }
}

/// `ExtractNewRecordState` output: the row itself plus `__`-prefixed metadata.
fn read_flattened(
    payload: Map<String, Value>,
    row_schema: Option<Arc<RowSchema>>,
) -> Result<Event, BadMessage> {
    let mut row = Map::with_capacity(payload.len());
    let mut meta = Map::new();
    for (name, v) in payload {
        match name.strip_prefix("__") {
            Some(m) => {
                meta.insert(m.to_owned(), v);
            }
            None => {
                row.insert(name, v);
            }
        }
    }
    let deleted = matches!(meta.get("deleted"), Some(Value::Bool(true)))
        || meta.get("deleted").and_then(Value::as_str) == Some("true");
    let op = match meta.get("op") {
        Some(Value::String(code)) => {
            Op::from_code(code).ok_or_else(|| BadMessage::UnknownOp(code.clone()))?
        }
        Some(other) => {
            return Err(BadMessage::Field {
                field: "__op",
                expected: "a string",
                got: describe(other),
            })
        }
        None if deleted => Op::Delete,
        // no `__op` in add.fields: a row is an upsert
        None => Op::Update,
    };
    let op = if deleted { Op::Delete } else { op };
    let mut source = source_table(&meta);
    if source.table.is_none() {
        // schema name `<topic.prefix>.<schema>.<table>.Value`
        if let Some(name) = row_schema.as_ref().and_then(|s| s.schema.name.as_deref()) {
            let parts: Vec<&str> = name.split('.').collect();
            if parts.len() >= 4 && parts[parts.len() - 1] == "Value" {
                source.schema = Some(parts[parts.len() - 3].to_owned());
                source.table = Some(parts[parts.len() - 2].to_owned());
            }
        }
    }
    let mut position = source_position(&meta)?;
    position.ts_ms = opt_i64(&meta, "source_ts_ms", "__source_ts_ms")?.or(position.ts_ms);
    position.ts_us = opt_i64(&meta, "source_ts_us", "__source_ts_us")?.or(position.ts_us);
    position.snapshot = meta
        .get("source_snapshot")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(position.snapshot);
    let (before, after) = if op == Op::Delete {
        (Some(row), None)
    } else {
        (None, Some(row))
    };
    Ok(Event {
        op,
        source,
        position,
        before,
        after,
        normalized: false,
        row_schema,
        message: None,
    })
}

/// Filters, normalizes the row images, resolves the key.
fn finish(
    settings: &Settings,
    schemas: &mut Schemas,
    event: Event,
    key: Option<&[u8]>,
    offset: Option<i64>,
) -> Result<Parsed, BadMessage> {
    let Event {
        op,
        source,
        mut position,
        before,
        after,
        normalized,
        row_schema,
        message,
    } = event;
    position.offset = offset;
    let qualified = source.qualified();
    let db = source.db.as_deref();

    match op {
        Op::Message if !settings.operations.contains(&op) => {
            return Ok(Parsed::Skip(Skip::Filtered))
        }
        Op::Message => {}
        _ if !settings.table_selected(&qualified, db) => return Ok(Parsed::Skip(Skip::Filtered)),
        Op::Truncate => match settings.truncate {
            TruncateAction::Emit => {}
            TruncateAction::Drop => return Ok(Parsed::Skip(Skip::Truncate)),
            TruncateAction::Error => return Err(BadMessage::Truncate(qualified)),
        },
        _ if !settings.operations.contains(&op) => return Ok(Parsed::Skip(Skip::Filtered)),
        _ => {}
    }

    let normalize =
        |image: Option<Map<String, Value>>, name: &'static str| -> Result<_, BadMessage> {
            match (image, &row_schema) {
                (Some(row), Some(row_schema)) if !normalized => row_schema
                    .schema
                    .normalize_struct(row)
                    .map(Some)
                    .map_err(|source| BadMessage::Value {
                        image: name,
                        source,
                    }),
                (image, _) => Ok(image),
            }
        };
    let placeholder = settings.toast_placeholder.as_str();
    let mut before = normalize(before, "before")?;
    let mut after = normalize(after, "after")?;
    if let Some(b) = before.as_mut() {
        take_unchanged(b, placeholder);
    }
    let unchanged = after
        .as_mut()
        .map(|a| take_unchanged(a, placeholder))
        .unwrap_or_default();

    if matches!(op, Op::Create | Op::Update | Op::Read) && after.is_none() {
        return Err(BadMessage::MissingAfter(op.code()));
    }

    let key = match op {
        Op::Truncate | Op::Message => Map::new(),
        _ => {
            let image = after.as_ref().or(before.as_ref());
            let row_schema = row_schema.as_ref().map(|s| &s.schema);
            resolve_key(settings, schemas, key, image, row_schema, &qualified, db)?
        }
    };
    let columns = match (&row_schema, settings.columns) {
        (Some(row_schema), true) if !matches!(op, Op::Truncate | Op::Message) => {
            Some(row_schema.columns.clone().map_err(BadMessage::Schema)?)
        }
        _ => None,
    };

    Ok(Parsed::Change(Box::new(ChangeRecord {
        v: CONTRACT_VERSION,
        op,
        source,
        key,
        before,
        after,
        unchanged,
        position,
        columns,
        message,
        dropped: BTreeMap::new(),
    })))
}

/// Removes columns holding the unchanged-TOAST placeholder and returns their names. The
/// placeholder arrives as the text itself (text, json, xml…), as its bytes in base64 (bytea),
/// or as a one-element array of it (text[]).
fn take_unchanged(row: &mut Map<String, Value>, placeholder: &str) -> Vec<String> {
    use base64::Engine as _;
    let placeholder_b64 = base64::engine::general_purpose::STANDARD.encode(placeholder);
    let is_placeholder = |v: &Value| match v {
        Value::String(s) => s == placeholder || *s == placeholder_b64,
        Value::Array(items) => {
            items.len() == 1 && items[0].as_str().is_some_and(|s| s == placeholder)
        }
        _ => false,
    };
    let names: Vec<String> = row
        .iter()
        .filter(|(_, v)| is_placeholder(v))
        .map(|(k, _)| k.clone())
        .collect();
    for name in &names {
        row.shift_remove(name);
    }
    names
}

/// The primary key: the record key when there is one, else the configured key columns
/// picked from the row image.
fn resolve_key(
    settings: &Settings,
    schemas: &mut Schemas,
    key: Option<&[u8]>,
    image: Option<&Map<String, Value>>,
    row_schema: Option<&ConnectSchema>,
    qualified: &str,
    db: Option<&str>,
) -> Result<Map<String, Value>, BadMessage> {
    if let Some(bytes) = key.filter(|k| !k.iter().all(u8::is_ascii_whitespace)) {
        let (key_schema, payload) =
            converter::read(bytes, schemas).map_err(|e| BadMessage::KeyJson(e.to_string()))?;
        match payload {
            Value::Object(fields) if !fields.is_empty() => {
                let schema = match &key_schema {
                    Some(known) => Some(
                        known
                            .parsed
                            .as_ref()
                            .map_err(|e| BadMessage::Schema(e.clone()))?,
                    ),
                    None => row_schema,
                };
                return match schema {
                    Some(schema) => {
                        schema
                            .normalize_struct(fields)
                            .map_err(|source| BadMessage::Value {
                                image: "key",
                                source,
                            })
                    }
                    None => Ok(fields),
                };
            }
            Value::Object(_) | Value::Null => {}
            other => return Err(BadMessage::KeyNotAnObject(describe(&other))),
        }
    }
    let columns = settings
        .key_columns
        .for_table(qualified, db)
        .ok_or_else(|| BadMessage::NoKey(qualified.to_owned()))?;
    let image = image.ok_or_else(|| BadMessage::NoKey(qualified.to_owned()))?;
    columns
        .iter()
        .map(|c| {
            image
                .get(c)
                .map(|v| (c.clone(), v.clone()))
                .ok_or_else(|| BadMessage::KeyColumnMissing(c.clone()))
        })
        .collect()
}
