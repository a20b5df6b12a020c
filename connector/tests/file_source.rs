//! The connector as a process, file source, through the real `.wasm`, into SQLite-catalog
//! tables read back by PyIceberg and DuckDB; restarts; `kill -9` at random moments.

use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use testkit::readers::{self, PyCatalog};
use testkit::stream::{generate, table_rows, Spec};
use testkit::{workspace, SinkConfig};

fn config(dir: &Path, input: &Path, extra: &str) -> PathBuf {
    SinkConfig {
        catalog: String::new(),
        name: "test-sink",
        dir,
        source: SinkConfig::file_source(input),
        warehouse: String::new(),
        params: "      operations: \"c,u,d,r\"\n",
        extra,
    }
    .write()
}

fn connector(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"));
    cmd.arg("--config").arg(config).env("RUST_LOG", "warn");
    cmd
}

fn run(config: &Path) -> Output {
    let out = connector(config).output().unwrap();
    assert!(
        out.status.success(),
        "connector failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The table as PyIceberg and DuckDB read it, sorted by id.
fn read(dir: &Path, table: &str, columns: &str) -> (Value, Value) {
    let uri = format!("sqlite://{}/catalog.db", dir.display());
    let catalog = PyCatalog {
        uri: &uri,
        name: "cdc",
        s3: None,
    };
    let columns: Vec<&str> = columns.split(',').collect();
    readers::read_by_id(&catalog, table, &columns)
}

/// The dead-letter file's entries.
fn dead_letters(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("dead-letter.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn snapshots(config: &Path) -> usize {
    let out = connector(config)
        .arg("inspect")
        .arg("--rows")
        .arg("0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("snapshot "))
        .count()
}

#[test]
fn sample_products_land_in_iceberg_and_the_bad_record_in_the_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = workspace().join("tests/fixtures/products.kv");
    let cfg = config(dir.path(), &input, "");
    run(&cfg);
    let (py, duck) = read(dir.path(), "public.products", "id,name,price,on_offer");
    let expected = testkit::products_final_rows();
    assert_eq!(py, expected, "PyIceberg");
    assert_eq!(duck, expected, "DuckDB");
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["offset"], 9);
    assert!(dead[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    // a second run over the same input resumes at the end: no new snapshot, same rows
    let before = snapshots(&cfg);
    run(&cfg);
    assert_eq!(snapshots(&cfg), before);
    assert_eq!(
        read(dir.path(), "public.products", "id,name,price,on_offer").0,
        expected
    );

    // inspect shows the rows and the offsets
    let out = connector(&cfg)
        .args(["inspect", "--table", "public.products"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 rows"), "{text}");
    assert!(text.contains(r#"offsets {"0":13}"#), "{text}");
}

/// A key-value line without its TAB is dead-lettered with its line number and the stream
/// goes on: every change after it lands.
#[test]
fn a_line_without_a_tab_is_dead_lettered_and_the_rest_flows() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(workspace().join("tests/fixtures/products.kv")).unwrap();
    let mut lines: Vec<&str> = sample.lines().collect();
    lines.insert(3, r#"{"id":99} {"payload":{"op":"c"}}"#);
    let input = dir.path().join("events.kv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    run(&config(dir.path(), &input, ""));
    let (py, duck) = read(dir.path(), "public.products", "id,name,price,on_offer");
    let expected = testkit::products_final_rows();
    assert_eq!(py, expected, "PyIceberg");
    assert_eq!(duck, expected, "DuckDB");
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0]["offset"], 3);
    assert_eq!(dead[0]["reason"], "line 4: no TAB between key and value");
    assert_eq!(
        dead[1]["offset"], 10,
        "the sample's own bad record, one line later"
    );
}

/// `kill -9` at random moments during a long replay, restart each time: the final tables
/// equal the model: no event lost, none applied twice, each bad record dead-lettered once.
#[test]
fn kill_nine_at_random_moments_then_exactly_once() {
    kill_nine_then_exactly_once(false);
}

/// The same with a two-column primary key (text and integer) whose Debezium key struct lists
/// its columns in another order than the table: every restart rebuilds the key index from the
/// data files, and it must encode keys as the incoming records do.
#[test]
fn kill_nine_with_a_two_column_key_then_exactly_once() {
    kill_nine_then_exactly_once(true);
}

fn kill_nine_then_exactly_once(two_column_key: bool) {
    let dir = tempfile::tempdir().unwrap();
    let tables = vec![
        "public.orders".to_owned(),
        "public.items".to_owned(),
        "sales.refunds".to_owned(),
    ];
    let stream = generate(&Spec {
        events: 30_000,
        keys: 1500,
        tables: tables.clone(),
        seed: 42,
        bad_every: Some(997),
        two_column_key,
        ..Spec::default()
    });
    let input = dir.path().join("events.kv");
    std::fs::write(&input, stream.lines.join("\n") + "\n").unwrap();
    let cfg = config(
        dir.path(),
        &input,
        "  batch:\n    max-records: 700\n  tables:\n    partition-by: month(day)\n",
    );

    let mut rng = testkit::Lcg(9);
    let mut kills = 0;
    let mut finished = false;
    while kills < 10 {
        let mut child = connector(&cfg).spawn().unwrap();
        let wait = Duration::from_millis(300 + rng.below(2500));
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "connector exited with {status}");
                finished = true;
                break;
            }
            if started.elapsed() >= wait {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if finished {
            break;
        }
    }
    // whatever is left
    run(&cfg);
    assert!(
        kills >= 3,
        "the replay finished before enough kills ({kills})"
    );

    for table in &tables {
        let columns = if two_column_key {
            "id,shop,name,price,qty,day"
        } else {
            "id,name,price,qty,day"
        };
        let (py, duck) = read(dir.path(), table, columns);
        let want = table_rows(&stream.model, table);
        assert_eq!(py, want, "PyIceberg, {table}");
        assert_eq!(duck, want, "DuckDB, {table}");
    }
    // every bad message is in the dead-letter file, once
    let mut offsets: Vec<i64> = dead_letters(dir.path())
        .iter()
        .map(|d| d["offset"].as_i64().unwrap())
        .collect();
    offsets.sort_unstable();
    let bad: Vec<i64> = stream.bad.iter().map(|&b| b as i64).collect();
    assert_eq!(offsets, bad);
    // sane history: no more commits than batches could make, with a margin for the restarts
    let snaps = snapshots(&cfg);
    assert!(
        snaps <= 30_000 / 700 * 3 + 3 * (kills + 1),
        "{snaps} snapshots"
    );
}

/// SIGTERM stops reading (here from a stdin that stays open), commits what is open and
/// exits 0; a restart over the whole input finishes it and the tables equal the model.
#[test]
fn sigterm_commits_the_open_batch_and_a_restart_finishes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let stream = generate(&Spec {
        events: 8_000,
        keys: 3000,
        tables: vec!["public.orders".to_owned()],
        seed: 5,
        bad_every: None,
        two_column_key: false,
        ..Spec::default()
    });
    // batches never fill and never age: only the stop commits
    let slow = "  batch:\n    max-records: 1000000\n    interval-ms: 3600000\n";
    let cfg = config(dir.path(), Path::new("-"), slow);
    let mut child = connector(&cfg)
        .env("RUST_LOG", "iceberg_cdc_sink=debug")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let half = stream.lines.len() / 2;
    stdin
        .write_all((stream.lines[..half].join("\n") + "\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    // wait until the connector has read all it was given (its debug log says so)
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let seen = format!("last={}", half - 1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains(&seen) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the connector never reported reading the input");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    drop(stdin);
    assert!(exit.success(), "connector exited with {exit} after SIGTERM");
    assert_eq!(snapshots(&cfg), 1, "the stop committed the open batch");

    let input = dir.path().join("events.kv");
    std::fs::write(&input, stream.lines.join("\n") + "\n").unwrap();
    let cfg = config(dir.path(), &input, slow);
    run(&cfg);
    assert_eq!(snapshots(&cfg), 2);
    let (py, duck) = read(dir.path(), "public.orders", "id,name,price,qty,day");
    let want = table_rows(&stream.model, "public.orders");
    assert_eq!(py, want, "PyIceberg");
    assert_eq!(duck, want, "DuckDB");
}

/// One Debezium message as the JSON converter with schemas writes it (`KEY<TAB>VALUE`): a
/// change of `public.<table>` keyed by `id`, its row's columns as (name, Connect type,
/// optional, value); a delete sends them as `before`.
fn debezium(table: &str, op: &str, lsn: u64, row: &[(&str, &str, bool, Value)]) -> String {
    use serde_json::json;
    // `decimal:P:S`: Connect's Decimal (base64 of the unscaled value) with its precision
    let fields: Vec<Value> = row
        .iter()
        .map(|(name, ty, optional, _)| {
            match ty
                .strip_prefix("decimal:")
                .and_then(|ps| ps.split_once(':'))
            {
                Some((p, s)) => json!({"type": "bytes", "optional": optional, "field": name,
                "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                "parameters": {"scale": s, "connect.decimal.precision": p}}),
                None => json!({"type": ty, "optional": optional, "field": name}),
            }
        })
        .collect();
    let image: serde_json::Map<String, Value> = row
        .iter()
        .map(|(name, _, _, v)| ((*name).to_owned(), v.clone()))
        .collect();
    let id = image["id"].clone();
    let side = |which: &str| {
        json!({"type": "struct", "optional": true, "name": format!("shop.public.{table}.Value"),
               "field": which, "fields": fields})
    };
    let schema = json!({"type": "struct", "optional": false, "name": format!("shop.public.{table}.Envelope"),
        "fields": [side("before"), side("after"),
            {"type": "struct", "optional": false, "field": "source", "name": "io.debezium.connector.postgresql.Source",
             "fields": [{"type": "string", "optional": false, "field": "connector"},
                        {"type": "string", "optional": false, "field": "schema"},
                        {"type": "string", "optional": false, "field": "table"},
                        {"type": "int64", "optional": true, "field": "lsn"},
                        {"type": "int64", "optional": false, "field": "ts_ms"}]},
            {"type": "string", "optional": false, "field": "op"}]});
    let (before, after) = if op == "d" {
        (Value::Object(image), Value::Null)
    } else {
        (Value::Null, Value::Object(image))
    };
    let value = json!({"schema": schema, "payload": {"before": before, "after": after, "op": op,
        "source": {"connector": "postgresql", "schema": "public", "table": table, "lsn": lsn, "ts_ms": 1_717_200_000_000u64}}});
    let key = json!({"schema": {"type": "struct", "optional": false, "name": format!("shop.public.{table}.Key"),
        "fields": [{"type": "int32", "optional": false, "field": "id"}]}, "payload": {"id": id}});
    format!("{key}\t{value}")
}

/// The source's DDL through the `.wasm` and the connector process, three tables at once:
/// `items` evolves (ADD COLUMN; ALTER TYPE int -> bigint, real -> double precision,
/// numeric(8,2) -> numeric(12,2); DROP COLUMN of a NOT NULL column; DROP NOT NULL),
/// `refunds` changes a column's type in a way Iceberg cannot follow and pauses, `orders`
/// keeps committing beside it; an analyst's table in the same catalog is left alone. Then
/// the operator lets `refunds` dead-letter what it cannot take, restarts, and it resumes
/// where it paused. On both engines: the native one writes a paused or rejected change's
/// JSON only when it dead-letters it.
#[test]
fn schema_changes_evolve_one_table_pause_another_and_the_others_keep_flowing() {
    schema_changes_on("wasm");
}

#[test]
fn schema_changes_on_the_native_engine_dead_letter_what_the_wasm_does() {
    schema_changes_on("native");
}

fn schema_changes_on(engine: &str) {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("sqlite://{}/catalog.db", dir.path().display());
    let catalog = PyCatalog {
        uri: &uri,
        name: "cdc",
        s3: None,
    };
    // an analyst's table, made before the connector ever ran: no key, no CDC columns
    readers::create(
        &catalog,
        "analytics.daily_report",
        &format!("file://{}/analyst/daily_report", dir.path().display()),
        &json!([{"day": "2024-06-01", "total": 12}]),
    );
    // the items table's DDL so far: ADD COLUMN color; ALTER TYPE qty bigint, ratio double
    // precision, price numeric(12,2); DROP COLUMN name; ALTER COLUMN code DROP NOT NULL
    #[derive(Clone, Copy)]
    struct Ddl {
        color: bool,
        wide: bool,
        name: bool,
        code_optional: bool,
    }
    let item = |id: i64, ddl: Ddl, values: Value| {
        let mut row = vec![("id", "int32", false, json!(id))];
        if ddl.name {
            row.push(("name", "string", false, values["name"].clone()));
        }
        if ddl.color {
            row.push(("color", "string", true, values["color"].clone()));
        }
        row.push(("code", "string", ddl.code_optional, values["code"].clone()));
        let (qty, ratio, price) = if ddl.wide {
            ("int64", "float64", "decimal:12:2")
        } else {
            ("int32", "float32", "decimal:8:2")
        };
        row.push(("qty", qty, true, values["qty"].clone()));
        row.push(("ratio", ratio, true, values["ratio"].clone()));
        let cents = values["cents"].as_i64().unwrap();
        let price_bytes = base64::engine::general_purpose::STANDARD.encode(cents.to_be_bytes());
        row.push(("price", price, true, json!(price_bytes)));
        row
    };
    let first = Ddl {
        color: false,
        wide: false,
        name: true,
        code_optional: false,
    };
    let colored = Ddl {
        color: true,
        ..first
    };
    let wide = Ddl {
        wide: true,
        ..colored
    };
    let nameless = Ddl {
        name: false,
        ..wide
    };
    let relaxed = Ddl {
        code_optional: true,
        ..nameless
    };
    let order = |id: i64, total: i64| {
        vec![
            ("id", "int32", false, json!(id)),
            ("total", "int64", true, json!(total)),
        ]
    };
    let refund = |id: i64, note: Value, ty: &'static str| {
        vec![("id", "int32", false, json!(id)), ("note", ty, true, note)]
    };
    let big = 3_000_000_000i64;
    let mut lsn = 1000;
    let mut next = || {
        lsn += 8;
        lsn
    };
    let v = |name: &str, color: Value, code: Value, qty: i64, ratio: f64, cents: i64| json!({"name": name, "color": color, "code": code, "qty": qty, "ratio": ratio, "cents": cents});
    let lines = vec![
        debezium(
            "items",
            "r",
            next(),
            &item(1, first, v("a", json!(null), json!("A"), 1, 0.5, 150)),
        ),
        debezium(
            "items",
            "r",
            next(),
            &item(2, first, v("b", json!(null), json!("B"), 2, 1.0, 250)),
        ),
        debezium("orders", "c", next(), &order(1, 10)),
        debezium("refunds", "c", next(), &refund(1, json!("late"), "string")),
        // ALTER TABLE items ADD COLUMN color text
        debezium(
            "items",
            "c",
            next(),
            &item(3, colored, v("c", json!("red"), json!("C"), 3, 1.5, 350)),
        ),
        debezium("orders", "c", next(), &order(2, 20)),
        // ALTER TABLE items ALTER qty TYPE bigint, ratio TYPE double precision, price TYPE numeric(12,2)
        debezium(
            "items",
            "u",
            next(),
            &item(
                1,
                wide,
                v("a", json!(null), json!("A"), big, 0.1, 123_456_789_025),
            ),
        ),
        // ALTER TABLE refunds ALTER COLUMN note TYPE int USING length(note): cannot evolve
        debezium("refunds", "c", next(), &refund(2, json!(7), "int32")),
        debezium("orders", "u", next(), &order(1, 11)),
        // ALTER TABLE items DROP COLUMN name (NOT NULL)
        debezium(
            "items",
            "c",
            next(),
            &item(4, nameless, v("", json!("blue"), json!("D"), 4, 2.5, 400)),
        ),
        debezium(
            "items",
            "d",
            next(),
            &item(2, nameless, v("", json!(null), json!("B"), 2, 1.0, 250)),
        ),
        debezium("refunds", "u", next(), &refund(1, json!(4), "int32")),
        debezium("orders", "c", next(), &order(3, 30)),
        // ALTER TABLE items ALTER COLUMN code DROP NOT NULL
        debezium(
            "items",
            "c",
            next(),
            &item(5, relaxed, v("", json!(null), json!(null), 5, 0.5, 500)),
        ),
    ];
    let input = dir.path().join("events.kv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let cfg = config(
        dir.path(),
        &input,
        &format!("  smartmodule-engine: {engine}\n  batch:\n    max-records: 2\n"),
    );
    let out = run(&cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    let paused: Vec<&str> = log.lines().filter(|l| l.contains("table paused")).collect();
    assert_eq!(paused.len(), 1, "said once, at ERROR: {log}");
    assert!(
        paused[0].contains("ERROR")
            && paused[0].contains("public.refunds")
            && paused[0].contains("column `note` changed from string to int"),
        "{}",
        paused[0]
    );

    let item_columns = "id,name,color,code,qty,ratio,price";
    let (py, duck) = read(dir.path(), "public.items", item_columns);
    let items = json!([
        {"id": 1, "name": "a", "color": null, "code": "A", "qty": big, "ratio": 0.1, "price": "1234567890.25"},
        {"id": 3, "name": "c", "color": "red", "code": "C", "qty": 3, "ratio": 1.5, "price": "3.50"},
        {"id": 4, "name": null, "color": "blue", "code": "D", "qty": 4, "ratio": 2.5, "price": "4.00"},
        {"id": 5, "name": null, "color": null, "code": null, "qty": 5, "ratio": 0.5, "price": "5.00"},
    ]);
    assert_eq!(py, items, "PyIceberg");
    assert_eq!(duck, items, "DuckDB");
    let (py, duck) = read(dir.path(), "public.orders", "id,total");
    let orders = json!([{"id": 1, "total": 11}, {"id": 2, "total": 20}, {"id": 3, "total": 30}]);
    assert_eq!(py, orders, "PyIceberg");
    assert_eq!(duck, orders, "DuckDB");
    let (py, duck) = read(dir.path(), "public.refunds", "id,note");
    let refunds = json!([{"id": 1, "note": "late"}]);
    assert_eq!(py, refunds, "PyIceberg: the table as it was when it paused");
    assert_eq!(duck, refunds, "DuckDB");
    let (py, _) = read(dir.path(), "analytics.daily_report", "day,total");
    assert_eq!(
        py,
        json!([{"day": "2024-06-01", "total": 12}]),
        "left alone"
    );
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (d, offset) in dead.iter().zip([7, 11]) {
        assert_eq!(d["offset"], offset);
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("table public.refunds is paused"),
            "{reason}"
        );
        // the change itself, as the SmartModule wrote it (the native engine writes it now)
        assert_eq!(d["record"]["kind"], "change", "{engine}: {d}");
        assert_eq!(d["record"]["source"]["table"], "refunds", "{engine}: {d}");
    }

    // a restart reads the paused table's changes again (they were not counted as applied)
    // and pauses it again; the others hold everything already
    let out = run(&cfg);
    assert!(String::from_utf8_lossy(&out.stderr).contains("table paused"));
    assert_eq!(read(dir.path(), "public.orders", "id,total").0, orders);

    // the operator decides: refunds keeps its schema and dead-letters what does not fit
    let fixed = config(
        dir.path(),
        &input,
        &format!("  smartmodule-engine: {engine}\n  batch:\n    max-records: 2\n  tables:\n    schema-changes-per-table:\n      public.refunds: dead-letter\n"),
    );
    std::fs::remove_file(dir.path().join("dead-letter.jsonl")).unwrap();
    let out = run(&fixed);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("table paused"));
    let dead = dead_letters(dir.path());
    let offsets: Vec<i64> = dead.iter().map(|d| d["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, [7, 11], "{dead:?}");
    assert!(
        dead.iter().all(|d| d["record"]["kind"] == "change"),
        "{engine}: {dead:?}"
    );
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("schema-changes: dead-letter"),
        "{dead:?}"
    );
    assert_eq!(read(dir.path(), "public.items", item_columns).0, items);
}

/// A table another engine moved on under the connector: between two runs Spark upgrades
/// `items` to format v3, which our commit does not write. The next run's `items` batch is
/// refused at commit (no retry makes it fit): the table pauses, says why once, and keeps
/// what it held; each of its changes is dead-lettered as the change's own JSON, like a
/// change refused before batching; `orders` keeps committing beside it. On both engines.
#[test]
fn a_batch_refused_at_commit_pauses_its_table_dead_letters_its_changes_and_the_others_flow() {
    refused_at_commit_on("wasm");
    refused_at_commit_on("native");
}

fn refused_at_commit_on(engine: &str) {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let item = |id: i64, name: &str| {
        vec![
            ("id", "int32", false, json!(id)),
            ("name", "string", true, json!(name)),
        ]
    };
    let order = |id: i64, total: i64| {
        vec![
            ("id", "int32", false, json!(id)),
            ("total", "int64", true, json!(total)),
        ]
    };
    let mut lines = vec![
        debezium("items", "c", 1008, &item(1, "a")),
        debezium("orders", "c", 1016, &order(1, 10)),
        debezium("items", "c", 1024, &item(2, "b")),
    ];
    let input = dir.path().join("events.kv");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let cfg = config(
        dir.path(),
        &input,
        &format!("  smartmodule-engine: {engine}\n"),
    );
    run(&cfg);
    let items = json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]);
    assert_eq!(read(dir.path(), "public.items", "id,name").0, items);

    let spark = testkit::spark::catalog(
        "cdc",
        &format!("sqlite://{}/catalog.db", dir.path().display()),
        &format!("file://{}/warehouse", dir.path().display()),
    );
    testkit::spark::sql(
        &spark,
        "ALTER TABLE cdc.public.items SET TBLPROPERTIES ('format-version' = '3')",
    )
    .unwrap_or_else(|e| panic!("Spark: {e}"));
    lines.extend([
        debezium("items", "u", 1032, &item(1, "a2")),
        debezium("orders", "u", 1040, &order(1, 11)),
        debezium("items", "d", 1048, &item(2, "b")),
        debezium("orders", "c", 1056, &order(2, 20)),
    ]);
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = run(&cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    let paused: Vec<&str> = log.lines().filter(|l| l.contains("table paused")).collect();
    assert_eq!(paused.len(), 1, "{engine}: said once: {log}");
    assert!(
        paused[0].contains("public.items") && paused[0].contains("not supported (v2 only)"),
        "{engine}: {}",
        paused[0]
    );
    let orders = json!([{"id": 1, "total": 11}, {"id": 2, "total": 20}]);
    let (py, duck) = read(dir.path(), "public.orders", "id,total");
    assert_eq!(py, orders, "{engine}: PyIceberg");
    assert_eq!(duck, orders, "{engine}: DuckDB");
    let held = testkit::spark::sql(&spark, "SELECT id, name FROM cdc.public.items ORDER BY id")
        .unwrap_or_else(|e| panic!("Spark: {e}"));
    assert_eq!(Value::Array(held), items, "{engine}: Spark, as it paused");

    let dead = dead_letters(dir.path());
    let offsets: Vec<i64> = dead.iter().map(|d| d["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, [3, 5], "{engine}: {dead:?}");
    for (d, (op, id)) in dead.iter().zip([("u", 1), ("d", 2)]) {
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains("table public.items is paused"), "{reason}");
        assert!(reason.contains("not supported (v2 only)"), "{reason}");
        let record = &d["record"];
        assert_eq!(record["kind"], "change", "{engine}: {d}");
        assert_eq!(record["source"]["table"], "items", "{engine}: {d}");
        assert_eq!(record["key"]["id"], id, "{engine}: {d}");
        assert_eq!(record["op"], op, "{engine}: {d}");
    }
}

/// Fifty tables filling at once, with a commit interval and per-table limits far away: only
/// the global cap (`batch.max-total-bytes`) commits, the largest batches first. The memory
/// all open batches hold never passes the cap by more than the record just taken, and every
/// table equals the model.
#[test]
fn fifty_tables_open_at_once_stay_under_the_global_cap() {
    let dir = tempfile::tempdir().unwrap();
    let tables: Vec<String> = (0..50).map(|n| format!("public.t{n:02}")).collect();
    let stream = generate(&Spec {
        events: 20_000,
        keys: 3_000,
        tables: tables.clone(),
        seed: 50,
        ..Spec::default()
    });
    let input = dir.path().join("events.kv");
    std::fs::write(&input, stream.lines.join("\n") + "\n").unwrap();
    let cap = 256 << 10;
    let cfg = config(
        dir.path(),
        &input,
        &format!(
            "  batch:\n    max-records: 1000000\n    max-bytes: 1GiB\n    interval-ms: 600000\n    \
             max-total-bytes: {cap}\n  tables:\n    partition-by: month(day)\n"
        ),
    );
    let out = connector(&cfg)
        .env("RUST_LOG", "warn,iceberg_cdc_sink::sink=debug")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "connector failed: {log}");
    // each time the cap was passed: what the open batches held, and the record just taken
    let field = |l: &str, name: &str| -> Option<u64> {
        l.split(name)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let held: Vec<(u64, u64)> = log
        .lines()
        .filter(|l| l.contains("past max-total-bytes"))
        .filter_map(|l| Some((field(l, "held=")?, field(l, "last=")?)))
        .collect();
    assert!(
        held.len() >= 10,
        "the cap fired {} times: {log}",
        held.len()
    );
    for (open, last) in &held {
        assert!(*open > cap, "{open} held, cap {cap}: fired under the cap");
        assert!(
            open - last <= cap,
            "{open} held before a record of {last}, cap {cap}"
        );
        // a record of this stream holds a few kilobytes
        assert!(*last > 500 && *last < 8_000, "a record held {last} bytes");
    }
    // more commits than tables: none waited for the interval or its own limits
    assert!(
        snapshots(&cfg) > tables.len(),
        "{} snapshots",
        snapshots(&cfg)
    );
    for table in tables.iter().step_by(7) {
        let (py, duck) = read(dir.path(), table, "id,name,price,qty,day");
        let want = table_rows(&stream.model, table);
        assert_eq!(py, want, "PyIceberg, {table}");
        assert_eq!(duck, want, "DuckDB, {table}");
    }
}

/// `smartmodule-engine: native` against the `.wasm` on the same stream (three tables, bad
/// records among the good, and a change that names no table at the end): the same tables,
/// both equal to the model, and byte for byte the same dead letters (the native engine
/// writes a change's JSON only when it is dead-lettered).
#[test]
fn the_native_smartmodule_engine_lands_what_the_wasm_lands() {
    let tables = vec!["public.orders".to_owned(), "sales.refunds".to_owned()];
    let stream = generate(&Spec {
        events: 8_000,
        keys: 600,
        tables: tables.clone(),
        seed: 8,
        bad_every: Some(211),
        ..Spec::default()
    });
    let mut lines = stream.lines.clone();
    let (key, value) = stream.lines[0].split_once('\t').unwrap();
    let mut nameless: Value = serde_json::from_str(value).unwrap();
    let source = nameless["payload"]["source"].as_object_mut().unwrap();
    assert!(source.remove("table").is_some());
    lines.push(format!("{key}\t{nameless}"));
    let mut dead = Vec::new();
    for engine in ["wasm", "native"] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("events.kv");
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let cfg = config(
            dir.path(),
            &input,
            &format!(
                "  smartmodule-engine: {engine}\n  batch:\n    max-records: 900\n  tables:\n    partition-by: month(day)\n"
            ),
        );
        run(&cfg);
        for table in &tables {
            let (py, duck) = read(dir.path(), table, "id,name,price,qty,day");
            let want = table_rows(&stream.model, table);
            assert_eq!(py, want, "PyIceberg, {table}, {engine}");
            assert_eq!(duck, want, "DuckDB, {table}, {engine}");
        }
        let mut letters = dead_letters(dir.path());
        assert_eq!(letters.len(), stream.bad.len() + 1, "{engine}");
        let last = &letters[letters.len() - 1];
        assert!(
            last.to_string().contains("names no source table"),
            "{engine}: {last}"
        );
        // `dropped` counts what the instance that took the chunk dropped before: which of
        // the transform workers took which chunk varies from run to run, in either engine
        for letter in &mut letters {
            if let Some(record) = letter["record"].as_object_mut() {
                record.remove("dropped");
            }
        }
        dead.push(letters);
    }
    assert_eq!(
        dead[0], dead[1],
        "the dead letters differ between the engines"
    );
}
