//! Table maintenance through the connector binary, file source, local warehouse, SQLite
//! catalog (and Apache Iceberg's REST catalog server): on its schedule beside the stream
//! (with `kill -9` restarts), and on demand with `maintain`; the tables read back by PyIceberg
//! and DuckDB equal the model, and a restart after expiry resumes exactly.

use iceberg::spec::DataContentType;
use iceberg::TableIdent;
use iceberg_cdc_merge::commit::{live_files, referenced_files};
use iceberg_cdc_merge::{Catalog, CatalogConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};
use testkit::readers::{self, PyCatalog};
use testkit::stream::{generate, table_rows, Generated, Spec};
use testkit::SinkConfig;

const TABLES: [&str; 2] = ["public.orders", "public.items"];

/// Where the tables go: a catalog and the namespace of the stream's tables in it.
struct Place {
    catalog: CatalogConfig,
    namespace: String,
}

impl Place {
    fn sqlite(dir: &Path) -> Place {
        Place {
            catalog: catalog_config(dir),
            namespace: "public".into(),
        }
    }

    /// The REST catalog server over a local warehouse that `tests/rest.sh` starts, and a
    /// namespace of this run's own in it.
    fn rest() -> Place {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: `bash tests/run.sh` starts the REST catalogs (tests/rest.sh)")
            })
        };
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Place {
            catalog: CatalogConfig {
                name: "rest".into(),
                uri: var("CDC_TEST_REST_LOCAL"),
                warehouse: var("CDC_TEST_REST_LOCAL_WAREHOUSE"),
                s3: Default::default(),
                rest: Some(Default::default()),
            },
            namespace: format!("maintained_{}_{nanos}", std::process::id()),
        }
    }

    /// `public.orders` as the catalog names it.
    fn table(&self, source: &str) -> String {
        let name = source.rsplit('.').next().unwrap_or(source);
        format!("{}.{name}", self.namespace)
    }
}

fn config(dir: &Path, place: &Place, input: &Path, maintenance: &str) -> PathBuf {
    let extra = format!(
        "  batch:\n    max-records: 300\n  tables:\n    partition-by: month(day)\n    namespace: {}\n  maintenance:\n{maintenance}",
        place.namespace
    );
    let (catalog, warehouse) = match place.catalog.rest {
        Some(_) => (
            format!("    type: rest\n    uri: {}\n", place.catalog.uri),
            place.catalog.warehouse.clone(),
        ),
        None => (String::new(), String::new()),
    };
    SinkConfig {
        catalog,
        name: "maintained-sink",
        dir,
        source: SinkConfig::file_source(input),
        warehouse,
        params: "",
        extra: &extra,
    }
    .write()
}

fn connector(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"));
    cmd.arg("--config").arg(config).env("RUST_LOG", "info");
    cmd
}

fn succeed(out: Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "connector failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn catalog_config(dir: &Path) -> CatalogConfig {
    CatalogConfig {
        name: "cdc".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: format!("file://{}/warehouse", dir.display()),
        s3: Default::default(),
        rest: None,
    }
}

/// Per table: (live data files, live delete files, snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    data: usize,
    deletes: usize,
    snapshots: usize,
}

fn shape(place: &Place, table: &str) -> Shape {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let catalog = Catalog::connect(&place.catalog).await.unwrap();
        let ident = TableIdent::from_strs(place.table(table).split('.')).unwrap();
        let table = catalog.load_existing(&ident).await.unwrap();
        let live = live_files(&table).await.unwrap();
        let data = live
            .iter()
            .filter(|f| f.file.content_type() == DataContentType::Data)
            .count();
        // every file the metadata references is there
        for f in referenced_files(&table).await.unwrap() {
            // `file:///p`, or `file:/p` as the REST catalog's Java server writes them
            let path = f
                .strip_prefix("file://")
                .or(f.strip_prefix("file:"))
                .unwrap_or(&f);
            assert!(Path::new(path).exists(), "{f} is referenced but gone");
        }
        Shape {
            data,
            deletes: live.len() - data,
            snapshots: table.metadata().snapshots().count(),
        }
    })
}

/// Every file under a folder, at any depth, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The live data and delete files of a table, as local paths.
fn live_paths(dir: &Path, table: &str) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let catalog = Catalog::connect(&catalog_config(dir)).await.unwrap();
        let ident = TableIdent::from_strs(table.split('.')).unwrap();
        let table = catalog.load_existing(&ident).await.unwrap();
        live_files(&table)
            .await
            .unwrap()
            .iter()
            .map(|f| f.file.file_path().trim_start_matches("file://").to_owned())
            .collect()
    })
}

fn assert_tables_equal_model(place: &Place, stream: &Generated, when: &str) {
    let catalog = PyCatalog {
        uri: &place.catalog.uri,
        name: &place.catalog.name,
        s3: None,
    };
    for table in TABLES {
        let (py, duck) = readers::read_by_id(
            &catalog,
            &place.table(table),
            &["id", "name", "price", "qty", "day"],
        );
        let want = table_rows(&stream.model, table);
        assert_eq!(py, want, "PyIceberg, {table}, {when}");
        assert_eq!(duck, want, "DuckDB, {table}, {when}");
    }
}

fn spec() -> Spec {
    Spec {
        events: 12_000,
        keys: 800,
        tables: TABLES.iter().map(|t| t.to_string()).collect(),
        seed: 77,
        bad_every: None,
        two_column_key: false,
        ..Spec::default()
    }
}

fn stream() -> Generated {
    generate(&spec())
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Feeds `lines` to the connector's stdin in chunks, a pause after each, so the run lasts
/// long enough for the schedule to fire between batches; `kill_after`: SIGKILL after that
/// many chunks instead of closing stdin. Returns the connector's log.
fn feed_slowly(cfg: &Path, lines: &[String], kill_after: Option<usize>) -> String {
    use std::io::Write;
    let mut child = connector(cfg)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (n, chunk) in lines.chunks(400).enumerate() {
        if kill_after == Some(n) {
            child.kill().unwrap(); // SIGKILL, maintenance running or not
            break;
        }
        stdin
            .write_all((chunk.join("\n") + "\n").as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if kill_after.is_none() {
        assert!(out.status.success(), "connector failed: {log}");
    }
    log
}

/// Maintenance on its schedule, every second, while the stream flows (and a `kill -9`
/// mid-run): compaction keeps the tables to a few files, expiry to a few snapshots, and the
/// connector still resumes exactly from the offsets in its kept snapshot.
#[test]
fn scheduled_maintenance_beside_the_stream_keeps_tables_small_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    scheduled_maintenance(dir.path(), &Place::sqlite(dir.path()));
}

/// The same through the REST catalog: the stream's commits, compaction's rewrites and
/// expiry's removals all go through the REST spec's commit endpoint (orphan removal lists
/// the folders of tables whose metadata files the Java server names `file:/...`).
#[test]
fn scheduled_maintenance_through_the_rest_catalog_keeps_tables_small_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    scheduled_maintenance(dir.path(), &Place::rest());
}

fn scheduled_maintenance(dir: &Path, place: &Place) {
    let stream = stream();
    let cfg = config(
        dir,
        place,
        Path::new("-"),
        "    interval: 1s\n    \
         compaction: { min-input-files: 2 }\n    \
         expiry: { max-snapshot-age: 0s, min-snapshots: 2 }\n    \
         orphans: { older-than: 1h }\n",
    );
    let mut logs = feed_slowly(&cfg, &stream.lines[..6_000], Some(10));
    // the restart is given everything again: what is committed is skipped
    logs.push_str(&feed_slowly(&cfg, &stream.lines, None));
    assert!(
        logs.contains("maintenance: compaction: data files"),
        "no compaction ran: {logs}"
    );
    assert!(logs.contains("maintenance: snapshot expiry: snapshots"));
    assert!(logs.contains("maintenance: orphan removal: listed"));
    assert!(!logs.contains("maintenance failed"), "{logs}");
    assert_tables_equal_model(place, &stream, "after the scheduled runs");
    // some compaction shrank a table (data files N -> M, M < N)
    let shrank = logs
        .lines()
        .filter_map(|l| l.split("compaction: data files ").nth(1))
        .filter_map(|rest| {
            let (before, rest) = rest.split_once(" -> ")?;
            let after = rest.split(',').next()?;
            Some((before.parse::<usize>().ok()?, after.parse::<usize>().ok()?))
        })
        .any(|(before, after)| after < before);
    assert!(shrank, "{logs}");
    for table in TABLES {
        // each table got 20+ commits; expiry keeps the two newest, the connector's newest
        // and what was committed since its last run
        let s = shape(place, table);
        let ran: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("maintenance") || l.contains("WARN") || l.contains("ERROR"))
            .collect();
        assert!(s.snapshots < 12, "{table}: {s:?}\n{}", ran.join("\n"));
    }
}

/// `maintain` on tables the connector left with many small files, position deletes,
/// snapshots and stray files: it compacts, expires and removes orphans; the readers see the
/// same rows; the connector then resumes exactly where it was.
#[test]
fn maintain_command_then_the_connector_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let place = Place::sqlite(dir.path());
    let stream = stream();
    let input = dir.path().join("events.kv");
    let cfg = config(
        dir.path(),
        &place,
        &input,
        "    enabled: false\n    \
         compaction: { min-input-files: 2 }\n    \
         expiry: { max-snapshot-age: 0s, min-snapshots: 1 }\n",
    );
    // the same generator, fewer events: the first part of the stream, with its model
    let first_part = generate(&Spec {
        events: 8_000,
        ..spec()
    });
    assert_eq!(first_part.lines[..], stream.lines[..8_000]);
    write_lines(&input, &first_part.lines);
    let (_, stderr) = succeed(connector(&cfg).output().unwrap());
    assert!(
        !stderr.contains("maintenance:"),
        "the schedule is off: {stderr}"
    );
    let before: Vec<Shape> = TABLES.iter().map(|t| shape(&place, t)).collect();
    for s in &before {
        assert!(s.data > 2 && s.deletes > 0 && s.snapshots > 5, "{s:?}");
    }

    // strays: a lost commit's files two days old, and files of a commit in flight
    let orders = dir.path().join("warehouse/public/orders");
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86400);
    let stray = |rel: &str, modified: Option<SystemTime>| {
        let path = orders.join(rel);
        std::fs::write(&path, b"stray").unwrap();
        if let Some(t) = modified {
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(t).unwrap();
        }
        path
    };
    let old = [
        stray("data/lost.parquet", Some(two_days_ago)),
        stray("metadata/lost-m0.avro", Some(two_days_ago)),
    ];
    let fresh = stray("data/in-flight.parquet", None);

    let (report, _) = succeed(connector(&cfg).arg("maintain").output().unwrap());
    for table in TABLES {
        assert!(report.contains(&format!("{table}:")), "{report}");
    }
    assert!(report.contains("compaction: data files"), "{report}");
    assert!(report.contains("deleted 2 orphans"), "{report}");
    for p in &old {
        assert!(!p.exists(), "{} stayed", p.display());
    }
    assert!(fresh.exists());
    for (table, b) in TABLES.iter().zip(&before) {
        let a = shape(&place, table);
        assert!(a.data < b.data, "{table}: {b:?} -> {a:?}");
        assert_eq!(a.deletes, 0, "{table}: {a:?}");
        // the compaction's, which carries the connector's offsets
        assert_eq!(a.snapshots, 1, "{table}: {a:?}");
    }
    assert_tables_equal_model(&place, &first_part, "after maintain");
    // on disk: exactly the live files (the replaced and expired ones are gone) and the stray
    // too young to go
    let on_disk = files_under(&orders.join("data"));
    let mut want = live_paths(dir.path(), "public.orders");
    want.push(fresh.display().to_string());
    want.sort();
    assert_eq!(on_disk, want);

    // only one task, by name
    let (report, _) = succeed(
        connector(&cfg)
            .args(["maintain", "--table", "public.items", "--only", "orphans"])
            .output()
            .unwrap(),
    );
    assert!(report.contains("public.items:") && !report.contains("public.orders:"));
    assert!(report.contains("orphan removal") && !report.contains("compaction"));

    // the rest of the stream: the connector resumes from its kept snapshot's offsets
    write_lines(&input, &stream.lines);
    let (_, stderr) = succeed(connector(&cfg).output().unwrap());
    assert!(stderr.contains("already committed") || stderr.contains("resuming"));
    assert_tables_equal_model(&place, &stream, "after the rest of the stream");
}
