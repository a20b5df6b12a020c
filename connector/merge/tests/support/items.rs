//! The merge tests' stream of changes to `public.items` (`testkit::changes`), and readers
//! of the table.

use super::read_with_python;
use futures::TryStreamExt;
use iceberg::spec::Transform;
use iceberg_cdc_merge::io::rows::value_at;
use iceberg_cdc_merge::schema::Partitioning;
use iceberg_cdc_merge::{CatalogConfig, TableOptions};
use serde_json::{Map, Value};
use testkit::changes::Model;

pub async fn read_back(table: &iceberg::table::Table) -> Model {
    let scan = table
        .scan()
        .select(["id", "name", "amount", "day"])
        .build()
        .expect("scan");
    let batches: Vec<_> = scan
        .to_arrow()
        .await
        .expect("to_arrow")
        .try_collect()
        .await
        .expect("read");
    let mut out = Model::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut r = Map::new();
            for (c, name) in ["id", "name", "amount", "day"].iter().enumerate() {
                r.insert(
                    (*name).to_owned(),
                    value_at(b.column(c).as_ref(), i).unwrap(),
                );
            }
            let id = r["id"].as_i64().unwrap();
            assert!(out.insert(id, r).is_none(), "key {id} appears twice");
        }
    }
    out
}

/// The table as PyIceberg and as DuckDB read it.
pub fn python_readers(catalog: &CatalogConfig, table: &str) -> (Model, Model) {
    let v = read_with_python(catalog, table, &["id", "name", "amount", "day"]);
    let model = |rows: &Value| -> Model {
        let mut m = Model::new();
        for r in rows.as_array().expect("rows") {
            let r = r.as_object().expect("row").clone();
            let id = r["id"].as_i64().expect("id");
            assert!(m.insert(id, r).is_none(), "key {id} appears twice");
        }
        m
    };
    (model(&v["pyiceberg"]), model(&v["duckdb"]))
}

/// The table as Spark SQL reads it (Iceberg's JdbcCatalog over the same catalog database, or
/// its RESTCatalog on the same server).
pub fn spark_reader(catalog: &CatalogConfig, table: &str) -> Model {
    let spark_catalog = match catalog.s3.endpoint {
        Some(_) => testkit::spark::catalog_on(
            &catalog.name,
            &catalog.uri,
            &catalog.warehouse,
            super::ceph(),
        ),
        None => testkit::spark::catalog(&catalog.name, &catalog.uri, &catalog.warehouse),
    };
    let rows = testkit::spark::sql(
        &spark_catalog,
        &format!("SELECT id, name, amount, day FROM {}.{table}", catalog.name),
    )
    .unwrap_or_else(|e| panic!("Spark: {e}"));
    let mut m = Model::new();
    for r in rows {
        let r = r.as_object().expect("row").clone();
        let id = r["id"].as_i64().expect("id");
        assert!(m.insert(id, r).is_none(), "key {id} appears twice");
    }
    m
}

pub fn options() -> TableOptions {
    TableOptions {
        partitioning: Some(Partitioning::Column {
            column: "day".into(),
            transform: Transform::Month,
        }),
        ..TableOptions::default()
    }
}
