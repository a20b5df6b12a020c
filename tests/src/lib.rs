//! The testkit: what the tests, the merge engine's tests and the benchmark share.
//!
//! - [`stream`]: the Debezium stream generator and the model its tables must equal;
//!   [`changes`]: change records for the merge engine directly; [`workload`]: SQL run on
//!   a real PostgreSQL for the real-upstream tests; [`Lcg`]: the random numbers of all three.
//! - [`readers`] (PyIceberg, DuckDB), [`spark`] (Spark SQL): the independent readers.
//! - [`ceph`]: the test object store; the compiled SmartModule and the Debezium sample
//!   messages in `tests/fixtures/debezium`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The compiled SmartModule: `$DEBEZIUM_CDC_WASM`, or where `smartmodule/build-wasm.sh` puts it.
pub fn wasm_path() -> PathBuf {
    std::env::var_os("DEBEZIUM_CDC_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace().join("target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm")
        })
}

/// A connector config file for the end-to-end tests: a SQLite catalog and the dead-letter
/// file in `dir`, the SmartModule from [`wasm_path`], and the test's own lines.
pub struct SinkConfig<'a> {
    pub name: &'a str,
    pub dir: &'a std::path::Path,
    /// Lines under `iceberg.source` (four spaces in), e.g. [`SinkConfig::file_source`].
    pub source: String,
    /// `file://<dir>/warehouse` when empty.
    pub warehouse: String,
    /// More lines under `iceberg.catalog` (four spaces in), e.g. `type: rest`; its `uri` when
    /// it names one (else the SQLite catalog in `dir`).
    pub catalog: String,
    /// Lines under the transform's `with:` (six spaces in).
    pub params: &'a str,
    /// More keys of the `iceberg:` section (two spaces in).
    pub extra: &'a str,
}

impl SinkConfig<'_> {
    /// The file source over `input` (`-`: stdin), `KEY<TAB>VALUE` lines.
    pub fn file_source(input: &std::path::Path) -> String {
        format!(
            "    type: file\n    path: \"{}\"\n    format: key-value\n",
            input.display()
        )
    }

    /// Writes `<dir>/connector.yaml`.
    pub fn write(&self) -> PathBuf {
        let dir = self.dir.display();
        let warehouse = if self.warehouse.is_empty() {
            format!("file://{dir}/warehouse")
        } else {
            self.warehouse.clone()
        };
        let with = if self.params.is_empty() {
            String::new()
        } else {
            format!("    with:\n{}", self.params)
        };
        let catalog = if self.catalog.contains("uri:") {
            self.catalog.clone()
        } else {
            format!("    uri: sqlite://{dir}/catalog.db\n{}", self.catalog)
        };
        let text = format!(
            "apiVersion: 0.2.0\n\
             meta:\n  name: {name}\n  type: iceberg-cdc-sink\n  version: 0.1.0\n  topic:\n    meta:\n      name: postgres-cdc\n\
             transforms:\n  - uses: cdc-iceberg/debezium-cdc@0.1.0\n{with}\
             iceberg:\n  source:\n{source}\
             \x20 catalog:\n{catalog}    warehouse: {warehouse}\n\
             \x20 dead-letter:\n    file: {dir}/dead-letter.jsonl\n\
             \x20 smartmodules:\n    cdc-iceberg/debezium-cdc@0.1.0: {wasm}\n{extra}",
            name = self.name,
            source = self.source,
            wasm = wasm_path().display(),
            extra = self.extra,
        );
        let path = self.dir.join("connector.yaml");
        std::fs::write(&path, text).expect("writing the connector config");
        path
    }
}

/// The compiled SmartModule's bytes; a clear error when it was not built.
pub fn wasm_bytes() -> Result<Vec<u8>> {
    let path = wasm_path();
    if !path.exists() {
        bail!(
            "{} is missing: build it with `bash smartmodule/build-wasm.sh`",
            path.display()
        );
    }
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// A Kafka message as the Fluvio Kafka source presents it: key bytes (if any) and value
/// bytes (empty for a tombstone).
#[derive(Debug, Clone)]
pub struct Message {
    pub name: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// One sample from `tests/fixtures/debezium/<name>.json` (`{"key":…,"value":…}`).
pub fn fixture(name: &str) -> Result<Message> {
    let path = workspace().join(format!("tests/fixtures/debezium/{name}.json"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let msg: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let key = match &msg["key"] {
        Value::Null => None,
        k => Some(serde_json::to_vec(k)?),
    };
    let value = match &msg["value"] {
        Value::Null => Vec::new(),
        v => serde_json::to_vec(v)?,
    };
    Ok(Message {
        name: name.to_owned(),
        key,
        value,
    })
}

/// Every sample's name.
pub fn fixture_names() -> Result<Vec<String>> {
    let dir = workspace().join("tests/fixtures/debezium");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

pub mod workload;

/// The pseudo-random numbers of the tests, the stream generator and the benchmark: seeded,
/// the same on every machine.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.below(1 << 30) as f64) < p * (1u64 << 30) as f64
    }
}

pub mod changes;
pub mod stream;

/// Talking to the HTTP endpoints of processes under test (the connector's `/metrics`,
/// Prometheus' API) on loopback, without a client library.
pub mod http {
    use std::io::{Read, Write};
    use std::time::Duration;

    /// A loopback port free at the time of asking.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port")
    }

    /// A plain HTTP/1.0 GET of `path` on 127.0.0.1:`port`: the status code and the body;
    /// `None` when nothing answers.
    pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    }
}

/// A Fluvio cluster driven by its CLI, for the test and the benchmark contender that need
/// one: `fluvio` and `fluvio-run` on PATH (no registry has them: README, "A local Fluvio
/// cluster"); the cluster that answers, or a local one started and removed again.
pub mod fluvio {
    use anyhow::{bail, Context, Result};
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    /// Why no cluster can run here, if none can.
    pub fn missing() -> Option<String> {
        let absent: Vec<&str> = ["fluvio", "fluvio-run"]
            .into_iter()
            .filter(|name| !on_path(name))
            .collect();
        (!absent.is_empty()).then(|| format!("{} not on PATH", absent.join(" and ")))
    }

    fn on_path(name: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
    }

    /// `fluvio ARGS`, its standard output; an error with what it said when it fails.
    pub fn cli(args: &[&str]) -> Result<String> {
        let out = Command::new("fluvio")
            .args(args)
            .output()
            .with_context(|| format!("running fluvio {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "fluvio {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A cluster and what was made on it: dropped, the topics and SmartModules go, and the
    /// cluster too when it was started here.
    pub struct Cluster {
        started: bool,
        topics: Vec<String>,
        modules: Vec<String>,
    }

    impl Cluster {
        /// The cluster answering `fluvio`, or a local one started now.
        pub fn up() -> Result<Cluster> {
            let started = cli(&["topic", "list"]).is_err();
            if started {
                cli(&["cluster", "start", "--local"])?;
            }
            Ok(Cluster {
                started,
                topics: Vec::new(),
                modules: Vec::new(),
            })
        }

        /// A new topic of `partitions` partitions.
        pub fn topic(&mut self, name: &str, partitions: u32) -> Result<()> {
            cli(&["topic", "create", name, "-p", &partitions.to_string()])?;
            self.topics.push(name.to_owned());
            Ok(())
        }

        /// `wasm` registered as the SmartModule `name` (one of that name from an earlier run
        /// would stand in for this build's: it goes first).
        pub fn module(&mut self, name: &str, wasm: &Path) -> Result<()> {
            let wasm = wasm.to_str().context("the .wasm's path is not UTF-8")?;
            let _ = cli(&["smartmodule", "delete", name]);
            cli(&["smartmodule", "create", name, "--wasm-file", wasm])?;
            self.modules.push(name.to_owned());
            // a new module takes a moment to reach the SPU
            std::thread::sleep(Duration::from_secs(3));
            Ok(())
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            for topic in &self.topics {
                let _ = cli(&["topic", "delete", topic]);
            }
            for module in &self.modules {
                let _ = cli(&["smartmodule", "delete", module]);
            }
            if self.started {
                // 0.18.1's delete has no --local
                let _ = cli(&["cluster", "delete", "--force"]);
            }
        }
    }
}

/// The independent Iceberg readers (PyIceberg and DuckDB) that `tests/run.sh` installs in
/// `tests/.venv`, and a foreign writer (PyIceberg append).
pub mod readers {
    use super::workspace;
    use serde_json::Value;
    use std::path::PathBuf;

    /// A catalog as PyIceberg opens it.
    pub struct PyCatalog<'a> {
        /// Our URI (`sqlite://…` or `postgres://…`).
        pub uri: &'a str,
        pub name: &'a str,
        /// The S3 store of an `s3://` warehouse.
        pub s3: Option<&'a crate::ceph::Ceph>,
    }

    /// PyIceberg names the same databases the SQLAlchemy way.
    pub fn sqlalchemy_uri(uri: &str) -> String {
        match uri.strip_prefix("postgres://") {
            Some(rest) => format!("postgresql+psycopg2://{rest}"),
            None => uri.replacen("sqlite://", "sqlite:///", 1),
        }
    }

    /// The Python with PyIceberg and DuckDB (`$CDC_PYTHON` overrides).
    pub fn python() -> PathBuf {
        let python = std::env::var_os("CDC_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("tests/.venv/bin/python"));
        assert!(
            python.exists(),
            "{} is missing: `bash tests/run.sh` installs the Python readers (PyIceberg, DuckDB)",
            python.display()
        );
        python
    }

    fn run_script(script: &str, catalog: &PyCatalog, table: &str, args: &[&str]) -> Vec<u8> {
        let mut with_table = vec!["--table", table];
        with_table.extend_from_slice(args);
        run_on_catalog(script, catalog, &with_table)
    }

    /// Runs `tests/readers/<script>` with the catalog's options and `args`; its stdout.
    fn run_on_catalog(script: &str, catalog: &PyCatalog, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new(python())
            .arg(workspace().join("tests/readers").join(script))
            .args(["--catalog-uri", &sqlalchemy_uri(catalog.uri)])
            .args(["--catalog-name", catalog.name])
            .args(catalog.s3.map(|s3| s3.reader_args()).unwrap_or_default())
            .args(args)
            .output()
            .expect("run Python");
        assert!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The table's `columns` as PyIceberg and DuckDB read them:
    /// `{"pyiceberg": [rows], "duckdb": [rows]}`.
    pub fn read(catalog: &PyCatalog, table: &str, columns: &[&str]) -> Value {
        let out = run_script(
            "read_table.py",
            catalog,
            table,
            &["--columns", &columns.join(",")],
        );
        serde_json::from_slice(&out).expect("the readers print JSON")
    }

    /// [`read`], each reader's rows sorted by `id`: `(pyiceberg, duckdb)`.
    pub fn read_by_id(catalog: &PyCatalog, table: &str, columns: &[&str]) -> (Value, Value) {
        let v = read(catalog, table, columns);
        let by_id = |rows: &Value| -> Value {
            let mut rows = rows.as_array().cloned().unwrap_or_default();
            rows.sort_by_key(|r| r["id"].as_i64());
            Value::Array(rows)
        };
        (by_id(&v["pyiceberg"]), by_id(&v["duckdb"]))
    }

    /// Each PostgreSQL table of `tables` (`(source, iceberg)` names) against its Iceberg
    /// table read by PyIceberg, DuckDB and Spark (tests/readers/compare_source.py):
    /// `{source: {"rows": n, "pyiceberg": "equal" | what differs, "duckdb": …, "spark": …}}`.
    pub fn compare_with_source(
        source_uri: &str,
        catalog: &PyCatalog,
        warehouse: &str,
        tables: &[(String, String)],
    ) -> Value {
        let pairs: Vec<String> = tables.iter().map(|(s, t)| format!("{s}={t}")).collect();
        let spark = crate::spark::address();
        let out = run_on_catalog(
            "compare_source.py",
            catalog,
            &[
                "--source-dsn",
                source_uri,
                "--spark",
                &spark,
                "--spark-uri",
                catalog.uri,
                "--spark-warehouse",
                warehouse,
                "--tables",
                &pairs.join(","),
            ],
        );
        serde_json::from_slice(&out).expect("compare_source.py prints JSON")
    }

    /// Appends rows with PyIceberg: a foreign writer.
    pub fn append(catalog: &PyCatalog, table: &str, rows: &Value) {
        run_script(
            "append_rows.py",
            catalog,
            table,
            &["--rows", &rows.to_string()],
        );
    }

    /// Creates a table of PyIceberg's own (no primary key, no CDC columns) at `location`,
    /// holding `rows`: an analyst's table in the connector's catalog.
    pub fn create(catalog: &PyCatalog, table: &str, location: &str, rows: &Value) {
        run_script(
            "append_rows.py",
            catalog,
            table,
            &["--rows", &rows.to_string(), "--create", location],
        );
    }
}

/// Spark SQL (tests/readers/spark_service.py, one SparkSession for the whole run, started by
/// `tests/spark.sh`): the reader our users know, and a foreign writer.
pub mod spark {
    use serde_json::{json, Value};
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;

    /// `$CDC_TEST_SPARK` (`host:port`).
    pub fn address() -> String {
        std::env::var("CDC_TEST_SPARK").unwrap_or_else(|_| {
            panic!("CDC_TEST_SPARK is not set: `bash tests/run.sh` starts Spark (tests/spark.sh)")
        })
    }

    /// A SQL catalog of ours as Spark's JdbcCatalog opens it (`uri` in our form).
    pub fn catalog(name: &str, uri: &str, warehouse: &str) -> Value {
        json!({"name": name, "uri": uri, "warehouse": warehouse, "s3": null})
    }

    /// [`catalog`] with an `s3://` warehouse on the test Ceph (S3FileIO, path-style).
    pub fn catalog_on(name: &str, uri: &str, warehouse: &str, ceph: &crate::ceph::Ceph) -> Value {
        json!({"name": name, "uri": uri, "warehouse": warehouse, "s3": {
            "endpoint": ceph.endpoint, "access_key": ceph.access_key, "secret_key": ceph.secret_key}})
    }

    /// Runs `sql` in Spark with `catalog` registered; its rows (normalized values), or
    /// Spark's error.
    pub fn sql(catalog: &Value, sql: &str) -> Result<Vec<Value>, String> {
        let stream = TcpStream::connect(address()).map_err(|e| format!("Spark service: {e}"))?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let request = json!({"catalog": catalog, "sql": sql});
        writeln!(writer, "{request}").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let reply: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        match reply.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => Ok(reply["rows"].as_array().cloned().unwrap_or_default()),
        }
    }
}

/// The single-node Ceph cluster (S3 through the RADOS Gateway) that `tests/ceph.sh` starts
/// for `tests/run.sh`.
pub mod ceph {
    use std::process::Command;

    #[derive(Debug, Clone)]
    pub struct Ceph {
        /// `http://127.0.0.1:7480`
        pub endpoint: String,
        /// `https://127.0.0.1:7443`, a certificate signed by `ca_file`.
        pub tls_endpoint: String,
        pub ca_file: String,
        pub access_key: String,
        pub secret_key: String,
        script: String,
    }

    /// The gateway is down while this lives.
    pub struct Outage<'a>(&'a Ceph);

    impl Outage<'_> {
        /// Starts the gateway again (and waits until it serves).
        pub fn end(self) {
            self.0.script(&["rgw-start"]);
        }
    }

    impl Drop for Outage<'_> {
        fn drop(&mut self) {
            // idempotent after `end`; never panics (this may run while a test unwinds)
            let _ = Command::new("bash")
                .arg(&self.0.script)
                .arg("rgw-start")
                .status();
        }
    }

    fn var(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: `bash tests/run.sh` starts Ceph (tests/ceph.sh) and sets it")
        })
    }

    impl Ceph {
        pub fn from_env() -> Ceph {
            Ceph {
                endpoint: var("CDC_TEST_S3_ENDPOINT"),
                tls_endpoint: var("CDC_TEST_S3_TLS_ENDPOINT"),
                ca_file: var("CDC_TEST_S3_CA_FILE"),
                access_key: var("CDC_TEST_S3_ACCESS_KEY"),
                secret_key: var("CDC_TEST_S3_SECRET_KEY"),
                script: var("CDC_TEST_CEPH_SCRIPT"),
            }
        }

        fn script(&self, args: &[&str]) -> String {
            let out = Command::new("bash")
                .arg(&self.script)
                .args(args)
                .output()
                .expect("run tests/ceph.sh");
            assert!(
                out.status.success(),
                "tests/ceph.sh {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// A new bucket with a name of this run's own.
        pub fn new_bucket(&self, purpose: &str) -> String {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let name = format!("{purpose}-{}-{nanos}", std::process::id());
            self.script(&["make-bucket", &name]);
            name
        }

        /// Every object key in a bucket.
        pub fn keys(&self, bucket: &str) -> Vec<String> {
            self.script(&["keys", bucket])
                .lines()
                .map(str::to_owned)
                .collect()
        }

        /// Stops the S3 gateway until the returned guard ends (or drops, on a panic too).
        pub fn outage(&self) -> Outage<'_> {
            self.script(&["rgw-stop"]);
            Outage(self)
        }

        /// The readers' options for this store.
        pub fn reader_args(&self) -> Vec<String> {
            vec![
                "--s3-endpoint".into(),
                self.endpoint.clone(),
                "--s3-access-key".into(),
                self.access_key.clone(),
                "--s3-secret-key".into(),
                self.secret_key.clone(),
            ]
        }
    }
}

/// The `products` table after `tests/fixtures/products.kv` (id, name, price, on_offer), by id.
pub fn products_final_rows() -> Value {
    serde_json::json!([
        {"id": 1, "name": "scooter", "price": 279, "on_offer": true},
        {"id": 2, "name": "car battery", "price": 81, "on_offer": false},
        {"id": 4, "name": "hammer", "price": 29, "on_offer": false},
        {"id": 5, "name": "rocks", "price": 6, "on_offer": false},
        {"id": 6, "name": "tape", "price": 7, "on_offer": false}
    ])
}
