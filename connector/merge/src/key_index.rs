//! The primary-key index: key -> (data file, row position, LSN) for every live row. It is
//! what turns an upsert or delete into a position delete without scanning the table, and
//! what keeps a replayed older event from moving a row backwards.
//!
//! Kept compact: integer keys (the common case) are stored as `i64`; other keys by their
//! canonical encoding. Entries are 16 bytes.

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

/// A primary key, encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Bytes(Box<[u8]>),
}

impl Key {
    /// Encodes key values (in key column order). A single integer column is an `Int`;
    /// anything else is the JSON text of the values array, which is canonical for the
    /// normalized values the SmartModule emits.
    pub fn encode(key: &Map<String, Value>) -> Key {
        if key.len() == 1 {
            if let Some(i) = key.values().next().and_then(Value::as_i64) {
                return Key::Int(i);
            }
        }
        let values: Vec<&Value> = key.values().collect();
        Key::Bytes(
            serde_json::to_vec(&values)
                .unwrap_or_default()
                .into_boxed_slice(),
        )
    }
}

#[derive(Debug, Default)]
pub struct KeyIndex {
    ints: HashMap<i64, Location>,
    bytes: HashMap<Box<[u8]>, Location>,
}

/// `Location::file` of a deleted key: the index remembers the LSN of the delete so that a
/// replayed older event cannot bring the row back. Tombstones live in memory only: after a
/// restart, Debezium's re-sent delete follows any re-sent older event.
pub const TOMBSTONE: u32 = u32::MAX;

impl KeyIndex {
    /// The live row of a key (tombstones excluded).
    pub fn live(&self, key: &Key) -> Option<Location> {
        self.get(key).filter(|l| l.file != TOMBSTONE)
    }

    /// Marks a key deleted by the change at `lsn`.
    pub fn tombstone(&mut self, key: Key, lsn: i64) {
        self.insert(
            key,
            Location {
                file: TOMBSTONE,
                pos: 0,
                lsn,
            },
        );
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
            Key::Int(i) => self.ints.get(i).copied(),
            Key::Bytes(b) => self.bytes.get(b).copied(),
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

    /// Approximate heap bytes held, for the bytes-per-key figure.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(i64, Location)>() + 1;
        let bslot = std::mem::size_of::<(Box<[u8]>, Location)>() + 1;
        self.ints.capacity() * slot
            + self.bytes.capacity() * bslot
            + self.bytes.keys().map(|k| k.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(v: Value) -> Key {
        Key::encode(v.as_object().unwrap())
    }

    #[test]
    fn encodings() {
        assert_eq!(key(json!({"id": 7})), Key::Int(7));
        assert_eq!(
            key(json!({"id": "7"})),
            Key::Bytes(b"[\"7\"]".to_vec().into())
        );
        assert_ne!(key(json!({"a": 1, "b": 2})), key(json!({"a": 2, "b": 1})));
        assert_eq!(key(json!({"a": 1, "b": 2})), key(json!({"x": 1, "y": 2})));
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
        assert_eq!(idx.insert(key(json!({"s": "x"})), loc), None);
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
            let key = json!({"order": format!("ORD-{i:08}"), "line": i % 10});
            idx.insert(
                Key::encode(key.as_object().unwrap()),
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

    #[test]
    fn entry_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Location>(), 16);
    }
}
