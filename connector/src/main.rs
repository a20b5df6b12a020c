//! `iceberg-cdc-sink`: Debezium change streams into Apache Iceberg tables, as a Fluvio sink
//! connector. Data path: source -> transform (the debezium-cdc SmartModule) -> route ->
//! batch -> merge/commit -> acknowledge (`sink.rs`; ARCHITECTURE.md has the map).
//!
//! As cdk runs it: `iceberg-cdc-sink --config <file> [--secrets <file>]`.

mod allocator;
mod batch;
mod commit;
mod config;
mod dead_letter;
mod endpoint;
mod inspect;
mod ledger;
mod maintenance;
mod metrics;
mod retry;
mod route;
mod sink;
mod source;
mod stats;
mod tables;
mod transform;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::{ConnectorConfig, Secrets};
use source::file::LineFormat;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "Debezium change streams into Apache Iceberg tables")]
struct Cli {
    /// The connector config (Fluvio's format with an `iceberg:` section).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// `NAME=value` lines; without it, secrets come from environment variables.
    #[arg(long, global = true)]
    secrets: Option<PathBuf>,
    /// Serve `/metrics`, `/health` and `/ready` on this `host:port` (instead of
    /// `iceberg.metrics.address`).
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Show each table's snapshots (with the offsets each committed) and rows.
    Inspect {
        /// Only this table (`namespace.table`).
        #[arg(long)]
        table: Option<String>,
        /// Rows to print per table.
        #[arg(long, default_value_t = 20)]
        rows: usize,
    },
    /// Compact, expire snapshots and remove orphan files now, as `iceberg.maintenance`
    /// says (its `enabled` switch is for the schedule only), and print what was done.
    Maintain {
        /// Only this table (`namespace.table`; repeatable). Default: every table.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Only this task (repeatable), even when the config switches it off.
        #[arg(long = "only", value_enum)]
        tasks: Vec<config::Task>,
        /// Orphan removal's safety window (`3d`, `12h`) instead of the config's.
        #[arg(long, value_parser = |s: &str| config::parse_span(s).map_err(|e| e.to_string()))]
        orphans_older_than: Option<config::Span>,
    },
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
    #[arg(long, env = "DEBEZIUM_CDC_WASM", default_value = transform::DEFAULT_WASM)]
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

fn load_config(path: Option<&Path>, secrets: Option<&Path>) -> Result<ConnectorConfig> {
    let path = path.context("--config is required")?;
    let secrets = match secrets {
        Some(s) => Secrets::from_file(s)?,
        None => Secrets::from_env(),
    };
    ConnectorConfig::load(path, &secrets)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // the config is read before the runtime starts its threads: trusting a private CA sets
    // process environment variables
    let config = match cli.command {
        None | Some(Command::Inspect { .. }) | Some(Command::Maintain { .. }) => {
            let config = load_config(cli.config.as_deref(), cli.secrets.as_deref())?;
            trust_private_ca(&config);
            Some(config)
        }
        Some(Command::Transform(_)) => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match (cli.command, config) {
        (None, Some(mut config)) => {
            if let Some(a) = cli.metrics_address {
                config.iceberg.metrics.address = Some(a);
            }
            runtime.block_on(run(config))
        }
        (Some(Command::Inspect { table, rows }), Some(config)) => {
            let stdout = std::io::stdout();
            runtime.block_on(inspect::inspect(
                &config,
                table.as_deref(),
                rows,
                &mut stdout.lock(),
            ))
        }
        (
            Some(Command::Maintain {
                tables,
                tasks,
                orphans_older_than,
            }),
            Some(config),
        ) => {
            let stdout = std::io::stdout();
            runtime.block_on(maintenance::maintain_command(
                &config,
                &tables,
                &tasks,
                orphans_older_than,
                &mut stdout.lock(),
            ))
        }
        (Some(Command::Transform(args)), _) => run_transform(args),
        (_, None) => anyhow::bail!("--config is required"),
    }
}

/// `iceberg.storage.ca-file`: rustls (under OpenDAL's HTTP client) loads its roots from
/// `SSL_CERT_FILE` plus `SSL_CERT_DIR` when they are set; the system's certificate folder
/// stays in `SSL_CERT_DIR` so public endpoints keep working. Called before any thread exists.
fn trust_private_ca(config: &ConnectorConfig) {
    let Some(ca) = &config.iceberg.storage.ca_file else {
        return;
    };
    std::env::set_var("SSL_CERT_FILE", ca);
    if std::env::var_os("SSL_CERT_DIR").is_none() && Path::new("/etc/ssl/certs").is_dir() {
        std::env::set_var("SSL_CERT_DIR", "/etc/ssl/certs");
    }
}

/// Seconds a stop request may take to commit what is open before the process gives up (and
/// a restart replays it).
const STOP_DEADLINE: Duration = Duration::from_secs(30);

async fn run(config: ConnectorConfig) -> Result<()> {
    tracing::info!("{}", config.describe());
    let purge_delay_ms = allocator::configure(config.runs_wasm_here());
    tracing::debug!(purge_delay_ms, "allocator: mimalloc");
    // listening for the stop before anything else: a stop while the tables are opened (their
    // key indexes rebuilt) or the SmartModules compiled ends the process at once, with
    // nothing read and nothing to commit
    let mut stop = watch_for_stop()?;
    let metrics = metrics::Metrics::new();
    let watch = &config.iceberg.metrics;
    if let Some(address) = watch.address {
        endpoint::serve(address, metrics.clone(), watch.stall_after()).await?;
    }
    if let Some(path) = watch.fluvio_socket() {
        let smartmodule = config.transforms.first().map(|t| t.uses.clone());
        let smartmodule = smartmodule.unwrap_or_else(|| transform::SMARTMODULE_NAME.to_owned());
        endpoint::serve_fluvio_socket(path, metrics.clone(), smartmodule).await;
    }
    let mut sink = tokio::select! {
        sink = sink::Sink::open(config, metrics) => sink?,
        _ = stop.changed() => {
            tracing::info!("stopped while opening the tables: nothing was read");
            return Ok(());
        }
    };
    tracing::info!(resume = ?sink.resume_positions(), "started");
    let result = sink.run(stop).await;
    tracing::info!("summary: {}", sink.stats);
    result
}

/// Turns true on SIGTERM or Ctrl-C; [`STOP_DEADLINE`] later the process gives up.
fn watch_for_stop() -> Result<tokio::sync::watch::Receiver<bool>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received: stopping");
        let _ = stop_tx.send(true);
        tokio::time::sleep(STOP_DEADLINE).await;
        tracing::error!("open batches not committed within {STOP_DEADLINE:?}: abandoning them");
        std::process::exit(2);
    });
    Ok(stop_rx)
}

fn run_transform(args: TransformArgs) -> Result<()> {
    let step = transform::Step {
        name: transform::SMARTMODULE_NAME.to_owned(),
        wasm: args.wasm,
        params: args.params.into_iter().collect(),
    };
    transform::run_command(&args.input, args.format, step, args.dead_letter.as_deref())
}
