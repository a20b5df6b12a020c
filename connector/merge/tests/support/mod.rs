//! What the merge engine's tests share: catalogs to test against and the independent Python
//! readers (PyIceberg, DuckDB) that `tests/run.sh` installs in `tests/.venv`.

#![allow(dead_code)]

use iceberg_cdc_merge::CatalogConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn sqlite_catalog(dir: &Path) -> CatalogConfig {
    CatalogConfig {
        name: "cdc".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: format!("file://{}/warehouse", dir.display()),
    }
}

/// The PostgreSQL server `tests/run.sh` starts; a catalog name of this run's own.
pub fn postgres_catalog(dir: &Path) -> CatalogConfig {
    let uri = std::env::var("CDC_TEST_POSTGRES_URI").expect(
        "CDC_TEST_POSTGRES_URI is not set: `bash tests/run.sh` starts PostgreSQL and sets it",
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    CatalogConfig {
        name: format!("cdc_{}_{nanos}", std::process::id()),
        uri,
        warehouse: format!("file://{}/warehouse", dir.display()),
    }
}

/// PyIceberg names the same databases the SQLAlchemy way.
pub fn sqlalchemy_uri(uri: &str) -> String {
    match uri.strip_prefix("postgres://") {
        Some(rest) => format!("postgresql+psycopg2://{rest}"),
        None => uri.replacen("sqlite://", "sqlite:///", 1),
    }
}

/// The Python with PyIceberg and DuckDB.
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

fn run_script(script: &str, config: &CatalogConfig, table: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(python())
        .arg(workspace().join("tests/readers").join(script))
        .args(["--catalog-uri", &sqlalchemy_uri(&config.uri)])
        .args(["--catalog-name", &config.name, "--table", table])
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
pub fn read_with_python(config: &CatalogConfig, table: &str, columns: &[&str]) -> Value {
    let out = run_script(
        "read_table.py",
        config,
        table,
        &["--columns", &columns.join(",")],
    );
    serde_json::from_slice(&out).expect("the readers print JSON")
}

/// Appends rows with PyIceberg: a foreign writer.
pub fn append_with_pyiceberg(config: &CatalogConfig, table: &str, rows: &Value) {
    run_script(
        "append_rows.py",
        config,
        table,
        &["--rows", &rows.to_string()],
    );
}
