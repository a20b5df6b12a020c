//! Model-based test of the merge engine on real catalogs (SQLite, PostgreSQL, and Apache
//! Iceberg's REST catalog server over a local and a Ceph warehouse): random creates, updates,
//! deletes, updates that move a row to another month's partition, replays of old events and
//! truncates, committed in many batches. After every commit the table, read back by the
//! `iceberg` crate's own scan, PyIceberg and DuckDB (and twice by Spark SQL), each through the
//! same catalog, equals an in-memory model.

use debezium_cdc::record::Op;
use iceberg::TableIdent;
use iceberg_cdc_merge::{Catalog, CatalogConfig, CdcTable};
use serde_json::json;
use std::collections::HashMap;

mod support;
use support::items::{options, python_readers, read_back, spark_reader};
use support::{append_with_pyiceberg, postgres_catalog, rest_catalog, sqlite_catalog, Warehouse};
use testkit::changes::{batch, change, row, Model};
use testkit::Lcg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_catalog_random_batches_equal_the_model_after_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    run_model(&sqlite_catalog(dir.path()), "public", 7, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalog_random_batches_equal_the_model_after_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    run_model(&postgres_catalog(dir.path()), "public", 11, 25).await;
}

/// Through the REST spec's commit endpoint: the catalog server writes the metadata files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_catalog_random_batches_equal_the_model_after_every_commit() {
    run_model(&rest_catalog(Warehouse::Local), &unique("model"), 13, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_catalog_on_ceph_random_batches_equal_the_model_after_every_commit() {
    run_model(&rest_catalog(Warehouse::Ceph), &unique("model_s3"), 17, 8).await;
}

/// A namespace of this run's own (the REST servers live for the whole suite).
fn unique(purpose: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{purpose}_{}_{nanos}", std::process::id())
}

async fn run_model(config: &CatalogConfig, namespace: &str, seed: u64, rounds: usize) {
    let catalog = Catalog::connect(config).await.expect("catalog");
    let ident = TableIdent::from_strs([namespace, "items"]).unwrap();
    let name = format!("{namespace}.items");
    let mut rng = Lcg(seed);
    let mut model = Model::new();
    let mut lsns = HashMap::new();
    let mut next_lsn = 100;

    let first = batch(&mut rng, &mut model, &mut lsns, &mut next_lsn, 2000);
    let mut table = CdcTable::create(&catalog, &ident, &first[0], options())
        .await
        .unwrap();
    table.apply(&catalog, &first, HashMap::new()).await.unwrap();
    assert_eq!(read_back(table.table()).await, model);

    let mut snapshots = 1;
    for round in 0..rounds {
        let records = batch(&mut rng, &mut model, &mut lsns, &mut next_lsn, 2000);
        let props = HashMap::from([("cdc.offsets".to_owned(), format!("{{\"0\":{round}}}"))]);
        let applied = table.apply(&catalog, &records, props).await.unwrap();
        snapshots += 1;
        let got = read_back(table.table()).await;
        assert!(
            got == model,
            "iceberg-rust, after round {round}: {applied:?}: {}",
            differences(&got, &model)
        );
        let (pyiceberg, duckdb) = python_readers(config, &name);
        assert_eq!(pyiceberg, model, "PyIceberg, after round {round}");
        assert_eq!(duckdb, model, "DuckDB, after round {round}");
        assert_eq!(
            table.index().live_len(),
            model.len(),
            "index size after round {round}"
        );
        if round == rounds / 2 || round + 1 == rounds {
            // the reader our users know, through Iceberg's JdbcCatalog on the same database
            // (or its RESTCatalog on the same server)
            assert_eq!(
                spark_reader(config, &name),
                model,
                "Spark, after round {round}"
            );
        }
        if round == rounds / 2 {
            // reopen: the index is rebuilt from the files
            drop(table);
            table = CdcTable::open(&catalog, &ident, options())
                .await
                .unwrap()
                .unwrap();
            // the LSNs of deleted keys survive it: the stream goes on replaying events older
            // than their deletes, and none brings a row back
            assert_eq!(table.index().live_len(), model.len());
        }
    }

    // history: one snapshot per batch, chained, offsets in the summaries
    let metadata = table.table().metadata();
    assert_eq!(metadata.snapshots().count(), snapshots);
    let current = metadata.current_snapshot().unwrap();
    assert_eq!(
        current
            .summary()
            .additional_properties
            .get("cdc.offsets")
            .map(String::as_str),
        Some(format!("{{\"0\":{}}}", rounds - 1).as_str())
    );
    let mut chain = 0;
    let mut s = Some(current.clone());
    while let Some(snap) = s {
        chain += 1;
        s = snap
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p).cloned());
    }
    assert_eq!(chain, snapshots);
    assert_eq!(metadata.metadata_log().len(), snapshots);
    // every commit left its own metadata file, all still there (time travel, readers in flight)
    let logged: std::collections::BTreeSet<&str> = metadata
        .metadata_log()
        .iter()
        .map(|m| m.metadata_file.as_str())
        .collect();
    assert_eq!(logged.len(), snapshots);
    for file in &logged {
        assert!(
            table.table().file_io().exists(file).await.unwrap(),
            "{file} is gone"
        );
    }
    let current = table.table().metadata_location().unwrap_or_default();
    assert!(
        !logged.contains(current),
        "a commit writes a metadata file of its own"
    );

    if config.rest.is_some() {
        // a new client of the catalog finds the table where our last commit left it
        let other = Catalog::connect(config).await.expect("catalog");
        let found = other.load_existing(&ident).await.expect("the table");
        assert_eq!(found.metadata_location(), Some(current));
        assert_eq!(
            found.metadata().current_snapshot_id(),
            metadata.current_snapshot_id()
        );
        return;
    }
    // the catalog row points at the newest metadata and remembers the one before
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&config.uri)
        .await
        .expect("catalog database");
    let sql = "SELECT metadata_location, previous_metadata_location FROM iceberg_tables \
               WHERE catalog_name = ? AND table_namespace = 'public' AND table_name = 'items'";
    let sql = if config.uri.starts_with("postgres") {
        sql.replace('?', "$1")
    } else {
        sql.to_owned()
    };
    let (current, previous): (String, String) = sqlx::query_as(&sql)
        .bind(&config.name)
        .fetch_one(&pool)
        .await
        .expect("catalog row");
    assert_eq!(Some(current.as_str()), table.table().metadata_location());
    let last_logged = metadata
        .metadata_log()
        .last()
        .map(|m| m.metadata_file.clone());
    assert_eq!(Some(previous.clone()), last_logged);
    assert_ne!(
        current, previous,
        "a commit writes a metadata file of its own"
    );
}

/// A foreign commit between two batches (PyIceberg appends a row): our compare-and-swap loses,
/// the engine reloads the table, rebuilds its index and commits again; nothing is lost and
/// nothing applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_commit_makes_us_retry_and_the_table_stays_right() {
    let dir = tempfile::tempdir().unwrap();
    foreign_commit(&sqlite_catalog(dir.path()), "public").await;
}

/// The same race through the REST catalog: PyIceberg commits through the server, our commit's
/// `assert-ref-snapshot-id` fails (409), and we reload and commit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_commit_through_the_rest_catalog_makes_us_retry() {
    foreign_commit(&rest_catalog(Warehouse::Local), &unique("race")).await;
}

async fn foreign_commit(config: &CatalogConfig, namespace: &str) {
    let config = config.clone();
    let catalog = Catalog::connect(&config).await.expect("catalog");
    let ident = TableIdent::from_strs([namespace, "items"]).unwrap();
    let name = format!("{namespace}.items");
    let mut rng = Lcg(3);
    let mut model = Model::new();
    let mut lsns = HashMap::new();
    let mut next_lsn = 100;
    let first = batch(&mut rng, &mut model, &mut lsns, &mut next_lsn, 50);
    let mut table = CdcTable::create(&catalog, &ident, &first[0], options())
        .await
        .unwrap();
    table.apply(&catalog, &first, HashMap::new()).await.unwrap();

    // PyIceberg appends a row with a key the stream has not used, and one the stream will
    // update next
    let foreign = json!([
        {"id": 1000, "name": "foreign", "amount": "1.00", "day": "2024-07-01",
         "_cdc_op": "c", "_cdc_processed_at": "2024-07-01T00:00:00Z"}
    ]);
    append_with_pyiceberg(&config, &name, &foreign);
    model.insert(
        1000,
        json!({"id": 1000, "name": "foreign", "amount": "1.00", "day": "2024-07-01"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );

    // our next batch updates the foreign row too: the retry must see it in the index
    let mut second = batch(&mut rng, &mut model, &mut lsns, &mut next_lsn, 50);
    next_lsn += 10;
    let r = row(1000, &mut rng);
    second.push(change(Op::Update, 1000, next_lsn, Some(r.clone())));
    model.insert(1000, r);
    let applied = table
        .apply(&catalog, &second, HashMap::new())
        .await
        .unwrap();
    assert_eq!(applied.conflicts, 1, "{applied:?}");
    assert_eq!(read_back(table.table()).await, model);
    let (pyiceberg, duckdb) = python_readers(&config, &name);
    assert_eq!(pyiceberg, model);
    assert_eq!(duckdb, model);

    // three snapshots: ours, PyIceberg's, ours
    let metadata = table.table().metadata();
    assert_eq!(metadata.snapshots().count(), 3);
}

/// The keys where a table and its model differ, and how.
fn differences(got: &Model, want: &Model) -> String {
    let mut out = Vec::new();
    for (id, row) in got {
        match want.get(id) {
            None => out.push(format!("{id}: in the table, not in the model: {row:?}")),
            Some(w) if w != row => out.push(format!("{id}: table {row:?}, model {w:?}")),
            _ => {}
        }
    }
    for id in want.keys().filter(|id| !got.contains_key(id)) {
        out.push(format!("{id}: missing from the table"));
    }
    out.join("; ")
}
