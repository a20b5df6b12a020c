//! The sink connector binary. Data path: source -> transform (SmartModule) -> batch ->
//! merge -> commit. This first cut has the source and transform stages and a `transform`
//! command that shows what the SmartModule makes of a file of Debezium messages.

mod source;
mod transform;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use debezium_cdc::record::CdcRecord;
use source::file::{self, LineFormat};
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::PathBuf;

/// Where `smartmodule/build-wasm.sh` puts the SmartModule.
const DEFAULT_WASM: &str = "target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm";
const SMARTMODULE_NAME: &str = "cdc-iceberg/debezium-cdc@0.1.0";

#[derive(Parser)]
#[command(version, about = "Debezium change streams into Apache Iceberg tables")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the debezium-cdc SmartModule (in Fluvio's engine, in-process) over a file of
    /// Debezium messages and print the CDC records as JSON lines.
    Transform(TransformArgs),
}

#[derive(clap::Args)]
struct TransformArgs {
    /// File of Debezium messages, one per line; `-` for stdin.
    #[arg(long, default_value = "-")]
    input: String,
    /// Line format: the message value, or `KEY<TAB>VALUE` (kcat -f '%k\t%s\n').
    #[arg(long, value_enum, default_value = "value")]
    format: LineFormat,
    /// The compiled SmartModule.
    #[arg(long, env = "DEBEZIUM_CDC_WASM", default_value = DEFAULT_WASM)]
    wasm: PathBuf,
    /// A SmartModule parameter, `name=value` (repeatable), as under `with:` in a config.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Write error records here (JSON lines) instead of with the changes on stdout.
    #[arg(long)]
    dead_letter: Option<PathBuf>,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not name=value"))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Transform(args) => run_transform(args),
    }
}

fn run_transform(args: TransformArgs) -> Result<()> {
    let records = if args.input == "-" {
        file::read_all(std::io::stdin().lock(), args.format, 0)?
    } else {
        let f =
            std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input))?;
        file::read_all(BufReader::new(f), args.format, 0)
            .with_context(|| format!("reading {}", args.input))?
    };
    let mut chain = transform::Chain::new(&[transform::Step {
        name: SMARTMODULE_NAME.to_owned(),
        wasm: args.wasm.clone(),
        params: args.params.into_iter().collect(),
    }])?;
    let out = chain.apply(&records)?;

    let stdout = std::io::stdout();
    let mut changes = stdout.lock();
    let mut dead_letter = match &args.dead_letter {
        Some(path) => Some(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => None,
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for record in &out {
        let parsed: CdcRecord = serde_json::from_slice(&record.value).with_context(|| {
            format!(
                "offset {}: the SmartModule emitted a record that is not a CDC record",
                record.offset
            )
        })?;
        let (label, dropped) = match &parsed {
            CdcRecord::Change(c) => (format!("op {}", c.op.code()), &c.dropped),
            CdcRecord::Error(e) => ("error".to_owned(), &e.dropped),
        };
        *counts.entry(label).or_default() += 1;
        for (reason, n) in dropped {
            *counts.entry(format!("dropped {reason}")).or_default() += n;
        }
        let sink: &mut dyn Write = match (&parsed, dead_letter.as_mut()) {
            (CdcRecord::Error(_), Some(f)) => f,
            _ => &mut changes,
        };
        sink.write_all(&record.value)?;
        sink.write_all(b"\n")?;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    eprintln!(
        "{} messages in, {} records out ({})",
        records.len(),
        out.len(),
        summary.join(", ")
    );
    Ok(())
}
