//! What the merge engine's tests share: catalogs to test against, and the independent Python
//! readers of `testkit::readers` for them.

#![allow(dead_code)]

pub mod items;

use iceberg_cdc_merge::CatalogConfig;
use serde_json::Value;
use std::path::Path;
use testkit::readers::{self, PyCatalog};

pub fn sqlite_catalog(dir: &Path) -> CatalogConfig {
    CatalogConfig {
        name: "cdc".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: format!("file://{}/warehouse", dir.display()),
        s3: Default::default(),
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
        s3: Default::default(),
    }
}

fn py(config: &CatalogConfig) -> PyCatalog<'_> {
    PyCatalog {
        uri: &config.uri,
        name: &config.name,
        s3: None,
    }
}

/// The table's `columns` as PyIceberg and DuckDB read them:
/// `{"pyiceberg": [rows], "duckdb": [rows]}`.
pub fn read_with_python(config: &CatalogConfig, table: &str, columns: &[&str]) -> Value {
    readers::read(&py(config), table, columns)
}

/// Appends rows with PyIceberg: a foreign writer.
pub fn append_with_pyiceberg(config: &CatalogConfig, table: &str, rows: &Value) {
    readers::append(&py(config), table, rows)
}
