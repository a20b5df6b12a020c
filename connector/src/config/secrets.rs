//! The secret store and `${{ secrets.NAME }}` in the config's values.

use super::fluvio::SecretRef;
use anyhow::{anyhow, bail, Context, Result};
use saphyr_parser::ScalarStyle;
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

/// Renders `${{ secrets.NAME }}` for the names declared under `meta.secrets`, inside the
/// config's scalars: each scalar that names a secret is read as YAML reads it (quotes and
/// escapes resolved), its references replaced, and the result written back in its place as
/// one double-quoted string. A value goes in as it is, whatever it holds (`#`, `: `, quotes,
/// a newline), and can never change the config's structure. A reference in a comment is
/// not rendered. An undeclared or missing name is an error that names it (never its value).
pub fn render_secrets(text: &str, declared: &[String], secrets: &Secrets) -> Result<String> {
    // (start, end) in bytes of each scalar's source, and its text rendered
    let mut spliced: Vec<(usize, usize, String)> = Vec::new();
    let byte_at = char_to_byte(text);
    for event in saphyr_parser::Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| anyhow!("the config is not valid YAML: {e}"))?;
        let saphyr_parser::Event::Scalar(value, style, ..) = event else {
            continue;
        };
        if !value.contains("${{") {
            continue;
        }
        let rendered = render_scalar(&value, declared, secrets)?;
        let quoted = serde_json::to_string(&rendered).context("quoting a secret")?;
        let (mut start, end) = (byte_at(span.start.index()), byte_at(span.end.index()));
        if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
            // a block scalar's span is its content: the quoted value replaces its header too
            start = block_header(text, start)
                .ok_or_else(|| anyhow!("a block scalar without its `|` or `>` header"))?;
        }
        // a span may end after the whitespace that follows the scalar: that stays
        let end = start + text[start..end].trim_end().len();
        spliced.push((start, end, quoted));
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, quoted) in spliced {
        out.push_str(&text[at..start]);
        out.push_str(&quoted);
        at = end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// Where the `|` or `>` header of the block scalar whose content starts at `content` is.
fn block_header(text: &str, content: usize) -> Option<usize> {
    let before = text[..content].trim_end();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before[line_start..].split(" #").next()?;
    line.rfind(['|', '>']).map(|i| line_start + i)
}

/// A byte offset of `text` from a character offset (the YAML parser counts characters).
fn char_to_byte(text: &str) -> impl Fn(usize) -> usize + '_ {
    let starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    move |chars| starts.get(chars).copied().unwrap_or(text.len())
}

/// One scalar's `${{ secrets.NAME }}` references replaced by their values.
fn render_scalar(scalar: &str, declared: &[String], secrets: &Secrets) -> Result<String> {
    let mut out = String::with_capacity(scalar.len());
    let mut rest = scalar;
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
