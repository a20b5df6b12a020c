//! The compiled `.wasm` inside Fluvio's own engine (`fluvio-smartengine` 0.50.1, the engine
//! the SPU runs): params through `init`, mixed batches, bad records, and the chain still
//! healthy afterwards. Each output must equal what the native build of the same parser says.

use debezium_cdc::params::Settings;
use debezium_cdc::record::{CdcRecord, Op};
use debezium_cdc::Transformer;
use fluvio_smartengine::{
    SmartEngine, SmartModuleChainBuilder, SmartModuleChainInstance, SmartModuleConfig,
};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use fluvio_smartmodule::Record;
use std::collections::BTreeMap;
use testkit::{fixture, fixture_names, wasm_bytes, Message};

const BASE_OFFSET: i64 = 1000;

fn chain(params: &[(&str, &str)]) -> anyhow::Result<SmartModuleChainInstance> {
    let mut config = SmartModuleConfig::builder();
    config.smartmodule_names(vec!["cdc-iceberg/debezium-cdc@0.1.0".to_owned()]);
    for (k, v) in params {
        config.param(*k, *v);
    }
    let config = config.build()?;
    let mut builder = SmartModuleChainBuilder::default();
    builder.add_smart_module(config, wasm_bytes()?);
    builder.initialize(&SmartEngine::new())
}

/// Runs one batch through the chain; returns the output records (key, value, offset).
fn run(
    chain: &mut SmartModuleChainInstance,
    batch: &[Message],
) -> Vec<(Option<Vec<u8>>, Vec<u8>, i64)> {
    let records: Vec<Record> = batch
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut r = match &m.key {
                Some(k) => Record::new_key_value(k.clone(), m.value.clone()),
                None => Record::new(m.value.clone()),
            };
            r.preamble.set_offset_delta(i as i64);
            r
        })
        .collect();
    let mut input = SmartModuleInput::try_from_records(
        records,
        fluvio_smartengine::DEFAULT_SMARTENGINE_VERSION,
    )
    .expect("encode input");
    input.set_base_offset(BASE_OFFSET);
    let output = chain.process(input).expect("the chain runs");
    assert!(
        output.error.is_none(),
        "the SmartModule returned an error: {:?}",
        output.error
    );
    output
        .successes
        .into_iter()
        .map(|r| {
            let offset = BASE_OFFSET + r.preamble.offset_delta();
            (
                r.key().map(|k| k.as_ref().to_vec()),
                r.value().as_ref().to_vec(),
                offset,
            )
        })
        .collect()
}

/// What the native build emits for the same batch: (input index, JSON).
fn native(params: &[(&str, &str)], batch: &[Message]) -> Vec<(usize, Vec<u8>)> {
    let mut t = Transformer::new(Settings::from_params(params.iter().copied()).unwrap());
    batch
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            t.process_to_json(m.key.as_deref(), &m.value, Some(BASE_OFFSET + i as i64))
                .map(|json| (i, json))
        })
        .collect()
}

fn bad(name: &str, value: &[u8]) -> Message {
    Message {
        name: name.to_owned(),
        key: Some(br#"{"id":1}"#.to_vec()),
        value: value.to_vec(),
    }
}

fn mixed_batch() -> Vec<Message> {
    let mut batch: Vec<Message> = fixture_names()
        .unwrap()
        .iter()
        .map(|n| fixture(n).unwrap())
        .collect();
    let good = fixture("customers-update").unwrap();
    batch.insert(3, bad("invalid-json", b"{\"payload\": {"));
    batch.insert(7, bad("truncated", &good.value[..good.value.len() / 3]));
    batch.insert(
        9,
        bad(
            "unknown-op",
            br#"{"op":"z","after":{"id":1},"source":{"table":"t"}}"#,
        ),
    );
    batch.insert(
        11,
        bad(
            "missing-after",
            br#"{"op":"c","after":null,"source":{"table":"t"}}"#,
        ),
    );
    batch.push(bad("binary", &[0, 159, 146, 150]));
    batch.push(good);
    batch
}

#[test]
fn a_mixed_batch_through_the_engine_equals_the_native_parser() {
    let params = [
        ("key_columns", "public.events:event_id"),
        ("operations", "c,u,d,r,m"),
    ];
    let batch = mixed_batch();
    let mut chain = chain(&params).unwrap();
    let out = run(&mut chain, &batch);
    let expected = native(&params, &batch);
    assert_eq!(out.len(), expected.len());

    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for ((key, value, offset), (index, native_json)) in out.iter().zip(&expected) {
        let input = &batch[*index];
        assert_eq!(
            *offset,
            BASE_OFFSET + *index as i64,
            "{}: offset kept",
            input.name
        );
        assert_eq!(key, &input.key, "{}: key passed through", input.name);
        let record: CdcRecord = serde_json::from_slice(value).unwrap();
        let native_record: CdcRecord = serde_json::from_slice(native_json).unwrap();
        assert_eq!(
            record, native_record,
            "{}: wasm and native differ",
            input.name
        );
        match &record {
            CdcRecord::Change(c) => {
                assert_eq!(c.position.offset, Some(*offset));
                *kinds.entry("change").or_default() += 1;
            }
            CdcRecord::Error(e) => {
                assert_eq!(
                    e.value.to_bytes().unwrap(),
                    input.value,
                    "{}: original bytes",
                    input.name
                );
                assert_eq!(e.offset, Some(*offset));
                assert!(!e.reason.is_empty());
                *kinds.entry("error").or_default() += 1;
            }
        }
    }
    // 20 samples: 4 control events dropped (BEGIN, END, heartbeat, tombstone), the bare
    // flattened row is an error; 5 bad records added, then one more good update.
    assert_eq!(kinds.get("change"), Some(&16));
    assert_eq!(kinds.get("error"), Some(&6));
    let reasons: Vec<String> = out
        .iter()
        .filter_map(
            |(_, v, _)| match serde_json::from_slice::<CdcRecord>(v).unwrap() {
                CdcRecord::Error(e) => Some(e.reason),
                _ => None,
            },
        )
        .collect();
    for expected in [
        "value is not valid JSON",
        "unknown operation `z`",
        "without an `after`",
        "not a Debezium change event",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected} in {reasons:?}"
        );
    }

    // the same instance keeps working, and reports what it dropped since its last output
    let next = vec![
        fixture("heartbeat").unwrap(),
        fixture("customers-create").unwrap(),
    ];
    let out = run(&mut chain, &next);
    assert_eq!(out.len(), 1);
    match serde_json::from_slice::<CdcRecord>(&out[0].1).unwrap() {
        CdcRecord::Change(c) => {
            assert_eq!(c.op, Op::Create);
            assert_eq!(c.dropped.get("heartbeat"), Some(&1));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn params_reach_the_module_through_init() {
    let batch: Vec<Message> = [
        "customers-create",
        "customers-update",
        "customers-delete",
        "customers-truncate",
    ]
    .iter()
    .map(|n| fixture(n).unwrap())
    .collect();
    let params = [("operations", "c"), ("truncate", "drop")];
    let out = run(&mut chain(&params).unwrap(), &batch);
    let ops: Vec<Op> = out
        .iter()
        .map(
            |(_, v, _)| match serde_json::from_slice::<CdcRecord>(v).unwrap() {
                CdcRecord::Change(c) => c.op,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(ops, [Op::Create]);

    // defaults: truncates pass, so do updates and deletes
    let out = run(&mut chain(&[]).unwrap(), &batch);
    assert_eq!(out.len(), 4);
}

#[test]
fn a_wrong_param_refuses_the_module() {
    for (params, expected) in [
        (vec![("operation", "c")], "unknown parameter `operation`"),
        (vec![("truncate", "sometimes")], "truncate"),
    ] {
        let err = chain(&params).expect_err("init must refuse");
        let text = format!("{err:#}");
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
}

#[test]
fn a_ten_megabyte_record_passes_the_engine() {
    let good = fixture("customers-create").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&good.value).unwrap();
    v["payload"]["after"]["email"] = serde_json::Value::String("y".repeat(10 << 20));
    let big = Message {
        value: serde_json::to_vec(&v).unwrap(),
        ..good.clone()
    };
    let garbage = bad("garbage", &vec![b'['; 10 << 20]);
    let out = run(&mut chain(&[]).unwrap(), &[big, garbage, good]);
    assert_eq!(out.len(), 3);
    let kinds: Vec<&str> = out
        .iter()
        .map(
            |(_, v, _)| match serde_json::from_slice::<CdcRecord>(v).unwrap() {
                CdcRecord::Change(_) => "change",
                CdcRecord::Error(_) => "error",
            },
        )
        .collect();
    assert_eq!(kinds, ["change", "error", "change"]);
}

/// The `.wasm` and the native build (`smartmodule-engine: native`) emit the same bytes:
/// every record's key, value and offset, for a batch as the engine sees it.
fn assert_byte_identical(params: &[(&str, &str)], batch: &[Message], what: &str) {
    let mut chain = chain(params).unwrap();
    let wasm = run(&mut chain, batch);
    let native: Vec<(Option<Vec<u8>>, Vec<u8>, i64)> = native(params, batch)
        .into_iter()
        .map(|(i, json)| (batch[i].key.clone(), json, BASE_OFFSET + i as i64))
        .collect();
    assert_eq!(wasm.len(), native.len(), "{what}: record counts differ");
    for (w, n) in wasm.iter().zip(&native) {
        assert!(
            w == n,
            "{what}: at offset {} the .wasm emitted {} and the native build {}",
            w.2,
            String::from_utf8_lossy(&w.1),
            String::from_utf8_lossy(&n.1)
        );
    }
}

#[test]
fn the_native_build_is_byte_identical_to_the_wasm_on_the_fixtures_and_bad_records() {
    let batch = mixed_batch();
    assert_byte_identical(&[], &batch, "default params");
    assert_byte_identical(
        &[
            ("key_columns", "public.events:event_id"),
            ("operations", "c,u,d,r,m"),
            ("on_error", "drop"),
        ],
        &batch,
        "every op, errors dropped",
    );
}

#[test]
fn the_native_build_is_byte_identical_to_the_wasm_on_generated_streams() {
    use testkit::stream::{write_stream, Shape, Spec};
    for (shape, wrapper, two_column_key) in [
        (Shape::Products, true, false),
        (Shape::Items, true, true),
        (Shape::Wide, false, false),
    ] {
        let spec = Spec {
            events: 3_000,
            keys: 400,
            shape,
            wrapper,
            two_column_key,
            bad_every: Some(101),
            ..Spec::default()
        };
        let mut batch = Vec::new();
        write_stream(&spec, |_, key, value| {
            batch.push(Message {
                name: String::new(),
                key: Some(key.to_vec()),
                value: value.unwrap_or_default().to_vec(),
            });
            Ok(())
        })
        .unwrap();
        // one instance and one native transformer over the whole stream, chunk by chunk
        let mut chain = chain(&[]).unwrap();
        let mut transformer = Transformer::new(Settings::default());
        for (n, chunk) in batch.chunks(1_000).enumerate() {
            let wasm = run(&mut chain, chunk);
            let native: Vec<(Option<Vec<u8>>, Vec<u8>, i64)> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let offset = BASE_OFFSET + i as i64;
                    transformer
                        .process_to_json(m.key.as_deref(), &m.value, Some(offset))
                        .map(|json| (m.key.clone(), json, offset))
                })
                .collect();
            assert!(wasm == native, "{shape:?}, chunk {n}: the builds differ");
        }
    }
}

proptest::proptest! {
    /// Random byte mutations of the fixtures (flips, cuts, insertions): whatever the bytes,
    /// the two builds agree on them byte for byte, errors included.
    #[test]
    fn the_native_build_is_byte_identical_to_the_wasm_on_mutated_messages(
        pick in 0usize..64,
        edits in proptest::collection::vec((0usize..4096, 0u8..=255, 0u8..3), 1..6),
    ) {
        let names = fixture_names().unwrap();
        let mut m = fixture(&names[pick % names.len()]).unwrap();
        for (at, byte, kind) in edits {
            let at = at % (m.value.len() + 1);
            match kind {
                0 if at < m.value.len() => m.value[at] = byte,
                1 => m.value.insert(at, byte),
                _ => m.value.truncate(at),
            }
        }
        BOTH.with(|both| {
            let (chain, transformer) = &mut *both.borrow_mut();
            let wasm = run(chain, std::slice::from_ref(&m));
            let native: Vec<(Option<Vec<u8>>, Vec<u8>, i64)> = transformer
                .process_to_json(m.key.as_deref(), &m.value, Some(BASE_OFFSET))
                .map(|json| (m.key.clone(), json, BASE_OFFSET))
                .into_iter()
                .collect();
            proptest::prop_assert_eq!(wasm, native);
            Ok(())
        })?;
    }
}

thread_local! {
    /// One `.wasm` instance and one native transformer for every case, side by side: the
    /// only state an output carries from earlier records is the counts of those dropped,
    /// and both see the same records in the same order.
    static BOTH: std::cell::RefCell<(SmartModuleChainInstance, Transformer)> =
        std::cell::RefCell::new((chain(&[]).unwrap(), Transformer::new(Settings::default())));
}
