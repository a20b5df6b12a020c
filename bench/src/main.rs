//! `cdc-bench`: how fast, how fresh and how lean the connector is, against the append-only
//! ceiling, the Spark `MERGE INTO` job it replaces and PyIceberg's `upsert()`, on the same
//! generated Debezium stream, in one run, beside the machine's physical limit for the work.
//! See BENCHMARKS.md for the command and the figures.

mod ceiling;
mod fluvio;
mod limit;
mod measure;
mod soak;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use iceberg_cdc_merge::CatalogConfig;
use measure::{bytes_under, commit_field, percentile, table_facts, TableFacts};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::stream::{self, write_file, Length, Spec as StreamSpec, Written};

#[derive(Parser)]
#[command(about = "Benchmarks of the Debezium -> Iceberg connector and its alternatives")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Profile {
    /// 100k events over 25k keys: under two minutes.
    Quick,
    /// 5M events over 1M keys.
    Full,
}

#[derive(clap::Args, Clone)]
struct StreamArgs {
    #[arg(long)]
    events: Option<u64>,
    #[arg(long)]
    keys: Option<u64>,
    /// Percent creates/updates/deletes.
    #[arg(long, default_value = "30/60/10")]
    mix: String,
    /// Share of updates that move a row to another month.
    #[arg(long, default_value_t = 0.2)]
    moves: f64,
    #[arg(long, value_enum, default_value = "products")]
    shape: ShapeArg,
    /// Without the JSON converter's schema wrapper.
    #[arg(long)]
    no_wrapper: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Where the benchmark works and what it runs.
#[derive(clap::Args, Clone)]
struct Places {
    #[arg(long, default_value = ".work/bench")]
    work: PathBuf,
    #[arg(long, default_value = "target/release/iceberg-cdc-sink")]
    connector: PathBuf,
    #[arg(
        long,
        default_value = "target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm"
    )]
    wasm: PathBuf,
    #[arg(long, env = "CDC_PYTHON", default_value = "tests/.venv/bin/python")]
    python: PathBuf,
}

impl Places {
    /// The bench over these places, with the contenders' budgets.
    fn bench(
        self,
        runtime: tokio::runtime::Runtime,
        pyiceberg_budget: u64,
        spark_budget: u64,
        spark_jars: PathBuf,
    ) -> Result<Bench> {
        Ok(Bench {
            work: std::path::absolute(&self.work)?,
            connector: std::path::absolute(&self.connector)?,
            wasm: std::path::absolute(&self.wasm)?,
            python: self.python,
            runtime,
            pyiceberg_budget,
            spark_budget,
            spark_jars,
            maintenance: MAINTENANCE_OFF.into(),
            rounds: 1,
        })
    }
}

/// The table shapes of the benchmark's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ShapeArg {
    /// The old job's table: id, name, description, price, on_offer (and listed_on, the date
    /// the table is partitioned by).
    Products,
    /// id, name, listed_on and 27 more columns of mixed types.
    Wide,
}

impl From<ShapeArg> for stream::Shape {
    fn from(s: ShapeArg) -> stream::Shape {
        match s {
            ShapeArg::Products => stream::Shape::Products,
            ShapeArg::Wide => stream::Shape::Wide,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a Debezium stream as KEY<TAB>VALUE lines, or to a Kafka topic.
    Generate {
        #[command(flatten)]
        stream: StreamArgs,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Produce to this Kafka bootstrap server instead of a file.
        #[arg(long)]
        kafka: Option<String>,
        #[arg(long, default_value = "shop.public.products")]
        topic: String,
    },
    /// Every contender on the same stream; prints the table, writes a JSON report.
    Run {
        #[arg(long, value_enum, default_value = "quick")]
        profile: Profile,
        #[command(flatten)]
        stream: StreamArgs,
        /// A Kafka bootstrap server (Apache Kafka) for the Kafka-source contender.
        #[arg(long)]
        kafka: Option<String>,
        #[command(flatten)]
        places: Places,
        #[arg(long)]
        report: Option<PathBuf>,
        /// Seconds PyIceberg may run (default: 20 for the quick profile, 300 for the full).
        #[arg(long)]
        pyiceberg_budget: Option<u64>,
        /// Seconds the Spark job may run (default: 120 for the quick profile, 600 for the
        /// full); 0 leaves it out.
        #[arg(long)]
        spark_budget: Option<u64>,
        /// The folder of Iceberg's Spark runtime jars (tests/kafka.sh's upstream_install).
        #[arg(long, default_value = ".work/upstream/spark")]
        spark_jars: PathBuf,
        /// Rounds of the native file and Kafka contenders, run alternately, that the Kafka /
        /// file ratio is the median of (default: 1 for the quick profile, 3 for the full).
        #[arg(long)]
        rounds: Option<u32>,
    },
    /// The memory soak: a long stream generated into the connector's stdin, its RSS sampled
    /// every second; a CSV of the samples and a PNG of them.
    Soak {
        #[command(flatten)]
        stream: StreamArgs,
        #[command(flatten)]
        places: Places,
        /// Where the PNG goes.
        #[arg(long, default_value = "bench/soak-rss.png")]
        png: PathBuf,
        /// `wasm` (default) or `native`: how the connector runs the SmartModule.
        #[arg(long, default_value = "wasm")]
        engine: String,
        /// Maintenance on, as users run it, every this often (e.g. `2m`), snapshots expired
        /// once twice that old; off when not given.
        #[arg(long)]
        maintenance: Option<String>,
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// (internal) The append-only ceiling over a stream file.
    Ceiling {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        batch: usize,
        #[arg(long)]
        table: String,
    },
}

impl StreamArgs {
    fn spec(&self, profile: Profile) -> Result<StreamSpec> {
        let (events, keys) = match profile {
            Profile::Quick => (100_000, 25_000),
            Profile::Full => (5_000_000, 1_000_000),
        };
        let parts: Vec<u32> = self
            .mix
            .split('/')
            .map(|p| p.trim().parse())
            .collect::<Result<_, _>>()
            .context("--mix is c/u/d percentages")?;
        let [c, u, d] = parts[..] else {
            bail!("--mix is c/u/d percentages");
        };
        if c + u + d != 100 {
            bail!("--mix must add up to 100");
        }
        Ok(StreamSpec {
            events: self.events.unwrap_or(events) as usize,
            length: Length::Changes,
            keys: self.keys.unwrap_or(keys),
            mix: (c, u, d),
            moves: self.moves,
            shape: self.shape.into(),
            wrapper: !self.no_wrapper,
            seed: self.seed,
            full_before: true,
            keep_rows: false,
            ..StreamSpec::default()
        })
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Generate {
            stream,
            out,
            kafka,
            topic,
        } => {
            let spec = stream.spec(Profile::Quick)?;
            let written = match (out, kafka) {
                (Some(path), None) => write_file(&spec, &path)?,
                (None, Some(bootstrap)) => produce(&spec, &bootstrap, &topic)?,
                _ => bail!("give --out FILE or --kafka BOOTSTRAP"),
            };
            eprintln!(
                "{} events, {} messages, {} bytes; {} live keys at the end",
                written.events,
                written.messages,
                written.bytes,
                written.only_versions().live()
            );
            Ok(())
        }
        Cmd::Ceiling {
            input,
            dir,
            batch,
            table,
        } => runtime.block_on(ceiling::run(&input, &dir, batch, &table)),
        Cmd::Soak {
            stream,
            places,
            png,
            engine,
            maintenance,
            report,
        } => {
            let mut spec = stream.spec(Profile::Full)?;
            if stream.events.is_none() {
                spec.events = 20_000_000;
            }
            let mut bench = places.bench(runtime, 0, 0, PathBuf::new())?;
            let upkeep = maintenance
                .as_deref()
                .map_or("maintenance off".into(), |m| {
                    format!("maintenance every {m}")
                });
            if let Some(every) = &maintenance {
                bench.maintenance = maintained_every(every)?;
            }
            std::fs::create_dir_all(&bench.work)?;
            let csv = bench.work.join("soak-rss.csv");
            eprintln!(
                "soak: {} events over {} keys into the connector's stdin, {upkeep}...",
                spec.events, spec.keys
            );
            let extra = format!("  smartmodule-engine: {engine}\n");
            let soak = soak::run(&bench, &spec, &csv, &extra)?;
            let title = format!(
                "{:.0}M events over {:.1}M keys, {:?}, {engine} SmartModule, {upkeep}: {:.0} events/s",
                soak.events as f64 / 1e6,
                spec.keys as f64 / 1e6,
                spec.shape,
                soak.events_per_s
            );
            let plotted = Command::new(&bench.python)
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("plot_rss.py"))
                .arg(&csv)
                .arg(&png)
                .args(["--title", &title])
                .status()?;
            if !plotted.success() {
                bail!("plot_rss.py failed");
            }
            let text = serde_json::to_string_pretty(&soak)?;
            if let Some(path) = report {
                std::fs::write(&path, &text)?;
            }
            println!(
                "soak: {} events in {:.0} s ({:.0} events/s); peak RSS {:.0} MB; after the first tenth between {:.0} and {:.0} MB over {} samples; table = model: {}; samples {}, plot {}",
                soak.events,
                soak.seconds,
                soak.events_per_s,
                soak.peak_rss_mb,
                soak.rss_after_warmup_mb.1,
                soak.rss_after_warmup_mb.0,
                soak.samples,
                soak.equals_model,
                csv.display(),
                png.display()
            );
            if !soak.equals_model {
                bail!("the soak's table does not equal the model");
            }
            Ok(())
        }
        Cmd::Run {
            profile,
            stream,
            kafka,
            places,
            report,
            pyiceberg_budget,
            spark_budget,
            spark_jars,
            rounds,
        } => {
            let spec = stream.spec(profile)?;
            let mut bench = places.bench(
                runtime,
                pyiceberg_budget.unwrap_or(match profile {
                    Profile::Quick => 20,
                    Profile::Full => 300,
                }),
                spark_budget.unwrap_or(match profile {
                    Profile::Quick => 120,
                    Profile::Full => 600,
                }),
                std::path::absolute(&spark_jars)?,
            )?;
            bench.rounds = rounds.unwrap_or(match profile {
                Profile::Quick => 1,
                Profile::Full => 3,
            });
            let results = bench.run_all(&spec, kafka.as_deref())?;
            let text = serde_json::to_string_pretty(&results)?;
            if let Some(path) = report {
                std::fs::write(&path, &text)?;
            }
            print_table(&results);
            if results
                .contenders
                .iter()
                .any(|c| c.table.as_ref().is_some_and(|t| !t.equals_model))
            {
                bail!("a result table does not equal the model: its figures are void");
            }
            Ok(())
        }
    }
}

/// Produces the stream to a new Kafka topic of one partition (as Debezium creates them).
fn produce(spec: &StreamSpec, bootstrap: &str, topic: &str) -> Result<Written> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let created = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    for r in created {
        if let Err((t, e)) = r {
            if e != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                bail!("creating topic {t}: {e}");
            }
        }
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let written = stream::write_stream(spec, |_, key, value| {
        let mut record = BaseRecord::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        bail!("producing: {e}");
                    }
                    producer.poll(Duration::from_millis(50));
                    record = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
        Ok(())
    })?;
    producer.flush(Duration::from_secs(120))?;
    Ok(written)
}

#[derive(Debug, Serialize)]
struct Results {
    events: u64,
    keys: u64,
    live_keys_at_end: usize,
    /// creates, updates, deletes
    ops: (u64, u64, u64),
    input_bytes: u64,
    shape: String,
    wrapper: bool,
    contenders: Vec<Contender>,
    /// Contenders that could not run here, and why.
    skipped: Vec<String>,
    compaction: Option<CompactionFigure>,
    /// The machine's physical limit for the work (parse + Parquet encode, per core).
    limit: Option<limit::Limit>,
}

#[derive(Debug, Default, Serialize)]
struct Contender {
    name: String,
    events: u64,
    input_bytes: u64,
    seconds: f64,
    events_per_s: f64,
    mb_per_s: f64,
    commit_ms_p50: Option<u64>,
    commit_ms_p99: Option<u64>,
    /// First record of a batch to its commit, at the 1 s commit interval.
    latency_ms_p50: Option<u64>,
    latency_ms_p99: Option<u64>,
    commits: usize,
    peak_rss_mb: f64,
    /// CPU seconds of the contender's process and of the whole machine over its run (`None`
    /// where the figure is a window its own script timed).
    cpu: Option<measure::Cpu>,
    bytes_written_per_input_byte: f64,
    reopen_s: Option<f64>,
    index_bytes_per_key: Option<f64>,
    table: Option<TableFacts>,
    note: String,
}

#[derive(Debug, Serialize)]
struct CompactionFigure {
    bytes_read: u64,
    seconds: f64,
    mb_per_s: f64,
    data_files: (usize, usize),
    delete_files: (usize, usize),
    duckdb_scan_s: (f64, f64),
    equals_model_after: bool,
}

/// The Fluvio side of a connector config: the topic `meta` names, its `consumer` lines (four
/// spaces in, or none), the SmartModule `transforms:` uses.
struct Head<'a> {
    topic: &'a str,
    consumer: &'a str,
    module: &'a str,
}

/// The connector reading a file or Kafka and running the SmartModule itself.
const IN_PROCESS: Head<'static> = Head {
    topic: "bench",
    consumer: "",
    module: "cdc-iceberg/debezium-cdc@0.1.0",
};

/// The connector consuming a Fluvio topic from its start, the SPU running the SmartModule.
fn on_the_spu(topic: &str) -> Head<'_> {
    Head {
        topic,
        consumer: "  consumer:\n    id: bench-sink\n    partition: all\n    offset:\n      strategy: manual\n      start: beginning\n",
        module: fluvio::MODULE,
    }
}

struct Bench {
    work: PathBuf,
    connector: PathBuf,
    wasm: PathBuf,
    python: PathBuf,
    runtime: tokio::runtime::Runtime,
    pyiceberg_budget: u64,
    spark_budget: u64,
    spark_jars: PathBuf,
    /// The connector config's `maintenance:` section (two spaces in).
    maintenance: String,
    /// How many times the native file and Kafka contenders run, alternately.
    rounds: u32,
}

/// The connector config line that runs the SmartModule's code compiled in (two spaces in).
const NATIVE: &str = "  smartmodule-engine: native\n";

/// The native pair that `--rounds` runs again, by the names of their first round.
const NATIVE_FILE: &str = "ours: file source, native SmartModule";
const NATIVE_KAFKA: &str = "ours: Kafka source (Apache Kafka), native SmartModule";

/// A contender's name in `round` of the native pair (the first round's is the plain name).
fn in_round(name: &str, round: u32) -> String {
    match round {
        1 => name.to_owned(),
        n => format!("{name} (round {n})"),
    }
}

/// Maintenance off: the contenders are timed at merging, not at compacting.
const MAINTENANCE_OFF: &str = "  maintenance:\n    enabled: false\n";

fn catalog(dir: &Path) -> CatalogConfig {
    CatalogConfig {
        name: "cdc".into(),
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: format!("file://{}/warehouse", dir.display()),
        s3: Default::default(),
        rest: None,
    }
}

/// A name part no earlier run used (a topic's consumer offsets outlive the run).
fn unique() -> Result<u128> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos())
}

fn fresh_dir(path: PathBuf) -> Result<PathBuf> {
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
    }
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

impl Bench {
    /// The connector's config over `dir`, running the SmartModule itself; `extra`: more
    /// keys of the `iceberg:` section (two spaces in).
    fn config(&self, dir: &Path, source: &str, extra: &str) -> Result<PathBuf> {
        self.config_with(dir, &IN_PROCESS, source, extra)
    }

    /// [`Bench::config`] with `head` as its Fluvio side.
    fn config_with(&self, dir: &Path, head: &Head, source: &str, extra: &str) -> Result<PathBuf> {
        let text = format!(
            "apiVersion: 0.2.0\n\
             meta:\n  name: bench-sink\n  type: iceberg-cdc-sink\n  version: 0.1.0\n  topic:\n    meta:\n      name: {topic}\n{consumer}\
             transforms:\n  - uses: {module}\n\
             iceberg:\n  source:\n{source}\
             \x20 catalog:\n    uri: sqlite://{dir}/catalog.db\n    warehouse: file://{dir}/warehouse\n\
             \x20 dead-letter:\n    file: {dir}/dead-letter.jsonl\n\
             \x20 batch:\n    interval-ms: 1000\n    max-records: 10000000\n    max-bytes: 4GiB\n\
             \x20 tables:\n    partition-by: month(listed_on)\n\
             {maintenance}\
             \x20 smartmodules:\n    cdc-iceberg/debezium-cdc@0.1.0: {wasm}\n{extra}",
            dir = dir.display(),
            wasm = self.wasm.display(),
            topic = head.topic,
            consumer = head.consumer,
            module = head.module,
            maintenance = self.maintenance,
        );
        let path = dir.join("connector.yaml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn connector_cmd(&self, config: &Path) -> Command {
        let mut cmd = Command::new(&self.connector);
        cmd.arg("--config").arg(config).env(
            "RUST_LOG",
            "warn,iceberg_cdc_sink::sink=debug,iceberg_cdc_sink::commit=debug",
        );
        cmd
    }

    /// Our connector's figures from its run and its table.
    fn ours(
        &self,
        name: &str,
        dir: &Path,
        table: &str,
        written: &Written,
        run: measure::Finished,
    ) -> Result<Contender> {
        let commits = commit_field(&run.stderr, "commit_ms");
        let ages = commit_field(&run.stderr, "age_ms");
        let seconds = run.wall.as_secs_f64();
        let facts = self.runtime.block_on(table_facts(
            &catalog(dir),
            table,
            Some(&written.only_versions()),
        ))?;
        let (reopen, _, per_key) = self
            .runtime
            .block_on(measure::reopen(&catalog(dir), table))?;
        Ok(Contender {
            name: name.into(),
            events: written.events,
            input_bytes: written.bytes,
            seconds,
            events_per_s: written.events as f64 / seconds,
            mb_per_s: written.bytes as f64 / seconds / 1e6,
            commit_ms_p50: percentile(&commits, 50.0),
            commit_ms_p99: percentile(&commits, 99.0),
            latency_ms_p50: percentile(&ages, 50.0),
            latency_ms_p99: percentile(&ages, 99.0),
            commits: commits.len(),
            peak_rss_mb: run.peak_rss as f64 / 1e6,
            cpu: Some(run.cpu),
            bytes_written_per_input_byte: bytes_under(&dir.join("warehouse")) as f64
                / written.bytes as f64,
            reopen_s: Some(reopen),
            index_bytes_per_key: Some(per_key),
            table: Some(facts),
            note: String::new(),
        })
    }

    fn run_all(&self, spec: &StreamSpec, kafka: Option<&str>) -> Result<Results> {
        std::fs::create_dir_all(&self.work)?;
        let input = self.work.join("stream.kv");
        let t = Instant::now();
        let written = write_file(spec, &input)?;
        eprintln!(
            "generated {} events ({} MB) in {:.1} s",
            written.events,
            written.bytes / 1_000_000,
            t.elapsed().as_secs_f64()
        );
        let table = spec.shape.table().to_owned();
        let mut contenders = Vec::new();

        // 1. ours, file source
        let dir = fresh_dir(self.work.join("file"))?;
        let source = format!(
            "    type: file\n    path: \"{}\"\n    format: key-value\n",
            input.display()
        );
        let cfg = self.config(&dir, &source, "")?;
        eprintln!("ours (file source)...");
        let run = measure::run(self.connector_cmd(&cfg), || false)?;
        let ours = self.ours("ours: file source", &dir, &table, &written, run)?;
        // the others get batches of the size ours committed on average
        let batch = written.events as usize / ours.commits.max(1);
        contenders.push(ours);

        // 1b. the same with the SmartModule's code compiled in (smartmodule-engine: native)
        let native_file = |name: &str| -> Result<Contender> {
            let dir = fresh_dir(self.work.join("native"))?;
            let cfg = self.config(&dir, &source, NATIVE)?;
            eprintln!("{name}...");
            let run = measure::run(self.connector_cmd(&cfg), || false)?;
            self.ours(name, &dir, &table, &written, run)
        };
        contenders.push(native_file(NATIVE_FILE)?);

        // 2. ours, Kafka source: the same topic consumed by each engine
        if let Some(bootstrap) = kafka {
            eprintln!("ours (Kafka source): producing...");
            let server = format!("bench{}", unique()?);
            let topic = format!("{server}.public.{}", table.split('.').nth(1).unwrap_or(""));
            let produced = produce(spec, bootstrap, &topic)?;
            for (name, folder, extra) in [
                ("ours: Kafka source (Apache Kafka)", "kafka", ""),
                (NATIVE_KAFKA, "kafka-native", NATIVE),
            ] {
                contenders.push(
                    self.kafka_contender(
                        name, folder, extra, bootstrap, &topic, &table, &produced,
                    )?,
                );
            }
            // 2a. the native pair again, file then Kafka, round after round: this machine's
            // speed drifts by tens of percent within minutes (BENCHMARKS.md), so the two
            // sources are compared round by round, each round's two runs side by side
            for round in 2..=self.rounds {
                contenders.push(native_file(&in_round(NATIVE_FILE, round))?);
                contenders.push(self.kafka_contender(
                    &in_round(NATIVE_KAFKA, round),
                    "kafka-native",
                    NATIVE,
                    bootstrap,
                    &topic,
                    &table,
                    &produced,
                )?);
            }
        }

        // 2b. ours on a local Fluvio cluster, the SmartModule run by its SPU, where one can run
        let mut skipped = Vec::new();
        match fluvio::missing() {
            Some(why) => {
                let name = "ours: Fluvio source, SmartModule on the SPU";
                eprintln!("{name}: SKIPPED ({why}; README: a local Fluvio cluster)");
                skipped.push(format!("{name}: {why}"));
            }
            None => contenders.push(self.fluvio_contender(spec, &table)?),
        }

        // 3. the ceiling: parse, Parquet, fast append; no dedup, no deletes
        eprintln!("append-only ceiling...");
        let dir = fresh_dir(self.work.join("ceiling"))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["ceiling", "--table", &table, "--batch"])
            .arg(batch.max(1000).to_string())
            .arg("--input")
            .arg(&input)
            .arg("--dir")
            .arg(&dir);
        let run = measure::run(cmd, || false)?;
        let seconds = run.wall.as_secs_f64();
        let facts = self
            .runtime
            .block_on(table_facts(&catalog(&dir), &table, None))?;
        contenders.push(Contender {
            name: "ceiling: append-only, our code".into(),
            events: written.events,
            input_bytes: written.bytes,
            seconds,
            events_per_s: written.events as f64 / seconds,
            mb_per_s: written.bytes as f64 / seconds / 1e6,
            peak_rss_mb: run.peak_rss as f64 / 1e6,
            cpu: Some(run.cpu),
            bytes_written_per_input_byte: bytes_under(&dir.join("warehouse")) as f64
                / written.bytes as f64,
            commits: facts.snapshots,
            note: format!(
                "{} rows appended (every after-image; not a CDC result)",
                facts.rows
            ),
            table: None,
            ..Contender::default()
        });

        // 4. PyIceberg upsert() of the same batches (a prefix: it is slow)
        eprintln!("PyIceberg upsert()...");
        let dir = fresh_dir(self.work.join("pyiceberg"))?;
        let budget = self.pyiceberg_budget;
        let mut cmd = Command::new(&self.python);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pyiceberg_upsert.py"))
            .arg("--input")
            .arg(&input)
            .arg("--dir")
            .arg(&dir)
            .args(["--batch", &batch.max(1).to_string()])
            .args(["--events", &written.events.to_string()])
            .args(["--budget", &budget.to_string()]);
        let run = measure::run(cmd, || false)?;
        let out: serde_json::Value = serde_json::from_str(run.stdout.trim())
            .with_context(|| format!("PyIceberg said: {}", run.stdout))?;
        let events = out["events"].as_u64().unwrap_or(0);
        contenders.push(budgeted(
            "PyIceberg upsert()",
            &out,
            run.peak_rss,
            &written,
            &dir,
            format!(
                "the first {events} events in batches of {batch} (its {budget} s budget); checked by PyIceberg against its own model"
            ),
        ));

        // 5. the Spark job with MERGE INTO, as the seed job ran (a prefix: it is slow)
        if self.spark_budget > 0 && spec.wrapper {
            contenders.push(self.spark(&input, &written, batch)?);
        }

        // the machine's physical limit: parse and encode only, per core
        eprintln!("physical limit...");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let limit = Some(limit::measure(&input, 200_000, cores)?);

        // compaction of our file-source table, and what it does to a DuckDB full scan
        eprintln!("compaction...");
        let compaction = Some(self.compaction(&self.work.join("file"), &table, &written)?);
        Ok(Results {
            events: written.events,
            keys: spec.keys,
            live_keys_at_end: written.only_versions().live(),
            ops: written.ops,
            input_bytes: written.bytes,
            shape: format!("{:?}", spec.shape),
            wrapper: spec.wrapper,
            contenders,
            skipped,
            compaction,
            limit,
        })
    }

    /// Ours consuming `topic` from its start: the time to the table commit that covers every
    /// message (the connector does not stop by itself on Kafka).
    #[allow(clippy::too_many_arguments)]
    fn kafka_contender(
        &self,
        name: &str,
        folder: &str,
        extra: &str,
        bootstrap: &str,
        topic: &str,
        table: &str,
        produced: &Written,
    ) -> Result<Contender> {
        let dir = fresh_dir(self.work.join(folder))?;
        let source = format!(
            "    type: kafka\n    kafka:\n      bootstrap-servers: {bootstrap}\n      \
             topics: [{topic}]\n      auto-offset-reset: earliest\n"
        );
        let cfg = self.config(&dir, &source, extra)?;
        let config = catalog(&dir);
        let covered = || {
            self.runtime
                .block_on(committed_messages(&config, table))
                .ok()
        };
        let target = produced.messages as i64 - 1;
        self.until_covered(
            name,
            &dir,
            &cfg,
            table,
            produced,
            target,
            covered,
            "every message",
        )
    }

    /// Ours on a local Fluvio cluster: the stream in a topic of its own, the SmartModule run
    /// by the SPU (`transforms:`), the connector with `source.type: fluvio`; timed as the
    /// Kafka contender is.
    fn fluvio_contender(&self, spec: &StreamSpec, table: &str) -> Result<Contender> {
        let name = "ours: Fluvio source, SmartModule on the SPU";
        eprintln!("{name}: producing...");
        let topic = format!("bench-{}", unique()?);
        let cluster = fluvio::Cluster::up(&topic, &self.wasm)?;
        let produced = cluster.produce(&self.runtime, spec)?;
        let dir = fresh_dir(self.work.join("fluvio"))?;
        // the SPU numbers the records after one its SmartModule dropped as if the dropped
        // were not there (Fluvio 0.18.1), so the tables' offsets never reach the topic's
        // end: the connector's own count of committed changes says when it is done
        let port = testkit::http::free_port();
        let extra = format!("  metrics:\n    address: 127.0.0.1:{port}\n");
        let cfg = self.config_with(&dir, &on_the_spu(&topic), "    type: fluvio\n", &extra)?;
        let covered = || committed_changes(port);
        let target = produced.events as i64;
        self.until_covered(
            name,
            &dir,
            &cfg,
            table,
            &produced,
            target,
            covered,
            "every change",
        )
    }

    /// Runs the connector of `cfg` until `covered` (polled every 0.5 s; `None` when it cannot
    /// tell now) reaches `target` (a connector on a broker does not stop by itself): the time
    /// to the poll that saw it. A run that stops moving for [`STALLED`] is stopped and fails,
    /// saying where it stood.
    #[allow(clippy::too_many_arguments)]
    fn until_covered(
        &self,
        name: &str,
        dir: &Path,
        cfg: &Path,
        table: &str,
        produced: &Written,
        target: i64,
        mut covered: impl FnMut() -> Option<i64>,
        what: &str,
    ) -> Result<Contender> {
        eprintln!("{name}: consuming...");
        let mut last_poll = Instant::now();
        let mut done_at: Option<Instant> = None;
        let mut stand = (0, Instant::now());
        let started = Instant::now();
        let mut run = measure::run(self.connector_cmd(cfg), || {
            if last_poll.elapsed() < Duration::from_millis(500) {
                return false;
            }
            last_poll = Instant::now();
            let Some(now) = covered() else {
                return stand.1.elapsed() >= STALLED;
            };
            if now != stand.0 {
                stand = (now, Instant::now());
            }
            if now >= target && done_at.is_none() {
                done_at = Some(Instant::now());
            }
            done_at.is_some() || stand.1.elapsed() >= STALLED
        })?;
        let Some(done) = done_at else {
            bail!(
                "{name}: {what} stood at {} of {target} for {STALLED:?}: stopped",
                stand.0
            );
        };
        // the consuming time: start to the poll that saw everything committed
        run.wall = done.duration_since(started);
        let mut c = self.ours(name, dir, table, produced, run)?;
        c.note = format!("time to the table commit covering {what} (polled every 0.5 s)");
        Ok(c)
    }

    /// The old job: PySpark `MERGE INTO` per micro-batch of `batch` events, until its budget.
    fn spark(&self, input: &Path, written: &Written, batch: usize) -> Result<Contender> {
        eprintln!("Spark MERGE INTO...");
        let dir = fresh_dir(self.work.join("spark"))?;
        let budget = self.spark_budget;
        let mut cmd = Command::new(&self.python);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("spark_merge.py"))
            .arg("--input")
            .arg(input)
            .arg("--dir")
            .arg(&dir)
            .args(["--batch", &batch.max(1).to_string()])
            .args(["--events", &written.events.to_string()])
            .args(["--budget", &budget.to_string()])
            .arg("--jars")
            .arg(&self.spark_jars)
            .env("TZ", "UTC");
        let run = measure::run(cmd, || false)?;
        let out: serde_json::Value =
            serde_json::from_str(run.stdout.trim()).with_context(|| {
                format!(
                    "the Spark job said: {}{}",
                    run.stdout,
                    run.stderr
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
        let events = out["events"].as_u64().unwrap_or(0);
        let startup = out["startup_seconds"].as_f64().unwrap_or(f64::NAN);
        // the driver's Python and its JVM
        let jvm = out["jvm_peak_rss"].as_u64().unwrap_or(0);
        Ok(budgeted(
            "Spark MERGE INTO (the old job)",
            &out,
            run.peak_rss + jvm,
            written,
            &dir,
            format!(
                "the first {events} events in batches of {batch} (its {budget} s budget), after {startup:.1} s of SparkSession start-up (not counted); every column checked against its own model; RSS: the JVM's plus the driver's Python"
            ),
        ))
    }

    fn duckdb_scan(&self, dir: &Path, table: &str) -> Result<f64> {
        let location = self.runtime.block_on(async {
            let catalog = iceberg_cdc_merge::Catalog::connect(&catalog(dir)).await?;
            let t = catalog
                .load_existing(&iceberg::TableIdent::from_strs(table.split('.'))?)
                .await?;
            anyhow::Ok(t.metadata_location().unwrap_or_default().to_owned())
        })?;
        let out = Command::new(&self.python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb_scan.py"))
            .arg(location.trim_start_matches("file://"))
            .output()?;
        if !out.status.success() {
            bail!("duckdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v["seconds"].as_f64().context("duckdb seconds")
    }

    fn compaction(&self, dir: &Path, table: &str, written: &Written) -> Result<CompactionFigure> {
        let before = self.duckdb_scan(dir, table)?;
        let facts_before = self
            .runtime
            .block_on(table_facts(&catalog(dir), table, None))?;
        let report = self.runtime.block_on(async {
            let catalog = iceberg_cdc_merge::Catalog::connect(&catalog(dir)).await?;
            let t = catalog
                .load_existing(&iceberg::TableIdent::from_strs(table.split('.'))?)
                .await?;
            let policy = iceberg_cdc_merge::maintenance::compaction::CompactionPolicy {
                min_input_files: 2,
                max_input_bytes: u64::MAX,
                ..Default::default()
            };
            let out =
                iceberg_cdc_merge::maintenance::compaction::compact(&catalog, &t, &policy).await?;
            anyhow::Ok(out.report)
        })?;
        let after = self.duckdb_scan(dir, table)?;
        let facts_after = self.runtime.block_on(table_facts(
            &catalog(dir),
            table,
            Some(&written.only_versions()),
        ))?;
        let seconds = report.elapsed.as_secs_f64();
        Ok(CompactionFigure {
            bytes_read: report.bytes_read,
            seconds,
            mb_per_s: report.bytes_read as f64 / seconds / 1e6,
            data_files: (facts_before.data_files, facts_after.data_files),
            delete_files: (facts_before.delete_files, facts_after.delete_files),
            duckdb_scan_s: (before, after),
            equals_model_after: facts_after.equals_model,
        })
    }
}

/// A contender that ran a prefix of the stream within its budget, from what its script printed
/// (`events`, `seconds`, `batches`, `rows`, `equals_model`).
fn budgeted(
    name: &str,
    out: &serde_json::Value,
    peak_rss: u64,
    written: &Written,
    dir: &Path,
    note: String,
) -> Contender {
    let events = out["events"].as_u64().unwrap_or(0);
    let seconds = out["seconds"].as_f64().unwrap_or(f64::NAN);
    let share = events as f64 / written.events as f64;
    Contender {
        name: name.into(),
        events,
        input_bytes: (written.bytes as f64 * share) as u64,
        seconds,
        events_per_s: events as f64 / seconds,
        mb_per_s: written.bytes as f64 * share / seconds / 1e6,
        commits: out["batches"].as_u64().unwrap_or(0) as usize,
        peak_rss_mb: peak_rss as f64 / 1e6,
        bytes_written_per_input_byte: bytes_under(&dir.join("warehouse")) as f64
            / (written.bytes as f64 * share),
        table: Some(TableFacts {
            rows: out["rows"].as_u64().unwrap_or(0) as usize,
            equals_model: out["equals_model"].as_bool().unwrap_or(false),
            ..TableFacts::default()
        }),
        note,
        ..Contender::default()
    }
}

/// The `maintenance:` section that runs every table's maintenance every `every` (`90s`,
/// `2m`: a number and `s` or `m`), expiring snapshots older than twice that.
fn maintained_every(every: &str) -> Result<String> {
    let seconds = match (every.strip_suffix('s'), every.strip_suffix('m')) {
        (Some(n), _) => n.parse::<u64>().ok(),
        (_, Some(n)) => n.parse::<u64>().ok().and_then(|n| n.checked_mul(60)),
        _ => None,
    };
    let Some(seconds) = seconds.filter(|s| *s > 0) else {
        bail!("--maintenance {every:?}: a number and s or m, e.g. 2m");
    };
    Ok(format!(
        "  maintenance:\n    interval: {seconds}s\n    expiry:\n      max-snapshot-age: {}s\n",
        seconds.saturating_mul(2)
    ))
}

/// How long a contender on a broker may stand still before it is stopped as stuck.
const STALLED: Duration = Duration::from_secs(120);

/// The changes the connector has committed, from its metrics endpoint on loopback `port`
/// (`iceberg_cdc_batch_changes`, summed over tables); `None` while it does not answer.
fn committed_changes(port: u16) -> Option<i64> {
    let (200, text) = testkit::http::get(port, "/metrics")? else {
        return None;
    };
    let sum: f64 = text
        .lines()
        .filter(|l| l.starts_with("iceberg_cdc_batch_changes_sum"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Some(sum as i64)
}

/// How many source messages the table's newest commit covers (its offsets, summed).
async fn committed_messages(config: &CatalogConfig, table: &str) -> Result<i64> {
    let catalog = iceberg_cdc_merge::Catalog::connect(config).await?;
    let Some(t) = catalog
        .load(&iceberg::TableIdent::from_strs(table.split('.'))?)
        .await?
    else {
        return Ok(0);
    };
    let Some(s) = t.metadata().current_snapshot() else {
        return Ok(0);
    };
    let sum = |key: &str| -> i64 {
        s.summary()
            .additional_properties
            .get(key)
            .and_then(|o| serde_json::from_str::<std::collections::BTreeMap<String, i64>>(o).ok())
            .map(|m| m.values().sum())
            .unwrap_or(0)
    };
    Ok(sum("cdc.offsets").max(sum("cdc.checkpoint")))
}

fn print_table(r: &Results) {
    println!(
        "{} events ({} creates, {} updates, {} deletes) over {} keys ({} live at the end), {} MB of input, {:?}{}",
        r.events,
        r.ops.0,
        r.ops.1,
        r.ops.2,
        r.keys,
        r.live_keys_at_end,
        r.input_bytes / 1_000_000,
        r.shape,
        if r.wrapper { " with schemas" } else { "" }
    );
    println!(
        "| contender | events | events/s | MB/s | commit p50/p99 ms | latency p50/p99 ms | peak RSS MB | CPU s: it/machine | commits | bytes out/in | reopen s | index B/key | table = model |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for c in &r.contenders {
        println!(
            "| {} | {} | {:.0} | {:.1} | {}/{} | {}/{} | {:.0} | {} | {} | {:.2} | {} | {} | {} |",
            c.name,
            c.events,
            c.events_per_s,
            c.mb_per_s,
            opt(c.commit_ms_p50),
            opt(c.commit_ms_p99),
            opt(c.latency_ms_p50),
            opt(c.latency_ms_p99),
            c.peak_rss_mb,
            c.cpu.map_or("-".into(), |u| format!(
                "{:.1}/{:.1}",
                u.contender_s, u.machine_s
            )),
            c.commits,
            c.bytes_written_per_input_byte,
            c.reopen_s.map_or("-".into(), |s| format!("{s:.2}")),
            c.index_bytes_per_key
                .map_or("-".into(), |b| format!("{b:.1}")),
            match &c.table {
                Some(t) if t.equals_model => "yes".to_owned(),
                Some(t) => format!("NO: {}", t.mismatch.clone().unwrap_or_default()),
                None => "n/a".into(),
            }
        );
    }
    for c in r.contenders.iter().filter(|c| !c.note.is_empty()) {
        println!("- {}: {}", c.name, c.note);
    }
    for s in &r.skipped {
        println!("- SKIPPED {s}");
    }
    if let Some(l) = &r.limit {
        println!(
            "physical limit ({} messages, one thread each): parse {:.0} events/s ({:.0} MB/s, sonic-rs), Parquet encode {:.0} rows/s ({:.1} MB/s out, zstd); one core both {:.0} events/s, {} cores {:.0} events/s",
            l.messages,
            l.parse_events_per_s,
            l.parse_mb_per_s,
            l.encode_rows_per_s,
            l.encode_mb_per_s,
            l.events_per_s_per_core,
            l.cores,
            l.events_per_s
        );
    }
    for line in ratios(r) {
        println!("{line}");
    }
    if let Some(f) = &r.compaction {
        println!(
            "compaction: {} MB in {:.2} s = {:.1} MB/s; data files {} -> {}, delete files {} -> {}; DuckDB full scan {:.3} s -> {:.3} s ({:.1}x); table = model after: {}",
            f.bytes_read / 1_000_000,
            f.seconds,
            f.mb_per_s,
            f.data_files.0,
            f.data_files.1,
            f.delete_files.0,
            f.delete_files.1,
            f.duckdb_scan_s.0,
            f.duckdb_scan_s.1,
            f.duckdb_scan_s.0 / f.duckdb_scan_s.1,
            f.equals_model_after
        );
    }
}

/// The Kafka / file ratio of each round of the native pair (`--rounds`), and their median;
/// `None` with fewer than two rounds.
fn kafka_rounds(contenders: &[Contender]) -> Option<(Vec<f64>, f64)> {
    let rate = |name: &str| {
        contenders
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.events_per_s)
    };
    let mut each = Vec::new();
    for round in 1.. {
        let file = rate(&in_round(NATIVE_FILE, round));
        let kafka = rate(&in_round(NATIVE_KAFKA, round));
        match (file, kafka) {
            (Some(f), Some(k)) if f > 0.0 => each.push(k / f),
            _ => break,
        }
    }
    if each.len() < 2 {
        return None;
    }
    let mut sorted = each.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    };
    Some((each, median))
}

/// The ratios the targets are stated in, from this run's figures.
fn ratios(r: &Results) -> Vec<String> {
    let rate = |prefix: &str| {
        r.contenders
            .iter()
            .find(|c| c.name.starts_with(prefix))
            .map(|c| c.events_per_s)
    };
    let ours = r
        .contenders
        .iter()
        .find(|c| c.name == "ours: file source")
        .map(|c| c.events_per_s);
    let ratio = |what: &str, a: Option<f64>, b: Option<f64>, target: &str| {
        let (a, b) = (a?, b?);
        Some(format!("{what}: {:.2}x (target {target})", a / b))
    };
    let mut out = Vec::new();
    out.extend(ratio(
        "ours / append-only ceiling",
        ours,
        rate("ceiling"),
        ">= 0.8x",
    ));
    out.extend(ratio(
        "ours, native SmartModule / append-only ceiling",
        rate(NATIVE_FILE),
        rate("ceiling"),
        ">= 0.8x",
    ));
    out.extend(ratio(
        "ours / Spark MERGE INTO",
        ours,
        rate("Spark"),
        ">= 20x",
    ));
    out.extend(ratio(
        "ours, native SmartModule / Spark MERGE INTO",
        rate(NATIVE_FILE),
        rate("Spark"),
        ">= 20x",
    ));
    out.extend(ratio(
        "ours / PyIceberg upsert()",
        ours,
        rate("PyIceberg"),
        ">= 100x at the full profile",
    ));
    out.extend(ratio(
        "Kafka source / file source",
        rate("ours: Kafka"),
        ours,
        ">= 0.8x",
    ));
    out.extend(ratio(
        "Kafka source / file source, native SmartModule both",
        rate(NATIVE_KAFKA),
        rate(NATIVE_FILE),
        ">= 0.8x",
    ));
    out.extend(kafka_rounds(&r.contenders).map(|(each, median)| {
        let each: Vec<String> = each.iter().map(|x| format!("{x:.2}x")).collect();
        format!(
            "Kafka source / file source, native SmartModule both, {} rounds side by side: {}; median {median:.2}x (target >= 0.8x)",
            each.len(),
            each.join(", ")
        )
    }));
    out.extend(ratio(
        "Fluvio source (SmartModule on the SPU) / file source",
        rate("ours: Fluvio"),
        ours,
        "none: where we stand",
    ));
    out.extend(ratio(
        "ours / physical limit",
        ours,
        r.limit.as_ref().map(|l| l.events_per_s),
        "none: where we stand",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contender(name: &str, events_per_s: f64) -> Contender {
        Contender {
            name: name.into(),
            events_per_s,
            ..Contender::default()
        }
    }

    #[test]
    fn the_kafka_ratio_is_taken_round_by_round() {
        let (file, kafka) = (NATIVE_FILE, NATIVE_KAFKA);
        let mut c = vec![
            contender("ours: file source", 10.0),
            contender(file, 100.0),
            contender("ours: Kafka source (Apache Kafka)", 10.0),
            contender(kafka, 60.0),
        ];
        // one round: the plain ratio says it all
        assert!(kafka_rounds(&c).is_none());
        c.push(contender(&format!("{file} (round 2)"), 80.0));
        c.push(contender(&format!("{kafka} (round 2)"), 72.0));
        let (each, median) = kafka_rounds(&c).expect("two rounds");
        assert_eq!(each, vec![0.6, 0.9]);
        assert!((median - 0.75).abs() < 1e-9);
        c.push(contender(&format!("{file} (round 3)"), 50.0));
        c.push(contender(&format!("{kafka} (round 3)"), 40.0));
        let (each, median) = kafka_rounds(&c).expect("three rounds");
        assert_eq!(each.len(), 3);
        assert!((median - 0.8).abs() < 1e-9);
        // a round whose Kafka run is missing ends the count there
        c.push(contender(&format!("{file} (round 4)"), 50.0));
        assert_eq!(kafka_rounds(&c).map(|(e, _)| e.len()), Some(3));
    }
}
