//! The secret store and `${{ secrets.NAME }}` in the config.

use super::fluvio::SecretRef;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The secret store: `NAME=value` lines from `--secrets`, else the environment.
#[derive(Debug, Default)]
pub struct Secrets {
    pub(super) file: Option<HashMap<String, String>>,
}

impl Secrets {
    pub fn from_file(path: &Path) -> Result<Secrets> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading secrets file {}", path.display()))?;
        let mut map = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| anyhow!("{} line {}: not NAME=value", path.display(), n + 1))?;
            map.insert(k.trim().to_owned(), v.to_owned());
        }
        Ok(Secrets { file: Some(map) })
    }

    pub fn from_env() -> Secrets {
        Secrets { file: None }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        match &self.file {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }
}

/// Renders `${{ secrets.NAME }}` for the names declared under `meta.secrets`; an undeclared
/// or missing name is an error that names it (never its value).
pub fn render_secrets(text: &str, declared: &[String], secrets: &Secrets) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("an unterminated `${{{{` in the config"))?;
        let expr = after[..end].trim();
        let name = expr
            .strip_prefix("secrets.")
            .ok_or_else(|| anyhow!("`${{{{ {expr} }}}}`: only `secrets.NAME` can be referenced"))?
            .trim();
        if !declared.iter().any(|d| d == name) {
            bail!("secret `{name}` is used but not listed under meta.secrets");
        }
        let value = secrets
            .get(name)
            .ok_or_else(|| anyhow!("secret `{name}` has no value (secrets file or environment)"))?;
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The secret names a config declares, read before rendering.
pub(super) fn declared_secrets(text: &str) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Outer {
        meta: Option<MetaSecrets>,
    }
    #[derive(Deserialize)]
    struct MetaSecrets {
        #[serde(default)]
        secrets: Vec<SecretRef>,
    }
    // the text still holds `${{ … }}`, which is valid YAML inside a scalar
    let outer: Outer = serde_yaml::from_str(text).context("the config is not valid YAML")?;
    Ok(outer
        .meta
        .map(|m| m.secrets.into_iter().map(|s| s.name).collect())
        .unwrap_or_default())
}
