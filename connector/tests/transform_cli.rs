//! The `transform` command over the sample products stream, through the compiled `.wasm`.

use debezium_cdc::record::{CdcRecord, Op};
use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the connector binary from the workspace root.
fn connector(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iceberg-cdc-sink"));
    cmd.current_dir(workspace()).args(args);
    cmd
}

#[test]
fn sample_stream_changes_on_stdout_errors_in_the_dead_letter_file() {
    let dir = std::env::temp_dir().join(format!("transform-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dead_letter = dir.join("dead-letter.jsonl");
    let out = connector(&[
        "transform",
        "--input",
        "tests/fixtures/products.kv",
        "--format",
        "key-value",
    ])
    .arg("--dead-letter")
    .arg(&dead_letter)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("13 messages in, 12 records out"),
        "{stderr}"
    );

    let changes: Vec<CdcRecord> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: String = changes
        .iter()
        .map(|c| match c {
            CdcRecord::Change(c) => c.op.code(),
            CdcRecord::Error(e) => panic!("error record on stdout: {e:?}"),
        })
        .collect();
    assert_eq!(ops, "rrrccuudcuu");
    match &changes[7] {
        CdcRecord::Change(c) => {
            assert_eq!(c.op, Op::Delete);
            assert_eq!(c.key["id"], 3);
            assert_eq!(c.position.offset, Some(7));
        }
        other => panic!("{other:?}"),
    }

    let dead: Vec<CdcRecord> = std::fs::read_to_string(&dead_letter)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1);
    match &dead[0] {
        CdcRecord::Error(e) => {
            assert_eq!(e.offset, Some(9));
            assert!(e.reason.contains("not valid JSON"), "{}", e.reason);
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_param_is_a_clear_error() {
    let out = connector(&[
        "transform",
        "--input",
        "tests/fixtures/products.kv",
        "--param",
        "operatons=c",
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("operatons"), "{stderr}");
}
