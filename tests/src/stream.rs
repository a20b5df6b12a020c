//! The one Debezium stream generator of the tests and the benchmark: deterministic
//! PostgreSQL change events as Debezium's JSON converter writes them (with or without the
//! schema wrapper), Kafka key and value, each delete followed by its tombstone; and the
//! model the tables must equal afterwards.
//!
//! Three table shapes: `items` (the tests' table: a decimal in Connect's bytes form, a date,
//! optionally a two-column key), the old job's `products`, and a 30-column `wide_events`.
//! Operations follow a mix (creates of a live key become updates, updates and deletes of a
//! missing key become creates); a share of updates move a row to another month (partition).
//!
//! The model: per table and key, the version of its newest row (every row's `name` ends in
//! `-v<version>`), or none once deleted; and, when asked for (`keep_rows`), the rows in the
//! normalized form the SmartModule emits and the readers return.

use crate::Lcg;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// id, name, price (decimal(10,2)), qty, day (date); with `two_column_key`, `shop` too.
    Items,
    /// The old job's table: id, name, description, price, on_offer, listed_on (a date).
    Products,
    /// id, name, listed_on and 27 more columns of mixed types.
    Wide,
}

impl Shape {
    /// The table of a one-table stream (`schema.table`).
    pub fn table(self) -> &'static str {
        match self {
            Shape::Items => "public.items",
            Shape::Products => "public.products",
            Shape::Wide => "public.wide_events",
        }
    }

    /// The date column new rows land in the partition of.
    fn day_column(self) -> &'static str {
        match self {
            Shape::Items => "day",
            _ => "listed_on",
        }
    }

    /// Days from 2024-01-01 the dates spread over: the tests' items over half a year (six
    /// monthly partitions), the benchmark's tables over a year.
    fn day_span(self) -> u64 {
        match self {
            Shape::Items => 180,
            _ => 365,
        }
    }
}

/// What [`Spec::events`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Messages (tombstones and bad messages included): the lines of a file.
    Messages,
    /// Change events (each delete's tombstone follows it beyond the count).
    Changes,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub events: usize,
    pub length: Length,
    pub keys: u64,
    /// Tables (`schema.table`) the events spread over; empty: the shape's one table.
    pub tables: Vec<String>,
    pub seed: u64,
    /// Every n-th message is a bad one (invalid JSON), for the dead-letter path.
    pub bad_every: Option<usize>,
    /// The primary key is (`shop`, `id`), `shop` the table's first column and Debezium's
    /// key struct listing `id` first (the model stays keyed by `id`: `shop` follows it).
    pub two_column_key: bool,
    pub shape: Shape,
    /// Percent creates / updates / deletes.
    pub mix: (u32, u32, u32),
    /// Share of updates that move the row to another month.
    pub moves: f64,
    /// The JSON converter's schema wrapper (`schemas.enable`).
    pub wrapper: bool,
    /// Updates and deletes carry the old row (REPLICA IDENTITY FULL); otherwise only every
    /// other one does.
    pub full_before: bool,
    /// Keep the rows of the model (the benchmark's streams keep versions only).
    pub keep_rows: bool,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            events: 10_000,
            length: Length::Messages,
            keys: 1_000,
            tables: Vec::new(),
            seed: 1,
            bad_every: None,
            two_column_key: false,
            shape: Shape::Items,
            mix: (30, 60, 10),
            moves: 0.2,
            wrapper: true,
            full_before: false,
            keep_rows: true,
        }
    }
}

impl Spec {
    fn tables(&self) -> Vec<String> {
        if self.tables.is_empty() {
            vec![self.shape.table().to_owned()]
        } else {
            self.tables.clone()
        }
    }
}

/// Rows by table (`schema.table`) and key, in the CDC record's normalized form.
pub type Model = BTreeMap<String, BTreeMap<i64, Value>>;

/// Per key, the version of its newest row; `None` once deleted (or never created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    pub versions: Vec<Option<u32>>,
}

impl Versions {
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
    /// Versions by table.
    pub versions: BTreeMap<String, Versions>,
    /// Rows by table, with `keep_rows`.
    pub model: Model,
    /// Message numbers (0-based) of the bad messages.
    pub bad: Vec<usize>,
}

impl Written {
    /// The versions of a one-table stream.
    pub fn only_versions(&self) -> Versions {
        self.versions.values().next().cloned().unwrap_or_default()
    }
}

/// One table of the model as rows, by key: what a reader must return.
pub fn table_rows(model: &Model, table: &str) -> Value {
    Value::Array(
        model
            .get(table)
            .map(|rows| rows.values().cloned().collect())
            .unwrap_or_default(),
    )
}

/// A stream held in memory as `KEY<TAB>VALUE` lines (a tombstone has an empty value).
pub struct Generated {
    pub lines: Vec<String>,
    pub model: Model,
    /// Line numbers of the bad messages.
    pub bad: Vec<usize>,
    /// The table (`schema.table`) of each line; the bad ones belong to the first table.
    pub table_of: Vec<String>,
    /// Events by operation: creates, updates, deletes.
    pub ops: (u64, u64, u64),
}

impl Generated {
    /// The first `n` lines and the rest, to produce at different times (the parts carry
    /// no model: check against the whole).
    pub fn split_at(&self, n: usize) -> (Generated, Generated) {
        let part = |lines: &[String], tables: &[String]| Generated {
            lines: lines.to_vec(),
            model: Model::new(),
            bad: Vec::new(),
            table_of: tables.to_vec(),
            ops: (0, 0, 0),
        };
        (
            part(&self.lines[..n], &self.table_of[..n]),
            part(&self.lines[n..], &self.table_of[n..]),
        )
    }

    /// The lines as Kafka messages: (Debezium topic `<server>.<schema>.<table>`, key,
    /// value; a tombstone has no value).
    pub fn kafka_messages(&self, server: &str) -> Vec<(String, Vec<u8>, Option<Vec<u8>>)> {
        self.lines
            .iter()
            .zip(&self.table_of)
            .map(|(line, table)| {
                let (key, value) = line.split_once('\t').unwrap_or(("", line));
                let value = (!value.is_empty()).then(|| value.as_bytes().to_vec());
                (format!("{server}.{table}"), key.as_bytes().to_vec(), value)
            })
            .collect()
    }
}

/// The stream of `spec`, `spec.events` messages, in memory.
pub fn generate(spec: &Spec) -> Generated {
    let mut lines = Vec::with_capacity(spec.events);
    let mut table_of = Vec::with_capacity(spec.events);
    let written = write_stream(spec, |table, key, value| {
        let mut line = String::from_utf8_lossy(key).into_owned();
        line.push('\t');
        line.push_str(&String::from_utf8_lossy(value.unwrap_or_default()));
        lines.push(line);
        table_of.push(table.to_owned());
        Ok(())
    });
    // the sink above cannot fail: an error here is the generator's own
    let written = written.expect("generating the stream");
    Generated {
        lines,
        model: written.model,
        bad: written.bad,
        table_of,
        ops: written.ops,
    }
}

/// [`write_stream`] into a `KEY<TAB>VALUE` file.
pub fn write_file(spec: &Spec, path: &std::path::Path) -> anyhow::Result<Written> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let written = write_stream(spec, |_, key, value| {
        out.write_all(key)?;
        out.write_all(b"\t")?;
        out.write_all(value.unwrap_or_default())?;
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(written)
}

/// Days since 1970-01-01 of 2024-01-01.
const BASE_DAY: u64 = 19_723;

/// Hands each of the stream's `spec.events` messages to `send` (table, key, value; a
/// tombstone has no value), in order.
pub fn write_stream(
    spec: &Spec,
    mut send: impl FnMut(&str, &[u8], Option<&[u8]>) -> anyhow::Result<()>,
) -> anyhow::Result<Written> {
    let mut rng = Lcg(spec.seed);
    let tables = spec.tables();
    let schemas: Vec<(Value, Value)> = tables
        .iter()
        .map(|t| schemas(spec.shape, t, spec.two_column_key))
        .collect();
    let mut versions: Vec<Vec<Option<u32>>> = vec![vec![None; spec.keys as usize]; tables.len()];
    let mut images: Vec<Vec<Option<Value>>> = vec![vec![None; spec.keys as usize]; tables.len()];
    let mut written = Written::default();
    let (c, u, _) = spec.mix;
    let mut lsn: u64 = 10_000_000;
    let mut emit = |written: &mut Written, table: &str, key: &[u8], value: Option<&[u8]>| {
        written.bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        written.messages += 1;
        send(table, key, value)
    };
    let more = |w: &Written| match spec.length {
        Length::Messages => (w.messages as usize) < spec.events,
        Length::Changes => (w.events as usize) < spec.events,
    };
    while more(&written) {
        let n = written.messages as usize;
        if spec.bad_every.is_some_and(|every| n % every == every - 1) {
            written.bad.push(n);
            let bad = format!("{{\"schema\": {{\"type\": \"struct\"}}, \"payload\": {{\"op\": \"c\", \"after\": {{\"id\": {n}");
            emit(
                &mut written,
                &tables[0],
                b"{\"id\":1}",
                Some(bad.as_bytes()),
            )?;
            continue;
        }
        let t = rng.below(tables.len() as u64) as usize;
        let (schema_name, table_name) = tables[t].split_once('.').unwrap_or(("public", &tables[t]));
        let id = rng.below(spec.keys);
        let slot = id as usize;
        let dice = rng.below(100) as u32;
        let live = versions[t][slot].is_some();
        let op = match (dice < c, dice < c + u, live) {
            (_, _, false) => "c",
            (true, _, true) | (false, true, true) => "u",
            (false, false, true) => "d",
        };
        match op {
            "c" => written.ops.0 += 1,
            "u" => written.ops.1 += 1,
            _ => written.ops.2 += 1,
        }
        lsn += 24;
        let ts = 1_717_200_000_000u64 + lsn / 24;
        let old = images[t][slot].clone();
        let after = if op == "d" {
            versions[t][slot] = None;
            images[t][slot] = None;
            if spec.keep_rows {
                written
                    .model
                    .entry(tables[t].clone())
                    .or_default()
                    .remove(&(id as i64));
            }
            None
        } else {
            let version = versions[t][slot].map_or(0, |v| v + 1);
            let day_column = spec.shape.day_column();
            let span = spec.shape.day_span();
            let day = match &old {
                Some(b) if !rng.chance(spec.moves) => b[day_column].as_u64().unwrap_or(BASE_DAY),
                Some(b) => {
                    // another month: at least 31 days away
                    let was = b[day_column].as_u64().unwrap_or(BASE_DAY);
                    BASE_DAY + (was - BASE_DAY + 31 + rng.below(span - 62)) % span
                }
                None => BASE_DAY + rng.below(span),
            };
            let mut image = row(spec.shape, id, version, day, &mut rng);
            if spec.two_column_key {
                image.insert("shop".into(), shop_of(id));
            }
            let image = Value::Object(image);
            if spec.keep_rows {
                let rows = written.model.entry(tables[t].clone()).or_default();
                rows.insert(id as i64, normalized(spec.shape, &image));
            }
            versions[t][slot] = Some(version);
            images[t][slot] = Some(image.clone());
            Some(image)
        };
        let before = old.filter(|_| spec.full_before || op == "d" || dice.is_multiple_of(2));
        let payload = json!({
            "before": before, "after": after, "op": op, "ts_ms": ts,
            "source": {"version": "3.6.1.Final", "connector": "postgresql", "name": "shop",
                "ts_ms": ts, "db": "shop", "schema": schema_name, "table": table_name,
                "txId": lsn / 24, "lsn": lsn},
        });
        let key_payload = if spec.two_column_key {
            json!({"id": id, "shop": shop_of(id)})
        } else {
            json!({"id": id})
        };
        let (key_schema, value_schema) = &schemas[t];
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
        emit(&mut written, &tables[t], &key, Some(&value))?;
        if op == "d" && (spec.length == Length::Changes || more(&written)) {
            emit(&mut written, &tables[t], &key, None)?;
        }
        written.events += 1;
    }
    written.versions = tables
        .into_iter()
        .zip(versions)
        .map(|(t, versions)| (t, Versions { versions }))
        .collect();
    Ok(written)
}

/// The `shop` of a key's `id` under [`Spec::two_column_key`].
fn shop_of(id: u64) -> Value {
    json!(format!("shop-{}", id % 7))
}

fn field(ty: &str, name: &str, optional: bool, logical: Option<(&str, Value)>) -> Value {
    let mut f = json!({"type": ty, "optional": optional, "field": name});
    if let Some((logical, params)) = logical {
        f["name"] = json!(logical);
        f["version"] = json!(1);
        if !params.is_null() {
            f["parameters"] = params;
        }
    }
    f
}

const DATE: &str = "io.debezium.time.Date";

fn date() -> Option<(&'static str, Value)> {
    Some((DATE, Value::Null))
}

/// Column `i` (0-based) of the wide table beyond id, name, listed_on.
fn wide_column(i: usize) -> (String, &'static str, bool) {
    let (ty, is_date) = match i % 5 {
        0 => ("int64", false),
        1 => ("string", false),
        2 => ("double", false),
        3 => ("boolean", false),
        _ => ("int32", true),
    };
    (format!("c{:02}", i + 1), ty, is_date)
}

fn row_fields(shape: Shape, two_column_key: bool) -> Vec<Value> {
    let mut fields = Vec::new();
    if two_column_key {
        fields.push(field("string", "shop", false, None));
    }
    fields.push(field("int32", "id", false, None));
    match shape {
        Shape::Items => {
            let decimal = json!({"scale": "2", "connect.decimal.precision": "10"});
            fields.push(field("string", "name", true, None));
            fields.push(field(
                "bytes",
                "price",
                true,
                Some(("org.apache.kafka.connect.data.Decimal", decimal)),
            ));
            fields.push(field("int32", "qty", true, None));
            fields.push(field("int32", "day", true, date()));
        }
        Shape::Products => {
            fields.push(field("string", "name", false, None));
            fields.push(field("string", "description", true, None));
            fields.push(field("int32", "price", true, None));
            fields.push(field("boolean", "on_offer", true, None));
            fields.push(field("int32", "listed_on", true, date()));
        }
        Shape::Wide => {
            fields.push(field("string", "name", false, None));
            for i in 0..27 {
                let (name, ty, is_date) = wide_column(i);
                fields.push(field(ty, &name, true, if is_date { date() } else { None }));
            }
            fields.push(field("int32", "listed_on", true, date()));
        }
    }
    fields
}

/// The key and value schemas of one table.
fn schemas(shape: Shape, table: &str, two_column_key: bool) -> (Value, Value) {
    let mut key_fields = vec![field("int32", "id", false, None)];
    if two_column_key {
        key_fields.push(field("string", "shop", false, None));
    }
    let key = json!({"type": "struct", "optional": false, "name": format!("shop.{table}.Key"),
        "fields": key_fields});
    let row = |which: &str| {
        json!({"type": "struct", "optional": true, "name": format!("shop.{table}.Value"),
            "field": which, "fields": row_fields(shape, two_column_key)})
    };
    let source = json!({"type": "struct", "optional": false,
        "name": "io.debezium.connector.postgresql.Source", "field": "source",
        "fields": [field("string", "version", false, None), field("string", "connector", false, None),
            field("string", "name", false, None), field("int64", "ts_ms", false, None),
            field("string", "db", false, None), field("string", "schema", false, None),
            field("string", "table", false, None), field("int64", "txId", true, None),
            field("int64", "lsn", true, None)]});
    let value = json!({"type": "struct", "optional": false, "version": 2,
        "name": format!("shop.{table}.Envelope"),
        "fields": [row("before"), row("after"), source,
            field("string", "op", false, None), field("int64", "ts_ms", true, None)]});
    (key, value)
}

/// A row image as Debezium's JSON converter writes it.
fn row(shape: Shape, id: u64, version: u32, day: u64, rng: &mut Lcg) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("id".into(), json!(id));
    let table = shape.table().trim_start_matches("public.");
    r.insert("name".into(), json!(format!("{table}-{id}-v{version}")));
    match shape {
        Shape::Items => {
            let cents = rng.below(2_000_000) as i32 - 1_000_000;
            let price = base64::engine::general_purpose::STANDARD.encode(cents.to_be_bytes());
            r.insert("price".into(), json!(price));
            r.insert("qty".into(), json!(rng.below(1000)));
            r.insert("day".into(), json!(day));
        }
        Shape::Products => {
            let description = format!("a product of line {} in colour {}", id % 97, rng.below(40));
            r.insert("description".into(), json!(description));
            r.insert("price".into(), json!(100 + rng.below(100_000)));
            r.insert("on_offer".into(), json!(rng.below(4) == 0));
            r.insert("listed_on".into(), json!(day));
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
            r.insert("listed_on".into(), json!(day));
        }
    }
    r
}

/// A row image as the SmartModule normalizes it: dates as `YYYY-MM-DD`, Connect decimals
/// as decimal strings, the rest as it is.
fn normalized(shape: Shape, image: &Value) -> Value {
    let mut out = image.clone();
    let is_date = |name: &str| {
        name == shape.day_column()
            || (shape == Shape::Wide
                && (0..27).any(|i| matches!(wide_column(i), (n, _, true) if n == name)))
    };
    if let Value::Object(fields) = &mut out {
        for (name, value) in fields.iter_mut() {
            if is_date(name) {
                if let Some(days) = value.as_i64() {
                    *value = json!(date_text(days));
                }
            } else if shape == Shape::Items && name == "price" {
                if let Some(cents) = value.as_str().and_then(decode_cents) {
                    let sign = if cents < 0 { "-" } else { "" };
                    *value = json!(format!(
                        "{sign}{}.{:02}",
                        cents.abs() / 100,
                        cents.abs() % 100
                    ));
                }
            }
        }
    }
    out
}

fn date_text(days: i64) -> String {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::TimeDelta::days(days)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn decode_cents(text: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let bytes: [u8; 4] = bytes.try_into().ok()?;
    Some(i64::from(i32::from_be_bytes(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_the_mix_holds() {
        let spec = Spec {
            events: 20_000,
            keys: 2_000,
            shape: Shape::Products,
            keep_rows: false,
            ..Spec::default()
        };
        let mut ops = std::collections::HashMap::new();
        let a = write_stream(&spec, |_, _, v| {
            if let Some(v) = v {
                let v: Value = serde_json::from_slice(v)?;
                *ops.entry(v["payload"]["op"].as_str().unwrap_or("").to_owned())
                    .or_insert(0u64) += 1;
            }
            Ok(())
        })
        .unwrap();
        let b = write_stream(&spec, |_, _, _| Ok(())).unwrap();
        assert_eq!(a.versions, b.versions);
        assert_eq!(a.bytes, b.bytes);
        let events = a.events as f64;
        let d = ops["d"] as f64 / events;
        let u = ops["u"] as f64 / events;
        assert!((0.05..0.15).contains(&d), "{ops:?}");
        // 60 % updates, and the creates of keys that are live
        assert!((0.6..0.85).contains(&u), "{ops:?}");
        assert_eq!(a.messages, 20_000);
        let changes = write_stream(
            &Spec {
                length: Length::Changes,
                ..spec.clone()
            },
            |_, _, _| Ok(()),
        )
        .unwrap();
        assert_eq!(changes.events, 20_000);
        assert_eq!(changes.messages, 20_000 + changes.ops.2);
    }

    #[test]
    fn the_model_is_the_last_row_of_each_live_key() {
        let spec = Spec {
            events: 3_000,
            keys: 50,
            tables: vec!["public.items".into(), "inventory.parts".into()],
            two_column_key: true,
            bad_every: Some(101),
            ..Spec::default()
        };
        let g = generate(&spec);
        assert_eq!(g.lines.len(), 3_000);
        // every 101st message, unless a tombstone takes its place
        assert!(g.bad.len() > 3_000 / 101 / 2, "{:?}", g.bad);
        assert!(g.bad.iter().all(|n| n % 101 == 100), "{:?}", g.bad);
        // replay the lines: the newest after-image of each key, normalized
        let mut replayed: Model = Model::new();
        for (n, (line, table)) in g.lines.iter().zip(&g.table_of).enumerate() {
            let Some((_, value)) = line.split_once('\t') else {
                continue;
            };
            if value.is_empty() || g.bad.contains(&n) {
                continue;
            }
            let v: Value = serde_json::from_str(value).unwrap();
            let id = v["payload"]["before"]["id"]
                .as_i64()
                .or_else(|| v["payload"]["after"]["id"].as_i64())
                .unwrap();
            let rows = replayed.entry(table.clone()).or_default();
            match &v["payload"]["after"] {
                Value::Null => {
                    rows.remove(&id);
                }
                after => {
                    rows.insert(id, normalized(Shape::Items, after));
                }
            }
        }
        replayed.retain(|_, rows| !rows.is_empty());
        let mut model = g.model.clone();
        model.retain(|_, rows| !rows.is_empty());
        assert_eq!(replayed, model);
        let row = model["public.items"].values().next().unwrap();
        assert!(row["day"].as_str().unwrap().starts_with("202"), "{row}");
        assert!(row["price"].as_str().unwrap().contains('.'), "{row}");
        assert!(row["shop"].as_str().unwrap().starts_with("shop-"), "{row}");
    }
}
