//! Deterministic Debezium PostgreSQL change streams: creates, updates and deletes over a key
//! space (default mix 30/60/10), a share of updates that move a row to another month, the
//! old job's `products` table or a wide 30-column one, with or without the JSON converter's
//! schema wrapper. Each delete is followed by its tombstone, as Debezium sends it.
//!
//! The model a table must equal afterwards is kept compact: per key, the version of its
//! newest row (every row's `name` is `<shape>-<id>-v<version>`), or none once deleted.

use serde_json::{json, Map, Value};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// The old job's table: id, name, description, price, on_offer (and listed_on, the date
    /// the table is partitioned by).
    Products,
    /// id, name, listed_on and 27 more columns of mixed types.
    Wide,
}

#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub events: u64,
    pub keys: u64,
    /// Percent creates / updates / deletes (creates of a live key become updates, updates
    /// and deletes of a missing key become creates).
    pub mix: (u32, u32, u32),
    /// Share of updates that move the row to another month (partition).
    pub moves: f64,
    pub shape: Shape,
    pub wrapper: bool,
    pub seed: u64,
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            events: 100_000,
            keys: 20_000,
            mix: (30, 60, 10),
            moves: 0.2,
            shape: Shape::Products,
            wrapper: true,
            seed: 1,
        }
    }
}

/// The final state the stream leaves: per key, the version of its newest row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub versions: Vec<Option<u32>>,
}

impl Model {
    pub fn live(&self) -> usize {
        self.versions.iter().filter(|v| v.is_some()).count()
    }
}

/// What writing a stream produced.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub events: u64,
    /// Events by operation: creates, updates, deletes.
    pub ops: (u64, u64, u64),
    pub messages: u64,
    pub bytes: u64,
    pub model: Model,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Days since 1970-01-01 of 2024-01-01.
const BASE_DAY: u64 = 19_723;

fn field(ty: &str, name: &str, optional: bool, logical: Option<&str>) -> Value {
    let mut f = json!({"type": ty, "optional": optional, "field": name});
    if let Some(l) = logical {
        f["name"] = json!(l);
        f["version"] = json!(1);
    }
    f
}

/// Column `i` (0-based) of the wide table beyond id, name, listed_on.
fn wide_column(i: usize) -> (String, &'static str, Option<&'static str>) {
    let (ty, logical) = match i % 5 {
        0 => ("int64", None),
        1 => ("string", None),
        2 => ("double", None),
        3 => ("boolean", None),
        _ => ("int32", Some("io.debezium.time.Date")),
    };
    (format!("c{:02}", i + 1), ty, logical)
}

fn row_fields(shape: Shape) -> Vec<Value> {
    let mut fields = vec![
        field("int32", "id", false, None),
        field("string", "name", false, None),
    ];
    match shape {
        Shape::Products => {
            fields.push(field("string", "description", true, None));
            fields.push(field("int32", "price", true, None));
            fields.push(field("boolean", "on_offer", true, None));
        }
        Shape::Wide => {
            for i in 0..27 {
                let (name, ty, logical) = wide_column(i);
                fields.push(field(ty, &name, true, logical));
            }
        }
    }
    fields.push(field(
        "int32",
        "listed_on",
        true,
        Some("io.debezium.time.Date"),
    ));
    fields
}

fn table_name(shape: Shape) -> &'static str {
    match shape {
        Shape::Products => "products",
        Shape::Wide => "wide_events",
    }
}

fn schemas(shape: Shape) -> (Value, Value) {
    let table = table_name(shape);
    let key = json!({"type": "struct", "optional": false, "name": format!("shop.public.{table}.Key"),
        "fields": [field("int32", "id", false, None)]});
    let row = |which: &str| {
        json!({"type": "struct", "optional": true, "name": format!("shop.public.{table}.Value"),
            "field": which, "fields": row_fields(shape)})
    };
    let source = json!({"type": "struct", "optional": false,
        "name": "io.debezium.connector.postgresql.Source", "field": "source",
        "fields": [field("string", "version", false, None), field("string", "connector", false, None),
            field("string", "name", false, None), field("int64", "ts_ms", false, None),
            field("string", "db", false, None), field("string", "schema", false, None),
            field("string", "table", false, None), field("int64", "txId", true, None),
            field("int64", "lsn", true, None)]});
    let value = json!({"type": "struct", "optional": false, "version": 2,
        "name": format!("shop.public.{table}.Envelope"),
        "fields": [row("before"), row("after"), source,
            field("string", "op", false, None), field("int64", "ts_ms", true, None)]});
    (key, value)
}

/// A row image as Debezium's JSON converter writes it.
fn row(shape: Shape, id: u64, version: u32, day: u64, rng: &mut Rng) -> Value {
    let mut r = Map::new();
    r.insert("id".into(), json!(id));
    r.insert(
        "name".into(),
        json!(format!("{}-{id}-v{version}", table_name(shape))),
    );
    match shape {
        Shape::Products => {
            r.insert(
                "description".into(),
                json!(format!(
                    "a product of line {} in colour {}",
                    id % 97,
                    rng.below(40)
                )),
            );
            r.insert("price".into(), json!(100 + rng.below(100_000)));
            r.insert("on_offer".into(), json!(rng.below(4) == 0));
        }
        Shape::Wide => {
            for i in 0..27 {
                let (name, ty, _) = wide_column(i);
                let v = match ty {
                    "int64" => json!(rng.below(1 << 40)),
                    "string" => json!(format!("value {} of {name}", rng.below(1_000_000))),
                    "double" => json!(rng.below(1_000_000) as f64 / 7.0),
                    "boolean" => json!(rng.below(2) == 0),
                    _ => json!(BASE_DAY + rng.below(3650)),
                };
                r.insert(name, v);
            }
        }
    }
    r.insert("listed_on".into(), json!(day));
    Value::Object(r)
}

/// Writes the stream as `KEY<TAB>VALUE` lines (a tombstone has an empty value) to `out`,
/// or hands each message to `send` (topic-less: key, value).
pub fn write_stream(
    spec: &StreamSpec,
    mut send: impl FnMut(&[u8], Option<&[u8]>) -> anyhow::Result<()>,
) -> anyhow::Result<Written> {
    let mut rng = Rng(spec.seed);
    let (key_schema, value_schema) = schemas(spec.shape);
    let table = table_name(spec.shape);
    let mut versions: Vec<Option<u32>> = vec![None; spec.keys as usize];
    // the month (day) each live key's row is in, and its current wire image
    let mut images: Vec<Option<Value>> = vec![None; spec.keys as usize];
    let (c, u, _) = spec.mix;
    let mut written = Written::default();
    let mut lsn: u64 = 10_000_000;
    for n in 0..spec.events {
        let id = rng.below(spec.keys);
        let slot = id as usize;
        let dice = rng.below(100) as u32;
        let live = versions[slot].is_some();
        let op = match (dice < c, dice < c + u, live) {
            (true, _, false) | (false, _, false) => "c",
            (true, _, true) | (false, true, true) => "u",
            (false, false, true) => "d",
        };
        match op {
            "c" => written.ops.0 += 1,
            "u" => written.ops.1 += 1,
            _ => written.ops.2 += 1,
        }
        lsn += 24;
        let ts = 1_717_200_000_000u64 + n;
        let before = images[slot].clone();
        let after = if op == "d" {
            versions[slot] = None;
            images[slot] = None;
            None
        } else {
            let version = versions[slot].map_or(0, |v| v + 1);
            let day = match &before {
                Some(b) if !rng.chance(spec.moves) => b["listed_on"].as_u64().unwrap_or(BASE_DAY),
                Some(b) => {
                    // another month: at least 31 days away
                    let old = b["listed_on"].as_u64().unwrap_or(BASE_DAY);
                    BASE_DAY + (old - BASE_DAY + 31 + rng.below(300)) % 365
                }
                None => BASE_DAY + rng.below(365),
            };
            let image = row(spec.shape, id, version, day, &mut rng);
            versions[slot] = Some(version);
            images[slot] = Some(image.clone());
            Some(image)
        };
        let payload = json!({
            "before": before, "after": after, "op": op, "ts_ms": ts,
            "source": {"version": "2.7.3.Final", "connector": "postgresql", "name": "shop",
                "ts_ms": ts, "db": "shop", "schema": "public", "table": table,
                "txId": lsn / 24, "lsn": lsn},
        });
        let key_payload = json!({"id": id});
        let (key, value) = if spec.wrapper {
            (
                json!({"schema": key_schema, "payload": key_payload}),
                json!({"schema": value_schema, "payload": payload}),
            )
        } else {
            (key_payload, payload)
        };
        let key = serde_json::to_vec(&key)?;
        let value = serde_json::to_vec(&value)?;
        written.bytes += (key.len() + value.len()) as u64;
        written.messages += 1;
        send(&key, Some(&value))?;
        if op == "d" {
            written.bytes += key.len() as u64;
            written.messages += 1;
            send(&key, None)?;
        }
        written.events += 1;
    }
    written.model = Model { versions };
    Ok(written)
}

/// [`write_stream`] into a `KEY<TAB>VALUE` file.
pub fn write_file(spec: &StreamSpec, path: &std::path::Path) -> anyhow::Result<Written> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let written = write_stream(spec, |key, value| {
        out.write_all(key)?;
        out.write_all(b"\t")?;
        out.write_all(value.unwrap_or_default())?;
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(written)
}

/// The Iceberg table a stream lands in (`namespace.table`).
pub fn table_ident(shape: Shape) -> String {
    format!("public.{}", table_name(shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_the_mix_holds() {
        let spec = StreamSpec {
            events: 20_000,
            keys: 2_000,
            ..StreamSpec::default()
        };
        let mut ops = std::collections::HashMap::new();
        let a = write_stream(&spec, |_, v| {
            if let Some(v) = v {
                let v: Value = serde_json::from_slice(v)?;
                *ops.entry(v["payload"]["op"].as_str().unwrap_or("").to_owned())
                    .or_insert(0u64) += 1;
            }
            Ok(())
        })
        .unwrap();
        let b = write_stream(&spec, |_, _| Ok(())).unwrap();
        assert_eq!(a.model, b.model);
        assert_eq!(a.bytes, b.bytes);
        let d = ops["d"] as f64 / 20_000.0;
        let u = ops["u"] as f64 / 20_000.0;
        assert!((0.05..0.15).contains(&d), "{ops:?}");
        assert!((0.5..0.75).contains(&u), "{ops:?}");
        assert_eq!(a.messages, a.events + ops["d"]);
    }
}
