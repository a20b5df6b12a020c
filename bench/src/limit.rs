//! The physical limit of this machine for the work, per core: the fastest JSON parse of the
//! stream's messages we know (`sonic-rs`, each message to a document: parse only) and
//! Parquet encoding of the rows their after-images carry (arrow's `ArrowWriter`, zstd as our
//! tables), each timed on one thread. Combined, one core can do no better than one parse
//! plus one row's share of encoding per event; the machine's limit is that times the cores.
//! Nothing else is counted: no key lookups, no transform, no files, no commits.

use anyhow::{bail, Context, Result};
use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    /// Messages timed.
    pub messages: usize,
    pub parse_events_per_s: f64,
    pub parse_mb_per_s: f64,
    pub encode_rows_per_s: f64,
    /// Parquet bytes out per second.
    pub encode_mb_per_s: f64,
    /// One core doing both.
    pub events_per_s_per_core: f64,
    pub cores: usize,
    /// The machine: every core doing both.
    pub events_per_s: f64,
}

/// A column of the after-image as Arrow holds it, from the Connect schema of the message.
fn arrow_type(field: &sonic_rs::Value) -> DataType {
    let logical = field.get("name").and_then(|n| n.as_str()).unwrap_or("");
    if logical == "io.debezium.time.Date" {
        return DataType::Date32;
    }
    match field.get("type").and_then(|t| t.as_str()).unwrap_or("") {
        "int8" | "int16" | "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float" | "float32" | "double" | "float64" => DataType::Float64,
        "boolean" => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

fn builder(t: &DataType, capacity: usize) -> Box<dyn ArrayBuilder> {
    match t {
        DataType::Int32 => Box::new(Int32Builder::with_capacity(capacity)),
        DataType::Int64 => Box::new(Int64Builder::with_capacity(capacity)),
        DataType::Float64 => Box::new(Float64Builder::with_capacity(capacity)),
        DataType::Boolean => Box::new(BooleanBuilder::with_capacity(capacity)),
        DataType::Date32 => Box::new(Date32Builder::with_capacity(capacity)),
        _ => Box::new(StringBuilder::with_capacity(capacity, capacity * 16)),
    }
}

fn append(b: &mut dyn ArrayBuilder, t: &DataType, v: Option<&sonic_rs::Value>) {
    let v = v.filter(|v| !v.is_null());
    let any = b.as_any_mut();
    match t {
        DataType::Int32 => {
            if let Some(b) = any.downcast_mut::<Int32Builder>() {
                b.append_option(v.and_then(|v| v.as_i64()).map(|n| n as i32))
            }
        }
        DataType::Date32 => {
            if let Some(b) = any.downcast_mut::<Date32Builder>() {
                b.append_option(v.and_then(|v| v.as_i64()).map(|n| n as i32))
            }
        }
        DataType::Int64 => {
            if let Some(b) = any.downcast_mut::<Int64Builder>() {
                b.append_option(v.and_then(|v| v.as_i64()))
            }
        }
        DataType::Float64 => {
            if let Some(b) = any.downcast_mut::<Float64Builder>() {
                b.append_option(v.and_then(|v| v.as_f64()))
            }
        }
        DataType::Boolean => {
            if let Some(b) = any.downcast_mut::<BooleanBuilder>() {
                b.append_option(v.and_then(|v| v.as_bool()))
            }
        }
        _ => {
            if let Some(b) = any.downcast_mut::<StringBuilder>() {
                match v {
                    Some(v) => match v.as_str() {
                        Some(s) => b.append_value(s),
                        None => b.append_value(v.to_string()),
                    },
                    None => b.append_null(),
                }
            }
        }
    }
}

/// Times the first `sample` messages of the stream file (`KEY<TAB>VALUE` lines).
pub fn measure(input: &Path, sample: usize, cores: usize) -> Result<Limit> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?,
    );
    let mut values: Vec<Vec<u8>> = Vec::with_capacity(sample);
    for line in reader.lines() {
        let line = line?;
        let value = line.split_once('\t').map_or(line.as_str(), |(_, v)| v);
        if !value.is_empty() {
            values.push(value.as_bytes().to_vec());
        }
        if values.len() >= sample {
            break;
        }
    }
    if values.is_empty() {
        bail!("no messages in {}", input.display());
    }
    let bytes: usize = values.iter().map(Vec::len).sum();

    // parse only
    let started = Instant::now();
    let mut docs: Vec<sonic_rs::Value> = Vec::with_capacity(values.len());
    for v in &values {
        docs.push(sonic_rs::from_slice(v).context("a message is not JSON")?);
    }
    let parse_s = started.elapsed().as_secs_f64();
    drop(values);

    // the after-images, as the table's columns
    let wrapped = docs[0].get("payload").is_some();
    let fields: Vec<(String, DataType)> = match docs[0].get("schema") {
        Some(schema) => schema
            .get("fields")
            .and_then(|f| f.as_array())
            .and_then(|fs| {
                fs.iter()
                    .find(|f| f.get("field").and_then(|n| n.as_str()) == Some("after"))
            })
            .and_then(|after| after.get("fields"))
            .and_then(|f| f.as_array())
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        let name = f.get("field").and_then(|n| n.as_str()).unwrap_or("");
                        (name.to_owned(), arrow_type(f))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        None => bail!("the physical limit needs the JSON converter's schemas in the messages"),
    };
    let schema = Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, t)| Field::new(n, t.clone(), true))
            .collect::<Vec<_>>(),
    ));
    let afters: Vec<&sonic_rs::Value> = docs
        .iter()
        .filter_map(|d| if wrapped { d.get("payload") } else { Some(d) })
        .filter_map(|p| p.get("after"))
        .filter(|a| !a.is_null())
        .collect();

    // rows to Arrow to Parquet, in batches of the size a commit of ours holds
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let started = Instant::now();
    let mut out: Vec<u8> = Vec::new();
    {
        let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(props))?;
        for chunk in afters.chunks(50_000) {
            let mut builders: Vec<Box<dyn ArrayBuilder>> = fields
                .iter()
                .map(|(_, t)| builder(t, chunk.len()))
                .collect();
            for row in chunk {
                for ((name, t), b) in fields.iter().zip(builders.iter_mut()) {
                    append(b.as_mut(), t, row.get(name.as_str()));
                }
            }
            let columns: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
            writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
        }
        writer.close()?;
    }
    let encode_s = started.elapsed().as_secs_f64();

    let parse_rate = docs.len() as f64 / parse_s;
    let encode_rate = afters.len() as f64 / encode_s;
    // per event: one parse, and the encoding of its share of after-images
    let after_share = afters.len() as f64 / docs.len() as f64;
    let per_core = 1.0 / (1.0 / parse_rate + after_share / encode_rate);
    Ok(Limit {
        messages: docs.len(),
        parse_events_per_s: parse_rate,
        parse_mb_per_s: bytes as f64 / parse_s / 1e6,
        encode_rows_per_s: encode_rate,
        encode_mb_per_s: out.len() as f64 / encode_s / 1e6,
        events_per_s_per_core: per_core,
        cores,
        events_per_s: per_core * cores as f64,
    })
}
