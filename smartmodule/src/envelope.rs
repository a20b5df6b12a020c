//! A change event envelope read straight from its payload's text: no JSON tree of the
//! payload, no map of the envelope's members or of `source`'s, and the row images normalized
//! as they are read rather than moved into a second map afterwards. On a `products` change
//! this was most of the SmartModule's time (the tree's maps, their keys and their hashing).
//!
//! It reads only what it can read exactly as [`crate::debezium`]'s tree would be read: any
//! surprise (a member of another type than Debezium writes, a member twice, an operation it
//! does not know, a value the row schema refuses, text after the payload…) and it gives up,
//! and the message is read as a tree, which says what is wrong. Members it does not need are
//! still parsed as a tree would parse them (numbers in range, escapes valid), without being
//! kept. The tests hold the two readings equal.

use crate::record::Op;
use crate::schema::ConnectSchema;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// What an envelope says, as read from its text.
#[derive(Debug)]
pub struct Envelope {
    pub op: Op,
    /// Its `source`; `None` when missing or null.
    pub source: Option<Source>,
    /// The envelope's own `ts_ms`.
    pub ts_ms: Option<i64>,
    /// `transaction`, when not null.
    pub transaction: Option<Value>,
    /// `message`, when not null.
    pub message: Option<Value>,
    /// The row images, normalized by the row schema given to [`read`] (when one was).
    pub before: Option<Map<String, Value>>,
    pub after: Option<Map<String, Value>>,
}

/// The members of `source` a change record takes; `None` for each one missing or null.
#[derive(Debug, Default)]
pub struct Source {
    pub connector: Option<String>,
    pub name: Option<String>,
    pub db: Option<String>,
    pub schema: Option<String>,
    pub table: Option<String>,
    pub lsn: Option<u64>,
    pub tx_id: Option<u64>,
    pub ts_ms: Option<i64>,
    pub ts_us: Option<i64>,
    /// A string, or a boolean as its text.
    pub snapshot: Option<String>,
    /// The text of PostgreSQL's `sequence` (a JSON array in a string).
    pub sequence: Option<String>,
}

/// Reads `payload` as an envelope whose row images `row` describes; `None` when it is
/// anything else, or anything in it is not as Debezium writes it.
pub fn read(payload: &str, row: Option<&ConnectSchema>) -> Option<Envelope> {
    let mut de = serde_json::Deserializer::from_str(payload);
    let envelope = EnvelopeSeed { row }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(envelope)
}

/// Puts the value of a member read once; a member read twice is a surprise (a tree keeps
/// the last one, this reader gives up).
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, member: &'static str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(member)),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// The envelope's members this reader knows.
enum Member {
    Op,
    Source,
    TsMs,
    Transaction,
    Message,
    Before,
    After,
    Other,
}

impl Member {
    fn named(name: &str) -> Member {
        match name {
            "op" => Member::Op,
            "source" => Member::Source,
            "ts_ms" => Member::TsMs,
            "transaction" => Member::Transaction,
            "message" => Member::Message,
            "before" => Member::Before,
            "after" => Member::After,
            _ => Member::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
        d.deserialize_identifier(Name(Member::named))
    }
}

/// A member's name, told apart by its function.
struct Name<T>(fn(&str) -> T);

impl<T> Visitor<'_> for Name<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
        Ok((self.0)(name))
    }
}

struct EnvelopeSeed<'s> {
    row: Option<&'s ConnectSchema>,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Envelope, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a change event envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let (mut op, mut source, mut ts_ms, mut transaction, mut message) =
            (None, None, None, None, None);
        let (mut before, mut after) = (None, None);
        while let Some(member) = map.next_key::<Member>()? {
            match member {
                Member::Op => once(&mut op, map.next_value::<OpCode>()?.0, "op")?,
                Member::Source => once(&mut source, map.next_value()?, "source")?,
                Member::TsMs => once(&mut ts_ms, map.next_value()?, "ts_ms")?,
                Member::Transaction => {
                    once(&mut transaction, map.next_value()?, "transaction")?;
                }
                Member::Message => once(&mut message, map.next_value()?, "message")?,
                Member::Before => {
                    let image = map.next_value_seed(Image { row: self.row })?;
                    once(&mut before, image, "before")?;
                }
                Member::After => {
                    let image = map.next_value_seed(Image { row: self.row })?;
                    once(&mut after, image, "after")?;
                }
                Member::Other => {
                    map.next_value::<Parsed>()?;
                }
            }
        }
        Ok(Envelope {
            op: op.ok_or_else(|| de::Error::missing_field("op"))?,
            source: source.flatten(),
            ts_ms: ts_ms.flatten(),
            transaction: transaction.flatten(),
            message: message.flatten(),
            before: before.flatten(),
            after: after.flatten(),
        })
    }
}

/// `op`: a string naming a known operation.
struct OpCode(Op);

impl<'de> Deserialize<'de> for OpCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OpCode, D::Error> {
        struct Code;
        impl Visitor<'_> for Code {
            type Value = OpCode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an operation code")
            }
            fn visit_str<E: de::Error>(self, code: &str) -> Result<OpCode, E> {
                Op::from_code(code)
                    .map(OpCode)
                    .ok_or_else(|| E::custom("an unknown operation"))
            }
        }
        d.deserialize_str(Code)
    }
}

/// The members of `source` this reader knows.
enum SourceMember {
    Connector,
    Name,
    Db,
    Schema,
    Table,
    Lsn,
    TxId,
    TsMs,
    TsUs,
    Snapshot,
    Sequence,
    Other,
}

impl SourceMember {
    fn named(name: &str) -> SourceMember {
        match name {
            "connector" => SourceMember::Connector,
            "name" => SourceMember::Name,
            "db" => SourceMember::Db,
            "schema" => SourceMember::Schema,
            "table" => SourceMember::Table,
            "lsn" => SourceMember::Lsn,
            "txId" => SourceMember::TxId,
            "ts_ms" => SourceMember::TsMs,
            "ts_us" => SourceMember::TsUs,
            "snapshot" => SourceMember::Snapshot,
            "sequence" => SourceMember::Sequence,
            _ => SourceMember::Other,
        }
    }
}

impl<'de> Deserialize<'de> for SourceMember {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SourceMember, D::Error> {
        d.deserialize_identifier(Name(SourceMember::named))
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Source, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Source;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a `source` object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Source, A::Error> {
                let (mut connector, mut name, mut db, mut schema, mut table) =
                    (None, None, None, None, None);
                let (mut lsn, mut tx_id, mut ts_ms, mut ts_us) = (None, None, None, None);
                let (mut snapshot, mut sequence) = (None, None);
                while let Some(member) = map.next_key::<SourceMember>()? {
                    match member {
                        SourceMember::Connector => {
                            once(&mut connector, map.next_value()?, "connector")?;
                        }
                        SourceMember::Name => once(&mut name, map.next_value()?, "name")?,
                        SourceMember::Db => once(&mut db, map.next_value()?, "db")?,
                        SourceMember::Schema => once(&mut schema, map.next_value()?, "schema")?,
                        SourceMember::Table => once(&mut table, map.next_value()?, "table")?,
                        SourceMember::Lsn => once(&mut lsn, map.next_value()?, "lsn")?,
                        SourceMember::TxId => once(&mut tx_id, map.next_value()?, "txId")?,
                        SourceMember::TsMs => once(&mut ts_ms, map.next_value()?, "ts_ms")?,
                        SourceMember::TsUs => once(&mut ts_us, map.next_value()?, "ts_us")?,
                        SourceMember::Snapshot => {
                            let value = map.next_value::<Option<Snapshot>>()?;
                            once(&mut snapshot, value.map(|s| s.0), "snapshot")?;
                        }
                        SourceMember::Sequence => {
                            once(&mut sequence, map.next_value()?, "sequence")?;
                        }
                        SourceMember::Other => {
                            map.next_value::<Parsed>()?;
                        }
                    }
                }
                Ok(Source {
                    connector: connector.flatten(),
                    name: name.flatten(),
                    db: db.flatten(),
                    schema: schema.flatten(),
                    table: table.flatten(),
                    lsn: lsn.flatten(),
                    tx_id: tx_id.flatten(),
                    ts_ms: ts_ms.flatten(),
                    ts_us: ts_us.flatten(),
                    snapshot: snapshot.flatten(),
                    sequence: sequence.flatten(),
                })
            }
        }
        d.deserialize_map(Members)
    }
}

/// `source.snapshot`: a string, or a boolean taken as its text.
struct Snapshot(String);

impl<'de> Deserialize<'de> for Snapshot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Snapshot, D::Error> {
        struct Marker;
        impl Visitor<'_> for Marker {
            type Value = Snapshot;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a boolean")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Snapshot, E> {
                Ok(Snapshot(text.to_owned()))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Snapshot, E> {
                Ok(Snapshot(text))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Snapshot, E> {
                Ok(Snapshot(b.to_string()))
            }
        }
        d.deserialize_any(Marker)
    }
}

/// A row image: null, or an object whose members are normalized by `row` as they are read.
struct Image<'s> {
    row: Option<&'s ConnectSchema>,
}

impl<'de> DeserializeSeed<'de> for Image<'_> {
    type Value = Option<Map<String, Value>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Image<'_> {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row image or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(ImageMembers { row: self.row }).map(Some)
    }
}

struct ImageMembers<'s> {
    row: Option<&'s ConnectSchema>,
}

impl<'de> Visitor<'de> for ImageMembers<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row image")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::with_capacity(self.row.map_or(0, |row| row.fields.len()));
        while let Some(name) = map.next_key::<String>()? {
            let mut value: Value = map.next_value()?;
            if let Some(row) = self.row {
                row.normalize_member(out.len(), &name, &mut value)
                    .map_err(de::Error::custom)?;
            }
            if out.insert(name, value).is_some() {
                return Err(de::Error::custom("a column twice in a row image"));
            }
        }
        Ok(out)
    }
}

/// Any JSON value, parsed as a tree would parse it (the same number and string checks) and
/// not kept.
struct Parsed;

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(Parsed)
    }
}

impl<'de> Visitor<'de> for Parsed {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Parsed, E> {
        Ok(Parsed)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Parsed, E> {
        Ok(Parsed)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Parsed, E> {
        Ok(Parsed)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Parsed, E> {
        Ok(Parsed)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Parsed, E> {
        Ok(Parsed)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Parsed, E> {
        Ok(Parsed)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        while seq.next_element::<Parsed>()?.is_some() {}
        Ok(Parsed)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        while map.next_entry::<Parsed, Parsed>()?.is_some() {}
        Ok(Parsed)
    }
}
