//! Sizes and durations as people write them: `1048576`, `"1 MB"`, `"512KiB"`; `30s`, `10m`,
//! `1h`, `2h 30m`.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::time::Duration;

/// `1048576`, `"1 MB"`, `"512KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_bytes(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| anyhow!("`{text}` is not a size"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => bail!("`{other}` is not a size unit (B, KB, KiB, MB, MiB, GB, GiB)"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("`{text}` is too large"))
}

/// `30s`, `10m`, `1h`, `1d`, `2h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_span(&text).map_err(serde::de::Error::custom)
    }
}

pub fn parse_span(text: &str) -> Result<Span> {
    humantime::parse_duration(text.trim())
        .map(Span)
        .map_err(|e| anyhow!("`{text}` is not a duration (30s, 10m, 1h, 1d): {e}"))
}
