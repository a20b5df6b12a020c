//! What the SmartModule's property tests share: the fixtures as messages, and the
//! strategies that make documents, mutations and settings.

#![allow(dead_code)] // each test file uses its part

use debezium_cdc::params::Settings;
use proptest::prelude::*;
use serde_json::{json, Value};

pub type Message = (Option<Vec<u8>>, Vec<u8>);

/// The samples, read once.
pub fn fixtures() -> &'static [Message] {
    static ALL: std::sync::OnceLock<Vec<Message>> = std::sync::OnceLock::new();
    ALL.get_or_init(read_fixtures)
}

fn read_fixtures() -> Vec<Message> {
    let dir = format!("{}/../tests/fixtures/debezium", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let msg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let key = (!msg["key"].is_null()).then(|| serde_json::to_vec(&msg["key"]).unwrap());
        let value = if msg["value"].is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&msg["value"]).unwrap()
        };
        out.push((key, value));
    }
    out
}

pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("c"),
            Just("u"),
            Just("d"),
            Just("r"),
            Just("t"),
            Just("m"),
            Just("BEGIN"),
            Just("__debezium_unavailable_value"),
            Just("MDk="),
            Just("2024-01-01T00:00:00Z"),
            Just("[\"1\",null]"),
            Just("org.apache.kafka.connect.data.Decimal"),
            Just("io.debezium.time.MicroTimestamp"),
            Just("io.debezium.data.VariableScaleDecimal"),
            Just("struct"),
            Just("array"),
            Just("int32"),
            Just("bytes"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("op"),
                        Just("before"),
                        Just("after"),
                        Just("source"),
                        Just("schema"),
                        Just("payload"),
                        Just("type"),
                        Just("name"),
                        Just("fields"),
                        Just("field"),
                        Just("items"),
                        Just("parameters"),
                        Just("scale"),
                        Just("value"),
                        Just("lsn"),
                        Just("table"),
                        Just("id"),
                        Just("__op"),
                        Just("__deleted"),
                        Just("status"),
                        Just("ts_ms"),
                        Just("sequence"),
                        Just("message"),
                    ]
                    .prop_map(str::to_owned),
                    inner,
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Replaces one node of a document, chosen by `choice`: the digits of `choice` pick the
/// child at each level, and a digit that is a multiple of 5 stops there.
pub fn replace_somewhere(node: &mut Value, choice: usize, replacement: Value) {
    let stop = choice.is_multiple_of(5);
    let child = match node {
        Value::Object(map) if !stop && !map.is_empty() => {
            let n = map.len();
            map.values_mut().nth(choice % n)
        }
        Value::Array(items) if !stop && !items.is_empty() => {
            let n = items.len();
            items.get_mut(choice % n)
        }
        _ => None,
    };
    match child {
        Some(child) => replace_somewhere(child, choice / 3, replacement),
        None => *node = replacement,
    }
}

pub fn settings() -> impl Strategy<Value = Settings> {
    (
        prop::sample::subsequence(vec!["c", "u", "d", "r", "m"], 1..=5),
        prop_oneof![Just("emit"), Just("drop"), Just("error")],
        prop_oneof![Just("emit"), Just("drop")],
        prop_oneof![Just("auto"), Just("envelope"), Just("flattened")],
        prop_oneof![Just(""), Just("id"), Just("public.*:id,name;*:event_id")],
    )
        .prop_map(|(ops, truncate, on_error, format, keys)| {
            let ops = ops.join(",");
            let mut params = vec![
                ("operations", ops.as_str()),
                ("truncate", truncate),
                ("on_error", on_error),
                ("format", format),
            ];
            if !keys.is_empty() {
                params.push(("key_columns", keys));
            }
            Settings::from_params(params).unwrap()
        })
}
