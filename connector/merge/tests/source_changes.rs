//! What real sources do to a table, on a real SQLite catalog and local warehouse, read back by
//! PyIceberg and DuckDB: composite primary keys of mixed types (their Debezium key struct in
//! another order than the table's columns) across reopens, a lost compare-and-swap and
//! compaction; and the source's schema changing under the stream (columns added and dropped,
//! widened, made optional; changes Iceberg cannot evolve).

use debezium_cdc::record::{
    ChangeRecord, Column, ColumnType, Op, Position, SourceTable, CONTRACT_VERSION,
};
use iceberg::TableIdent;
use iceberg_cdc_merge::maintenance::compaction::CompactionPolicy;
use iceberg_cdc_merge::table::reconcile::SchemaChanges;
use iceberg_cdc_merge::{Applied, Catalog, CatalogConfig, CdcTable, MergeError, TableOptions};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

mod support;
use support::{read_with_python, sqlite_catalog};
use testkit::changes::col;
use testkit::Lcg;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn record(
    table: &str,
    op: Op,
    key: Map<String, Value>,
    after: Option<Map<String, Value>>,
    lsn: u64,
    columns: &[Column],
) -> ChangeRecord {
    ChangeRecord {
        v: CONTRACT_VERSION,
        op,
        source: SourceTable {
            schema: Some("public".into()),
            table: Some(table.into()),
            ..SourceTable::default()
        },
        key,
        before: None,
        after,
        unchanged: Vec::new(),
        position: Position {
            lsn: Some(lsn),
            ts_ms: Some(1_700_000_000_000),
            ..Position::default()
        },
        columns: Some(std::sync::Arc::new(columns.to_vec())),
        message: None,
        dropped: Default::default(),
    }
}

/// Rows by their key's JSON (key columns in `key` order).
type Rows = BTreeMap<String, Map<String, Value>>;

fn keyed(rows: &Value, key: &[&str]) -> Rows {
    let mut out = Rows::new();
    for r in rows.as_array().expect("rows") {
        let r = r.as_object().expect("row").clone();
        let k = Value::Array(key.iter().map(|c| r[*c].clone()).collect()).to_string();
        assert!(out.insert(k.clone(), r).is_none(), "key {k} appears twice");
    }
    out
}

fn assert_readers(
    config: &CatalogConfig,
    table: &str,
    columns: &[&str],
    key: &[&str],
    model: &Rows,
    when: &str,
) {
    let v = read_with_python(config, table, columns);
    assert_eq!(&keyed(&v["pyiceberg"], key), model, "PyIceberg, {when}");
    assert_eq!(&keyed(&v["duckdb"], key), model, "DuckDB, {when}");
}

/// A composite key: its columns in table order, the order Debezium's key struct lists them
/// in, and a value for each from a key number.
struct KeyShape {
    table: &'static str,
    columns: Vec<Column>,
    key_struct: &'static [&'static str],
    key_of: fn(u64) -> Map<String, Value>,
}

fn two_columns() -> KeyShape {
    KeyShape {
        table: "order_lines",
        // the key is (shop, line), its struct says (line, shop), the table has line last
        columns: vec![
            col("shop", ColumnType::String, false),
            col("note", ColumnType::String, true),
            col("qty", ColumnType::Int, true),
            col("line", ColumnType::Int, false),
        ],
        key_struct: &["line", "shop"],
        key_of: |n| obj(json!({"line": (n % 37) as i64, "shop": format!("shop-{}", n / 37)})),
    }
}

fn three_columns() -> KeyShape {
    KeyShape {
        table: "visits",
        columns: vec![
            col("day", ColumnType::Date, false),
            col("note", ColumnType::String, true),
            col("qty", ColumnType::Int, true),
            col("visitor", ColumnType::Uuid, false),
            col("seq", ColumnType::Long, false),
        ],
        key_struct: &["visitor", "seq", "day"],
        key_of: |n| {
            // a UUID sent in upper case half of the time: the same key either way
            let u = format!("{:08x}-0000-4000-8000-{:012x}", n % 11, n % 13);
            let u = if n % 2 == 0 { u.to_uppercase() } else { u };
            obj(
                json!({"visitor": u, "seq": (n % 7) as i64 * 1_000_000_000_000,
                       "day": format!("2024-0{}-1{}", 1 + n % 6, n % 10)}),
            )
        },
    }
}

fn canonical_key(shape: &KeyShape, key: &Map<String, Value>) -> String {
    let names: Vec<&str> = key_columns_in_table_order(shape);
    Value::Array(
        names
            .iter()
            .map(|c| match &key[*c] {
                Value::String(s) if *c == "visitor" => json!(s.to_lowercase()),
                v => v.clone(),
            })
            .collect(),
    )
    .to_string()
}

fn key_columns_in_table_order(shape: &KeyShape) -> Vec<&str> {
    shape
        .columns
        .iter()
        .filter(|c| shape.key_struct.contains(&c.name.as_str()))
        .map(|c| c.name.as_str())
        .collect()
}

/// Random creates, updates and deletes over `keys` composite keys; the model follows.
fn batch(
    shape: &KeyShape,
    rng: &mut Lcg,
    model: &mut Rows,
    lsn: &mut u64,
    keys: u64,
) -> Vec<ChangeRecord> {
    let n = 1 + rng.below(300);
    let mut out = Vec::new();
    for _ in 0..n {
        *lsn += 10;
        let k = rng.below(keys);
        let sent = (shape.key_of)(k);
        // Debezium's key struct order
        let key: Map<String, Value> = shape
            .key_struct
            .iter()
            .map(|c| ((*c).to_owned(), sent[*c].clone()))
            .collect();
        let id = canonical_key(shape, &key);
        if rng.below(5) == 0 {
            out.push(record(
                shape.table,
                Op::Delete,
                key,
                None,
                *lsn,
                &shape.columns,
            ));
            model.remove(&id);
        } else {
            let mut row = Map::new();
            for c in &shape.columns {
                let v = match c.name.as_str() {
                    "note" => json!(format!("n{}", rng.below(1000))),
                    "qty" => json!(rng.below(500) as i64),
                    name => sent[name].clone(),
                };
                row.insert(c.name.clone(), v);
            }
            let op = if model.contains_key(&id) {
                Op::Update
            } else {
                Op::Create
            };
            out.push(record(
                shape.table,
                op,
                key,
                Some(row.clone()),
                *lsn,
                &shape.columns,
            ));
            if let Some(Value::String(u)) = row.get_mut("visitor") {
                *u = u.to_lowercase();
            }
            model.insert(id, row);
        }
    }
    out
}

fn options() -> TableOptions {
    TableOptions {
        partitioning: Some(iceberg_cdc_merge::schema::Partitioning::None),
        ..TableOptions::default()
    }
}

async fn composite_keys_survive_everything(shape: KeyShape, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let catalog = Catalog::connect(&config).await.unwrap();
    let ident = TableIdent::from_strs(["public", shape.table]).unwrap();
    let name = format!("public.{}", shape.table);
    let columns: Vec<&str> = shape.columns.iter().map(|c| c.name.as_str()).collect();
    let key = key_columns_in_table_order(&shape);
    let mut rng = Lcg(seed);
    let mut model = Rows::new();
    let mut lsn = 1000;
    let first = batch(&shape, &mut rng, &mut model, &mut lsn, 400);
    let mut table = CdcTable::create(&catalog, &ident, &first[0], options())
        .await
        .unwrap();
    table.apply(&catalog, &first, HashMap::new()).await.unwrap();
    for round in 0..16 {
        let records = batch(&shape, &mut rng, &mut model, &mut lsn, 400);
        match round % 4 {
            // a restart: the index is rebuilt from the data files
            0 => {
                table = CdcTable::open(&catalog, &ident, options())
                    .await
                    .unwrap()
                    .unwrap();
                table
                    .apply(&catalog, &records, HashMap::new())
                    .await
                    .unwrap();
            }
            // another handle commits first: ours loses the compare-and-swap and reloads
            1 => {
                let mut other = CdcTable::open(&catalog, &ident, options())
                    .await
                    .unwrap()
                    .unwrap();
                let (head, tail) = records.split_at(records.len() / 2);
                other.apply(&catalog, head, HashMap::new()).await.unwrap();
                let applied = table.apply(&catalog, tail, HashMap::new()).await.unwrap();
                assert_eq!(applied.conflicts, 1, "round {round}");
            }
            // compaction moves the index along
            2 => {
                table
                    .apply(&catalog, &records, HashMap::new())
                    .await
                    .unwrap();
                let policy = CompactionPolicy {
                    min_input_files: 2,
                    ..CompactionPolicy::default()
                };
                table.compact(&catalog, &policy).await.unwrap();
            }
            _ => {
                table
                    .apply(&catalog, &records, HashMap::new())
                    .await
                    .unwrap();
            }
        }
        assert_eq!(
            table.index().live_len(),
            model.len(),
            "index after round {round}"
        );
        assert_readers(
            &config,
            &name,
            &columns,
            &key,
            &model,
            &format!("after round {round}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_column_text_and_integer_keys_stay_exact_across_restarts_reloads_and_compaction() {
    composite_keys_survive_everything(two_columns(), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_column_uuid_long_and_date_keys_stay_exact_across_restarts_reloads_and_compaction() {
    composite_keys_survive_everything(three_columns(), 5).await;
}

// ---- schema evolution -------------------------------------------------------------------

fn items_columns() -> Vec<Column> {
    vec![
        col("id", ColumnType::Int, false),
        col("name", ColumnType::String, false),
        col("code", ColumnType::String, false),
        col("qty", ColumnType::Int, true),
        col(
            "price",
            ColumnType::Decimal {
                precision: Some(8),
                scale: Some(2),
            },
            true,
        ),
        col("ratio", ColumnType::Float, true),
    ]
}

fn item(id: i64, v: Value) -> Map<String, Value> {
    let mut m = obj(v);
    m.insert("id".into(), json!(id));
    m
}

struct Items {
    catalog: Catalog,
    config: CatalogConfig,
    table: CdcTable,
    lsn: u64,
    _dir: tempfile::TempDir,
}

impl Items {
    async fn new(policy: SchemaChanges) -> Items {
        let dir = tempfile::tempdir().unwrap();
        let config = sqlite_catalog(dir.path());
        let catalog = Catalog::connect(&config).await.unwrap();
        let ident = TableIdent::from_strs(["public", "items"]).unwrap();
        let options = TableOptions {
            schema_changes: policy,
            ..options()
        };
        let cols = items_columns();
        let rows = [
            item(
                1,
                json!({"name": "a", "code": "A", "qty": 1, "price": "1.50", "ratio": 0.5}),
            ),
            item(
                2,
                json!({"name": "b", "code": "B", "qty": 2, "price": "2.50", "ratio": 1.5}),
            ),
        ];
        let first: Vec<ChangeRecord> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                record(
                    "items",
                    Op::Read,
                    item(i as i64 + 1, json!({})),
                    Some(r.clone()),
                    10 + i as u64,
                    &cols,
                )
            })
            .collect();
        let mut table = CdcTable::create(&catalog, &ident, &first[0], options)
            .await
            .unwrap();
        for r in &first {
            table.check(r).unwrap();
        }
        table.apply(&catalog, &first, HashMap::new()).await.unwrap();
        Items {
            catalog,
            config,
            table,
            lsn: 100,
            _dir: dir,
        }
    }

    fn change(
        &mut self,
        op: Op,
        id: i64,
        after: Option<Value>,
        columns: &[Column],
    ) -> ChangeRecord {
        self.lsn += 10;
        let key = obj(json!({"id": id}));
        record(
            "items",
            op,
            key,
            after.map(|a| item(id, a)),
            self.lsn,
            columns,
        )
    }

    /// Checks and applies, as the connector does; the checks' errors come back.
    async fn apply(&mut self, records: &[ChangeRecord]) -> Result<(), MergeError> {
        self.applied(records).await.map(|_| ())
    }

    async fn applied(&mut self, records: &[ChangeRecord]) -> Result<Applied, MergeError> {
        for r in records {
            self.table.check(r)?;
        }
        self.table
            .apply(&self.catalog, records, HashMap::new())
            .await
    }

    /// What PyIceberg and DuckDB read (they must agree), by id.
    fn read(&self, columns: &[&str]) -> Value {
        let v = read_with_python(&self.config, "public.items", columns);
        let by_id = |rows: &Value| {
            let mut rows = rows.as_array().unwrap().clone();
            rows.sort_by_key(|r| r["id"].as_i64());
            Value::Array(rows)
        };
        assert_eq!(
            by_id(&v["pyiceberg"]),
            by_id(&v["duckdb"]),
            "PyIceberg and DuckDB differ"
        );
        by_id(&v["pyiceberg"])
    }

    fn field(&self, name: &str) -> Option<iceberg::spec::NestedFieldRef> {
        self.table
            .table()
            .metadata()
            .current_schema()
            .field_by_name(name)
            .cloned()
    }
}

fn retyped(columns: &[Column], name: &str, ty: ColumnType) -> Vec<Column> {
    let mut c = columns.to_vec();
    c.iter_mut()
        .filter(|c| c.name == name)
        .for_each(|c| c.ty = ty.clone());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_widened_dropped_and_relaxed_columns_evolve_the_table_in_the_commit_that_needs_them()
{
    let mut t = Items::new(SchemaChanges::Evolve).await;
    let schemas_before = t.table.table().metadata().schemas_iter().count();

    // ALTER TABLE items ADD COLUMN color text (between name and code), mid-batch
    let old = items_columns();
    let mut added = old.clone();
    added.insert(2, col("color", ColumnType::String, true));
    let batch = vec![
        t.change(Op::Update, 1, Some(json!({"name": "a1", "code": "A", "qty": 1, "price": "1.50", "ratio": 0.5})), &old),
        t.change(Op::Create, 3, Some(json!({"name": "c", "color": "red", "code": "C", "qty": 3, "price": "3.50", "ratio": 2.5})), &added),
        t.change(Op::Update, 2, Some(json!({"name": "b", "color": "blue", "code": "B", "qty": 2, "price": "2.50", "ratio": 1.5})), &added),
    ];
    t.apply(&batch).await.unwrap();
    let color = t.field("color").expect("color added");
    assert!(!color.required);
    let names: Vec<String> = t
        .table
        .table()
        .metadata()
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(
        &names[..4],
        ["id", "name", "color", "code"],
        "added where the source has it"
    );
    // the schema change and the data that needs it are one snapshot
    let metadata = t.table.table().metadata();
    assert_eq!(metadata.schemas_iter().count(), schemas_before + 1);
    assert_eq!(
        metadata.current_snapshot().unwrap().schema_id(),
        Some(metadata.current_schema_id())
    );
    assert_eq!(
        t.read(&["id", "name", "color"]),
        json!([{"id": 1, "name": "a1", "color": null}, {"id": 2, "name": "b", "color": "blue"},
               {"id": 3, "name": "c", "color": "red"}])
    );

    // ALTER COLUMN qty TYPE bigint, price TYPE numeric(12,2), ratio TYPE double precision
    let widened = retyped(&added, "qty", ColumnType::Long);
    let widened = retyped(
        &widened,
        "price",
        ColumnType::Decimal {
            precision: Some(12),
            scale: Some(2),
        },
    );
    let widened = retyped(&widened, "ratio", ColumnType::Double);
    let big = 5_000_000_000i64;
    let batch = vec![t.change(Op::Create, 4, Some(json!({"name": "d", "color": null, "code": "D", "qty": big, "price": "1234567890.25", "ratio": 0.1})), &widened)];
    t.apply(&batch).await.unwrap();
    assert_eq!(t.field("qty").unwrap().field_type.to_string(), "long");
    assert_eq!(
        t.field("price").unwrap().field_type.to_string(),
        "decimal(12, 2)"
    );
    assert_eq!(t.field("ratio").unwrap().field_type.to_string(), "double");
    // a replayed event from before the widening still fits (the table keeps the wider type)
    let replay = vec![t.change(Op::Update, 3, Some(json!({"name": "c", "color": "red", "code": "C", "qty": 33, "price": "3.50", "ratio": 2.5})), &added)];
    t.apply(&replay).await.unwrap();
    assert_eq!(t.field("qty").unwrap().field_type.to_string(), "long");
    assert_eq!(
        t.read(&["id", "qty", "price", "ratio"]),
        json!([{"id": 1, "qty": 1, "price": "1.50", "ratio": 0.5}, {"id": 2, "qty": 2, "price": "2.50", "ratio": 1.5},
               {"id": 3, "qty": 33, "price": "3.50", "ratio": 2.5},
               {"id": 4, "qty": big, "price": "1234567890.25", "ratio": 0.1}])
    );

    // ALTER TABLE items DROP COLUMN name (a NOT NULL column): kept, optional, later rows null
    let dropped: Vec<Column> = widened
        .iter()
        .filter(|c| c.name != "name")
        .cloned()
        .collect();
    let batch = vec![
        t.change(
            Op::Update,
            1,
            Some(json!({"color": "green", "code": "A", "qty": 10, "price": "1.00", "ratio": 1.0})),
            &dropped,
        ),
        t.change(
            Op::Create,
            5,
            Some(json!({"color": "white", "code": "E", "qty": 5, "price": "5.00", "ratio": 5.0})),
            &dropped,
        ),
    ];
    t.apply(&batch).await.unwrap();
    assert!(!t.field("name").expect("name kept").required);
    // ALTER TABLE items ALTER COLUMN code DROP NOT NULL
    assert!(t.field("code").unwrap().required);
    let mut relaxed = dropped.clone();
    relaxed
        .iter_mut()
        .filter(|c| c.name == "code")
        .for_each(|c| c.optional = true);
    let batch = vec![t.change(
        Op::Update,
        2,
        Some(json!({"color": null, "code": null, "qty": null, "price": null, "ratio": null})),
        &relaxed,
    )];
    t.apply(&batch).await.unwrap();
    assert!(!t.field("code").unwrap().required);
    assert_eq!(
        t.read(&["id", "name", "color", "code", "qty"]),
        json!([{"id": 1, "name": null, "color": "green", "code": "A", "qty": 10},
               {"id": 2, "name": null, "color": null, "code": null, "qty": null},
               {"id": 3, "name": "c", "color": "red", "code": "C", "qty": 33},
               {"id": 4, "name": "d", "color": null, "code": "D", "qty": big},
               {"id": 5, "name": null, "color": "white", "code": "E", "qty": 5}])
    );

    // the evolved table reopens (index from files of every schema) and compacts (old files
    // read with nulls for the added column and cast up for the widened ones)
    let ident = t.table.table().identifier().clone();
    t.table = CdcTable::open(&t.catalog, &ident, options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.table.index().live_len(), 5);
    let before = t.read(&["id", "name", "color", "code", "qty", "price", "ratio"]);
    let policy = CompactionPolicy {
        min_input_files: 2,
        ..CompactionPolicy::default()
    };
    let report = t.table.compact(&t.catalog, &policy).await.unwrap();
    assert!(report.files_rewritten > 0, "{report}");
    assert_eq!(
        t.read(&["id", "name", "color", "code", "qty", "price", "ratio"]),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_column_left_empty_by_an_unchanged_toast_value_becomes_optional() {
    let mut t = Items::new(SchemaChanges::Evolve).await;
    // an update of a row the table never held, its `name` an unchanged TOAST value
    let mut r = t.change(
        Op::Update,
        9,
        Some(json!({"code": "I", "qty": 9, "price": "9.00", "ratio": 9.0})),
        &items_columns(),
    );
    r.unchanged = vec!["name".into()];
    let applied = t.applied(&[r]).await.unwrap();
    // said, not silent: the sink warns with these keys
    assert_eq!(
        applied.unresolved_unchanged,
        (1, vec!["id=9 (name)".to_owned()])
    );
    assert!(!t.field("name").unwrap().required);
    let rows = t.read(&["id", "name", "qty"]);
    assert_eq!(rows[2], json!({"id": 9, "name": null, "qty": 9}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_iceberg_cannot_evolve_are_table_errors_and_the_policies_hold() {
    let mut t = Items::new(SchemaChanges::Evolve).await;
    let cases: Vec<(&str, Vec<Column>, &str)> = vec![
        (
            "text -> int",
            {
                let mut c = items_columns();
                c[1].ty = ColumnType::Int;
                c
            },
            "column `name` changed from string to int, which Iceberg cannot evolve in place",
        ),
        (
            "a scale change",
            {
                let mut c = items_columns();
                c.iter_mut().filter(|c| c.name == "price").for_each(|c| {
                    c.ty = ColumnType::Decimal {
                        precision: Some(10),
                        scale: Some(3),
                    }
                });
                c
            },
            "column `price` changed from decimal(8, 2) to decimal(10, 3)",
        ),
    ];
    for (what, columns, expected) in cases {
        let r = t.change(
            Op::Create,
            7,
            Some(json!({"name": 1, "code": "G", "qty": 1, "price": "1.000", "ratio": 1.0})),
            &columns,
        );
        match t.table.check(&r) {
            Err(MergeError::Schema {
                context: reason, ..
            }) => {
                assert!(
                    reason.contains("public.items") && reason.contains(expected),
                    "{what}: {reason}"
                )
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // another primary key
    let mut r = t.change(
        Op::Create,
        7,
        Some(json!({"name": "x", "code": "X"})),
        &items_columns(),
    );
    r.key.insert("name".into(), json!("x"));
    match t.table.check(&r) {
        Err(MergeError::Schema {
            context: reason, ..
        }) => assert!(
            reason.contains("the primary key changed from (id) to (id, name)"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }

    // `pause`: any change is the table's error; `dead-letter`: the record's
    let mut added = items_columns();
    added.push(col("color", ColumnType::String, true));
    let mut paused = Items::new(SchemaChanges::Pause).await;
    let r = paused.change(
        Op::Create,
        3,
        Some(json!({"name": "c", "code": "C", "color": "red"})),
        &added,
    );
    assert!(
        matches!(paused.table.check(&r), Err(MergeError::Schema { context: m, .. }) if m.contains("added color"))
    );
    let mut kept = Items::new(SchemaChanges::DeadLetter).await;
    let r = kept.change(
        Op::Create,
        3,
        Some(json!({"name": "c", "code": "C", "color": "red"})),
        &added,
    );
    assert!(matches!(kept.table.check(&r), Err(e @ MergeError::Value { .. }) if e.is_record()));
    // the unchanged schema still flows under both
    let same = kept.change(
        Op::Create,
        4,
        Some(json!({"name": "d", "code": "D", "qty": 4})),
        &items_columns(),
    );
    kept.apply(&[same]).await.unwrap();
    assert_eq!(kept.read(&["id", "name"]).as_array().unwrap().len(), 3);
    assert!(kept.field("color").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_column_types_new_columns_arrive_as_strings() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let catalog = Catalog::connect(&config).await.unwrap();
    let ident = TableIdent::from_strs(["public", "loose"]).unwrap();
    let untyped = |id: i64, after: Value, lsn: u64| {
        let mut r = record(
            "loose",
            Op::Create,
            obj(json!({"id": id})),
            Some(obj(after)),
            lsn,
            &[],
        );
        r.columns = None;
        r
    };
    let first = untyped(1, json!({"id": 1, "name": "a"}), 10);
    let mut table = CdcTable::create(&catalog, &ident, &first, options())
        .await
        .unwrap();
    table
        .apply(&catalog, &[first], HashMap::new())
        .await
        .unwrap();
    let later = untyped(2, json!({"id": 2, "name": "b", "size": 42}), 20);
    table.check(&later).unwrap();
    table
        .apply(&catalog, &[later], HashMap::new())
        .await
        .unwrap();
    let v = read_with_python(&config, "public.loose", &["id", "name", "size"]);
    let mut rows = v["pyiceberg"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["id"].as_str().map(str::to_owned));
    assert_eq!(
        Value::Array(rows),
        json!([{"id": "1", "name": "a", "size": null}, {"id": "2", "name": "b", "size": "42"}])
    );
}

// ---- replays ----------------------------------------------------------------------------

/// A create (`Op::Create`) or delete of `public.items` key `id` at `lsn`.
fn items_change(op: Op, id: i64, lsn: u64) -> ChangeRecord {
    let after = (op != Op::Delete).then(|| item(id, json!({"name": "v1", "code": "X"})));
    record(
        "items",
        op,
        obj(json!({"id": id})),
        after,
        lsn,
        &items_columns(),
    )
}

fn create(id: i64, lsn: u64) -> ChangeRecord {
    items_change(Op::Create, id, lsn)
}

fn delete(id: i64, lsn: u64) -> ChangeRecord {
    items_change(Op::Delete, id, lsn)
}

/// An empty SQLite catalog in `dir` and the `public.items` ident.
async fn items_catalog(dir: &std::path::Path) -> (CatalogConfig, Catalog, TableIdent) {
    let config = sqlite_catalog(dir);
    let catalog = Catalog::connect(&config).await.unwrap();
    (
        config,
        catalog,
        TableIdent::from_strs(["public", "items"]).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_restart_never_brings_a_deleted_row_back() {
    let dir = tempfile::tempdir().unwrap();
    let (config, catalog, ident) = items_catalog(dir.path()).await;
    let mut table = CdcTable::create(&catalog, &ident, &create(1, 10), options())
        .await
        .unwrap();
    table
        .apply(
            &catalog,
            &[create(1, 10), create(2, 11), create(3, 12)],
            HashMap::new(),
        )
        .await
        .unwrap();
    table
        .apply(&catalog, &[delete(1, 20), delete(2, 21)], HashMap::new())
        .await
        .unwrap();
    // the tombstones of this run are also consolidated into one file along the way
    for round in 0..40u64 {
        let id = 100 + round as i64;
        let lsn = 100 + round * 10;
        table
            .apply(
                &catalog,
                &[create(id, lsn), delete(id, lsn + 5)],
                HashMap::new(),
            )
            .await
            .unwrap();
    }
    let listed = iceberg_cdc_merge::table::tombstones::listed(
        table
            .last_summary_with(iceberg_cdc_merge::table::tombstones::TOMBSTONES_KEY)
            .as_ref(),
        table.table().metadata().location(),
    );
    assert!(
        listed.len() < iceberg_cdc_merge::table::tombstones::MAX_FILES,
        "{} files",
        listed.len()
    );

    // a restart, then Debezium re-sends from before the deletes
    for reopen in [true, false] {
        if reopen {
            table = CdcTable::open(&catalog, &ident, options())
                .await
                .unwrap()
                .unwrap();
        }
        let replay = vec![
            create(1, 10),
            create(2, 11),
            create(3, 12),
            create(105, 150),
        ];
        let applied = table
            .apply(&catalog, &replay, HashMap::new())
            .await
            .unwrap();
        assert_eq!(
            applied.stale, 3,
            "the deleted keys' older creates are skipped"
        );
        let v = read_with_python(&config, "public.items", &["id", "name"]);
        for reader in ["pyiceberg", "duckdb"] {
            let mut ids: Vec<i64> = v[reader]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, [3], "{reader}: no deleted row is back");
        }
    }
    // a re-created key is live again, and its newer delete wins after a restart
    table
        .apply(&catalog, &[create(1, 500)], HashMap::new())
        .await
        .unwrap();
    table
        .apply(&catalog, &[delete(1, 600)], HashMap::new())
        .await
        .unwrap();
    let mut table = CdcTable::open(&catalog, &ident, options())
        .await
        .unwrap()
        .unwrap();
    let applied = table
        .apply(&catalog, &[create(1, 550)], HashMap::new())
        .await
        .unwrap();
    assert_eq!(applied.stale, 1);

    // the summary names the files in the table's metadata folder, where they are; orphan
    // removal keeps every tombstone file a snapshot lists
    let summary = table
        .last_summary_with(iceberg_cdc_merge::table::tombstones::TOMBSTONES_KEY)
        .unwrap();
    let list = &summary[iceberg_cdc_merge::table::tombstones::TOMBSTONES_KEY];
    assert!(
        !list.is_empty() && list.split(',').all(|e| !e.contains('/')),
        "{list}"
    );
    let referenced = iceberg_cdc_merge::commit::referenced_files(table.table())
        .await
        .unwrap();
    let location = table.table().metadata().location();
    for path in iceberg_cdc_merge::table::tombstones::listed(Some(&summary), location) {
        assert!(path.starts_with(&format!("{location}/metadata/")), "{path}");
        assert!(
            table.table().file_io().exists(&path).await.unwrap(),
            "{path}"
        );
        assert!(referenced.contains(&path), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_past_the_retention_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, catalog, ident) = items_catalog(dir.path()).await;
    let no_retention = TableOptions {
        tombstone_retention: std::time::Duration::ZERO,
        ..options()
    };
    let mut table = CdcTable::create(&catalog, &ident, &create(1, 10), no_retention.clone())
        .await
        .unwrap();
    table
        .apply(&catalog, &[create(1, 10)], HashMap::new())
        .await
        .unwrap();
    table
        .apply(&catalog, &[delete(1, 20)], HashMap::new())
        .await
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let table = CdcTable::open(&catalog, &ident, no_retention)
        .await
        .unwrap()
        .unwrap();
    assert!(
        table.index().is_empty(),
        "a tombstone past the retention is not loaded"
    );
}

/// Two consumer-group members on one table: the second opened the table before the first
/// deleted a key, then replays the events the first had applied (it started from stale
/// positions). Its commit loses the compare-and-swap and reloads: the reloaded index must know
/// the first member's deletes, or the replayed create brings the row back (the cause of
/// `a_second_member_joins_the_group_mid_stream_then_exactly_once` failing now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_second_writer_replaying_what_the_first_deleted_resurrects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, catalog, ident) = items_catalog(dir.path()).await;
    let mut first = CdcTable::create(&catalog, &ident, &create(1, 10), options())
        .await
        .unwrap();
    first
        .apply(&catalog, &[create(1, 10), create(2, 11)], HashMap::new())
        .await
        .unwrap();
    let mut second = CdcTable::open(&catalog, &ident, options())
        .await
        .unwrap()
        .unwrap();
    first
        .apply(&catalog, &[delete(1, 20)], HashMap::new())
        .await
        .unwrap();
    let applied = second
        .apply(&catalog, &[create(1, 10), create(2, 11)], HashMap::new())
        .await
        .unwrap();
    assert_eq!(applied.conflicts, 1);
    assert_eq!(
        applied.stale, 1,
        "the replayed create of the deleted key is skipped"
    );
    let v = read_with_python(&config, "public.items", &["id"]);
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(v[reader], json!([{"id": 2}]), "{reader}");
    }
}

/// A table made by another tool, with a primary key but none of the CDC columns (no
/// `_cdc_lsn`): routed to, it takes the stream, and a restart rebuilds its index without
/// LSNs (the stored rows' LSNs are unknown, so any change applies to them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_made_elsewhere_without_cdc_columns_takes_the_stream_across_restarts() {
    use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
    let dir = tempfile::tempdir().unwrap();
    let (config, catalog, ident) = items_catalog(dir.path()).await;
    let schema = Schema::builder()
        .with_fields([
            std::sync::Arc::new(NestedField::required(
                1,
                "id",
                Type::Primitive(PrimitiveType::Int),
            )),
            std::sync::Arc::new(NestedField::optional(
                2,
                "name",
                Type::Primitive(PrimitiveType::String),
            )),
            std::sync::Arc::new(NestedField::optional(
                3,
                "code",
                Type::Primitive(PrimitiveType::String),
            )),
        ])
        .with_identifier_field_ids([1])
        .build()
        .unwrap();
    let creation = iceberg::TableCreation::builder()
        .name("items".to_owned())
        .schema(schema)
        .build();
    catalog.create(&ident, creation).await.unwrap();
    let mut table = CdcTable::open(&catalog, &ident, options())
        .await
        .unwrap()
        .unwrap();
    let mut columns = items_columns();
    columns.retain(|c| ["id", "name", "code"].contains(&c.name.as_str()));
    let change = |op: Op, id: i64, lsn: u64| {
        let after =
            (op != Op::Delete).then(|| item(id, json!({"name": format!("n{lsn}"), "code": "X"})));
        record("items", op, obj(json!({"id": id})), after, lsn, &columns)
    };
    let first = [
        change(Op::Create, 1, 10),
        change(Op::Create, 2, 11),
        change(Op::Create, 3, 12),
    ];
    for r in &first {
        table.check(r).unwrap();
    }
    table.apply(&catalog, &first, HashMap::new()).await.unwrap();
    let mut table = CdcTable::open(&catalog, &ident, options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(table.index().live_len(), 3);
    table
        .apply(
            &catalog,
            &[change(Op::Update, 1, 20), change(Op::Delete, 2, 21)],
            HashMap::new(),
        )
        .await
        .unwrap();
    let v = read_with_python(&config, "public.items", &["id", "name"]);
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = v[reader].as_array().unwrap().clone();
        rows.sort_by_key(|r| r["id"].as_i64());
        assert_eq!(
            Value::Array(rows),
            json!([{"id": 1, "name": "n20"}, {"id": 3, "name": "n12"}]),
            "{reader}"
        );
    }
}

/// A SQLite catalog and local warehouse in a directory of their own, and `public.<table>`.
async fn fresh_catalog(table: &str) -> (tempfile::TempDir, CatalogConfig, Catalog, TableIdent) {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let catalog = Catalog::connect(&config).await.unwrap();
    (
        dir,
        config,
        catalog,
        TableIdent::from_strs(["public", table]).unwrap(),
    )
}

/// A long stream writes many small files (one per partition a batch touches): the registry
/// of files the index points into forgets those whose rows were all replaced and reuses their
/// numbers, and later updates and deletes still find every live row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_whose_rows_were_all_replaced_are_forgotten_and_the_table_stays_exact() {
    let (_dir, config, catalog, ident) = fresh_catalog("spread").await;
    let columns = [
        col("id", ColumnType::Int, false),
        col("g", ColumnType::Int, true),
        col("v", ColumnType::String, true),
    ];
    let options = TableOptions {
        partitioning: Some(iceberg_cdc_merge::schema::Partitioning::Column {
            column: "g".into(),
            transform: iceberg::spec::Transform::Identity,
        }),
        ..TableOptions::default()
    };
    let mut model = Rows::new();
    let mut lsn = 10;
    let mut round_of = |round: u64, model: &mut Rows| -> Vec<ChangeRecord> {
        (0..600u64)
            .map(|id| {
                lsn += 1;
                let key = obj(json!({ "id": id }));
                let k = json!([id]).to_string();
                if round == 6 && id % 5 == 0 {
                    model.remove(&k);
                    return record("spread", Op::Delete, key, None, lsn, &columns);
                }
                // every key in another partition each round: 300 partitions a batch
                let row = obj(json!({"id": id, "g": (id * 7 + round * 13) % 300,
                    "v": format!("round {round} of {id}")}));
                model.insert(k, row.clone());
                let op = if round == 0 { Op::Create } else { Op::Update };
                record("spread", op, key, Some(row), lsn, &columns)
            })
            .collect()
    };
    let first = round_of(0, &mut model);
    let mut table = CdcTable::create(&catalog, &ident, &first[0], options.clone())
        .await
        .unwrap();
    table.apply(&catalog, &first, HashMap::new()).await.unwrap();
    let mut registered = vec![table.registered_files()];
    for round in 1..=6 {
        let records = round_of(round, &mut model);
        table
            .apply(&catalog, &records, HashMap::new())
            .await
            .unwrap();
        registered.push(table.registered_files());
        assert_eq!(table.index().live_len(), model.len(), "round {round}");
    }
    // 300 files a round; once 1024 have come, a sweep forgets all but the last round's
    assert_eq!(&registered[..4], &[300, 600, 900, 300], "{registered:?}");
    assert!(registered[6] < 1200, "{registered:?}");
    assert_readers(
        &config,
        "public.spread",
        &["id", "g", "v"],
        &["id"],
        &model,
        "after the sweeps",
    );
    // a restart reads the same from the files
    let reopened = CdcTable::open(&catalog, &ident, options)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reopened.index().live_len(), model.len());
}
