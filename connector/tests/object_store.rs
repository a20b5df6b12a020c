//! The connector against a real Ceph RADOS Gateway (S3): tables on Ceph read back by PyIceberg
//! and DuckDB through the same endpoint; HTTPS with a private CA; the gateway stopped for 20 s
//! mid-run; bad credentials, a missing bucket and a skewed clock refused at start with a
//! message that says which, leaving nothing behind. `tests/run.sh` starts Ceph
//! (`tests/ceph.sh`) and exports where it is.

use iceberg::TableIdent;
use iceberg_cdc_merge::{Catalog, CatalogConfig, S3Settings, Storage};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testkit::ceph::Ceph;
use testkit::readers::{self, PyCatalog};
use testkit::stream::{generate, table_rows, Spec};
use testkit::{workspace, SinkConfig};

/// One test at a time: one of them stops the shared gateway.
static GATEWAY: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    GATEWAY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Setup<'a> {
    dir: &'a Path,
    input: &'a Path,
    warehouse: String,
    /// The `storage:` section's lines.
    storage: String,
    extra: &'a str,
}

fn config(s: &Setup) -> PathBuf {
    let extra = format!("  storage:\n{}\n{}", s.storage, s.extra);
    SinkConfig {
        catalog: String::new(),
        name: "s3-test-sink",
        dir: s.dir,
        source: SinkConfig::file_source(s.input),
        warehouse: s.warehouse.clone(),
        params: "",
        extra: &extra,
    }
    .write()
}

/// The storage section for the plain-HTTP endpoint; the keys come the old job's way, from
/// `S3_ACCESS_KEY` / `S3_SECRET_KEY` (see [`connector`]).
fn plain_storage(ceph: &Ceph) -> String {
    format!("    endpoint: {}", ceph.endpoint)
}

fn connector(config: &Path, access_key: &str, secret_key: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"));
    cmd.arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("S3_ACCESS_KEY", access_key)
        .env("S3_SECRET_KEY", secret_key)
        .env_remove("EXTERNAL_IP");
    cmd
}

fn succeed(out: Output) -> Output {
    assert!(
        out.status.success(),
        "connector failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What `inspect` prints of the products table.
fn inspect_products(cfg: &Path, ceph: &Ceph) -> String {
    let out = succeed(
        connector(cfg, &ceph.access_key, &ceph.secret_key)
            .args(["inspect", "--table", "public.products"])
            .output()
            .unwrap(),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(ceph: &Ceph, dir: &Path, table: &str, columns: &str) -> (Value, Value) {
    let uri = format!("sqlite://{}/catalog.db", dir.display());
    let catalog = PyCatalog {
        uri: &uri,
        name: "cdc",
        s3: Some(ceph),
    };
    let columns: Vec<&str> = columns.split(',').collect();
    readers::read_by_id(&catalog, table, &columns)
}

/// PyIceberg and DuckDB read the sample's final products from Ceph.
fn assert_products_read_back(ceph: &Ceph, dir: &Path) {
    let (py, duck) = read(ceph, dir, "public.products", "id,name,price,on_offer");
    let want = testkit::products_final_rows();
    assert_eq!(py, want, "PyIceberg");
    assert_eq!(duck, want, "DuckDB");
}

fn catalog_config(ceph: &Ceph, dir: &Path, warehouse: &str) -> CatalogConfig {
    CatalogConfig {
        name: "cdc".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: warehouse.to_owned(),
        s3: S3Settings {
            endpoint: Some(ceph.endpoint.clone()),
            access_key: Some(ceph.access_key.clone()),
            secret_key: Some(ceph.secret_key.clone()),
            ..Default::default()
        },
        rest: None,
    }
}

/// Every file any snapshot of the table references exists on the store; returns how many
/// snapshots the table has.
fn check_snapshots_complete(config: &CatalogConfig, table: &str) -> usize {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let catalog = Catalog::connect(config).await.unwrap();
        let ident = TableIdent::from_strs(table.split('.')).unwrap();
        let table = catalog
            .load(&ident)
            .await
            .unwrap()
            .expect("the table exists");
        let files = iceberg_cdc_merge::commit::referenced_files(&table)
            .await
            .unwrap();
        let io = Storage::new(&config.warehouse, &config.s3)
            .unwrap()
            .file_io();
        for file in &files {
            assert!(
                io.exists(file).await.unwrap(),
                "{file} is referenced by the metadata but missing from the store"
            );
        }
        assert!(files.iter().any(|f| f.ends_with(".parquet")));
        table.metadata().snapshots().count()
    })
}

#[test]
fn products_land_on_ceph_and_both_readers_agree() {
    let _serial = serial();
    let ceph = Ceph::from_env();
    let bucket = ceph.new_bucket("products");
    let dir = tempfile::tempdir().unwrap();
    // the first half of the sample, then (a restart: the key index is rebuilt from the
    // Parquet files on Ceph) the whole of it, whose updates and delete hit the first half's rows
    let sample = std::fs::read_to_string(workspace().join("tests/fixtures/products.kv")).unwrap();
    let lines: Vec<&str> = sample.lines().collect();
    let input = dir.path().join("products.kv");
    std::fs::write(&input, lines[..6].join("\n") + "\n").unwrap();
    let warehouse = format!("s3://{bucket}/lake");
    let cfg = config(&Setup {
        dir: dir.path(),
        input: &input,
        warehouse: warehouse.clone(),
        storage: plain_storage(&ceph),
        extra: "  batch:\n    max-records: 4\n",
    });
    for part in [&lines[..6], &lines[..]] {
        std::fs::write(&input, part.join("\n") + "\n").unwrap();
        succeed(
            connector(&cfg, &ceph.access_key, &ceph.secret_key)
                .output()
                .unwrap(),
        );
    }

    assert_products_read_back(&ceph, dir.path());
    // and Spark SQL, through S3FileIO on the same gateway
    let spark_catalog = testkit::spark::catalog_on(
        "cdc",
        &format!("sqlite://{}/catalog.db", dir.path().display()),
        &warehouse,
        &ceph,
    );
    let spark_rows = testkit::spark::sql(
        &spark_catalog,
        "SELECT id, name, price, on_offer FROM cdc.public.products ORDER BY id",
    )
    .unwrap_or_else(|e| panic!("Spark: {e}"));
    assert_eq!(
        Value::Array(spark_rows),
        testkit::products_final_rows(),
        "Spark"
    );
    let keys = ceph.keys(&bucket);
    assert!(
        keys.iter()
            .any(|k| k.starts_with("lake/public/products/data/") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains(".iceberg-cdc-probe")),
        "the start-up probe was left behind: {keys:?}"
    );
    let snapshots = check_snapshots_complete(
        &catalog_config(&ceph, dir.path(), &warehouse),
        "public.products",
    );
    assert!(snapshots >= 3, "{snapshots} snapshots");

    // `inspect` reads the table on Ceph too
    let text = inspect_products(&cfg, &ceph);
    assert!(text.contains("5 rows"), "{text}");
}

#[test]
fn https_endpoint_with_a_private_ca() {
    let _serial = serial();
    let ceph = Ceph::from_env();
    let bucket = ceph.new_bucket("tls");
    let dir = tempfile::tempdir().unwrap();
    let input = workspace().join("tests/fixtures/products.kv");
    let setup = |storage: String| Setup {
        dir: dir.path(),
        input: &input,
        warehouse: format!("s3://{bucket}/lake"),
        storage,
        extra: "",
    };
    // without the CA the server's certificate is not trusted
    let cfg = config(&setup(format!("    endpoint: {}", ceph.tls_endpoint)));
    let out = connector(&cfg, &ceph.access_key, &ceph.secret_key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS with") && stderr.contains("ca-file"),
        "{stderr}"
    );
    assert!(!dir.path().join("catalog.db").exists());

    let cfg = config(&setup(format!(
        "    endpoint: {}\n    ca-file: {}",
        ceph.tls_endpoint, ceph.ca_file
    )));
    succeed(
        connector(&cfg, &ceph.access_key, &ceph.secret_key)
            .output()
            .unwrap(),
    );
    let text = inspect_products(&cfg, &ceph);
    assert!(text.contains("5 rows"), "{text}");
    // the same table through the plain endpoint, by the independent readers
    let (py, duck) = read(
        &ceph,
        dir.path(),
        "public.products",
        "id,name,price,on_offer",
    );
    assert_eq!(py, testkit::products_final_rows(), "PyIceberg");
    assert_eq!(duck, testkit::products_final_rows(), "DuckDB");
}

/// A connector reading stdin, its log collected.
struct StdinRun {
    child: std::process::Child,
    /// Lines for the writer thread: a connector that stops reading (its commits retrying,
    /// its source's queues full) holds up that thread, never the test's clock.
    stdin: Option<std::sync::mpsc::Sender<String>>,
    writer: Option<std::thread::JoinHandle<()>>,
    log: Option<std::thread::JoinHandle<String>>,
}

impl StdinRun {
    fn start(cfg: &Path, ceph: &Ceph) -> StdinRun {
        let mut child = connector(cfg, &ceph.access_key, &ceph.secret_key)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text).ok();
            text
        });
        let mut pipe = child.stdin.take().unwrap();
        let (stdin, lines) = std::sync::mpsc::channel::<String>();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            for text in lines {
                // a connector that has exited (the retry budget test) takes nothing more
                if pipe
                    .write_all(text.as_bytes())
                    .and_then(|()| pipe.flush())
                    .is_err()
                {
                    return;
                }
            }
        });
        StdinRun {
            child,
            stdin: Some(stdin),
            writer: Some(writer),
            log: Some(log),
        }
    }

    /// Queues lines for the connector's stdin and returns at once.
    fn feed(&mut self, lines: &[String]) {
        if let Some(stdin) = self.stdin.as_ref() {
            let _ = stdin.send(lines.join("\n") + "\n");
        }
    }

    /// Waits until the warehouse holds `n` commits (metadata files), the connector running.
    fn wait_for_commits(&mut self, ceph: &Ceph, bucket: &str, n: usize) {
        let started = Instant::now();
        loop {
            let commits = ceph
                .keys(bucket)
                .iter()
                .filter(|k| k.ends_with(".metadata.json"))
                .count();
            if commits >= n {
                return;
            }
            let stopped = self.child.try_wait().unwrap();
            if stopped.is_some() || started.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                let (_, log) = self.stop();
                panic!("fewer than {n} commits ({stopped:?}): {log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Closes stdin and waits for the exit.
    /// Waits until no commit has come for 3 s (everything fed so far is in).
    fn wait_until_quiet(&mut self, ceph: &Ceph, bucket: &str) {
        let (mut seen, mut since) = (0, Instant::now());
        while since.elapsed() < Duration::from_secs(3) {
            let commits = ceph.keys(bucket).len();
            if commits != seen {
                (seen, since) = (commits, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn finish(mut self) -> (std::process::ExitStatus, String) {
        self.stop()
    }

    /// Closes stdin once every queued line is written (or the connector has exited), then
    /// waits for the connector.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        if let Some(writer) = self.writer.take() {
            writer.join().unwrap();
        }
        let status = self.child.wait().unwrap();
        let log = self.log.take().map(|h| h.join().unwrap());
        (status, log.unwrap_or_default())
    }
}

/// The outage tests' stream: two tables, bad records among the events.
fn outage_stream() -> (Vec<String>, testkit::stream::Generated) {
    let tables = vec!["public.orders".to_owned(), "sales.refunds".to_owned()];
    let stream = generate(&Spec {
        events: 12_000,
        keys: 800,
        tables: tables.clone(),
        seed: 77,
        bad_every: Some(1499),
        two_column_key: false,
        ..Spec::default()
    });
    (tables, stream)
}

/// Every table equals the model for both readers, and every file of every snapshot exists.
fn check_tables(
    ceph: &Ceph,
    dir: &Path,
    warehouse: &str,
    tables: &[String],
    stream: &testkit::stream::Generated,
) {
    for table in tables {
        let (py, duck) = read(ceph, dir, table, "id,name,price,qty,day");
        let want = table_rows(&stream.model, table);
        assert_eq!(py, want, "PyIceberg, {table}");
        assert_eq!(duck, want, "DuckDB, {table}");
        check_snapshots_complete(&catalog_config(ceph, dir, warehouse), table);
    }
    let mut dead: Vec<i64> = std::fs::read_to_string(dir.join("dead-letter.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["offset"]
                .as_i64()
                .unwrap()
        })
        .collect();
    dead.sort_unstable();
    dead.dedup();
    let bad: Vec<i64> = stream.bad.iter().map(|&b| b as i64).collect();
    assert_eq!(dead, bad);
}

/// The gateway stops for 20 s in the middle of a run: the connector retries with backoff,
/// the run completes, every table equals the model (nothing lost, nothing applied twice),
/// and no snapshot references a missing file.
#[test]
fn gateway_down_for_twenty_seconds_mid_run() {
    let _serial = serial();
    let ceph = Ceph::from_env();
    let (tables, stream) = outage_stream();
    let mut o = OutageRun::start(&ceph, "outage");
    // events arrive on stdin: a third before the outage, a third during it, a third after
    let third = stream.lines.len() / 3;
    o.run.feed(&stream.lines[..third]);
    o.run.wait_for_commits(&ceph, &o.bucket, 4);
    o.down_for(
        &ceph,
        Duration::from_secs(20),
        &stream.lines[third..2 * third],
    );
    o.run.feed(&stream.lines[2 * third..]);
    let (status, log) = o.run.finish();
    assert!(status.success(), "connector failed after the outage: {log}");
    assert!(
        log.contains("retrying"),
        "the outage never hit a commit: {log}"
    );
    check_tables(&ceph, o.dir.path(), &o.warehouse, &tables, &stream);
}

/// An outage test's connector: events on stdin, a bucket of its own, small batches (several
/// commits before the outage) and a retry budget longer than the outages (1+2+4+8+16+32 s
/// of backoff).
struct OutageRun {
    bucket: String,
    dir: tempfile::TempDir,
    warehouse: String,
    run: StdinRun,
}

impl OutageRun {
    fn start(ceph: &Ceph, purpose: &str) -> OutageRun {
        let bucket = ceph.new_bucket(purpose);
        let dir = tempfile::tempdir().unwrap();
        let warehouse = format!("s3://{bucket}/lake");
        let cfg = config(&Setup {
            dir: dir.path(),
            input: Path::new("-"),
            warehouse: warehouse.clone(),
            storage: plain_storage(ceph),
            extra:
                "  batch:\n    max-records: 150\n  retries:\n    attempts: 7\n    backoff-ms: 1000\n",
        });
        let run = StdinRun::start(&cfg, ceph);
        OutageRun {
            bucket,
            dir,
            warehouse,
            run,
        }
    }

    /// Stops the gateway for `outage`, `lines` arriving meanwhile; the connector must still
    /// be running when the gateway comes back.
    fn down_for(&mut self, ceph: &Ceph, outage: Duration, lines: &[String]) {
        let down = ceph.outage();
        self.run.feed(lines);
        std::thread::sleep(outage);
        let during = self.run.child.try_wait().unwrap();
        down.end();
        if let Some(status) = during {
            let (_, log) = self.run.stop();
            panic!("the connector gave up during the outage ({status}): {log}");
        }
    }
}

/// A table's first change arrives while the gateway is down: creating the table is retried
/// like a commit (the connector does not exit, the other table's work waits), and once the
/// store is back both tables equal the model.
#[test]
fn a_table_first_seen_during_an_outage_is_created_once_the_store_is_back() {
    let _serial = serial();
    let ceph = Ceph::from_env();
    let (tables, stream) = outage_stream();
    // every change of public.orders (the bad messages among them) first, then sales.refunds
    // (each table's own order kept): the second table is new when the outage starts
    let (first, second): (Vec<usize>, Vec<usize>) =
        (0..stream.lines.len()).partition(|&i| stream.table_of[i] == tables[0]);
    let order: Vec<usize> = first.iter().chain(&second).copied().collect();
    let lines: Vec<String> = order.iter().map(|&i| stream.lines[i].clone()).collect();
    let mut bad: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, i)| stream.bad.contains(i))
        .map(|(at, _)| at)
        .collect();
    bad.sort_unstable();
    let mut o = OutageRun::start(&ceph, "first-seen");
    o.run.feed(&lines[..first.len()]);
    o.run.wait_for_commits(&ceph, &o.bucket, 4);
    o.run.wait_until_quiet(&ceph, &o.bucket);
    o.down_for(&ceph, Duration::from_secs(12), &lines[first.len()..]);
    let (status, log) = o.run.finish();
    assert!(status.success(), "connector failed after the outage: {log}");
    assert!(
        log.contains("creating sales.refunds failed; retrying"),
        "the outage never hit the table's creation: {log}"
    );
    let stream = testkit::stream::Generated {
        lines,
        bad,
        ..stream
    };
    check_tables(&ceph, o.dir.path(), &o.warehouse, &tables, &stream);
}

/// The store stays down longer than the retry budget: the connector exits non-zero without
/// moving past what is durable, and a restart (the store back) finishes the work exactly once.
#[test]
fn store_down_past_the_retry_budget_then_a_restart_finishes() {
    let _serial = serial();
    let ceph = Ceph::from_env();
    let bucket = ceph.new_bucket("budget");
    let dir = tempfile::tempdir().unwrap();
    let (tables, stream) = outage_stream();
    let warehouse = format!("s3://{bucket}/lake");
    let setup = |input: &Path| {
        config(&Setup {
            dir: dir.path(),
            input,
            warehouse: warehouse.clone(),
            storage: plain_storage(&ceph),
            extra:
                "  batch:\n    max-records: 150\n  retries:\n    attempts: 2\n    backoff-ms: 200\n",
        })
    };
    let mut run = StdinRun::start(&setup(Path::new("-")), &ceph);
    let half = stream.lines.len() / 2;
    run.feed(&stream.lines[..half]);
    run.wait_for_commits(&ceph, &bucket, 4);
    let outage = ceph.outage();
    run.feed(&stream.lines[half..]);
    let (status, log) = run.finish();
    outage.end();
    assert!(
        !status.success(),
        "the connector outlived its retry budget: {log}"
    );
    assert!(log.contains("failed 2 times"), "{log}");

    // the restart reads the whole stream from a file and resumes where the tables are
    let input = dir.path().join("events.kv");
    std::fs::write(&input, stream.lines.join("\n") + "\n").unwrap();
    succeed(
        connector(&setup(&input), &ceph.access_key, &ceph.secret_key)
            .output()
            .unwrap(),
    );
    check_tables(&ceph, dir.path(), &warehouse, &tables, &stream);
}

struct Refused<'a> {
    case: &'a str,
    warehouse: String,
    access: &'a str,
    secret: &'a str,
    /// A clock offset for faketime.
    skew: Option<&'a str>,
    /// What the message must say.
    says: &'a str,
}

/// Refused at start, quickly, with a message naming the cause; no catalog file, no object.
#[test]
fn bad_credentials_missing_bucket_and_skewed_clock_are_named() {
    let _serial = serial();
    let ceph = Ceph::from_env();
    let bucket = ceph.new_bucket("refused");
    let input = workspace().join("tests/fixtures/products.kv");
    let cases = vec![
        Refused {
            case: "wrong secret",
            warehouse: format!("s3://{bucket}/lake"),
            access: &ceph.access_key,
            secret: "not-the-secret",
            skew: None,
            says: "wrong S3 secret key",
        },
        Refused {
            case: "unknown access key",
            warehouse: format!("s3://{bucket}/lake"),
            access: "nobody",
            secret: &ceph.secret_key,
            skew: None,
            says: "wrong S3 access key",
        },
        Refused {
            case: "missing bucket",
            warehouse: format!("s3://{bucket}-missing/lake"),
            access: &ceph.access_key,
            secret: &ceph.secret_key,
            skew: None,
            says: "does not exist",
        },
        Refused {
            case: "clock two hours ahead",
            warehouse: format!("s3://{bucket}/lake"),
            access: &ceph.access_key,
            secret: &ceph.secret_key,
            skew: Some("+2h"),
            says: "clock is too far",
        },
    ];
    for Refused {
        case,
        warehouse,
        access,
        secret,
        skew,
        says,
    } in cases
    {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&Setup {
            dir: dir.path(),
            input: &input,
            warehouse,
            storage: plain_storage(&ceph),
            extra: "",
        });
        let mut cmd = connector(&cfg, access, secret);
        if let Some(offset) = skew {
            // libfaketime shifts the connector's clock (tests/run.sh installs it)
            let mut faked = Command::new("faketime");
            faked
                .args(["-f", offset])
                .arg(cmd.get_program())
                .args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => faked.env(k, v),
                    None => faked.env_remove(k),
                };
            }
            cmd = faked;
        }
        let started = Instant::now();
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: the connector started");
        assert!(stderr.contains(says), "{case}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{case}: took {:?}",
            started.elapsed()
        );
        assert!(
            !dir.path().join("catalog.db").exists(),
            "{case}: a catalog was created"
        );
    }
    assert_eq!(
        ceph.keys(&bucket),
        Vec::<String>::new(),
        "objects were left"
    );
}

/// `maintain` against Ceph: compaction and expiry rewrite and delete objects on the store,
/// orphan removal lists the bucket through OpenDAL and deletes only unreferenced objects
/// older than the window; the readers then see the same rows.
#[test]
fn maintain_on_ceph_compacts_expires_and_removes_only_old_orphans() {
    let _serial = serial();
    let ceph = Ceph::from_env();
    let bucket = ceph.new_bucket("maintain");
    let dir = tempfile::tempdir().unwrap();
    let input = workspace().join("tests/fixtures/products.kv");
    let warehouse = format!("s3://{bucket}/lake");
    let cfg = config(&Setup {
        dir: dir.path(),
        input: &input,
        warehouse: warehouse.clone(),
        storage: plain_storage(&ceph),
        extra: "  batch:\n    max-records: 2\n  maintenance:\n    enabled: false\n    \
                compaction: { min-input-files: 2 }\n    \
                expiry: { max-snapshot-age: 0s, min-snapshots: 1 }\n    \
                orphans: { older-than: 1h }\n",
    });
    succeed(
        connector(&cfg, &ceph.access_key, &ceph.secret_key)
            .output()
            .unwrap(),
    );
    let catalog = catalog_config(&ceph, dir.path(), &warehouse);
    let snapshots_before = check_snapshots_complete(&catalog, "public.products");
    assert!(snapshots_before >= 4, "{snapshots_before}");

    let parquet_before = ceph
        .keys(&bucket)
        .iter()
        .filter(|k| k.ends_with(".parquet"))
        .count();
    let out = succeed(
        connector(&cfg, &ceph.access_key, &ceph.secret_key)
            .arg("maintain")
            .output()
            .unwrap(),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("compaction: data files"), "{report}");
    assert!(report.contains("deleted 0 orphans"), "{report}");
    let parquet_after = ceph
        .keys(&bucket)
        .iter()
        .filter(|k| k.ends_with(".parquet"))
        .count();
    // the compaction wrote one file; expiry deleted what it replaced
    assert!(
        parquet_after < parquet_before,
        "{parquet_before} -> {parquet_after}\n{report}"
    );
    // one snapshot: the compaction's, which carries the connector's offsets
    assert_eq!(check_snapshots_complete(&catalog, "public.products"), 1);

    // a lost commit's object, old by the time orphan removal runs; one written just before
    let io = Storage::new(&warehouse, &catalog.s3).unwrap().file_io();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let plant = |name: &str| {
        let path = format!("{warehouse}/public/products/data/{name}");
        runtime.block_on(async {
            io.new_output(&path)
                .unwrap()
                .write(bytes_of(b"stray"))
                .await
                .unwrap()
        });
    };
    plant("lost-commit.parquet");
    std::thread::sleep(Duration::from_secs(6));
    plant("in-flight.parquet");
    let out = succeed(
        connector(&cfg, &ceph.access_key, &ceph.secret_key)
            .args([
                "maintain",
                "--only",
                "orphans",
                "--orphans-older-than",
                "4s",
            ])
            .output()
            .unwrap(),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("deleted 1 orphans"), "{report}");
    assert!(report.contains("1 unreferenced but younger"), "{report}");
    let keys = ceph.keys(&bucket);
    assert!(
        !keys.iter().any(|k| k.ends_with("lost-commit.parquet")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("in-flight.parquet")),
        "{keys:?}"
    );
    assert_eq!(check_snapshots_complete(&catalog, "public.products"), 1);
    assert_products_read_back(&ceph, dir.path());

    // the connector resumes from the compaction's carried offsets: nothing is applied again
    let out = succeed(
        connector(&cfg, &ceph.access_key, &ceph.secret_key)
            .env("RUST_LOG", "info")
            .output()
            .unwrap(),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(" 0 commits"), "{log}");
    assert_eq!(check_snapshots_complete(&catalog, "public.products"), 1);
}

fn bytes_of(b: &'static [u8]) -> bytes::Bytes {
    bytes::Bytes::from_static(b)
}
