//! Property tests: whatever bytes arrive, the parser returns (a change, an error record, or
//! nothing) and never panics. A panic inside the SmartModule traps the WASM instance, which
//! Fluvio treats like an error: the consumer would retry that offset forever.
//!
//! The number of cases is `PROPTEST_CASES` (256 by default; CI runs more).

use debezium_cdc::record::CdcRecord;
use debezium_cdc::Transformer;
use proptest::prelude::*;
use serde_json::{json, Value};

mod common;
use common::{any_json, fixtures, replace_somewhere, settings};

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
