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
