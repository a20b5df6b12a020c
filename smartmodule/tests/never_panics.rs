//! Property tests: whatever bytes arrive, the parser returns (a change, an error record, or
//! nothing) and never panics. A panic inside the SmartModule traps the WASM instance, which
//! Fluvio treats like an error: the consumer would retry that offset forever.
//!
//! The number of cases is `PROPTEST_CASES` (256 by default; CI runs more).

use debezium_cdc::params::Settings;
use debezium_cdc::record::CdcRecord;
use debezium_cdc::Transformer;
use proptest::prelude::*;
use serde_json::{json, Value};

type Message = (Option<Vec<u8>>, Vec<u8>);

/// The samples, read once.
fn fixtures() -> &'static [Message] {
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

/// Runs one message and checks what any output must satisfy.
fn check(t: &mut Transformer, key: Option<&[u8]>, value: &[u8]) {
    if let Some(record) = t.process(key, value, Some(7)) {
        let json = debezium_cdc::to_json(&record);
        let back: CdcRecord = serde_json::from_slice(&json).expect("output reads back");
        assert_eq!(back, record);
        if let CdcRecord::Error(e) = record {
            assert_eq!(e.value.to_bytes().unwrap(), value);
            assert!(!e.reason.is_empty());
        }
    }
}

fn any_json() -> impl Strategy<Value = Value> {
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
fn replace_somewhere(node: &mut Value, choice: usize, replacement: Value) {
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

fn settings() -> impl Strategy<Value = Settings> {
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

proptest! {
    #[test]
    fn random_bytes(key in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
                    value in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&mut Transformer::default(), key.as_deref(), &value);
    }

    #[test]
    fn random_json_documents(value in any_json(), key in prop::option::of(any_json()), s in settings()) {
        let value = serde_json::to_vec(&value).unwrap();
        let key = key.map(|k| serde_json::to_vec(&k).unwrap());
        check(&mut Transformer::new(s), key.as_deref(), &value);
    }

    #[test]
    fn byte_mutations_of_real_events(which in any::<prop::sample::Index>(),
                                     edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
                                     s in settings()) {
        let all = fixtures();
        let (key, mut value) = all[which.index(all.len())].clone();
        for (at, byte, kind) in edits {
            if value.is_empty() { value.push(byte); continue; }
            let i = at.index(value.len());
            match kind {
                0 => value[i] = byte,
                1 => { value.insert(i, byte); }
                2 => { value.remove(i); }
                _ => value.truncate(i),
            }
        }
        check(&mut Transformer::new(s), key.as_deref(), &value);
    }

    #[test]
    fn structural_mutations_of_real_events(which in any::<prop::sample::Index>(),
                                           edits in prop::collection::vec((any::<usize>(), any_json()), 1..4),
                                           mutate_key in any::<bool>(),
                                           s in settings()) {
        let all = fixtures();
        let (key, value) = all[which.index(all.len())].clone();
        let mut doc: Value = if value.is_empty() { Value::Null } else { serde_json::from_slice(&value).unwrap() };
        let mut key_doc: Option<Value> = key.map(|k| serde_json::from_slice(&k).unwrap());
        for (choice, replacement) in edits {
            match (&mut key_doc, mutate_key) {
                (Some(k), true) => replace_somewhere(k, choice, replacement),
                _ => replace_somewhere(&mut doc, choice, replacement),
            }
        }
        let key = key_doc.map(|k| serde_json::to_vec(&k).unwrap());
        check(&mut Transformer::new(s), key.as_deref(), &serde_json::to_vec(&doc).unwrap());
    }
}

/// Deep nesting and huge numbers that have broken JSON parsers before.
#[test]
fn pathological_inputs() {
    let mut t = Transformer::default();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    check(&mut t, None, deep.as_bytes());
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    check(&mut t, None, deep_obj.as_bytes());
    let huge_number = format!(
        "{{\"op\":\"c\",\"after\":{{\"id\":1{}}},\"source\":{{\"lsn\":1}}}}",
        "0".repeat(5000)
    );
    check(&mut t, Some(b"{\"id\":1}"), huge_number.as_bytes());
    let huge_decimal = json!({
        "schema": {"type":"struct","fields":[{"type":"struct","field":"after","optional":true,"fields":[
            {"type":"bytes","field":"n","optional":true,"name":"org.apache.kafka.connect.data.Decimal",
             "parameters":{"scale":"2147483647"}}]}]},
        "payload": {"op":"c","after":{"n":"MDk="}}
    });
    check(
        &mut t,
        Some(b"{\"n\":1}"),
        &serde_json::to_vec(&huge_decimal).unwrap(),
    );
}
