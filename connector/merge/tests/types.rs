//! Every Debezium type the SmartModule normalizes, through the real parser, into a table,
//! and back out through iceberg-rust, PyIceberg and DuckDB; and unchanged-TOAST columns
//! keeping their stored values across batches.

use debezium_cdc::params::Settings;
use debezium_cdc::record::{CdcRecord, ChangeRecord};
use debezium_cdc::Transformer;
use futures::TryStreamExt;
use iceberg::TableIdent;
use iceberg_cdc_merge::io::rows::value_at;
use iceberg_cdc_merge::{Catalog, CatalogConfig, CdcTable, TableOptions};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use testkit::fixture;

mod support;
use support::{read_with_python, sqlite_catalog};

const COLUMNS: [&str; 17] = [
    "id", "price", "amount", "born", "alarm", "created", "updated", "uid", "attrs", "photo",
    "tags", "notes", "happy", "ratio", "small", "score", "mood",
];

fn change(name: &str) -> ChangeRecord {
    let msg = fixture(name).unwrap();
    let mut t = Transformer::new(Settings::default());
    match t.process(msg.key.as_deref(), &msg.value, Some(0)) {
        Some(CdcRecord::Change(c)) => *c,
        other => panic!("{name}: {other:?}"),
    }
}

async fn read_back(table: &iceberg::table::Table) -> Vec<Map<String, Value>> {
    let batches: Vec<_> = table
        .scan()
        .select(COLUMNS)
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut r = Map::new();
            for (c, name) in COLUMNS.iter().enumerate() {
                r.insert(
                    (*name).to_owned(),
                    value_at(b.column(c).as_ref(), i).unwrap(),
                );
            }
            rows.push(r);
        }
    }
    rows
}

type Rows = Vec<Map<String, Value>>;

/// The table as PyIceberg and as DuckDB read it.
fn python_rows(config: &CatalogConfig) -> (Rows, Rows) {
    let v = read_with_python(config, "inventory.all_types", &COLUMNS);
    let rows = |k: &str| -> Rows {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect()
    };
    (rows("pyiceberg"), rows("duckdb"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_and_toast_values_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let catalog = Catalog::connect(&config).await.unwrap();
    let ident = TableIdent::from_strs(["inventory", "all_types"]).unwrap();
    let create = change("all_types-create");
    let options = TableOptions::default();
    let mut table = CdcTable::create(&catalog, &ident, &create, options.clone())
        .await
        .unwrap();
    table
        .apply(&catalog, std::slice::from_ref(&create), HashMap::new())
        .await
        .unwrap();

    let mut expected = create.after.clone().unwrap();
    // nested values are stored as their JSON text
    expected.insert("tags".into(), json!("[\"new\",\"sale\"]"));
    let got = read_back(table.table()).await;
    assert_eq!(got, vec![expected.clone()]);
    let (py, duck) = python_rows(&config);
    assert_eq!(py, vec![expected.clone()], "PyIceberg");
    assert_eq!(duck, vec![expected.clone()], "DuckDB");

    // an update whose photo, tags and notes are unchanged TOAST values: they keep what the
    // table holds, after a reopen too (the values come from the data files)
    drop(table);
    let mut table = CdcTable::open(&catalog, &ident, options)
        .await
        .unwrap()
        .unwrap();
    let update = change("all_types-update-toast");
    assert_eq!(update.unchanged, ["photo", "tags", "notes"]);
    table
        .apply(&catalog, &[update], HashMap::new())
        .await
        .unwrap();
    expected.insert("price".into(), json!("0.99"));
    let got = read_back(table.table()).await;
    assert_eq!(got, vec![expected.clone()]);
    let (py, duck) = python_rows(&config);
    assert_eq!(py, vec![expected.clone()], "PyIceberg");
    assert_eq!(duck, vec![expected], "DuckDB");
}

/// The old Spark job's layout: `operation`, `processing_time`, `year`, `month`, partitioned
/// by `year` and `month`, for users who keep its queries. The sample `products` stream
/// through the SmartModule, read back by PyIceberg and DuckDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_jobs_columns_and_partitions() {
    use iceberg_cdc_merge::schema::MetadataColumns;
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let catalog = Catalog::connect(&config).await.unwrap();
    let ident = TableIdent::from_strs(["public", "products"]).unwrap();
    let text =
        std::fs::read_to_string(testkit::workspace().join("tests/fixtures/products.kv")).unwrap();
    let mut t = Transformer::new(Settings::default());
    let records: Vec<ChangeRecord> = text
        .lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('\t')?;
            match t.process(Some(k.as_bytes()), v.as_bytes(), None)? {
                CdcRecord::Change(c) => Some(*c),
                CdcRecord::Error(_) => None,
            }
        })
        .collect();
    let options = TableOptions {
        metadata_columns: MetadataColumns::Legacy,
        ..TableOptions::default()
    };
    let mut table = CdcTable::create(&catalog, &ident, &records[0], options)
        .await
        .unwrap();
    let before = chrono::Utc::now();
    table
        .apply(&catalog, &records, HashMap::new())
        .await
        .unwrap();
    let spec = table.table().metadata().default_partition_spec();
    let fields: Vec<String> = spec.fields().iter().map(|f| f.name.clone()).collect();
    assert_eq!(fields, ["year_part", "month_part"]);

    let v = read_with_python(
        &config,
        "public.products",
        &[
            "id",
            "name",
            "price",
            "on_offer",
            "operation",
            "year",
            "month",
        ],
    );
    use chrono::Datelike;
    let (y, m) = (before.year(), before.month() as i32);
    let mut expected = vec![
        json!({"id":1,"name":"scooter","price":279,"on_offer":true,"operation":"u","year":y,"month":m}),
        json!({"id":2,"name":"car battery","price":81,"on_offer":false,"operation":"r","year":y,"month":m}),
        json!({"id":4,"name":"hammer","price":29,"on_offer":false,"operation":"u","year":y,"month":m}),
        json!({"id":5,"name":"rocks","price":6,"on_offer":false,"operation":"u","year":y,"month":m}),
        json!({"id":6,"name":"tape","price":7,"on_offer":false,"operation":"c","year":y,"month":m}),
    ];
    expected.sort_by_key(|r| r["id"].as_i64());
    for reader in ["pyiceberg", "duckdb"] {
        let mut rows = v[reader].as_array().unwrap().clone();
        rows.sort_by_key(|r| r["id"].as_i64());
        assert_eq!(rows, expected, "{reader}");
    }
}
