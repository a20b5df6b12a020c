//! Against a real Fluvio cluster: runs when the `fluvio` and `fluvio-run` binaries are on
//! PATH (it starts a local cluster, creates a topic, registers the `.wasm`, produces Debezium
//! events, runs the connector with `transforms:` on the SPU and checks the table), and says
//! that it was skipped otherwise. CI has no Fluvio binaries (they are not on any registry).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::readers::{self, PyCatalog};
use testkit::{wasm_path, workspace};

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn fluvio(args: &[&str]) -> String {
    let out = Command::new("fluvio")
        .args(args)
        .output()
        .expect("run fluvio");
    assert!(
        out.status.success(),
        "fluvio {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rows(dir: &Path) -> Option<Value> {
    let uri = format!("sqlite://{}/catalog.db", dir.display());
    if !dir.join("catalog.db").exists() {
        return None;
    }
    let catalog = PyCatalog {
        uri: &uri,
        name: "cdc",
        s3: None,
    };
    let out = Command::new(readers::python())
        .arg(workspace().join("tests/readers/read_table.py"))
        .args(["--catalog-uri", &readers::sqlalchemy_uri(catalog.uri)])
        .args([
            "--table",
            "public.products",
            "--columns",
            "id,name,price,on_offer",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut rows = v["pyiceberg"].as_array()?.clone();
    rows.sort_by_key(|r| r["id"].as_i64());
    Some(Value::Array(rows))
}

#[test]
fn products_through_a_local_fluvio_cluster() {
    if on_path("fluvio").is_none() || on_path("fluvio-run").is_none() {
        eprintln!(
            "SKIPPED: `fluvio` and `fluvio-run` are not on PATH; this test needs a Fluvio cluster"
        );
        return;
    }
    let started_cluster = !Command::new("fluvio")
        .args(["topic", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if started_cluster {
        fluvio(&["cluster", "start", "--local"]);
    }
    let topic = format!("cdc-test-{}", std::process::id());
    fluvio(&["topic", "create", &topic, "-p", "2"]);
    let dlq = format!("{topic}-dead-letters");
    fluvio(&["topic", "create", &dlq]);
    let wasm = wasm_path();
    fluvio(&[
        "smartmodule",
        "create",
        "debezium-cdc",
        "--wasm-file",
        wasm.to_str().unwrap_or_default(),
    ]);
    std::thread::sleep(Duration::from_secs(3)); // a new module takes a moment to reach the SPU

    // produce the sample stream with its Kafka keys, tombstones included
    let text = std::fs::read_to_string(workspace().join("tests/fixtures/products.kv")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = fluvio::Fluvio::connect().await.unwrap();
        let producer = client.topic_producer(topic.clone()).await.unwrap();
        for line in text.lines() {
            let (key, value) = line.split_once('\t').unwrap();
            producer
                .send(key.as_bytes().to_vec(), value.as_bytes().to_vec())
                .await
                .unwrap();
        }
        producer.flush().await.unwrap();
    });

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("connector.yaml");
    std::fs::write(
        &config,
        format!(
            r#"apiVersion: 0.2.0
meta:
  name: cluster-test
  type: iceberg-cdc-sink
  version: 0.1.0
  topic:
    meta:
      name: {topic}
  consumer:
    id: cluster-test
    partition: all
    offset:
      strategy: manual
      start: beginning
transforms:
  - uses: debezium-cdc
    with:
      operations: "c,u,d,r"
iceberg:
  source:
    type: fluvio
  catalog:
    uri: sqlite://{dir}/catalog.db
    warehouse: file://{dir}/warehouse
  batch:
    interval-ms: 500
  dead-letter:
    topic: {dlq}
"#,
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"))
        .arg("--config")
        .arg(&config)
        .spawn()
        .unwrap();
    let expected = testkit::products_final_rows();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = None;
    while Instant::now() < deadline {
        got = rows(dir.path());
        if got.as_ref() == Some(&expected) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the connector exited early"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    // the bad message went to the dead-letter topic; the consumer offsets mirror progress
    let dead = fluvio(&["consume", &dlq, "-B", "-d"]);
    let consumers = fluvio(&["consumer", "list"]);
    fluvio(&["topic", "delete", &topic]);
    fluvio(&["topic", "delete", &dlq]);
    let _ = Command::new("fluvio")
        .args(["smartmodule", "delete", "debezium-cdc"])
        .status();
    if started_cluster {
        let _ = Command::new("fluvio")
            .args(["cluster", "delete", "--force"])
            .status();
    }
    assert_eq!(got, Some(expected));
    assert!(status.success(), "connector exit: {status}");
    let raw_dead = dead.clone();
    let dead: Vec<&str> = dead.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(dead.len(), 1, "{dead:?} from {raw_dead}");
    assert!(dead[0].contains("not valid JSON"), "{}", dead[0]);
    assert!(consumers.contains("cluster-test-"), "{consumers}");
}
