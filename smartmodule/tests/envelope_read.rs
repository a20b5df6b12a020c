//! A change event envelope in a known schema's wrapper is read from its text
//! (`parse_known_envelope`, the common case) or as a JSON tree (`parse_as_tree`, every other
//! message, and the reference): whenever the first reads a message at all, the two say the
//! same, to the byte of the record the SmartModule writes, errors included.

use debezium_cdc::converter::Schemas;
use debezium_cdc::debezium::{parse_as_tree, parse_known_envelope, BadMessage, Parsed};
use debezium_cdc::params::Settings;
use proptest::prelude::*;
use serde_json::{json, Value};

mod common;
use common::{any_json, fixtures, replace_somewhere, settings, Message};

/// Both readings of `value`, each with a cache of schemas that has seen `warm` (the message
/// before the change, so that its wrapper is known). `None` when the text reading declined.
fn both(
    settings: &Settings,
    warm: &[u8],
    key: Option<&[u8]>,
    value: &[u8],
) -> Option<(Result<Parsed, BadMessage>, Result<Parsed, BadMessage>)> {
    let (mut text_cache, mut tree_cache) = (Schemas::default(), Schemas::default());
    for cache in [&mut text_cache, &mut tree_cache] {
        let _ = parse_as_tree(settings, cache, key, warm, Some(1));
    }
    let from_text = parse_known_envelope(settings, &mut text_cache, key, value, Some(7))?;
    let as_tree = parse_as_tree(settings, &mut tree_cache, key, value, Some(7));
    Some((from_text, as_tree))
}

/// The two readings agree, on the record's JSON too (maps compare without their order).
fn agree(from_text: &Result<Parsed, BadMessage>, as_tree: &Result<Parsed, BadMessage>) {
    assert_eq!(from_text, as_tree);
    if let (Ok(Parsed::Change(a)), Ok(Parsed::Change(b))) = (from_text, as_tree) {
        assert_eq!(
            serde_json::to_string(a).unwrap(),
            serde_json::to_string(b).unwrap()
        );
    }
}

/// A fixture's message whose payload is a change event envelope in a wrapper.
fn wrapped_envelopes() -> &'static [Message] {
    static ALL: std::sync::OnceLock<Vec<Message>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        fixtures()
            .iter()
            .filter(|(_, value)| {
                serde_json::from_slice::<Value>(value)
                    .is_ok_and(|doc| doc["payload"].get("op").is_some() && !doc["schema"].is_null())
            })
            .cloned()
            .collect()
    })
}

#[test]
fn every_wrapped_envelope_is_read_from_its_text_as_the_tree_reads_it() {
    let all = wrapped_envelopes();
    assert!(all.len() >= 8, "only {} wrapped envelopes", all.len());
    for params in [
        vec![],
        vec![("truncate", "emit")],
        vec![("format", "envelope")],
    ] {
        let settings = Settings::from_params(params).unwrap();
        for (key, value) in all {
            let (from_text, as_tree) = both(&settings, value, key.as_deref(), value)
                .unwrap_or_else(|| panic!("not read from its text: {}", show(value)));
            agree(&from_text, &as_tree);
        }
    }
}

#[test]
fn flattened_rows_are_left_to_the_tree() {
    let settings = Settings::from_params([("format", "flattened")]).unwrap();
    for (key, value) in wrapped_envelopes() {
        assert!(both(&settings, value, key.as_deref(), value).is_none());
    }
}

fn show(value: &[u8]) -> String {
    String::from_utf8_lossy(value).chars().take(300).collect()
}
/// Spellings a tree takes in its stride and a reader of known members could take
/// differently, each written into the payload of every wrapped fixture before its `op`.
const SPELLINGS: &[&str] = &[
    // members twice: the tree keeps the last
    r#""op":"d","#,
    r#""source":7,"#,
    r#""after":null,"#,
    // a member name spelled with an escape
    r#""o\u0070":"d","#,
    r#""s\u006furce":{"table":"t"},"#,
    // unknown members, including ones a tree refuses
    r#""ts_ns":1e400,"#,
    r#""x":"\ud800","#,
    r#""x":[{"y":null},1.5,-0,"\u00e9"],"#,
    r#""x":{"a":1,"a":2},"#,
];

/// Values given to members of every wrapped fixture's payload (a missing member is added).
fn values() -> Vec<(&'static str, Value)> {
    vec![
        ("/source/db", json!(5)),
        ("/source/db", json!("")),
        ("/source/table", json!("")),
        ("/source/table", Value::Null),
        ("/source/name", json!(["a"])),
        ("/source/snapshot", json!(true)),
        ("/source/snapshot", json!(3)),
        ("/source/snapshot", Value::Null),
        ("/source/sequence", json!(["1", null, 2])),
        ("/source/sequence", json!("not json")),
        ("/source/sequence", json!("[\"1\",{}]")),
        ("/source/sequence", json!("[\"1\",null,3]")),
        ("/source/sequence", Value::Null),
        ("/source/lsn", json!(-1)),
        ("/source/lsn", json!(1.0)),
        ("/source/lsn", Value::Null),
        ("/source/txId", json!("7")),
        ("/source/ts_us", json!(u64::MAX)),
        ("/source/ts_ms", json!(1.5)),
        ("/source/version", json!({"a": [1, 2]})),
        ("/source", Value::Null),
        ("/source", json!(7)),
        ("/source", json!({})),
        ("/ts_ms", json!("soon")),
        ("/ts_ms", Value::Null),
        ("/transaction", json!({"id": "7", "total_order": 1})),
        ("/message", json!({"prefix": "p", "content": "Zm9v"})),
        ("/message", json!({"prefix": 5})),
        ("/before", json!([])),
        ("/before", Value::Null),
        ("/after", json!(5)),
        ("/after", Value::Null),
        ("/after/zz", json!({"a": 1})),
        ("/op", json!("x")),
        ("/op", json!("m")),
        ("/op", json!("t")),
        ("/op", json!(1)),
    ]
}

/// `doc` with the member at `pointer` (under `payload`) set to `value`.
fn with_value(mut doc: Value, pointer: &str, value: Value) -> Option<Value> {
    let (parent, name) = pointer.rsplit_once('/')?;
    let parent = doc
        .pointer_mut(&format!("/payload{parent}"))?
        .as_object_mut()?;
    parent.insert(name.to_owned(), value);
    Some(doc)
}

#[test]
fn unusual_spellings_and_values_read_alike() {
    let settings =
        Settings::from_params([("operations", "c,u,d,r,m"), ("truncate", "emit")]).unwrap();
    let (mut read_from_text, mut tried) = (0, 0);
    let mut check = |key: Option<&[u8]>, value: &[u8], changed: &[u8]| {
        tried += 1;
        if let Some((a, b)) = both(&settings, value, key, changed) {
            read_from_text += 1;
            agree(&a, &b);
        }
    };
    for (key, value) in wrapped_envelopes() {
        let text = String::from_utf8(value.clone()).unwrap();
        let op_at = text.find(r#""op":"#).unwrap();
        for spelling in SPELLINGS {
            let mut changed = text.clone();
            changed.insert_str(op_at, spelling);
            check(key.as_deref(), value, changed.as_bytes());
        }
        let doc: Value = serde_json::from_slice(value).unwrap();
        for (pointer, v) in values() {
            if let Some(changed) = with_value(doc.clone(), pointer, v) {
                check(
                    key.as_deref(),
                    value,
                    &serde_json::to_vec(&changed).unwrap(),
                );
                // and as a logical decoding message's
                if let Some(message) = with_value(changed, "/op", json!("m")) {
                    check(
                        key.as_deref(),
                        value,
                        &serde_json::to_vec(&message).unwrap(),
                    );
                }
            }
        }
    }
    // the spellings a reader of known members could get wrong are declined; the rest are
    // read alike
    assert!(
        read_from_text >= 100,
        "{read_from_text} of {tried} read from the text"
    );
    assert!(read_from_text < tried, "nothing declined");
}

proptest! {
    #[test]
    fn byte_mutations_of_payloads_read_alike(which in any::<prop::sample::Index>(),
                                             edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
                                             s in settings()) {
        let all = wrapped_envelopes();
        let (key, value) = &all[which.index(all.len())];
        let payload_at = value.windows(10).position(|w| w == br#""payload":"#).unwrap() + 10;
        let mut changed = value.clone();
        for (at, byte, kind) in edits {
            if changed.len() <= payload_at { break; }
            let i = payload_at + at.index(changed.len() - payload_at);
            match kind {
                0 => changed[i] = byte,
                1 => { changed.insert(i, byte); }
                2 => { changed.remove(i); }
                _ => changed.truncate(i),
            }
        }
        if let Some((a, b)) = both(&s, value, key.as_deref(), &changed) {
            agree(&a, &b);
        }
    }

    #[test]
    fn structural_mutations_of_payloads_read_alike(which in any::<prop::sample::Index>(),
                                                   edits in prop::collection::vec((any::<usize>(), any_json()), 1..4),
                                                   s in settings()) {
        let all = wrapped_envelopes();
        let (key, value) = &all[which.index(all.len())];
        let mut doc: Value = serde_json::from_slice(value).unwrap();
        for (choice, replacement) in edits {
            replace_somewhere(&mut doc["payload"], choice, replacement);
        }
        let changed = serde_json::to_vec(&doc).unwrap();
        if let Some((a, b)) = both(&s, value, key.as_deref(), &changed) {
            agree(&a, &b);
        }
    }
}

/// The generated streams (every table shape, one- and two-column keys, with and without the
/// old row, bad messages among them), message by message as the SmartModule reads them:
/// what is read from its text is what the tree says, and most of it is read from its text.
#[test]
fn generated_streams_read_alike() {
    use testkit::stream::{write_stream, Shape, Spec};
    for (shape, two_column_key, full_before) in [
        (Shape::Products, false, true),
        (Shape::Items, true, false),
        (Shape::Wide, false, false),
    ] {
        let spec = Spec {
            events: 2_000,
            keys: 300,
            shape,
            two_column_key,
            full_before,
            bad_every: Some(53),
            ..Spec::default()
        };
        let settings = Settings::default();
        let (mut text_cache, mut tree_cache) = (Schemas::default(), Schemas::default());
        let (mut messages, mut read_from_text) = (0, 0);
        write_stream(&spec, |_, key, value| {
            let value = value.unwrap_or_default();
            messages += 1;
            let offset = Some(messages);
            let from_text =
                match parse_known_envelope(&settings, &mut text_cache, Some(key), value, offset) {
                    Some(read) => {
                        read_from_text += 1;
                        read
                    }
                    None => parse_as_tree(&settings, &mut text_cache, Some(key), value, offset),
                };
            let as_tree = parse_as_tree(&settings, &mut tree_cache, Some(key), value, offset);
            agree(&from_text, &as_tree);
            Ok(())
        })
        .unwrap();
        assert!(
            read_from_text * 10 > messages * 8,
            "{shape:?}: {read_from_text} of {messages} read from the text"
        );
    }
}
