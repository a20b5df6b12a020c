//! The metrics endpoint as an operator uses it: Prometheus (Debian's package) scrapes the
//! connector during a run, and its HTTP API's answers equal what the run did (the stream's
//! lines, operations and bad messages; the table's snapshots and rows); `/health` and
//! `/ready` answer; Fluvio's connector-metrics socket reports the same counts.

use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::http::{free_port, get};
use testkit::readers::{self, PyCatalog};
use testkit::stream::{generate, table_rows, Spec};
use testkit::SinkConfig;

fn query_escape(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A PromQL query's samples: (labels, value).
fn promql(port: u16, q: &str) -> Vec<(Value, f64)> {
    let Some((200, body)) = get(port, &format!("/api/v1/query?query={}", query_escape(q))) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| {
                    let value = s["value"][1].as_str()?.parse().ok()?;
                    Some((s["metric"].clone(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn one(port: u16, q: &str) -> Option<f64> {
    promql(port, q).first().map(|(_, v)| *v)
}

/// Debian's Prometheus scraping `target` every second, its API on the returned port.
fn start_prometheus(dir: &Path, target: u16) -> (Child, u16) {
    let binary = which("prometheus").unwrap_or_else(|| {
        panic!("prometheus is not on PATH: `bash tests/run.sh` installs Debian's package")
    });
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: iceberg-cdc\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (child, port)
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Kills the child when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it says `Ok`; on time-out fails with what it said last.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let until = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) if Instant::now() > until => panic!("timed out waiting for {what}: {seen}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// `Ok` when `got` is `want`, else what was got.
fn equal<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{got:?}, not {want:?}"))
    }
}

#[test]
fn prometheus_scrapes_what_the_run_did() {
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&Spec {
        events: 6_000,
        keys: 900,
        tables: vec!["public.orders".to_owned()],
        seed: 17,
        bad_every: Some(211),
        ..Spec::default()
    });
    let lines = stream.lines.len();
    let bad = stream.bad.len();
    assert!(bad > 10, "the stream has bad messages");
    let metrics_port = free_port();
    let socket = dir.path().join("fluvio-connector.sock");
    let cfg = SinkConfig {
        catalog: String::new(),
        name: "metrics-sink",
        dir: dir.path(),
        source: SinkConfig::file_source(Path::new("-")),
        warehouse: String::new(),
        params: "      operations: \"c,u,d,r\"\n",
        extra: "  batch:\n    max-records: 400\n    interval-ms: 300\n",
    }
    .write();

    let (prometheus, prom_port) = start_prometheus(dir.path(), metrics_port);
    let _prometheus = Reaped(prometheus);
    let mut connector = Reaped(
        Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"))
            .arg("--config")
            .arg(&cfg)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "warn")
            .env("FLUVIO_METRIC_CONNECTOR", &socket)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // ready once the tables are open and the file source reads
    wait_for("/ready", Duration::from_secs(120), || {
        equal(get(metrics_port, "/ready").map(|r| r.0), Some(200))
    });
    assert_eq!(get(metrics_port, "/health").map(|r| r.0), Some(200));
    let mut stdin = connector.0.stdin.take().unwrap();
    stdin
        .write_all((stream.lines.join("\n") + "\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();

    // Prometheus has scraped the whole run once it reports every line read and every
    // dead letter (the last changes are committed within the batch interval)
    let read = "sum(iceberg_cdc_source_records_read_total)";
    wait_for(
        "Prometheus to scrape every line",
        Duration::from_secs(120),
        || equal(one(prom_port, read), Some(lines as f64)),
    );
    let (creates, updates, deletes) = stream.ops;
    let live = table_rows(&stream.model, "public.orders")
        .as_array()
        .map_or(0, Vec::len);
    // the key index holds every key seen: live, or a tombstone of its delete
    let keys_seen = stream
        .lines
        .iter()
        .enumerate()
        .filter(|(n, _)| !stream.bad.contains(n))
        .filter_map(|(_, l)| l.split_once('\t').map(|(k, _)| k))
        .collect::<std::collections::HashSet<_>>()
        .len();
    wait_for(
        "the last commit to be scraped",
        Duration::from_secs(60),
        || {
            let keys = one(
                prom_port,
                "iceberg_cdc_key_index_keys{table=\"public.orders\"}",
            );
            let changes = one(prom_port, "sum(iceberg_cdc_changes_total)");
            equal(
                (keys, changes),
                (
                    Some(keys_seen as f64),
                    Some((creates + updates + deletes) as f64),
                ),
            )
        },
    );
    let by_op: Vec<(String, f64)> = promql(prom_port, "sum by (op) (iceberg_cdc_changes_total)")
        .into_iter()
        .map(|(m, v)| (m["op"].as_str().unwrap_or_default().to_owned(), v))
        .collect();
    for (op, want) in [("c", creates), ("u", updates), ("d", deletes)] {
        let got = by_op.iter().find(|(o, _)| o == op).map(|(_, v)| *v);
        assert_eq!(got, Some(want as f64), "changes of op {op}: {by_op:?}");
    }
    assert_eq!(
        one(prom_port, "sum(iceberg_cdc_dead_letters_total)"),
        Some(bad as f64),
        "dead letters"
    );
    assert_eq!(get(metrics_port, "/ready").map(|r| r.0), Some(200));

    // the Fluvio socket: the same counts as JSON
    let mut doc = String::new();
    std::os::unix::net::UnixStream::connect(&socket)
        .expect("Fluvio's connector-metrics socket")
        .read_to_string(&mut doc)
        .unwrap();
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["consumer"]["records"], lines as u64, "{doc}");
    assert!(
        doc["smartmodules"]["cdc-iceberg/debezium-cdc@0.1.0"]["invocation_count"].as_u64()
            > Some(0)
    );

    // commits as the table's history has them (asked while the connector runs: once its
    // endpoint is gone Prometheus marks the series stale)
    let snapshots = || {
        let out = Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"))
            .arg("--config")
            .arg(&cfg)
            .args(["inspect", "--rows", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with("snapshot "))
            .count()
    };
    let commits = wait_for("commits = snapshots", Duration::from_secs(60), || {
        let applied = "sum(iceberg_cdc_commits_total{outcome=\"applied\"})";
        let n = snapshots();
        equal(one(prom_port, applied), Some(n as f64)).map(|_| n)
    });
    assert!(commits > 3, "several commits");
    let timed = one(prom_port, "sum(iceberg_cdc_commit_duration_seconds_count)");
    assert_eq!(timed, Some(commits as f64), "every commit timed");
    let batched = one(prom_port, "sum(iceberg_cdc_batch_changes_sum)");
    assert_eq!(
        batched,
        Some((creates + updates + deletes) as f64),
        "batch sizes"
    );
    let rss = one(prom_port, "process_resident_memory_bytes").unwrap_or_default();
    assert!(rss > 1e6, "resident memory {rss}");
    let up = one(prom_port, "sum(iceberg_cdc_rows_upserted_total)").unwrap_or_default();
    assert!(
        up >= live as f64 && up <= (creates + updates) as f64,
        "rows upserted {up}"
    );
    let lag = one(prom_port, "sum(iceberg_cdc_seconds_since_last_commit)");
    assert!(
        lag.is_some_and(|s| s < 600.0),
        "seconds since the last commit {lag:?}"
    );

    drop(stdin);
    let status = connector.0.wait().unwrap();
    assert!(status.success(), "connector exited with {status}");
    assert_eq!(
        snapshots(),
        commits,
        "nothing was left to commit at the end"
    );

    // and the table is what the stream says
    let uri = format!("sqlite://{}/catalog.db", dir.path().display());
    let catalog = PyCatalog {
        uri: &uri,
        name: "cdc",
        s3: None,
    };
    let (py, duck) = readers::read_by_id(
        &catalog,
        "public.orders",
        &["id", "name", "price", "qty", "day"],
    );
    let want = table_rows(&stream.model, "public.orders");
    assert_eq!(py, want, "PyIceberg");
    assert_eq!(duck, want, "DuckDB");
}
