//! A batch of CDC records, in source order, reduced to one final action per primary key:
//! what `MERGE INTO` would do. Pure: the table is consulted only through `stored_lsn`. The
//! plan borrows the batch's row images (a batch is tens of thousands of rows: a copy of each
//! would double what a commit holds); only a row that takes unchanged columns from an earlier
//! change of the batch is a copy.

use crate::io::rows::Row;
use crate::table::key_index::{Key, KeyColumns, KeyMap, Location};
use crate::MergeError;
use debezium_cdc::record::{ChangeRecord, Op};
use serde_json::Map;
use std::borrow::{Borrow, Cow};
use std::collections::hash_map::Entry;

/// The final action for one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<'a> {
    /// Write this row. `carry` lists columns whose value is unchanged and must be taken from
    /// the stored row (unchanged TOAST values not seen earlier in the batch).
    Upsert {
        row: Row<'a>,
        carry: Vec<String>,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyChange<'a> {
    pub key: Key,
    pub action: Action<'a>,
    /// LSN of the change that decided the action.
    pub lsn: Option<i64>,
    /// The key's entry in the table's index when the batch was planned (live row or
    /// tombstone); `None` after a truncate in the batch.
    pub stored: Option<Location>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan<'a> {
    /// The batch truncates the table before `changes` apply.
    pub truncate: bool,
    /// One entry per key, in the order each key was first seen.
    pub changes: Vec<KeyChange<'a>>,
    /// Events skipped because the table already holds a newer change for their key.
    pub stale: u64,
}

/// What the plan knows of a key while it goes through the batch.
struct Seen {
    /// Its entry in `Plan::changes`, once a change of it is not stale.
    slot: Option<usize>,
    /// The newest LSN applied to it in this batch.
    newest: Option<i64>,
    /// Its entry in the table's index.
    stored: Option<Location>,
}

/// Reduces a batch. `keys` encodes each record's key; `stored` gives the table's index
/// entry for a key (its LSN decides which events are stale), looked up once per key.
pub fn plan<'a, R: Borrow<ChangeRecord>>(
    records: &'a [R],
    keys: &KeyColumns,
    stored: impl Fn(&Key) -> Option<Location>,
) -> Result<Plan<'a>, MergeError> {
    let start = records
        .iter()
        .rposition(|r| r.borrow().op == Op::Truncate)
        .map(|i| i + 1);
    let truncate = start.is_some();
    let records = &records[start.unwrap_or(0)..];
    let mut out = Plan {
        truncate,
        changes: Vec::with_capacity(records.len()),
        stale: 0,
    };
    let mut seen: KeyMap<Key, Seen> =
        KeyMap::with_capacity_and_hasher(records.len(), foldhash::fast::RandomState::default());

    for record in records {
        let record = record.borrow();
        if matches!(record.op, Op::Truncate | Op::Message) {
            continue;
        }
        let key = keys.encode(&record.key)?;
        let lsn = record.position.lsn.and_then(|l| i64::try_from(l).ok());
        let (key, seen) = match seen.entry(key) {
            Entry::Occupied(e) => (e.key().clone(), e.into_mut()),
            Entry::Vacant(e) => {
                let stored = if truncate { None } else { stored(e.key()) };
                let key = e.key().clone();
                let new = Seen {
                    slot: None,
                    newest: None,
                    stored,
                };
                (key, e.insert(new))
            }
        };
        let known = seen.newest.or(seen.stored.map(|l| l.lsn));
        if let (Some(lsn), Some(known)) = (lsn, known) {
            if lsn < known {
                out.stale += 1;
                continue;
            }
        }
        if lsn.is_some() {
            seen.newest = lsn;
        }
        let previous = seen.slot.map(|i| &out.changes[i].action);
        let action = match record.op {
            Op::Delete => Action::Delete,
            _ => upsert(record, lsn, previous),
        };
        match seen.slot {
            Some(i) => {
                out.changes[i].action = action;
                out.changes[i].lsn = lsn;
            }
            None => {
                seen.slot = Some(out.changes.len());
                out.changes.push(KeyChange {
                    key,
                    action,
                    lsn,
                    stored: seen.stored,
                });
            }
        }
    }
    Ok(out)
}

fn upsert<'a>(
    record: &'a ChangeRecord,
    lsn: Option<i64>,
    previous: Option<&Action<'a>>,
) -> Action<'a> {
    let mut values = match &record.after {
        Some(after) => Cow::Borrowed(after),
        None => Cow::Owned(Map::new()),
    };
    let mut carry = Vec::new();
    for column in &record.unchanged {
        match previous {
            Some(Action::Upsert {
                row,
                carry: earlier,
            }) => {
                if let Some(v) = row.values.get(column) {
                    values.to_mut().insert(column.clone(), v.clone());
                } else if earlier.contains(column) {
                    carry.push(column.clone());
                }
            }
            // deleted earlier in this batch: nothing to keep
            Some(Action::Delete) => {}
            None => carry.push(column.clone()),
        }
    }
    let source_ts_us = record
        .position
        .ts_us
        .or_else(|| record.position.ts_ms.map(|ms| ms.saturating_mul(1000)));
    Action::Upsert {
        row: Row {
            values,
            op: record.op.code(),
            lsn,
            source_ts_us,
        },
        carry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use debezium_cdc::record::{Position, SourceTable, CONTRACT_VERSION};
    use serde_json::{json, Value};

    fn rec(op: Op, id: i64, lsn: u64, after: Value) -> ChangeRecord {
        ChangeRecord {
            v: CONTRACT_VERSION,
            op,
            source: SourceTable::default(),
            key: json!({ "id": id }).as_object().unwrap().clone(),
            before: None,
            after: after.as_object().cloned(),
            unchanged: Vec::new(),
            position: Position {
                lsn: Some(lsn),
                ts_ms: Some(1000),
                ..Position::default()
            },
            columns: None,
            message: None,
            dropped: Default::default(),
        }
    }

    /// An index entry of a row at `lsn`.
    fn at(lsn: i64) -> Location {
        Location {
            file: 0,
            pos: 0,
            lsn,
        }
    }

    fn ids() -> KeyColumns {
        let schema = iceberg::spec::Schema::builder()
            .with_fields([std::sync::Arc::new(iceberg::spec::NestedField::required(
                1,
                "id",
                iceberg::spec::Type::Primitive(iceberg::spec::PrimitiveType::Long),
            ))])
            .with_identifier_field_ids([1])
            .build()
            .unwrap();
        KeyColumns::of(&schema).unwrap()
    }

    fn row_of<'p>(p: &'p Plan, id: i64) -> Option<&'p Row<'p>> {
        p.changes
            .iter()
            .find(|c| c.key == Key::Int(id))
            .and_then(|c| match &c.action {
                Action::Upsert { row, .. } => Some(row),
                Action::Delete => None,
            })
    }

    #[test]
    fn newest_event_per_key_wins() {
        let batch = vec![
            rec(Op::Create, 1, 10, json!({"id":1,"v":"a"})),
            rec(Op::Create, 2, 11, json!({"id":2,"v":"b"})),
            rec(Op::Update, 1, 12, json!({"id":1,"v":"c"})),
            rec(Op::Delete, 2, 13, Value::Null),
            rec(Op::Create, 3, 14, json!({"id":3,"v":"d"})),
        ];
        let p = plan(&batch, &ids(), |_| None).unwrap();
        assert!(!p.truncate);
        assert_eq!(p.changes.len(), 3);
        // a row as the change sent it is the change's own image, not a copy
        let row = row_of(&p, 1).unwrap();
        assert!(
            matches!(&row.values, Cow::Borrowed(m) if std::ptr::eq(*m, batch[2].after.as_ref().unwrap()))
        );
        assert_eq!(row_of(&p, 1).unwrap().values["v"], json!("c"));
        assert_eq!(row_of(&p, 1).unwrap().lsn, Some(12));
        assert_eq!(row_of(&p, 1).unwrap().source_ts_us, Some(1_000_000));
        assert_eq!(p.changes[1].action, Action::Delete);
        assert_eq!(row_of(&p, 3).unwrap().op, 'c');
    }

    #[test]
    fn older_events_do_not_move_rows_backwards() {
        let batch = vec![
            rec(Op::Update, 1, 5, json!({"id":1,"v":"old"})),
            rec(Op::Update, 2, 50, json!({"id":2,"v":"new"})),
            rec(Op::Update, 2, 40, json!({"id":2,"v":"replayed"})),
        ];
        let p = plan(&batch, &ids(), |k| (*k == Key::Int(1)).then_some(at(9))).unwrap();
        assert_eq!(p.stale, 2);
        assert!(row_of(&p, 1).is_none());
        assert_eq!(row_of(&p, 2).unwrap().values["v"], json!("new"));
        // equal LSNs apply
        let equal = [rec(Op::Update, 1, 9, json!({"id":1}))];
        let p = plan(&equal, &ids(), |_| Some(at(9))).unwrap();
        assert_eq!(p.stale, 0);
    }

    #[test]
    fn each_key_carries_its_index_entry_from_its_first_change() {
        let batch = vec![
            rec(Op::Update, 1, 5, json!({"id":1})),
            rec(Op::Update, 2, 50, json!({"id":2})),
            rec(Op::Delete, 1, 6, Value::Null),
            rec(Op::Update, 3, 40, json!({"id":3})),
        ];
        let looked_up = std::cell::RefCell::new(Vec::new());
        let stored = |k: &Key| {
            looked_up.borrow_mut().push(k.clone());
            match k {
                Key::Int(1) => Some(at(4)),
                Key::Int(3) => Some(Location {
                    file: crate::table::key_index::TOMBSTONE,
                    pos: 0,
                    lsn: 30,
                }),
                _ => None,
            }
        };
        let p = plan(&batch, &ids(), stored).unwrap();
        // once per key, in first-seen order
        assert_eq!(*looked_up.borrow(), [Key::Int(1), Key::Int(2), Key::Int(3)]);
        let entries: Vec<(Key, Option<i64>, Option<bool>)> = p
            .changes
            .iter()
            .map(|c| {
                (
                    c.key.clone(),
                    c.stored.map(|l| l.lsn),
                    c.stored.map(|l| l.is_live()),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                (Key::Int(1), Some(4), Some(true)),
                (Key::Int(2), None, None),
                (Key::Int(3), Some(30), Some(false)),
            ]
        );
        assert_eq!(p.changes[0].action, Action::Delete);
        // after a truncate in the batch the index is not asked
        let mut t = rec(Op::Truncate, 0, 60, Value::Null);
        t.key = Map::new();
        let after = [t, rec(Op::Update, 1, 70, json!({"id":1}))];
        let p = plan(&after, &ids(), |_| panic!("asked after a truncate")).unwrap();
        assert_eq!(p.changes[0].stored, None);
    }

    #[test]
    fn truncate_discards_what_came_before() {
        let mut t = rec(Op::Truncate, 0, 20, Value::Null);
        t.key = Map::new();
        let batch = vec![
            rec(Op::Create, 1, 10, json!({"id":1})),
            t,
            rec(Op::Create, 2, 30, json!({"id":2})),
        ];
        let p = plan(&batch, &ids(), |_| Some(at(100))).unwrap();
        assert!(p.truncate);
        assert_eq!(
            p.changes.len(),
            1,
            "stored LSNs do not count after a truncate"
        );
        assert!(row_of(&p, 2).is_some());
    }

    #[test]
    fn unchanged_toast_columns_come_from_the_batch_or_the_table() {
        let mut second = rec(Op::Update, 1, 11, json!({"id":1,"v":"x"}));
        second.unchanged = vec!["doc".into()];
        let first = rec(Op::Create, 1, 10, json!({"id":1,"v":"w","doc":"big"}));
        let both = [first, second.clone()];
        let p = plan(&both, &ids(), |_| None).unwrap();
        match &p.changes[0].action {
            Action::Upsert { row, carry } => {
                assert_eq!(row.values["doc"], json!("big"));
                assert_eq!(row.values["v"], json!("x"));
                assert!(matches!(row.values, Cow::Owned(_)), "completed: a copy");
                assert!(carry.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let alone = [second];
        let p = plan(&alone, &ids(), |_| Some(at(1))).unwrap();
        match &p.changes[0].action {
            Action::Upsert { carry, .. } => assert_eq!(carry, &["doc".to_owned()]),
            other => panic!("{other:?}"),
        }
    }
}
