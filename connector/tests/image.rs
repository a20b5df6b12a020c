//! The container image as a user runs it: the repository's Dockerfile built by Debian's
//! buildah on a base made from Debian's packages (no registry), run by podman with the config
//! mounted and the old job's variables (`EXTERNAL_IP`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`,
//! `BOOTSTRAP_SERVER_URL`), reading Debezium topics from Apache Kafka into tables on Ceph;
//! stopped as an orchestrator stops it; the tables read back by PyIceberg and DuckDB equal
//! the stream. `tests/run.sh` installs the tools and makes the base (`tests/image.sh`).

mod kafka;

use kafka::*;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use testkit::ceph::Ceph;
use testkit::readers::{self, PyCatalog};
use testkit::stream::table_rows;

fn image_script(args: &[&str]) -> Output {
    let script = env_var(
        "CDC_TEST_IMAGE_SCRIPT",
        "the container tools (tests/image.sh)",
    );
    Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap()
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The image and its container are removed when the test ends, however it ends.
struct Cleanup {
    image: String,
    container: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", &self.container]);
        let _ = podman(&["rmi", "-f", &self.image]);
    }
}

/// `/metrics` of the container (host network), summed by metric name.
fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = testkit::http::get(port, "/metrics")?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[test]
fn the_image_lands_kafka_topics_in_tables_on_ceph() {
    let bootstrap = env_var("CDC_TEST_KAFKA_BOOTSTRAP", "Kafka (tests/kafka.sh)");
    let ceph = Ceph::from_env();
    let id = std::process::id();
    let cleanup = Cleanup {
        image: format!("localhost/iceberg-cdc-sink:test-{id}"),
        container: format!("iceberg-cdc-test-{id}"),
    };
    let wasm = testkit::wasm_path();
    let built = image_script(&[
        "build",
        env!("CARGO_BIN_EXE_iceberg-cdc-sink"),
        &wasm.display().to_string(),
        &cleanup.image,
    ]);
    assert!(
        built.status.success(),
        "building the image: {}",
        text(&built)
    );
    let user = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        &cleanup.image,
    ]);
    assert_eq!(
        text(&user).trim(),
        "10001:10001",
        "the image runs as its own user"
    );

    let server = new_server(&bootstrap, "image");
    let stream = stream(3000, 41);
    let produced: i64 = produce(&bootstrap, &server, &stream).values().sum();
    let bucket = ceph.new_bucket("image");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // the image's user owns what it writes; the folder is the operator's
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let metrics_port = testkit::http::free_port();
    let config = dir.path().join("connector.yaml");
    // no storage section, no bootstrap servers, no dead-letter section: the old job's
    // variables and the defaults
    std::fs::write(
        &config,
        format!(
            "apiVersion: 0.2.0\n\
             meta:\n  name: image-test\n  type: iceberg-cdc-sink\n  version: 0.1.0\n  topic:\n    meta:\n      name: postgres-cdc\n\
             transforms:\n  - uses: cdc-iceberg/debezium-cdc@0.1.0\n\
             iceberg:\n  source:\n    type: kafka\n    kafka:\n      group-id: {server}-iceberg\n      \
             topic-pattern: '{pattern}\\..*'\n      auto-offset-reset: earliest\n\
             \x20 catalog:\n    uri: sqlite:////var/lib/iceberg-cdc/catalog.db\n    warehouse: s3://{bucket}/warehouse\n\
             \x20 tables:\n    partition-by: month(day)\n\
             \x20 batch:\n    max-records: 300\n    interval-ms: 500\n\
             \x20 metrics:\n    address: 127.0.0.1:{metrics_port}\n",
            pattern = server.replace('.', "\\."),
        ),
    )
    .unwrap();
    let external_ip = ceph.endpoint.trim_start_matches("http://").to_owned();
    let run = image_script(&[
        "run",
        "--detach",
        "--name",
        &cleanup.container,
        "--network",
        "host",
        "-v",
        &format!("{}:/etc/iceberg-cdc/connector.yaml:ro", config.display()),
        "-v",
        &format!("{}:/var/lib/iceberg-cdc", state.display()),
        "-e",
        &format!("EXTERNAL_IP={external_ip}"),
        "-e",
        &format!("S3_ACCESS_KEY={}", ceph.access_key),
        "-e",
        &format!("S3_SECRET_KEY={}", ceph.secret_key),
        "-e",
        &format!("BOOTSTRAP_SERVER_URL={bootstrap}"),
        "-e",
        "RUST_LOG=warn",
        &cleanup.image,
    ]);
    assert!(
        run.status.success(),
        "starting the container: {}",
        text(&run)
    );

    // everything read, and everything batched committed
    let started = Instant::now();
    loop {
        let read = metric(metrics_port, "iceberg_cdc_source_records_read_total");
        let changes = metric(metrics_port, "iceberg_cdc_changes_total");
        let committed = metric(metrics_port, "iceberg_cdc_batch_changes_sum");
        if read == Some(produced as f64) && changes.is_some() && committed == changes {
            break;
        }
        let logs = || text(&podman(&["logs", &cleanup.container]));
        let running = podman(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            &cleanup.container,
        ]);
        assert_eq!(
            text(&running).trim(),
            "true",
            "the container stopped: {}",
            logs()
        );
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "read {read:?} of {produced}, committed {committed:?} of {changes:?}: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // stopped as an orchestrator stops it: SIGTERM, then a grace period
    let stopped = podman(&["stop", "--time", "30", &cleanup.container]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let code = podman(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &cleanup.container,
    ]);
    assert_eq!(
        text(&code).trim(),
        "0",
        "exit after SIGTERM: {}",
        text(&podman(&["logs", &cleanup.container]))
    );
    let catalog_file = state.join("catalog.db");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&catalog_file).unwrap());
    assert_eq!(owner, 10001, "written by the image's user");

    let uri = format!("sqlite://{}", catalog_file.display());
    let catalog = PyCatalog {
        uri: &uri,
        name: "cdc",
        s3: Some(&ceph),
    };
    for table in tables() {
        let (py, duck) =
            readers::read_by_id(&catalog, &table, &["id", "name", "price", "qty", "day"]);
        let want = table_rows(&stream.model, &table);
        assert_eq!(py, want, "PyIceberg, {table}");
        assert_eq!(duck, want, "DuckDB, {table}");
    }
    // the bad messages, in the default dead-letter file next to the catalog
    let dead = std::fs::read_to_string(state.join("image-test.dead-letters.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), stream.bad.len(), "{dead}");
}
