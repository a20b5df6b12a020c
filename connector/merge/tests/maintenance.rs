//! Table maintenance on a real SQLite catalog and local warehouse, against the model of a
//! random change stream: compaction (alone, and racing a stream commit), snapshot expiry and
//! orphan removal. Every check reads the table back with the `iceberg` crate, PyIceberg and
//! DuckDB.

use debezium_cdc::record::{ChangeRecord, Op};
use iceberg::spec::{DataContentType, Operation};
use iceberg::TableIdent;
use iceberg_cdc_merge::commit::{live_files, referenced_files, snapshot_files};
use iceberg_cdc_merge::maintenance::compaction::{self, CarrySummary, Committed, CompactionPolicy};
use iceberg_cdc_merge::maintenance::expiry::ExpiryPolicy;
use iceberg_cdc_merge::maintenance::orphans::{remove_orphans, OrphanPolicy};
use iceberg_cdc_merge::maintenance::MaintenancePolicy;
use iceberg_cdc_merge::table::newest_in_history;
use iceberg_cdc_merge::{Catalog, CatalogConfig, CdcTable};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

mod support;
use support::items::{options, python_readers, read_back};
use support::sqlite_catalog;
use testkit::changes::{batch, change, row, Model};
use testkit::Lcg;

/// The stream's state: the model and what the generator needs to go on.
struct Stream {
    rng: Lcg,
    model: Model,
    lsns: HashMap<i64, u64>,
    next_lsn: u64,
    keys: u64,
}

impl Stream {
    fn new(seed: u64, keys: u64) -> Stream {
        Stream {
            rng: Lcg(seed),
            model: Model::new(),
            lsns: HashMap::new(),
            next_lsn: 100,
            keys,
        }
    }

    fn batch(&mut self) -> Vec<ChangeRecord> {
        batch(
            &mut self.rng,
            &mut self.model,
            &mut self.lsns,
            &mut self.next_lsn,
            self.keys,
        )
    }

    /// An update of every key the table holds: it touches every live data file.
    fn update_all(&mut self) -> Vec<ChangeRecord> {
        let ids: Vec<i64> = self.model.keys().copied().collect();
        ids.into_iter()
            .map(|id| {
                self.next_lsn += 10;
                let r = row(id, &mut self.rng);
                self.model.insert(id, r.clone());
                self.lsns.insert(id, self.next_lsn);
                change(Op::Update, id, self.next_lsn, Some(r))
            })
            .collect()
    }

    /// Creates of keys the stream never uses otherwise.
    fn create_new(&mut self, from: i64, n: i64) -> Vec<ChangeRecord> {
        (from..from + n)
            .map(|id| {
                self.next_lsn += 10;
                let r = row(id, &mut self.rng);
                self.model.insert(id, r.clone());
                change(Op::Create, id, self.next_lsn, Some(r))
            })
            .collect()
    }
}

/// A table after `rounds` random batches (many small files, many position deletes).
async fn streamed_table(
    config: &CatalogConfig,
    stream: &mut Stream,
    rounds: usize,
) -> (Catalog, CdcTable) {
    let catalog = Catalog::connect(config).await.expect("catalog");
    let ident = TableIdent::from_strs(["public", "items"]).unwrap();
    let first = stream.create_new(0, 200);
    let mut table = CdcTable::create(&catalog, &ident, &first[0], options())
        .await
        .unwrap();
    table.apply(&catalog, &first, HashMap::new()).await.unwrap();
    for round in 0..rounds {
        let props = HashMap::from([
            ("cdc.connector".to_owned(), "items-sink".to_owned()),
            ("cdc.offsets".to_owned(), format!("{{\"0\":{round}}}")),
        ]);
        let records = stream.batch();
        table.apply(&catalog, &records, props).await.unwrap();
    }
    (catalog, table)
}

/// The table opened again, its index rebuilt from its files (a connector restart).
async fn reopen(catalog: &Catalog, table: CdcTable) -> CdcTable {
    let ident = table.table().identifier().clone();
    drop(table);
    CdcTable::open(catalog, &ident, options())
        .await
        .unwrap()
        .unwrap()
}

/// (live data files, live delete files)
async fn file_counts(table: &iceberg::table::Table) -> (usize, usize) {
    let live = live_files(table).await.unwrap();
    let data = live
        .iter()
        .filter(|f| f.file.content_type() == DataContentType::Data)
        .count();
    (data, live.len() - data)
}

/// All three readers see exactly the model.
async fn assert_readers(config: &CatalogConfig, table: &CdcTable, model: &Model, when: &str) {
    assert_eq!(
        &read_back(table.table()).await,
        model,
        "iceberg-rust, {when}"
    );
    let (pyiceberg, duckdb) = python_readers(config, "public.items");
    assert_eq!(&pyiceberg, model, "PyIceberg, {when}");
    assert_eq!(&duckdb, model, "DuckDB, {when}");
}

fn eager() -> CompactionPolicy {
    CompactionPolicy {
        min_input_files: 2,
        ..CompactionPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_row_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let mut stream = Stream::new(21, 1500);
    let (catalog, mut table) = streamed_table(&config, &mut stream, 30).await;
    let (data_before, deletes_before) = file_counts(table.table()).await;
    assert!(
        deletes_before > 5,
        "the stream left few deletes: {deletes_before}"
    );
    assert_readers(&config, &table, &stream.model, "before compaction").await;

    // the writer's properties, from its newest snapshot (the connector's ledger does this)
    let carry = CarrySummary::new(|metadata| {
        newest_in_history(metadata, |s| {
            s.summary()
                .additional_properties
                .contains_key("cdc.connector")
        })
        .map(|s| s.summary().additional_properties.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == "cdc.connector" || k == "cdc.offsets")
        .collect()
    });
    let carrying = CompactionPolicy {
        carry: Some(carry),
        ..eager()
    };
    let report = table.compact(&catalog, &carrying).await.unwrap();
    let (data_after, deletes_after) = file_counts(table.table()).await;
    assert!(report.files_rewritten > 0, "{report}");
    assert!(
        data_after < data_before,
        "data files {data_before} -> {data_after}"
    );
    assert_eq!(deletes_after, 0, "every file with deletes was rewritten");
    assert_eq!(
        (report.data_files_after, report.delete_files_after),
        (data_after, deletes_after)
    );
    assert_eq!(report.rows_written, stream.model.len() as u64, "{report}");
    let current = table.table().metadata().current_snapshot().unwrap();
    assert_eq!(current.summary().operation, Operation::Replace);
    // the rows are the same: the connector's offsets carry over to the compaction
    let props = &current.summary().additional_properties;
    assert_eq!(props["cdc.offsets"], "{\"0\":29}");
    assert_eq!(props["cdc.connector"], "items-sink");
    assert_readers(&config, &table, &stream.model, "after compaction").await;
    assert_eq!(table.index().live_len(), stream.model.len());
    // nothing left to do: a second run rewrites nothing
    let again = table.compact(&catalog, &eager()).await.unwrap();
    assert_eq!(again.files_rewritten, 0, "{again}");

    // the stream goes on through the moved index: updates and deletes of compacted rows
    for round in 0..8 {
        let records = stream.batch();
        let applied = table
            .apply(&catalog, &records, HashMap::new())
            .await
            .unwrap();
        assert_eq!(applied.conflicts, 0);
        assert_eq!(
            read_back(table.table()).await,
            stream.model,
            "after compaction, round {round}"
        );
    }
    let records = stream.update_all();
    table
        .apply(&catalog, &records, HashMap::new())
        .await
        .unwrap();
    assert_readers(&config, &table, &stream.model, "after the stream went on").await;

    // and a reopened connector (index rebuilt from the compacted files) agrees
    let mut table = reopen(&catalog, table).await;
    assert_eq!(table.index().live_len(), stream.model.len());
    let records = stream.batch();
    table
        .apply(&catalog, &records, HashMap::new())
        .await
        .unwrap();
    assert_readers(&config, &table, &stream.model, "after a reopen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_racing_stream_commits_loses_no_update_and_resurrects_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let mut stream = Stream::new(5, 800);
    let (catalog, mut table) = streamed_table(&config, &mut stream, 20).await;

    // 1. the compaction reads its files; the stream then updates and deletes rows of them
    //    and commits first: the rewrite holds old rows, so it must be dropped
    let rewrite = compaction::prepare(table.table(), &eager())
        .await
        .unwrap()
        .expect("files to rewrite");
    let mut records = stream.update_all();
    let doomed: Vec<i64> = stream.model.keys().copied().step_by(7).collect();
    for id in doomed {
        stream.next_lsn += 10;
        records.push(change(Op::Delete, id, stream.next_lsn, None));
        stream.model.remove(&id);
    }
    table
        .apply(&catalog, &records, HashMap::new())
        .await
        .unwrap();
    match compaction::commit(&catalog, &rewrite, &eager())
        .await
        .unwrap()
    {
        Committed::Dropped(reason) => assert!(reason.contains("deleted rows"), "{reason}"),
        _ => panic!("a rewrite of changed rows was committed"),
    }
    for f in &rewrite.added {
        assert!(
            !table.table().file_io().exists(f.file_path()).await.unwrap(),
            "the dropped rewrite left {}",
            f.file_path()
        );
    }
    assert_readers(
        &config,
        &table,
        &stream.model,
        "after the dropped compaction",
    )
    .await;

    // 2. the compaction reads its files; the stream only adds new rows meanwhile: the
    //    rewrite goes on top of the stream's commit
    let (data_before, _) = file_counts(table.table()).await;
    let rewrite = compaction::prepare(table.table(), &eager())
        .await
        .unwrap()
        .expect("files to rewrite");
    let records = stream.create_new(100_000, 300);
    table
        .apply(&catalog, &records, HashMap::new())
        .await
        .unwrap();
    let compacted = match compaction::commit(&catalog, &rewrite, &eager())
        .await
        .unwrap()
    {
        Committed::Rebased(t) => t,
        Committed::OnBase(_) => panic!("the stream's commit was not seen"),
        Committed::Dropped(reason) => panic!("an independent commit dropped it: {reason}"),
    };
    let (data_after, deletes_after) = file_counts(&compacted).await;
    assert!(data_after < data_before, "{data_before} -> {data_after}");
    assert_eq!(deletes_after, 0);
    assert_eq!(
        read_back(&compacted).await,
        stream.model,
        "after the rebased compaction"
    );

    // 3. the stream, its index now stale, loses its compare-and-swap to the compaction,
    //    rebuilds and commits: updates of compacted rows land exactly once
    let records = stream.update_all();
    let applied = table
        .apply(&catalog, &records, HashMap::new())
        .await
        .unwrap();
    assert_eq!(applied.conflicts, 1, "{applied:?}");
    assert_readers(&config, &table, &stream.model, "after the stream's retry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_what_only_old_snapshots_reach_and_keeps_the_resume_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let mut stream = Stream::new(9, 600);
    let (catalog, mut table) = streamed_table(&config, &mut stream, 15).await;
    // the connector's last commit is followed by a compaction and by another writer's
    // commits, none of which carries the connector's offsets
    table.compact(&catalog, &eager()).await.unwrap();
    for _ in 0..3 {
        let records = stream.batch();
        table
            .apply(&catalog, &records, HashMap::new())
            .await
            .unwrap();
    }
    let before = snapshot_files(table.table(), table.table().metadata().snapshots())
        .await
        .unwrap();
    let snapshots_before = table.table().metadata().snapshots().count();
    assert_eq!(snapshots_before, 1 + 15 + 1 + 3);

    let policy = MaintenancePolicy {
        expiry: Some(ExpiryPolicy {
            max_age: Duration::ZERO,
            min_snapshots: 2,
            keep_newest_of: Some("cdc.connector".into()),
            ..ExpiryPolicy::default()
        }),
        ..MaintenancePolicy::default()
    };
    let report = table.maintain(&catalog, &policy).await.unwrap();
    let expiry = report.expiry.expect("expiry ran");
    let metadata = table.table().metadata();
    // the two newest, and the connector's newest
    assert_eq!(metadata.snapshots().count(), 3, "{expiry}");
    assert_eq!(expiry.snapshots_after, 3);
    let resume = table
        .last_summary_with("cdc.connector")
        .expect("resume point");
    assert_eq!(resume["cdc.offsets"], "{\"0\":14}");

    let after = snapshot_files(table.table(), metadata.snapshots())
        .await
        .unwrap();
    let file_io = table.table().file_io();
    let mut gone = 0;
    for path in before.keys() {
        let exists = file_io.exists(path).await.unwrap();
        assert_eq!(exists, after.contains_key(path), "{path}");
        gone += usize::from(!exists);
    }
    assert!(gone > 0);
    assert_eq!(gone, expiry.files_deleted, "{expiry}");
    for path in referenced_files(table.table()).await.unwrap() {
        assert!(file_io.exists(&path).await.unwrap(), "{path} is gone");
    }
    assert_readers(&config, &table, &stream.model, "after expiry").await;

    // a reopened connector still finds its offsets, and the stream goes on
    let mut table = reopen(&catalog, table).await;
    let resume = table
        .last_summary_with("cdc.connector")
        .expect("resume point");
    assert_eq!(resume["cdc.offsets"], "{\"0\":14}");
    let records = stream.batch();
    table
        .apply(&catalog, &records, HashMap::new())
        .await
        .unwrap();
    assert_readers(
        &config,
        &table,
        &stream.model,
        "after expiry and a new batch",
    )
    .await;
}

fn age(path: &str, by: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_removal_deletes_old_strays_and_keeps_fresh_ones_and_every_live_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_catalog(dir.path());
    let mut stream = Stream::new(13, 300);
    let (catalog, table) = streamed_table(&config, &mut stream, 6).await;
    let location = table
        .table()
        .metadata()
        .location()
        .trim_start_matches("file://")
        .to_owned();
    let two_days = Duration::from_secs(2 * 24 * 3600);
    // every referenced file is old: only the references keep them
    let referenced = referenced_files(table.table()).await.unwrap();
    for path in &referenced {
        age(path.trim_start_matches("file://"), two_days);
    }
    let plant = |rel: &str, old: bool| {
        let path = format!("{location}/{rel}");
        std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
        std::fs::write(&path, b"stray").unwrap();
        if old {
            age(&path, two_days);
        }
        path
    };
    let old = [
        plant("data/lost-commit.parquet", true),
        plant("data/day_month=2024-03/lost-deletes.parquet", true),
        plant("metadata/lost-m0.avro", true),
        plant("metadata/00999-lost.metadata.json", true),
    ];
    let fresh = [
        plant("data/in-flight.parquet", false),
        plant("metadata/in-flight-m0.avro", false),
    ];
    // beside the table's folders: never looked at
    let beside = plant("notes/keep-me.txt", true);

    let report = remove_orphans(catalog.storage(), table.table(), &OrphanPolicy::default())
        .await
        .unwrap();
    assert_eq!(report.orphans_deleted, old.len(), "{report}");
    assert_eq!(report.too_young, fresh.len(), "{report}");
    assert_eq!(report.bytes_freed, 5 * old.len() as u64);
    for p in &old {
        assert!(!std::path::Path::new(p).exists(), "{p} stayed");
    }
    for p in fresh.iter().chain([&beside]) {
        assert!(std::path::Path::new(p).exists(), "{p} was deleted");
    }
    for path in &referenced {
        assert!(
            std::path::Path::new(path.trim_start_matches("file://")).exists(),
            "live {path} was deleted"
        );
    }
    assert_readers(&config, &table, &stream.model, "after orphan removal").await;
}
