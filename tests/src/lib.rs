//! Helpers shared by the end-to-end tests: where the compiled SmartModule is, and the
//! Debezium sample messages in `tests/fixtures/debezium`.

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
        let text = format!(
            "apiVersion: 0.2.0\n\
             meta:\n  name: {name}\n  type: iceberg-cdc-sink\n  version: 0.1.0\n  topic: postgres-cdc\n\
             transforms:\n  - uses: cdc-iceberg/debezium-cdc@0.1.0\n{with}\
             iceberg:\n  source:\n{source}\
             \x20 catalog:\n    uri: sqlite://{dir}/catalog.db\n    warehouse: {warehouse}\n\
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

/// The tests' pseudo-random numbers: seeded, the same on every machine.
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
}

/// A deterministic stream of Debezium PostgreSQL change events (JSON converter with schemas,
/// Kafka key and value as `KEY<TAB>VALUE` lines), and the tables it must produce.
pub mod stream {
    use base64::Engine as _;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    pub struct Spec {
        pub events: usize,
        pub keys: u64,
        pub tables: Vec<String>,
        pub seed: u64,
        /// Every n-th message is a bad one (invalid JSON), for the dead-letter path.
        pub bad_every: Option<usize>,
        /// The primary key is (`shop`, `id`), `shop` the table's first column and Debezium's
        /// key struct listing `id` first (the model stays keyed by `id`: `shop` follows it).
        pub two_column_key: bool,
    }

    /// Rows by table (`schema.table`) and key, in the CDC record's normalized form.
    pub type Model = BTreeMap<String, BTreeMap<i64, Value>>;

    /// One table of the model as rows, by key: what a reader must return.
    pub fn table_rows(model: &Model, table: &str) -> Value {
        Value::Array(
            model
                .get(table)
                .map(|rows| rows.values().cloned().collect())
                .unwrap_or_default(),
        )
    }

    pub struct Generated {
        pub lines: Vec<String>,
        pub model: Model,
        /// Line numbers of the bad messages.
        pub bad: Vec<usize>,
        /// The table (`schema.table`) of each line; the bad ones belong to the first table.
        pub table_of: Vec<String>,
    }

    impl Generated {
        /// The first `n` lines and the rest, to produce at different times (the parts carry
        /// no model: check against the whole).
        pub fn split_at(&self, n: usize) -> (Generated, Generated) {
            let part = |lines: &[String], tables: &[String]| Generated {
                lines: lines.to_vec(),
                model: Model::new(),
                bad: Vec::new(),
                table_of: tables.to_vec(),
            };
            (
                part(&self.lines[..n], &self.table_of[..n]),
                part(&self.lines[n..], &self.table_of[n..]),
            )
        }

        /// The lines as Kafka messages: (Debezium topic `<server>.<schema>.<table>`, key,
        /// value; a tombstone has no value).
        pub fn kafka_messages(&self, server: &str) -> Vec<(String, Vec<u8>, Option<Vec<u8>>)> {
            self.lines
                .iter()
                .zip(&self.table_of)
                .map(|(line, table)| {
                    let (key, value) = line.split_once('\t').unwrap_or(("", line));
                    let value = (!value.is_empty()).then(|| value.as_bytes().to_vec());
                    (format!("{server}.{table}"), key.as_bytes().to_vec(), value)
                })
                .collect()
        }
    }

    use crate::Lcg;

    fn field(ty: &str, name: &str, optional: bool, logical: Option<(&str, Value)>) -> Value {
        let mut f = json!({"type": ty, "optional": optional, "field": name});
        if let Some((logical, params)) = logical {
            f["name"] = json!(logical);
            f["version"] = json!(1);
            if !params.is_null() {
                f["parameters"] = params;
            }
        }
        f
    }

    fn value_schema(table: &str, two_column_key: bool) -> Value {
        let shop = two_column_key.then(|| field("string", "shop", false, None));
        let row = |which: &str| {
            json!({"type": "struct", "optional": true, "name": format!("shop.{table}.Value"), "field": which,
            "fields": shop.iter().cloned().chain([
                field("int32", "id", false, None),
                field("string", "name", true, None),
                field("bytes", "price", true, Some(("org.apache.kafka.connect.data.Decimal",
                    json!({"scale": "2", "connect.decimal.precision": "10"})))),
                field("int32", "qty", true, None),
                field("int32", "day", true, Some(("io.debezium.time.Date", Value::Null))),
            ]).collect::<Vec<_>>()})
        };
        json!({"type": "struct", "optional": false, "name": format!("shop.{table}.Envelope"), "version": 2,
            "fields": [row("before"), row("after"),
                {"type": "struct", "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source",
                 "fields": [field("string", "connector", false, None), field("string", "db", false, None),
                            field("string", "schema", false, None), field("string", "table", false, None),
                            field("int64", "lsn", true, None), field("int64", "txId", true, None),
                            field("int64", "ts_ms", false, None)]},
                field("string", "op", false, None), field("int64", "ts_ms", true, None)]})
    }

    /// The wire row and its normalized form.
    fn row(rng: &mut Lcg, id: i64) -> (Value, Value) {
        let cents = rng.below(2_000_000) as i64 - 1_000_000;
        let days = 19_723 + rng.below(180) as i64; // 2024-01-01 + up to ~6 months
        let name = format!("item-{}", rng.below(100_000));
        let qty = rng.below(1000) as i64;
        let price_bytes = (cents as i32).to_be_bytes();
        let wire = json!({"id": id, "name": name, "qty": qty, "day": days,
            "price": base64::engine::general_purpose::STANDARD.encode(price_bytes)});
        let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.checked_add_signed(chrono::TimeDelta::days(days)))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let price = format!(
            "{}{}.{:02}",
            if cents < 0 { "-" } else { "" },
            cents.abs() / 100,
            cents.abs() % 100
        );
        let normalized = json!({"id": id, "name": name, "price": price, "qty": qty, "day": date});
        (wire, normalized)
    }

    /// The `shop` of a key's `id` under [`Spec::two_column_key`].
    fn shop_of(id: i64) -> Value {
        json!(format!("shop-{}", id % 7))
    }

    pub fn generate(spec: &Spec) -> Generated {
        let mut rng = Lcg(spec.seed);
        let mut model = Model::new();
        let mut wire_rows: BTreeMap<(String, i64), Value> = BTreeMap::new();
        let schemas: BTreeMap<&String, Value> = spec
            .tables
            .iter()
            .map(|t| (t, value_schema(t, spec.two_column_key)))
            .collect();
        let mut lines = Vec::with_capacity(spec.events);
        let mut table_of = Vec::with_capacity(spec.events);
        let mut bad = Vec::new();
        let mut lsn: u64 = 1_000_000;
        while lines.len() < spec.events {
            if spec.bad_every.is_some_and(|n| lines.len() % n == n - 1) {
                bad.push(lines.len());
                table_of.push(spec.tables[0].clone());
                lines.push(format!("{{\"id\":1}}\t{{\"schema\": {{\"type\": \"struct\"}}, \"payload\": {{\"op\": \"c\", \"after\": {{\"id\": {}", lines.len()));
                continue;
            }
            let table = &spec.tables[rng.below(spec.tables.len() as u64) as usize];
            let (schema_name, table_name) = table.split_once('.').unwrap_or(("public", table));
            let id = rng.below(spec.keys) as i64;
            lsn += 8;
            let exists = wire_rows.contains_key(&(table.clone(), id));
            let dice = rng.below(100);
            let (op, before, after) = if exists && dice < 10 {
                let before = wire_rows.remove(&(table.clone(), id));
                model.entry(table.clone()).or_default().remove(&id);
                ("d", before, None)
            } else {
                let (mut wire, mut normalized) = row(&mut rng, id);
                if spec.two_column_key {
                    wire["shop"] = shop_of(id);
                    normalized["shop"] = shop_of(id);
                }
                let op = if exists { "u" } else { "c" };
                let before = wire_rows.insert((table.clone(), id), wire.clone());
                model
                    .entry(table.clone())
                    .or_default()
                    .insert(id, normalized);
                (op, before.filter(|_| dice.is_multiple_of(2)), Some(wire))
            };
            let source = json!({"connector": "postgresql", "db": "shop", "schema": schema_name, "table": table_name,
                "lsn": lsn, "txId": lsn / 8, "ts_ms": 1_717_200_000_000u64 + lsn});
            let value = json!({"schema": schemas[table], "payload": {"before": before, "after": after,
                "source": source, "op": op, "ts_ms": 1_717_200_000_000u64 + lsn}});
            let key = if spec.two_column_key {
                json!({"schema": {"type": "struct", "optional": false, "name": format!("shop.{table}.Key"),
                    "fields": [field("int32", "id", false, None), field("string", "shop", false, None)]},
                    "payload": {"id": id, "shop": shop_of(id)}})
            } else {
                json!({"schema": {"type": "struct", "optional": false, "name": format!("shop.{table}.Key"),
                    "fields": [field("int32", "id", false, None)]}, "payload": {"id": id}})
            };
            lines.push(format!("{key}\t{value}"));
            table_of.push(table.clone());
            if op == "d" && lines.len() < spec.events {
                lines.push(format!("{key}\t"));
                table_of.push(table.clone());
            }
        }
        lines.truncate(spec.events);
        table_of.truncate(spec.events);
        Generated {
            lines,
            model,
            bad,
            table_of,
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
