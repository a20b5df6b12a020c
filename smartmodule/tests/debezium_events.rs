//! The parser on Debezium PostgreSQL events shaped as in Debezium's documentation
//! (`tests/fixtures/debezium`: one Kafka message per file, `{"key":…, "value":…}`).

use debezium_cdc::params::Settings;
use debezium_cdc::record::{CdcRecord, ChangeRecord, ColumnType, ErrorRecord, Op, Original};
use debezium_cdc::Transformer;
use serde_json::{json, Value};

fn fixture(name: &str) -> (Option<Vec<u8>>, Vec<u8>) {
    let path = format!(
        "{}/../tests/fixtures/debezium/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let msg: Value = serde_json::from_str(&text).unwrap();
    let key = match &msg["key"] {
        Value::Null => None,
        k => Some(serde_json::to_vec(k).unwrap()),
    };
    let value = match &msg["value"] {
        Value::Null => Vec::new(),
        v => serde_json::to_vec(v).unwrap(),
    };
    (key, value)
}

fn transformer(params: &[(&str, &str)]) -> Transformer {
    Transformer::new(Settings::from_params(params.iter().copied()).unwrap())
}

fn run(t: &mut Transformer, name: &str) -> Option<CdcRecord> {
    let (key, value) = fixture(name);
    let out = t.process(key.as_deref(), &value, Some(10))?;
    // what leaves the SmartModule is JSON; it must read back to the same record
    let json = debezium_cdc::to_json(&out);
    let back: CdcRecord = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, out);
    Some(out)
}

fn change(t: &mut Transformer, name: &str) -> ChangeRecord {
    match run(t, name) {
        Some(CdcRecord::Change(c)) => *c,
        other => panic!("{name}: expected a change, got {other:?}"),
    }
}

fn error(t: &mut Transformer, name: &str) -> ErrorRecord {
    match run(t, name) {
        Some(CdcRecord::Error(e)) => e,
        other => panic!("{name}: expected an error record, got {other:?}"),
    }
}

fn obj(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn create_with_schema() {
    let c = change(&mut transformer(&[]), "customers-create");
    assert_eq!(c.op, Op::Create);
    assert_eq!(c.source.db.as_deref(), Some("postgres"));
    assert_eq!(c.source.schema.as_deref(), Some("public"));
    assert_eq!(c.source.table.as_deref(), Some("customers"));
    assert_eq!(c.source.connector.as_deref(), Some("postgresql"));
    assert_eq!(c.key, obj(json!({"id": 1})));
    assert_eq!(c.before, None);
    assert_eq!(
        c.after,
        Some(obj(
            json!({"id":1,"first_name":"Anne","last_name":"Kretchmar","email":"annek@noanswer.org"})
        ))
    );
    assert_eq!(c.position.lsn, Some(24023128));
    assert_eq!(c.position.tx_id, Some(555));
    assert_eq!(
        c.position.sequence,
        Some(vec![Some("24023119".into()), Some("24023128".into())])
    );
    assert_eq!(c.position.ts_ms, Some(1559033904863));
    assert_eq!(c.position.ts_us, Some(1559033904863000));
    assert_eq!(c.position.event_ts_ms, Some(1559033904863));
    assert_eq!(c.position.snapshot.as_deref(), Some("false"));
    assert_eq!(c.position.offset, Some(10));
    let cols = c.columns.unwrap();
    let names: Vec<_> = cols.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "first_name", "last_name", "email"]);
    assert_eq!(cols[0].ty, ColumnType::Int);
    assert!(!cols[0].optional);
    assert_eq!(cols[1].ty, ColumnType::String);
}

#[test]
fn every_row_op() {
    let mut t = transformer(&[]);
    let r = change(&mut t, "customers-read");
    assert_eq!(
        (r.op, r.position.snapshot.as_deref()),
        (Op::Read, Some("true"))
    );
    let u = change(&mut t, "customers-update");
    assert_eq!(u.op, Op::Update);
    assert_eq!(u.after.unwrap()["first_name"], json!("Anne Marie"));
    let d = change(&mut t, "customers-delete");
    assert_eq!(d.op, Op::Delete);
    assert_eq!(d.after, None);
    assert_eq!(d.before.unwrap()["first_name"], json!("Anne Marie"));
    assert_eq!(d.key, obj(json!({"id": 1})));
}

#[test]
fn schemaless_events() {
    let mut t = transformer(&[]);
    let c = change(&mut t, "customers-create-schemaless");
    assert_eq!((c.op, c.key.clone()), (Op::Create, obj(json!({"id": 2}))));
    assert_eq!(c.columns, None);
    assert_eq!(c.after.unwrap()["email"], json!("annek@noanswer.org"));
    let u = change(&mut t, "customers-update-schemaless");
    assert_eq!(u.before.unwrap()["email"], json!("annek@noanswer.org"));
    assert_eq!(u.after.unwrap()["email"], json!("anne@example.com"));
    let d = change(&mut t, "customers-delete-schemaless");
    assert_eq!((d.op, d.key), (Op::Delete, obj(json!({"id": 2}))));
}

#[test]
fn logical_types_are_normalized_and_typed() {
    let c = change(&mut transformer(&[]), "all_types-create");
    let after = c.after.unwrap();
    assert_eq!(after["price"], json!("123.45"));
    assert_eq!(after["amount"], json!("-98.765"));
    assert_eq!(after["born"], json!("2024-01-01"));
    assert_eq!(after["alarm"], json!("12:34:56.789012"));
    assert_eq!(after["created"], json!("2024-01-01T00:00:00.123456"));
    assert_eq!(after["updated"], json!("2024-01-01T10:00:00.500000Z"));
    assert_eq!(after["uid"], json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(
        after["attrs"],
        json!("{\"color\": \"red\", \"size\": [1, 2]}")
    );
    assert_eq!(after["photo"], json!("iVBORw0K"));
    assert_eq!(after["tags"], json!(["new", "sale"]));
    assert_eq!(after["mood"], json!("happy"));
    assert_eq!(c.key, obj(json!({"id": 42})));
    assert_eq!(c.source.schema.as_deref(), Some("inventory"));
    let types: Vec<(String, ColumnType)> = c
        .columns
        .unwrap()
        .iter()
        .map(|c| (c.name.clone(), c.ty.clone()))
        .collect();
    let expect = |name: &str| types.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(expect("id"), ColumnType::Long);
    assert_eq!(
        expect("price"),
        ColumnType::Decimal {
            precision: Some(10),
            scale: Some(2)
        }
    );
    assert_eq!(
        expect("amount"),
        ColumnType::Decimal {
            precision: None,
            scale: None
        }
    );
    assert_eq!(expect("born"), ColumnType::Date);
    assert_eq!(expect("alarm"), ColumnType::Time);
    assert_eq!(expect("created"), ColumnType::Timestamp);
    assert_eq!(expect("updated"), ColumnType::Timestamptz);
    assert_eq!(expect("uid"), ColumnType::Uuid);
    assert_eq!(expect("attrs"), ColumnType::Json);
    assert_eq!(expect("photo"), ColumnType::Binary);
    assert!(matches!(expect("tags"), ColumnType::List { .. }));
    assert_eq!(expect("happy"), ColumnType::Boolean);
    assert_eq!(expect("ratio"), ColumnType::Double);
    assert_eq!(expect("small"), ColumnType::Int);
    assert_eq!(expect("score"), ColumnType::Float);
    assert_eq!(expect("mood"), ColumnType::String);
}

#[test]
fn unchanged_toast_columns_are_marked_not_written() {
    let c = change(&mut transformer(&[]), "all_types-update-toast");
    let after = c.after.unwrap();
    assert_eq!(c.unchanged, ["photo", "tags", "notes"]);
    for col in &c.unchanged {
        assert!(!after.contains_key(col), "{col} still in after");
    }
    assert_eq!(after["price"], json!("0.99"));
    let text = String::from_utf8(debezium_cdc::to_json(&CdcRecord::Change(Box::new(
        ChangeRecord {
            after: Some(after),
            ..change(&mut transformer(&[]), "all_types-update-toast")
        },
    ))))
    .unwrap();
    assert!(!text.contains("__debezium_unavailable_value"));
}

#[test]
fn custom_toast_placeholder() {
    let (key, value) = fixture("all_types-update-toast");
    let value = String::from_utf8(value)
        .unwrap()
        .replace("__debezium_unavailable_value", "~~unavailable~~");
    let mut t = transformer(&[("toast_placeholder", "~~unavailable~~")]);
    match t.process(key.as_deref(), value.as_bytes(), None) {
        Some(CdcRecord::Change(c)) => assert_eq!(c.unchanged, ["tags", "notes"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn composite_keys_keep_their_order() {
    let c = change(&mut transformer(&[]), "order_lines-create");
    let key: Vec<_> = c.key.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(
        key,
        [
            ("order_id".to_owned(), json!(7)),
            ("line_no".to_owned(), json!(2))
        ]
    );
}

#[test]
fn key_from_configured_columns_when_no_record_key() {
    let e = error(&mut transformer(&[]), "events_nokey-create");
    assert!(e.reason.contains("no primary key"), "{}", e.reason);
    assert!(e.reason.contains("public.events"), "{}", e.reason);
    let c = change(
        &mut transformer(&[("key_columns", "public.events:event_id")]),
        "events_nokey-create",
    );
    assert_eq!(c.key, obj(json!({"event_id": "e-1"})));
    let e = error(
        &mut transformer(&[("key_columns", "missing_col")]),
        "events_nokey-create",
    );
    assert!(e.reason.contains("`missing_col`"), "{}", e.reason);
}

#[test]
fn truncate_per_parameter() {
    let c = change(&mut transformer(&[]), "customers-truncate");
    assert_eq!(c.op, Op::Truncate);
    assert!(c.key.is_empty());
    assert_eq!(c.source.table.as_deref(), Some("customers"));
    let mut t = transformer(&[("truncate", "drop")]);
    assert!(run(&mut t, "customers-truncate").is_none());
    let next = change(&mut t, "customers-create");
    assert_eq!(next.dropped.get("truncate"), Some(&1));
    let e = error(
        &mut transformer(&[("truncate", "error")]),
        "customers-truncate",
    );
    assert!(
        e.reason.contains("truncate of `public.customers`"),
        "{}",
        e.reason
    );
}

#[test]
fn logical_messages_only_when_asked() {
    let mut t = transformer(&[]);
    assert!(run(&mut t, "message").is_none());
    let c = change(&mut transformer(&[("operations", "c,u,d,r,m")]), "message");
    assert_eq!(c.op, Op::Message);
    let m = c.message.unwrap();
    assert_eq!(m.prefix.as_deref(), Some("audit"));
    assert_eq!(m.content.as_deref(), Some("aGVsbG8="));
}

#[test]
fn control_events_are_dropped_and_counted() {
    let mut t = transformer(&[]);
    for name in [
        "transaction-begin",
        "transaction-end",
        "heartbeat",
        "customers-tombstone",
    ] {
        assert!(run(&mut t, name).is_none(), "{name}");
    }
    // {"schema":null,"payload":null} is a tombstone too
    assert!(t
        .process(None, br#"{"schema":null,"payload":null}"#, None)
        .is_none());
    assert!(t.process(None, b"null", None).is_none());
    let c = change(&mut t, "customers-create");
    assert_eq!(c.dropped.get("transaction"), Some(&2));
    assert_eq!(c.dropped.get("heartbeat"), Some(&1));
    assert_eq!(c.dropped.get("tombstone"), Some(&3));
    // counts are reported once
    assert!(change(&mut t, "customers-create").dropped.is_empty());
}

#[test]
fn operation_and_table_filters() {
    let mut t = transformer(&[("operations", "c,u")]);
    assert!(run(&mut t, "customers-delete").is_none());
    assert!(run(&mut t, "customers-read").is_none());
    assert_eq!(
        change(&mut t, "customers-update").dropped.get("filtered"),
        Some(&2)
    );

    let mut t = transformer(&[("include", "inventory.*")]);
    assert!(run(&mut t, "customers-create").is_none());
    assert_eq!(change(&mut t, "all_types-create").op, Op::Create);

    let mut t = transformer(&[("exclude", "public.customers")]);
    assert!(run(&mut t, "customers-create").is_none());
    assert!(run(&mut t, "customers-truncate").is_none());
    assert_eq!(change(&mut t, "order_lines-create").op, Op::Create);

    let mut t = transformer(&[("include", "postgres.public.*")]);
    assert_eq!(change(&mut t, "customers-create").op, Op::Create);
}

#[test]
fn flattened_records() {
    let mut t = transformer(&[]);
    let u = change(&mut t, "flattened-update");
    assert_eq!(u.op, Op::Update);
    assert_eq!(u.source.table.as_deref(), Some("customers"));
    assert_eq!(u.position.lsn, Some(33000000));
    assert_eq!(u.position.ts_ms, Some(1704067800000));
    let after = u.after.unwrap();
    assert!(after.keys().all(|k| !k.starts_with("__")));
    assert_eq!(after["id"], json!(3));
    let names: Vec<_> = u.columns.unwrap().iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["id", "first_name", "last_name", "email"]);
    let d = change(&mut t, "flattened-delete");
    assert_eq!((d.op, d.key), (Op::Delete, obj(json!({"id": 3}))));
    assert!(d.after.is_none());
    // a bare row is not recognizable without `format=flattened`
    let e = error(&mut t, "flattened-plain");
    assert!(
        e.reason.contains("not a Debezium change event"),
        "{}",
        e.reason
    );
    let p = change(
        &mut transformer(&[("format", "flattened")]),
        "flattened-plain",
    );
    assert_eq!((p.op, p.key), (Op::Update, obj(json!({"id": 4}))));
}

#[test]
fn flattened_table_from_schema_name() {
    let (key, value) = fixture("flattened-update");
    let mut v: Value = serde_json::from_slice(&value).unwrap();
    for k in ["__db", "__schema", "__table"] {
        v["payload"].as_object_mut().unwrap().remove(k);
    }
    let mut t = transformer(&[]);
    match t.process(key.as_deref(), &serde_json::to_vec(&v).unwrap(), None) {
        Some(CdcRecord::Change(c)) => {
            assert_eq!(c.source.schema.as_deref(), Some("public"));
            assert_eq!(c.source.table.as_deref(), Some("customers"));
        }
        other => panic!("{other:?}"),
    }
}

/// Every kind of bad input becomes an error record carrying the reason and the original
/// bytes, and the transformer keeps working afterwards.
#[test]
fn bad_records_become_error_records() {
    let (key, good) = fixture("customers-create");
    let good_text = String::from_utf8(good.clone()).unwrap();
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    let mut missing_after = v.clone();
    missing_after["payload"]["after"] = Value::Null;
    let mut unknown_op = v.clone();
    unknown_op["payload"]["op"] = json!("x");
    let (_, types) = fixture("all_types-create");
    let mut bad_decimal: Value = serde_json::from_slice(&types).unwrap();
    bad_decimal["payload"]["after"]["price"] = json!("%%%not-base64");
    let mut bad_type = v.clone();
    bad_type["payload"]["after"]["id"] = json!("one");
    v["payload"]["source"]["lsn"] = json!("soon");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not valid JSON"),
        (good[..good.len() / 2].to_vec(), "not valid JSON"),
        (b"[1,2,3]".to_vec(), "not a JSON object"),
        (b"\"text\"".to_vec(), "not a JSON object"),
        (b"{\"hello\":1}".to_vec(), "not a Debezium change event"),
        (
            serde_json::to_vec(&missing_after).unwrap(),
            "without an `after`",
        ),
        (
            serde_json::to_vec(&unknown_op).unwrap(),
            "unknown operation `x`",
        ),
        (serde_json::to_vec(&bad_decimal).unwrap(), "invalid base64"),
        (serde_json::to_vec(&bad_type).unwrap(), "column `id`"),
        (serde_json::to_vec(&v).unwrap(), "source.lsn"),
        (vec![0xff, 0xfe, 0x00, 0x01], "not valid JSON"),
    ];
    let mut t = transformer(&[]);
    for (value, expected) in cases {
        match t.process(key.as_deref(), &value, Some(99)) {
            Some(CdcRecord::Error(e)) => {
                assert!(
                    e.reason.contains(expected),
                    "{expected:?} not in {:?}",
                    e.reason
                );
                assert_eq!(e.offset, Some(99));
                assert_eq!(e.value.to_bytes().unwrap(), value, "original bytes kept");
                assert_eq!(e.key.unwrap().to_bytes().unwrap(), key.clone().unwrap());
            }
            other => panic!("{expected}: {other:?}"),
        }
        // still healthy
        assert!(matches!(
            t.process(key.as_deref(), good_text.as_bytes(), None),
            Some(CdcRecord::Change(_))
        ));
    }
    // binary garbage is kept as base64
    match t.process(None, &[0xff, 0xfe], None) {
        Some(CdcRecord::Error(e)) => assert!(matches!(e.value, Original::Base64(_))),
        other => panic!("{other:?}"),
    }
    // a bad key
    match t.process(Some(b"{key"), &good, None) {
        Some(CdcRecord::Error(e)) => assert!(e.reason.contains("key is not valid JSON")),
        other => panic!("{other:?}"),
    }
    match t.process(Some(b"17"), &good, None) {
        Some(CdcRecord::Error(e)) => {
            assert!(e.reason.contains("not a JSON object"), "{}", e.reason)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_records_can_be_dropped_and_counted() {
    let mut t = transformer(&[("on_error", "drop")]);
    assert!(t.process(None, b"{not json", None).is_none());
    assert!(t.process(None, b"[]", None).is_none());
    assert_eq!(
        change(&mut t, "customers-create").dropped.get("error"),
        Some(&2)
    );
}

#[test]
fn ten_megabyte_values() {
    let mut t = transformer(&[]);
    // a valid event with a 10 MB text column
    let (key, value) = fixture("customers-create");
    let mut v: Value = serde_json::from_slice(&value).unwrap();
    let big = "x".repeat(10 * 1024 * 1024);
    v["payload"]["after"]["email"] = json!(big);
    match t.process(key.as_deref(), &serde_json::to_vec(&v).unwrap(), None) {
        Some(CdcRecord::Change(c)) => {
            assert_eq!(c.after.unwrap()["email"].as_str().unwrap().len(), big.len())
        }
        other => panic!("{other:?}"),
    }
    // 10 MB of garbage
    let garbage = vec![b'{'; 10 * 1024 * 1024];
    match t.process(None, &garbage, None) {
        Some(CdcRecord::Error(e)) => assert_eq!(e.value.to_bytes().unwrap().len(), garbage.len()),
        other => panic!("{other:?}"),
    }
}

/// The same message spelled so that the fast wrapper split refuses it (a member name with
/// an escape), making the parser read it as one JSON tree.
fn spelled_slowly(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.replacen(r#"{"schema":"#, r#"{"sch\u0065ma":"#, 1)
        .into_bytes()
}

#[test]
fn a_schema_read_again_from_the_cache_or_read_as_a_tree_gives_the_same_record() {
    let dir = format!("{}/../tests/fixtures/debezium", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    names.sort();
    let mut wrapped = 0;
    for name in &names {
        let (key, value) = fixture(name);
        let mut cached = transformer(&[]);
        let first = cached.process(key.as_deref(), &value, Some(7));
        let again = cached.process(key.as_deref(), &value, Some(7));
        assert_eq!(
            first, again,
            "{name}: the cached schema gave another record"
        );
        let slow_value = spelled_slowly(&value);
        let slow_key = key.as_deref().map(spelled_slowly);
        if slow_value != value {
            wrapped += 1;
        }
        let slow = transformer(&[]).process(slow_key.as_deref(), &slow_value, Some(7));
        assert_eq!(first, slow, "{name}: the tree read gave another record");
    }
    assert!(wrapped >= 10, "only {wrapped} fixtures carry a schema");
}
