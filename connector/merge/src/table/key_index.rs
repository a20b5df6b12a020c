//! The primary-key index: key -> (data file, row position, LSN) for every live row. It is
//! what turns an upsert or delete into a position delete without scanning the table, and
//! what keeps a replayed older event from moving a row backwards.
//!
//! Kept compact: integer keys (the common case) are stored as `i64`; other keys by their
//! canonical encoding. Entries are 16 bytes.

use crate::io::rows::{array, value_at};
use crate::MergeError;
use arrow_schema::DataType;
use iceberg::spec::Schema;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Where a live row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index into the table's file registry.
    pub file: u32,
    pub pos: u32,
    /// LSN of the change that wrote the row (`i64::MIN` when unknown).
    pub lsn: i64,
}

impl Location {
    /// Whether it is a row's place, not a deleted key's [`TOMBSTONE`].
    pub fn is_live(&self) -> bool {
        self.file != TOMBSTONE
    }
}

/// A primary key, encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Bytes(Box<[u8]>),
}

impl Key {
    /// Encodes key values already in canonical form and in canonical column order (see
    /// [`KeyColumns`]): a single integer is an `Int`; anything else the JSON text of the
    /// values array.
    fn of_values<'a>(values: impl ExactSizeIterator<Item = &'a Value> + Clone) -> Key {
        if values.len() == 1 {
            if let Some(i) = values.clone().next().and_then(Value::as_i64) {
                return Key::Int(i);
            }
        }
        let values: Vec<&Value> = values.collect();
        Key::Bytes(
            serde_json::to_vec(&values)
                .unwrap_or_default()
                .into_boxed_slice(),
        )
    }
}

/// The table's primary-key columns in one fixed order (ascending field id, whatever order a
/// hash set or a Debezium key struct gives them in), each with its Arrow type: the one
/// encoding of a key shared by incoming records, the index rebuilt from data files, a reload
/// after a lost compare-and-swap and compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumns {
    columns: Vec<(String, DataType)>,
}

impl KeyColumns {
    /// The identifier fields of `schema`, by field id.
    pub fn of(schema: &Schema) -> Result<KeyColumns, MergeError> {
        let mut ids: Vec<i32> = schema.identifier_field_ids().collect();
        ids.sort_unstable();
        let arrow = iceberg::arrow::schema_to_arrow_schema(schema)
            .map_err(MergeError::schema_from("the table schema in Arrow"))?;
        let columns = ids
            .into_iter()
            .map(|id| {
                let name = schema.name_by_field_id(id).ok_or_else(|| {
                    MergeError::schema(format!("identifier field {id} has no name"))
                })?;
                let field = arrow
                    .field_with_name(name)
                    .map_err(MergeError::schema_from(format!("key column `{name}`")))?;
                Ok((name.to_owned(), field.data_type().clone()))
            })
            .collect::<Result<Vec<_>, MergeError>>()?;
        Ok(KeyColumns { columns })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The key of a record's key map (any field order). Each value is put in the canonical
    /// form of its column's type, the form [`value_at`] reads back from a data file (a UUID
    /// sent in upper case, a timestamp with fewer fractional digits are rewritten), so the
    /// same key always encodes the same way.
    pub fn encode(&self, key: &Map<String, Value>) -> Result<Key, MergeError> {
        match self.encode_one_integer(key) {
            Some(key) => Ok(key),
            None => self.encode_any(key),
        }
    }

    /// The common key, one integer column holding an integer, as [`KeyColumns::encode_any`]
    /// encodes it, without its copies; `None` for any other.
    fn encode_one_integer(&self, key: &Map<String, Value>) -> Option<Key> {
        let [(name, DataType::Int32 | DataType::Int64)] = self.columns.as_slice() else {
            return None;
        };
        let value = match key.iter().next() {
            Some((first, value)) if first == name => value,
            _ => key.get(name)?,
        };
        value.as_i64().map(Key::Int)
    }

    fn encode_any(&self, key: &Map<String, Value>) -> Result<Key, MergeError> {
        let mut values = Vec::with_capacity(self.columns.len());
        for (name, ty) in &self.columns {
            let v = key.get(name).ok_or_else(|| MergeError::Value {
                column: name.clone(),
                reason: "primary key column missing from the record's key".into(),
            })?;
            if v.is_null() {
                return Err(MergeError::Value {
                    column: name.clone(),
                    reason: "null in a primary key column".into(),
                });
            }
            values.push(canonical(name, ty, v)?);
        }
        Ok(Key::of_values(values.iter()))
    }

    /// The key of values read from a data file, in [`KeyColumns::names`] order.
    pub fn encode_read(&self, values: &[Value]) -> Key {
        Key::of_values(values.iter())
    }
}

fn canonical(name: &str, ty: &DataType, v: &Value) -> Result<Value, MergeError> {
    match (ty, v) {
        (DataType::Int32 | DataType::Int64, Value::Number(n)) if n.is_i64() => Ok(v.clone()),
        (DataType::Utf8 | DataType::LargeUtf8, Value::String(_)) => Ok(v.clone()),
        _ => value_at(array(name, ty, std::slice::from_ref(v))?.as_ref(), 0),
    }
}

/// The hash maps keyed by primary key: foldhash, seeded at random per process (the key
/// index and a batch's plan look up every change's key; SipHash, the standard library's,
/// was most of that time).
pub type KeyMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub struct KeyIndex {
    ints: Parts<i64>,
    bytes: Parts<Box<[u8]>>,
}

/// How many maps the index's keys are spread over. A hash map grows by moving into a table
/// twice its size, holding both for a moment: one map of a million integer keys held ~78 MB
/// while it grew to 52 (at 917k keys; the connector's peak memory rose by 19 MB there), a
/// sixteenth of it holds 1/16 of that.
const PARTS: usize = 16;

/// A key's part: the top bits of a hash unrelated to the maps' own (which are seeded at
/// random), so each part's keys still spread over its buckets.
trait Part {
    fn part(&self) -> usize;
}

impl Part for i64 {
    fn part(&self) -> usize {
        ((*self as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize
    }
}

impl Part for Box<[u8]> {
    fn part(&self) -> usize {
        use std::hash::BuildHasher;
        (foldhash::fast::FixedState::with_seed(PARTS as u64).hash_one(&**self) >> 60) as usize
    }
}

/// The entries of one kind of key, over [`PARTS`] maps.
#[derive(Debug)]
struct Parts<K>([KeyMap<K, Location>; PARTS]);

impl<K> Default for Parts<K> {
    fn default() -> Self {
        Parts(std::array::from_fn(|_| KeyMap::default()))
    }
}

impl<K: Part + Eq + std::hash::Hash> Parts<K> {
    fn get(&self, key: &K) -> Option<Location> {
        self.0[key.part()].get(key).copied()
    }

    fn insert(&mut self, key: K, loc: Location) -> Option<Location> {
        self.0[key.part()].insert(key, loc)
    }

    fn remove(&mut self, key: &K) -> Option<Location> {
        self.0[key.part()].remove(key)
    }
}

impl<K> Parts<K> {
    fn iter(&self) -> impl Iterator<Item = (&K, &Location)> {
        self.0.iter().flat_map(|m| m.iter())
    }

    fn values(&self) -> impl Iterator<Item = &Location> {
        self.0.iter().flat_map(|m| m.values())
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Location> {
        self.0.iter_mut().flat_map(|m| m.values_mut())
    }

    fn retain(&mut self, mut keep: impl FnMut(&mut Location) -> bool) {
        for m in &mut self.0 {
            m.retain(|_, l| keep(l));
        }
    }

    fn len(&self) -> usize {
        self.0.iter().map(|m| m.len()).sum()
    }

    fn capacity(&self) -> usize {
        self.0.iter().map(|m| m.capacity()).sum()
    }

    fn clear(&mut self) {
        // dropped, not cleared: a cleared map keeps its table
        *self = Parts::default();
    }
}

/// `Location::file` of a deleted key: the index remembers the LSN of the delete so that a
/// replayed older event cannot bring the row back (its `pos` holds when the key was deleted,
/// in seconds since the epoch). They survive restarts through [`crate::table::tombstones`].
pub const TOMBSTONE: u32 = u32::MAX;

impl KeyIndex {
    /// The live row of a key (tombstones excluded).
    pub fn live(&self, key: &Key) -> Option<Location> {
        self.get(key).filter(Location::is_live)
    }

    /// Marks a key deleted by the change at `lsn`, at `deleted_at` (seconds).
    pub fn tombstone(&mut self, key: Key, lsn: i64, deleted_at: u32) {
        self.insert(
            key,
            Location {
                file: TOMBSTONE,
                pos: deleted_at,
                lsn,
            },
        );
    }

    /// Every tombstone, as the tombstone log keeps them.
    pub fn tombstones(&self) -> Vec<crate::table::tombstones::Tombstone> {
        let t = |key: Key, l: &Location| crate::table::tombstones::Tombstone {
            key,
            lsn: l.lsn,
            deleted_at: l.pos,
        };
        self.ints
            .iter()
            .filter(|(_, l)| l.file == TOMBSTONE)
            .map(|(k, l)| t(Key::Int(*k), l))
            .chain(
                self.bytes
                    .iter()
                    .filter(|(_, l)| l.file == TOMBSTONE)
                    .map(|(k, l)| t(Key::Bytes(k.clone()), l)),
            )
            .collect()
    }

    /// Forgets the tombstones of deletes before `cutoff` (seconds).
    pub fn forget_tombstones_before(&mut self, cutoff: u32) {
        let keep = |l: &mut Location| l.file != TOMBSTONE || l.pos >= cutoff;
        self.ints.retain(keep);
        self.bytes.retain(keep);
    }

    /// Live keys.
    pub fn live_len(&self) -> usize {
        self.ints
            .values()
            .chain(self.bytes.values())
            .filter(|l| l.file != TOMBSTONE)
            .count()
    }

    /// The entry of a key, live or tombstone.
    pub fn get(&self, key: &Key) -> Option<Location> {
        match key {
            Key::Int(i) => self.ints.get(i),
            Key::Bytes(b) => self.bytes.get(b),
        }
    }

    pub fn insert(&mut self, key: Key, loc: Location) -> Option<Location> {
        match key {
            Key::Int(i) => self.ints.insert(i, loc),
            Key::Bytes(b) => self.bytes.insert(b, loc),
        }
    }

    pub fn remove(&mut self, key: &Key) -> Option<Location> {
        match key {
            Key::Int(i) => self.ints.remove(i),
            Key::Bytes(b) => self.bytes.remove(b),
        }
    }

    pub fn len(&self) -> usize {
        self.ints.len() + self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every live row `moved` gives a new place (rows of rewritten files); the others
    /// stay where they are.
    pub fn relocate(&mut self, mut moved: impl FnMut(Location) -> Option<Location>) {
        for loc in self.ints.values_mut().chain(self.bytes.values_mut()) {
            if loc.file != TOMBSTONE {
                if let Some(new) = moved(*loc) {
                    *loc = new;
                }
            }
        }
    }

    pub fn clear(&mut self) {
        self.ints.clear();
        self.bytes.clear();
    }

    /// Which of the files `0..files` hold a live row.
    pub fn files_in_use(&self, files: usize) -> Vec<bool> {
        let mut used = vec![false; files];
        for loc in self.ints.values().chain(self.bytes.values()) {
            if let Some(u) = used.get_mut(loc.file as usize) {
                *u = true;
            }
        }
        used
    }

    /// Approximate heap bytes held, for the bytes-per-key figure.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(i64, Location)>() + 1;
        let bslot = std::mem::size_of::<(Box<[u8]>, Location)>() + 1;
        self.ints.capacity() * slot
            + self.bytes.capacity() * bslot
            + self.bytes.iter().map(|(k, _)| k.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{NestedField, PrimitiveType, Type};
    use serde_json::json;
    use std::sync::Arc;

    fn schema(fields: &[(i32, &str, PrimitiveType)], key: &[i32]) -> Schema {
        Schema::builder()
            .with_fields(fields.iter().map(|(id, name, ty)| {
                Arc::new(NestedField::required(
                    *id,
                    *name,
                    Type::Primitive(ty.clone()),
                ))
            }))
            .with_identifier_field_ids(key.iter().copied())
            .build()
            .unwrap()
    }

    fn key(columns: &KeyColumns, v: Value) -> Key {
        columns.encode(v.as_object().unwrap()).unwrap()
    }

    /// The one-integer-column shortcut says what the general encoding says, or leaves the
    /// key to it.
    #[test]
    fn one_integer_column_is_encoded_as_the_general_way_does() {
        for ty in [PrimitiveType::Int, PrimitiveType::Long] {
            let fields = [(1, "id", ty), (2, "shop", PrimitiveType::Long)];
            let int = KeyColumns::of(&schema(&fields, &[1])).unwrap();
            for key in [
                json!({"id": 7}),
                json!({"id": -3}),
                json!({"id": 0}),
                json!({"shop": 1, "id": 9}),
                json!({"id": i64::MIN}),
                json!({"id": i64::MAX}),
                json!({"id": 1.0}),
                json!({"id": "12"}),
                json!({"id": u64::MAX}),
                json!({"id": null}),
                json!({"shop": 5}),
                json!({}),
            ] {
                let map = key.as_object().unwrap();
                let general = int.encode_any(map).map_err(|e| e.to_string());
                match int.encode_one_integer(map) {
                    Some(fast) => assert_eq!(Ok(fast), general),
                    None => assert!(
                        !matches!(key.get("id"), Some(v) if v.is_i64()),
                        "{key}: left to the general way"
                    ),
                }
                assert_eq!(int.encode(map).map_err(|e| e.to_string()), general);
            }
            let two = KeyColumns::of(&schema(&fields, &[1, 2])).unwrap();
            assert_eq!(
                two.encode_one_integer(json!({"id": 1, "shop": 2}).as_object().unwrap()),
                None
            );
        }
    }

    #[test]
    fn encodings() {
        let int = KeyColumns::of(&schema(&[(1, "id", PrimitiveType::Long)], &[1])).unwrap();
        assert_eq!(key(&int, json!({"id": 7})), Key::Int(7));
        let text = KeyColumns::of(&schema(&[(1, "id", PrimitiveType::String)], &[1])).unwrap();
        assert_eq!(
            key(&text, json!({"id": "7"})),
            Key::Bytes(b"[\"7\"]".to_vec().into())
        );
        let pair = schema(
            &[(1, "a", PrimitiveType::Int), (2, "b", PrimitiveType::Int)],
            &[2, 1],
        );
        let pair = KeyColumns::of(&pair).unwrap();
        assert_eq!(pair.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_ne!(
            key(&pair, json!({"a": 1, "b": 2})),
            key(&pair, json!({"a": 2, "b": 1}))
        );
        // Debezium's key struct in another order than the table's columns: the same key
        assert_eq!(
            key(&pair, json!({"a": 1, "b": 2})),
            key(&pair, json!({"b": 2, "a": 1}))
        );
        assert!(pair.encode(json!({"a": 1}).as_object().unwrap()).is_err());
        assert!(pair
            .encode(json!({"a": 1, "b": null}).as_object().unwrap())
            .is_err());
    }

    #[test]
    fn incoming_keys_encode_as_the_values_read_back_from_files() {
        let s = schema(
            &[
                (1, "u", PrimitiveType::Uuid),
                (2, "d", PrimitiveType::Date),
                (3, "t", PrimitiveType::Timestamptz),
                (
                    4,
                    "n",
                    PrimitiveType::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                ),
            ],
            &[4, 3, 2, 1],
        );
        let columns = KeyColumns::of(&s).unwrap();
        let incoming = json!({
            "n": "12.50",
            "t": "2024-03-01T10:00:00Z",
            "d": "2024-03-01",
            "u": "6F1C0A52-8E4B-4C1D-9A57-0B7E2D9C3F10",
        });
        let read_back = [
            json!("6f1c0a52-8e4b-4c1d-9a57-0b7e2d9c3f10"),
            json!("2024-03-01"),
            json!("2024-03-01T10:00:00.000000Z"),
            json!("12.50"),
        ];
        assert_eq!(key(&columns, incoming), columns.encode_read(&read_back));
    }

    #[test]
    fn insert_get_remove() {
        let mut idx = KeyIndex::default();
        let loc = Location {
            file: 1,
            pos: 2,
            lsn: 3,
        };
        assert_eq!(idx.insert(Key::Int(5), loc), None);
        assert_eq!(idx.insert(Key::of_values([json!("x")].iter()), loc), None);
        assert_eq!(idx.get(&Key::Int(5)), Some(loc));
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.remove(&Key::Int(5)), Some(loc));
        assert_eq!(idx.get(&Key::Int(5)), None);
        assert!(idx.heap_bytes() > 0);
    }

    /// The figure the issue asks for: bytes per key at one million keys (hash table slots
    /// included, at whatever load the table has after growing to 1M).
    #[test]
    fn bytes_per_key_at_one_million_keys() {
        let mut idx = KeyIndex::default();
        for i in 0..1_000_000i64 {
            idx.insert(
                Key::Int(i * 7),
                Location {
                    file: (i % 100) as u32,
                    pos: i as u32,
                    lsn: i,
                },
            );
        }
        let per_key = idx.heap_bytes() as f64 / idx.len() as f64;
        println!("integer keys: {per_key:.1} bytes per key at 1M keys");
        assert!(per_key <= 64.0, "{per_key}");

        let mut idx = KeyIndex::default();
        for i in 0..1_000_000i64 {
            let key = [json!(format!("ORD-{i:08}")), json!(i % 10)];
            idx.insert(
                Key::of_values(key.iter()),
                Location {
                    file: 0,
                    pos: 0,
                    lsn: 0,
                },
            );
        }
        let per_key = idx.heap_bytes() as f64 / idx.len() as f64;
        println!("composite text keys (~20 bytes): {per_key:.1} bytes per key at 1M keys");
    }

    /// Each part's share of a key set within half and twice its fair one, so that no part's
    /// growth holds much more than 1/PARTS of the index twice.
    fn spread<K>(parts: &Parts<K>) -> Vec<usize> {
        let total = parts.len();
        let shares: Vec<usize> = parts.0.iter().map(|m| m.len()).collect();
        for &n in &shares {
            assert!(
                n * PARTS * 2 >= total && n * PARTS <= total * 2,
                "{shares:?} of {total}"
            );
        }
        shares
    }

    #[test]
    fn keys_spread_over_every_part() {
        let loc = Location {
            file: 0,
            pos: 0,
            lsn: 0,
        };
        // consecutive ids, ids of one stride, ids with only high bits set
        for ints in [
            (0..200_000i64).collect::<Vec<_>>(),
            (0..200_000i64).map(|i| i * 16).collect(),
            (0..200_000i64).map(|i| i << 32).collect(),
            (0..200_000i64).map(|i| -i).collect(),
        ] {
            let mut idx = KeyIndex::default();
            for i in ints {
                idx.insert(Key::Int(i), loc);
            }
            spread(&idx.ints);
        }
        let mut idx = KeyIndex::default();
        for i in 0..200_000i64 {
            let key = [json!(format!("ORD-{i:08}")), json!(i % 10)];
            idx.insert(Key::of_values(key.iter()), loc);
        }
        spread(&idx.bytes);
        assert_eq!(idx.len(), 200_000);
        // every key found in its part, gone from it when removed, and none after a clear
        for i in (0..200_000i64).step_by(997) {
            let key = Key::of_values([json!(format!("ORD-{i:08}")), json!(i % 10)].iter());
            assert_eq!(idx.get(&key), Some(loc));
            assert_eq!(idx.remove(&key), Some(loc));
            assert_eq!(idx.get(&key), None);
        }
        idx.clear();
        assert_eq!((idx.len(), idx.bytes.capacity()), (0, 0));
    }

    #[test]
    fn entry_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Location>(), 16);
    }
}
