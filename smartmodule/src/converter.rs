//! The Kafka Connect JSON converter's `{"schema":…,"payload":…}` wrapper, and the schemas it
//! carries, remembered by their text.
//!
//! With `schemas.enable=true` every Debezium message repeats its table's schema, which is
//! most of the message (about 1.7 KB of a 2.3 KB `products` change). Building a JSON tree of
//! it and a [`ConnectSchema`] from that tree for every message was most of the SmartModule's
//! time. Here the wrapper is split without building the schema's tree (its text is only
//! validated), and a schema seen before is looked up by that text.

use crate::record::Column;
use crate::schema::ConnectSchema;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A message split into its schema (when wrapped and not null) and its payload.
enum Message<'a> {
    /// The common case: the schema's text, untouched.
    Text {
        schema: Option<&'a str>,
        payload: Value,
    },
    /// Anything the fast split refused (no wrapper, other keys, a repeated key…): the whole
    /// tree, read the slow way.
    Tree(Value),
}

/// Splits a message. Fails only when the bytes are not JSON.
fn split(bytes: &[u8]) -> Result<Message<'_>, serde_json::Error> {
    // an object of two members, `schema` and `payload` (a repeated name counts once, the
    // last one, as in a tree); a name with escapes cannot be borrowed and takes the slow way
    if let Ok(members) = serde_json::from_slice::<BTreeMap<&str, &RawValue>>(bytes) {
        if let (2, Some(schema), Some(payload)) =
            (members.len(), members.get("schema"), members.get("payload"))
        {
            let schema = Some(schema.get()).filter(|text| *text != "null");
            // already validated as JSON by the split
            let payload = serde_json::from_str(payload.get())?;
            return Ok(Message::Text { schema, payload });
        }
    }
    serde_json::from_slice(bytes).map(Message::Tree)
}

/// Reads a message: its schema, when it carries one (looked up in `schemas` by its text),
/// and its payload. Fails only when the bytes are not JSON.
pub fn read(
    bytes: &[u8],
    schemas: &mut Schemas,
) -> Result<(Option<Arc<KnownSchema>>, Value), serde_json::Error> {
    if let Some(read) = schemas.read_after_known_prefix(bytes) {
        return Ok(read);
    }
    Ok(match split(bytes)? {
        Message::Text {
            schema: Some(text),
            payload,
        } => {
            let known = schemas.get(text);
            if let Some(known) = &known {
                schemas.remember_prefix(bytes, text, known);
            }
            (known, payload)
        }
        Message::Text {
            schema: None,
            payload,
        } => (None, payload),
        Message::Tree(root) => {
            let (schema, payload) = unwrap_tree(root);
            let schema = schema.map(|tree| Arc::new(KnownSchema::from_tree(&tree)));
            (schema, payload)
        }
    })
}

/// `{"schema":…,"payload":…}` as a tree -> (schema, payload); anything else is its own
/// payload.
fn unwrap_tree(root: Value) -> (Option<Value>, Value) {
    match root {
        Value::Object(mut obj)
            if obj.len() == 2 && obj.contains_key("payload") && obj.contains_key("schema") =>
        {
            let schema = obj.remove("schema").filter(|s| !s.is_null());
            (schema, obj.remove("payload").unwrap_or(Value::Null))
        }
        other => (None, other),
    }
}

/// One schema as the messages carried it, and what the parser derives from it.
#[derive(Debug)]
pub struct KnownSchema {
    /// Its `name` (`<prefix>.<schema>.<table>.Envelope`, `….Value`, `….Heartbeat`…).
    pub name: Option<String>,
    /// The schema, or why it is not a Kafka Connect schema.
    pub parsed: Result<ConnectSchema, String>,
    /// The row schema of a change event envelope: its `after` field, else its `before`.
    pub envelope_row: Option<Arc<RowSchema>>,
    /// The row schema of a flattened row: its fields without the `__` metadata ones.
    pub flattened_row: Option<Arc<RowSchema>>,
}

/// The schema of a row image and the columns it declares.
#[derive(Debug)]
pub struct RowSchema {
    pub schema: ConnectSchema,
    pub columns: Result<Arc<Vec<Column>>, String>,
}

impl RowSchema {
    pub fn new(schema: ConnectSchema) -> RowSchema {
        let columns = schema.columns().map(Arc::new).map_err(|e| e.to_string());
        RowSchema { schema, columns }
    }
}

impl KnownSchema {
    pub fn from_tree(tree: &Value) -> KnownSchema {
        let name = tree.get("name").and_then(Value::as_str).map(str::to_owned);
        let parsed = ConnectSchema::parse(tree).map_err(|e| e.to_string());
        let envelope_row = parsed
            .as_ref()
            .ok()
            .and_then(|s| s.field("after").or_else(|| s.field("before")))
            .map(|row| Arc::new(RowSchema::new(row.clone())));
        let flattened_row = parsed.as_ref().ok().map(|s| {
            Arc::new(RowSchema::new(ConnectSchema {
                fields: s
                    .fields
                    .iter()
                    .filter(|f| !f.field.as_deref().unwrap_or("").starts_with("__"))
                    .cloned()
                    .collect(),
                ..s.clone()
            }))
        });
        KnownSchema {
            name,
            parsed,
            envelope_row,
            flattened_row,
        }
    }
}

/// Schemas seen, by their text. A stream carries one value schema and one key schema per
/// table (a new one after a DDL change), so this stays small; past [`Schemas::LIMIT`]
/// distinct texts it starts over rather than grow.
#[derive(Debug, Default)]
pub struct Schemas {
    by_text: HashMap<Box<str>, Arc<KnownSchema>>,
    /// The newest few `{"schema":<text>,"payload":` openings seen, newest first: a message
    /// that starts with one is its schema's wrapper around what follows, which spares even
    /// the scan of the schema's text (a compare of its bytes instead).
    prefixes: Vec<(Box<[u8]>, Arc<KnownSchema>)>,
}

impl Schemas {
    pub const LIMIT: usize = 256;
    const PREFIXES: usize = 4;

    fn read_after_known_prefix(
        &mut self,
        bytes: &[u8],
    ) -> Option<(Option<Arc<KnownSchema>>, Value)> {
        let (known, payload) = self.known_wrapper(bytes)?;
        // `payload` must be exactly one JSON value, or the message is something else
        let payload: Value = serde_json::from_slice(payload).ok()?;
        Some((Some(known), payload))
    }

    /// The schema of a message that opens with the wrapper of a schema seen before, and
    /// what follows that opening up to the wrapper's closing brace: the payload's text, if
    /// it is exactly one JSON value (not checked here; when it is not, the message is
    /// something else and [`read`] reads it the slow way).
    pub fn known_wrapper<'a>(&mut self, bytes: &'a [u8]) -> Option<(Arc<KnownSchema>, &'a [u8])> {
        let (at, payload) = self
            .prefixes
            .iter()
            .enumerate()
            .find_map(|(at, (prefix, _))| {
                let rest = bytes.strip_prefix(&prefix[..])?;
                Some((at, rest.trim_ascii_end().strip_suffix(b"}")?))
            })?;
        if at > 0 {
            let hit = self.prefixes.remove(at);
            self.prefixes.insert(0, hit);
        }
        Some((Arc::clone(&self.prefixes[0].1), payload))
    }

    fn remember_prefix(&mut self, bytes: &[u8], text: &str, known: &Arc<KnownSchema>) {
        let prefix = format!(r#"{{"schema":{text},"payload":"#).into_bytes();
        if bytes.starts_with(&prefix) {
            self.prefixes.truncate(Self::PREFIXES - 1);
            self.prefixes
                .insert(0, (prefix.into_boxed_slice(), Arc::clone(known)));
        }
    }

    /// The schema with this text; `None` when the text is not JSON (it always is after
    /// [`split`]).
    pub fn get(&mut self, text: &str) -> Option<Arc<KnownSchema>> {
        if let Some(known) = self.by_text.get(text) {
            return Some(Arc::clone(known));
        }
        let tree: Value = serde_json::from_str(text).ok()?;
        let known = Arc::new(KnownSchema::from_tree(&tree));
        if self.by_text.len() >= Self::LIMIT {
            self.by_text.clear();
        }
        self.by_text.insert(text.into(), Arc::clone(&known));
        Some(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(message: &Message<'_>) -> Option<String> {
        match message {
            Message::Text { schema, .. } => schema.map(str::to_owned),
            Message::Tree(_) => None,
        }
    }

    #[test]
    fn a_wrapper_splits_without_a_tree_of_its_schema() {
        let bytes = br#"{"schema":{"type":"struct","name":"a.b.c.Envelope","fields":[]},"payload":{"op":"c"}}"#;
        let message = split(bytes).unwrap();
        assert_eq!(
            text_of(&message).as_deref(),
            Some(r#"{"type":"struct","name":"a.b.c.Envelope","fields":[]}"#)
        );
        let Message::Text { payload, .. } = message else {
            panic!("not split")
        };
        assert_eq!(payload, serde_json::json!({"op":"c"}));
    }

    #[test]
    fn a_null_schema_is_no_schema() {
        let Message::Text { schema, payload } =
            split(br#"{"schema":null,"payload":null}"#).unwrap()
        else {
            panic!("not split")
        };
        assert!(schema.is_none());
        assert!(payload.is_null());
    }

    #[test]
    fn anything_but_exactly_the_wrapper_is_read_as_a_tree() {
        for bytes in [
            &br#"{"op":"c","after":{"id":1}}"#[..],
            br#"{"schema":{},"payload":{},"extra":1}"#,
            br#"{"payload":{"op":"c"}}"#,
            br#"[{},{}]"#,
            br#"{"sch\u0065ma":{},"payload":{}}"#,
        ] {
            assert!(
                matches!(split(bytes).unwrap(), Message::Tree(_)),
                "{bytes:?}"
            );
        }
        assert!(split(b"{\"schema\":").is_err());
    }

    #[test]
    fn a_schema_is_parsed_once_and_the_cache_stays_bounded() {
        let mut schemas = Schemas::default();
        let text = r#"{"type":"struct","name":"x.public.t.Envelope","fields":[{"type":"struct","field":"after","optional":true,"fields":[{"type":"int32","field":"id"}]}]}"#;
        let first = schemas.get(text).unwrap();
        let again = schemas.get(text).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.name.as_deref(), Some("x.public.t.Envelope"));
        let row = first.envelope_row.as_ref().unwrap();
        assert_eq!(row.columns.as_ref().unwrap()[0].name, "id");
        for i in 0..Schemas::LIMIT + 5 {
            schemas.get(&format!(r#"{{"type":"int32","field":"f{i}"}}"#));
        }
        assert!(schemas.by_text.len() <= Schemas::LIMIT);
        assert!(schemas.get("not json").is_none());
    }

    #[test]
    fn a_known_opening_is_taken_only_when_the_payload_ends_the_message() {
        let mut schemas = Schemas::default();
        let schema = r#"{"type":"struct","name":"x.public.t.Envelope","fields":[]}"#;
        let message = |payload: &str| format!(r#"{{"schema":{schema},"payload":{payload}}}"#);
        let (first, _) = read(message(r#"{"op":"c"}"#).as_bytes(), &mut schemas).unwrap();
        assert_eq!(schemas.prefixes.len(), 1);
        // the same opening: the payload is read behind it
        let (again, payload) = read(message(r#"{"op":"u"}"#).as_bytes(), &mut schemas).unwrap();
        assert!(Arc::ptr_eq(
            first.as_ref().unwrap(),
            again.as_ref().unwrap()
        ));
        assert_eq!(payload, serde_json::json!({"op":"u"}));
        let padded = format!("{}\n ", message("null"));
        assert_eq!(
            read(padded.as_bytes(), &mut schemas).unwrap().1,
            Value::Null
        );
        // the same opening, then a third member: not a wrapper, the whole object is the payload
        let three = format!(r#"{{"schema":{schema},"payload":{{"op":"c"}},"x":1}}"#);
        let (none, whole) = read(three.as_bytes(), &mut schemas).unwrap();
        assert!(none.is_none());
        assert_eq!(whole["x"], 1);
        // the same opening, then bad JSON: an error, as without the shortcut
        assert!(read(message("{").as_bytes(), &mut schemas).is_err());
    }

    #[test]
    fn a_bad_schema_is_remembered_as_bad() {
        let mut schemas = Schemas::default();
        let known = schemas.get(r#"{"fields":[]}"#).unwrap();
        assert!(known.parsed.is_err());
        assert!(known.envelope_row.is_none());
    }
}
