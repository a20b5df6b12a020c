//! What the merge engine's tests share: catalogs to test against, and the independent Python
//! readers of `testkit::readers` for them.

#![allow(dead_code)]

pub mod items;

use iceberg_cdc_merge::CatalogConfig;
use serde_json::Value;
use std::path::Path;
use testkit::ceph::Ceph;
use testkit::readers::{self, PyCatalog};

pub fn sqlite_catalog(dir: &Path) -> CatalogConfig {
    CatalogConfig {
        name: "cdc".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: format!("file://{}/warehouse", dir.display()),
        s3: Default::default(),
        rest: None,
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
        rest: None,
    }
}

/// Where the tables of a REST catalog server are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warehouse {
    Local,
    Ceph,
}

/// One of the two Apache Iceberg REST catalog servers `tests/rest.sh` starts (a local
/// warehouse, or a bucket on the test Ceph).
pub fn rest_catalog(warehouse: Warehouse) -> CatalogConfig {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: `bash tests/run.sh` starts the REST catalogs (tests/rest.sh)"
            )
        })
    };
    let (uri, location, s3) = match warehouse {
        Warehouse::Local => (
            var("CDC_TEST_REST_LOCAL"),
            var("CDC_TEST_REST_LOCAL_WAREHOUSE"),
            Default::default(),
        ),
        Warehouse::Ceph => (
            var("CDC_TEST_REST_CEPH"),
            var("CDC_TEST_REST_CEPH_WAREHOUSE"),
            iceberg_cdc_merge::S3Settings {
                endpoint: Some(ceph().endpoint.clone()),
                access_key: Some(ceph().access_key.clone()),
                secret_key: Some(ceph().secret_key.clone()),
                ..Default::default()
            },
        ),
    };
    CatalogConfig {
        name: "rest".into(),
        uri,
        warehouse: location,
        s3,
        rest: Some(Default::default()),
    }
}

/// The test Ceph, when a catalog's tables are on it.
pub fn ceph() -> &'static Ceph {
    static CEPH: std::sync::OnceLock<Ceph> = std::sync::OnceLock::new();
    CEPH.get_or_init(Ceph::from_env)
}

fn py(config: &CatalogConfig) -> PyCatalog<'_> {
    PyCatalog {
        uri: &config.uri,
        name: &config.name,
        s3: config.s3.endpoint.as_ref().map(|_| ceph()),
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
