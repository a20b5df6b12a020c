//! Change records (the SmartModule's output, the merge engine's input) to one
//! `public.items` table (id, name, amount, day), in random batches with the replays and
//! truncates a real stream has, and the model the table must equal: the merge engine's
//! tests feed these straight to a table.

use crate::Lcg;
use debezium_cdc::record::{
    ChangeRecord, Column, ColumnType, Op, Position, SourceTable, CONTRACT_VERSION,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// A source column without a logical type.
pub fn col(name: &str, ty: ColumnType, optional: bool) -> Column {
    Column {
        name: name.into(),
        ty,
        optional,
        logical: None,
    }
}

pub fn columns() -> Vec<Column> {
    let c = col;
    vec![
        c("id", ColumnType::Int, false),
        c("name", ColumnType::String, true),
        c(
            "amount",
            ColumnType::Decimal {
                precision: Some(10),
                scale: Some(2),
            },
            true,
        ),
        c("day", ColumnType::Date, true),
    ]
}

pub type Model = BTreeMap<i64, Map<String, Value>>;

pub fn row(id: i64, rng: &mut Lcg) -> Map<String, Value> {
    let month = 1 + rng.below(6);
    let cents = rng.below(1_000_000) as i64 - 500_000;
    let amount = format!(
        "{}{}.{:02}",
        if cents < 0 { "-" } else { "" },
        cents.abs() / 100,
        cents.abs() % 100
    );
    json!({
        "id": id,
        "name": format!("n{}", rng.below(1000)),
        "amount": amount,
        "day": format!("2024-{month:02}-{:02}", 1 + rng.below(28)),
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

pub fn change(op: Op, id: i64, lsn: u64, after: Option<Map<String, Value>>) -> ChangeRecord {
    ChangeRecord {
        v: CONTRACT_VERSION,
        op,
        source: SourceTable {
            schema: Some("public".into()),
            table: Some("items".into()),
            ..SourceTable::default()
        },
        key: if op == Op::Truncate {
            Map::new()
        } else {
            json!({ "id": id }).as_object().cloned().unwrap_or_default()
        },
        before: None,
        after,
        unchanged: Vec::new(),
        position: Position {
            lsn: Some(lsn),
            ts_ms: Some(1_700_000_000_000 + lsn as i64),
            ..Position::default()
        },
        columns: Some(std::sync::Arc::new(columns())),
        message: None,
        dropped: Default::default(),
    }
}

/// One batch of random events, applied to the model as the table must apply them.
pub fn batch(
    rng: &mut Lcg,
    model: &mut Model,
    lsns: &mut HashMap<i64, u64>,
    next_lsn: &mut u64,
    keys: u64,
) -> Vec<ChangeRecord> {
    let mut out = Vec::new();
    let n = 1 + rng.below(400);
    // one batch in fifteen truncates the table somewhere in the middle
    let truncate_at = (rng.below(15) == 0).then(|| rng.below(n));
    for i in 0..n {
        *next_lsn += 10;
        let lsn = *next_lsn;
        let id = rng.below(keys) as i64;
        if truncate_at == Some(i) {
            out.push(change(Op::Truncate, 0, lsn, None));
            model.clear();
            lsns.clear();
            continue;
        }
        match rng.below(100) {
            0 => {}
            1..=5 => {
                // a replay of an older event: must not move the row backwards
                if let Some(&known) = lsns.get(&id) {
                    if known > 20 {
                        out.push(change(Op::Update, id, known - 5, Some(row(id, rng))));
                    }
                }
            }
            6..=25 => {
                out.push(change(Op::Delete, id, lsn, None));
                model.remove(&id);
                lsns.insert(id, lsn);
            }
            _ => {
                let op = if model.contains_key(&id) {
                    Op::Update
                } else {
                    Op::Create
                };
                let r = row(id, rng);
                out.push(change(op, id, lsn, Some(r.clone())));
                model.insert(id, r);
                lsns.insert(id, lsn);
            }
        }
    }
    out
}
