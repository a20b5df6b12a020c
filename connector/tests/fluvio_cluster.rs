//! Against a real Fluvio cluster: runs when the `fluvio` and `fluvio-run` binaries are on
//! PATH (it starts a local cluster, creates a topic, registers the `.wasm`, produces Debezium
//! events, runs the connector with `transforms:` on the SPU and checks the table), and says
//! that it was skipped otherwise. CI has no Fluvio binaries (they are not on any registry).

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::fluvio::{cli, missing, Cluster};
use testkit::readers::{self, PyCatalog};
use testkit::{wasm_path, workspace};

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
    if let Some(why) = missing() {
        eprintln!("SKIPPED: {why}; this test needs a Fluvio cluster");
        return;
    }
    let mut cluster = Cluster::up().unwrap();
    let topic = format!("cdc-test-{}", std::process::id());
    cluster.topic(&topic, 2).unwrap();
    let dlq = format!("{topic}-dead-letters");
    cluster.topic(&dlq, 1).unwrap();
    cluster.module("debezium-cdc", &wasm_path()).unwrap();

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
    let dead = cli(&["consume", &dlq, "-B", "-d"]).unwrap();
    let consumers = cli(&["consumer", "list"]).unwrap();
    drop(cluster);
    assert_eq!(got, Some(expected));
    assert!(status.success(), "connector exit: {status}");
    let raw_dead = dead.clone();
    let dead: Vec<&str> = dead.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(dead.len(), 1, "{dead:?} from {raw_dead}");
    assert!(dead[0].contains("not valid JSON"), "{}", dead[0]);
    assert!(consumers.contains("cluster-test-"), "{consumers}");
}
