//! SmartModules applied in-process with `fluvio-smartengine`, the engine Fluvio's SPU runs:
//! the same `.wasm` and the same `with:` params as a `transforms:` entry, for sources that do
//! not pass through a Fluvio topic (files, Kafka read directly). With
//! `smartmodule-engine: native`, the debezium-cdc SmartModule's own Rust code runs compiled
//! into the connector instead of its `.wasm`: the same function on the same bytes
//! (`Transformer::process_to_json`, what the `.wasm`'s `filter_map` calls), without the
//! WebAssembly machine and the engine's copies; the tests hold its output byte-identical to
//! the `.wasm`'s. Its records go on as they came out of the module, not written as JSON and
//! read back: what the `.wasm` writes is what writing them gives (tested), and only a dead
//! letter or the `transform` command writes them.
//!
//! The transform runs as a stage of its own ([`spawn`]), on threads of its own: while the
//! run loop merges and commits one batch, the next chunks go through SmartModule instances
//! side by side and are decoded into CDC records.

use crate::config::ConnectorConfig;
use crate::config::SmartModuleEngine;
use crate::metrics::Metrics;
use crate::source::file::{FileSource, LineFormat};
use crate::source::{Chunks, Partition, Revocation, SourceRecord};
use anyhow::{anyhow, bail, Context, Result};
use debezium_cdc::params::Settings;
use debezium_cdc::record::{CdcRecord, Column, ErrorRecord, Original, CONTRACT_VERSION};
use debezium_cdc::Transformer;
use fluvio_smartengine::{
    SmartEngine, SmartModuleChainBuilder, SmartModuleChainInstance, SmartModuleConfig,
    DEFAULT_SMARTENGINE_VERSION,
};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use fluvio_smartmodule::Record;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Where `smartmodule/build-wasm.sh` puts our SmartModule.
pub const DEFAULT_WASM: &str = "target/wasm32-unknown-unknown/release-lto/debezium_cdc.wasm";
pub const SMARTMODULE_NAME: &str = "cdc-iceberg/debezium-cdc@0.1.0";

/// Our SmartModule's `.wasm` when `iceberg.smartmodules` names none: `DEBEZIUM_CDC_WASM`
/// (the container image sets it), else where the build puts it.
fn default_wasm() -> PathBuf {
    std::env::var_os("DEBEZIUM_CDC_WASM")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_WASM), PathBuf::from)
}

/// The `transforms:` chain, one instance per transform worker.
pub fn chains(config: &ConnectorConfig, metrics: &Metrics) -> Result<Vec<Chain>> {
    let steps = config
        .transforms
        .iter()
        .map(|t| {
            let wasm = match config.iceberg.smartmodules.get(&t.uses) {
                Some(path) => path.clone(),
                None if t.uses == SMARTMODULE_NAME => default_wasm(),
                None => bail!(
                    "transforms: `{}` has no local .wasm; add it under iceberg.smartmodules",
                    t.uses
                ),
            };
            Ok(Step {
                name: t.uses.clone(),
                wasm,
                params: t.params()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if steps.is_empty() {
        bail!("the file source needs the debezium-cdc SmartModule under transforms:");
    }
    match config.iceberg.smartmodule_engine {
        SmartModuleEngine::Wasm => (0..workers())
            .map(|_| Chain::new(&steps, metrics.clone()))
            .collect(),
        SmartModuleEngine::Native => {
            let [step] = &steps[..] else {
                bail!("smartmodule-engine: native runs the debezium-cdc SmartModule alone");
            };
            (0..workers())
                .map(|_| Chain::native(step, metrics.clone()))
                .collect()
        }
    }
}

/// One SmartModule of a chain: its compiled module and its params.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub wasm: PathBuf,
    pub params: BTreeMap<String, String>,
}

/// A SmartModule chain ready to process batches.
pub struct Chain {
    engine: Engine,
    metrics: Metrics,
}

enum Engine {
    /// The `.wasm` files in `fluvio-smartengine`.
    Wasm {
        steps: Vec<Step>,
        instance: SmartModuleChainInstance,
        /// The instance's memory limit ([`INSTANCE_MEMORY`]).
        memory: usize,
    },
    /// The debezium-cdc SmartModule's code, compiled in.
    Native(Box<Transformer>),
}

/// The most linear memory one instance may have. The instance's memory grows to what its
/// largest call needed and never shrinks; a module that leaks (what Fluvio's
/// `#[smartmodule(filter_map)]` generates leaks each call's output: ours no longer uses it)
/// reaches this, its call fails, and the call is tried once more on a fresh instance.
const INSTANCE_MEMORY: usize = 256 << 20;

/// Records and bytes per call into the `.wasm` (at least one record): what one call needs
/// (the input, its decoded records, the output and its encoding) stays a small part of
/// [`INSTANCE_MEMORY`]. The sources' chunks ([`crate::source::CHUNK`]) are smaller; this
/// bounds any caller's.
const RECORDS_PER_CALL: usize = 500;
const BYTES_PER_CALL: usize = 4 << 20;

/// `batch` cut into calls of at most [`RECORDS_PER_CALL`] records and [`BYTES_PER_CALL`]
/// bytes, a record larger than that in a call of its own.
fn calls(batch: &[SourceRecord]) -> Vec<&[SourceRecord]> {
    let mut out = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len() && n < RECORDS_PER_CALL {
            bytes += record_bytes(&rest[n]);
            if n > 0 && bytes > BYTES_PER_CALL {
                break;
            }
            n += 1;
        }
        let (call, tail) = rest.split_at(n);
        out.push(call);
        rest = tail;
    }
    out
}

impl Chain {
    /// Loads and initializes every step; a module that refuses its params fails here.
    pub fn new(steps: &[Step], metrics: Metrics) -> Result<Chain> {
        Chain::with_memory(steps, metrics, INSTANCE_MEMORY)
    }

    /// [`Chain::new`] with instances of at most `memory` bytes of linear memory.
    fn with_memory(steps: &[Step], metrics: Metrics, memory: usize) -> Result<Chain> {
        Ok(Chain {
            engine: Engine::Wasm {
                steps: steps.to_vec(),
                instance: Chain::instantiate(steps, memory)?,
                memory,
            },
            metrics,
        })
    }

    /// The debezium-cdc SmartModule run natively, with the step's params (refused as the
    /// `.wasm`'s `init` refuses them).
    pub fn native(step: &Step, metrics: Metrics) -> Result<Chain> {
        if step.name != SMARTMODULE_NAME {
            bail!(
                "smartmodule-engine: native runs {SMARTMODULE_NAME} only, not `{}`",
                step.name
            );
        }
        let settings = Settings::from_map(&step.params)
            .map_err(|e| anyhow!("transforms: {}: {e}", step.name))?;
        Ok(Chain {
            engine: Engine::Native(Box::new(Transformer::new(settings))),
            metrics,
        })
    }

    fn instantiate(steps: &[Step], memory: usize) -> Result<SmartModuleChainInstance> {
        let mut builder = SmartModuleChainBuilder::default();
        builder.set_store_memory_limit(memory);
        for step in steps {
            let bytes = std::fs::read(&step.wasm)
                .with_context(|| format!("reading SmartModule {}", step.wasm.display()))?;
            let mut config = SmartModuleConfig::builder();
            config.smartmodule_names(vec![step.name.clone()]);
            for (k, v) in &step.params {
                config.param(k.clone(), v.clone());
            }
            builder.add_smart_module(config.build()?, bytes);
        }
        builder
            .initialize(&SmartEngine::new())
            .context("initializing the SmartModule chain")
    }

    /// Runs a batch (of one partition) through the chain. Output records keep the offset of
    /// the input record they came from.
    pub fn apply(&mut self, batch: &[SourceRecord]) -> Result<Vec<Emitted>> {
        let started = std::time::Instant::now();
        let bytes = bytes_of(batch);
        let (steps, instance, memory) = match &mut self.engine {
            Engine::Native(transformer) => {
                // what the .wasm's filter_map does, record by record
                let out: Vec<Emitted> = batch
                    .iter()
                    .filter_map(|r| {
                        let record =
                            transformer.process(r.key.as_deref(), &r.value, Some(r.offset))?;
                        Some(Emitted {
                            offset: r.offset,
                            bytes: record_bytes(r),
                            value: Vec::new(),
                            record: Some(record),
                        })
                    })
                    .collect();
                self.metrics
                    .transformed(bytes, out.len(), started.elapsed());
                return Ok(out);
            }
            Engine::Wasm {
                steps,
                instance,
                memory,
            } => (steps, instance, *memory),
        };
        let mut fresh = || {
            self.metrics.renewed();
            Chain::instantiate(steps, memory)
        };
        let mut out = Vec::with_capacity(batch.len());
        for call in calls(batch) {
            out.extend(call_or_refuse(instance, &mut fresh, call)?);
        }
        self.metrics
            .transformed(bytes, out.len(), started.elapsed());
        Ok(out)
    }
}

/// One call into the `.wasm` chain, never failing for its records' sake. A call that fails
/// (the instance at its memory limit, a trap) is tried once more on a `fresh` instance; failing
/// there too, its records go through one by one, and a record the chain fails on even on a
/// fresh instance becomes an error record (dead-lettered with its bytes, as the SmartModule's
/// own are) while the stream goes on. Only failing to make an instance fails.
fn call_or_refuse(
    instance: &mut SmartModuleChainInstance,
    fresh: &mut impl FnMut() -> Result<SmartModuleChainInstance>,
    call: &[SourceRecord],
) -> Result<Vec<Emitted>> {
    let failed = match wasm_call(instance, call) {
        Ok(emitted) => return Ok(emitted),
        Err(e) => e,
    };
    tracing::warn!(
        error = format!("{failed:#}"),
        records = call.len(),
        "a SmartModule call failed: trying it once more on a fresh instance"
    );
    *instance = fresh()?;
    let again = match wasm_call(instance, call) {
        Ok(emitted) => return Ok(emitted),
        Err(e) => e,
    };
    match call {
        [one] => {
            tracing::error!(
                offset = one.offset,
                error = format!("{again:#}"),
                "the SmartModule chain failed on a record on a fresh instance too: dead-lettered"
            );
            *instance = fresh()?;
            Ok(vec![refused(
                one,
                &format!("the SmartModule chain failed on this record, on a fresh instance too: {again:#}"),
            )])
        }
        _ => {
            let mut out = Vec::with_capacity(call.len());
            for one in call.chunks(1) {
                out.extend(call_or_refuse(instance, fresh, one)?);
            }
            Ok(out)
        }
    }
}

/// An error record for a source record the chain could not process: the reason and the
/// record's bytes, as the SmartModule writes its own.
fn refused(r: &SourceRecord, reason: &str) -> Emitted {
    let error = CdcRecord::Error(ErrorRecord {
        v: CONTRACT_VERSION,
        reason: reason.to_owned(),
        offset: Some(r.offset),
        key: r.key.as_deref().map(Original::from_bytes),
        value: Original::from_bytes(&r.value),
        dropped: BTreeMap::new(),
    });
    Emitted {
        offset: r.offset,
        bytes: record_bytes(r),
        value: debezium_cdc::to_json(&error),
        record: None,
    }
}

/// One call into the `.wasm` chain: `call`'s records in, the outputs with the offsets of
/// the records they came from.
fn wasm_call(
    instance: &mut SmartModuleChainInstance,
    call: &[SourceRecord],
) -> Result<Vec<Emitted>> {
    let Some(base) = call.first().map(|r| r.offset) else {
        return Ok(Vec::new());
    };
    let records: Vec<Record> = call
        .iter()
        .map(|r| {
            let mut rec = match &r.key {
                Some(k) => Record::new_key_value(k.clone(), r.value.clone()),
                None => Record::new(r.value.clone()),
            };
            rec.preamble.set_offset_delta(r.offset - base);
            rec
        })
        .collect();
    let mut input = SmartModuleInput::try_from_records(records, DEFAULT_SMARTENGINE_VERSION)
        .context("encoding the SmartModule input")?;
    input.set_base_offset(base);
    let output = instance
        .process(input)
        .context("running the SmartModule chain")?;
    if let Some(err) = output.error {
        bail!(
            "a SmartModule failed at offset {}: {}",
            err.offset,
            err.hint
        );
    }
    Ok(output
        .successes
        .into_iter()
        .map(|r| {
            let delta = r.preamble.offset_delta();
            let from = usize::try_from(delta).ok().and_then(|d| call.get(d));
            Emitted {
                offset: base + delta,
                bytes: from.map_or(0, record_bytes),
                value: r.value().as_ref().to_vec(),
                record: None,
            }
        })
        .collect())
}

/// One record a chain emitted.
pub struct Emitted {
    /// The offset of the source record it came from.
    pub offset: i64,
    /// The bytes (key and value) of the source record it came from.
    pub bytes: usize,
    /// Its JSON, as the chain wrote it; empty when the chain ran natively.
    pub value: Vec<u8>,
    /// The record itself, when the chain ran natively.
    pub record: Option<CdcRecord>,
}

impl Emitted {
    /// A record that passed no chain (a Fluvio topic's, transformed by the SPU).
    fn untransformed(r: SourceRecord) -> Emitted {
        Emitted {
            offset: r.offset,
            bytes: record_bytes(&r),
            value: r.value,
            record: None,
        }
    }

    /// Its JSON (see [`written`]); `record` is what [`Emitted::decode`] gave.
    fn written(&self, record: &CdcRecord) -> Cow<'_, [u8]> {
        written(&self.value, || debezium_cdc::to_json(record))
    }

    /// The CDC record, or why the output is not one.
    fn decode(&mut self) -> Result<CdcRecord, String> {
        match self.record.take() {
            Some(record) => Ok(record),
            None => {
                serde_json::from_slice(&self.value).map_err(|e| format!("not a CDC record: {e}"))
            }
        }
    }
}

/// An output record's JSON: `value` as the chain wrote it, or, when the native chain handed
/// the record on unwritten (`value` empty), what the `.wasm` writes for it (`write`).
pub fn written(value: &[u8], write: impl FnOnce() -> Vec<u8>) -> Cow<'_, [u8]> {
    if value.is_empty() {
        Cow::Owned(write())
    } else {
        Cow::Borrowed(value)
    }
}

/// Bytes of a record's key and value.
fn record_bytes(r: &SourceRecord) -> usize {
    r.value.len() + r.key.as_ref().map_or(0, |k| k.len())
}

/// Bytes of a chunk's keys and values.
fn bytes_of(records: &[SourceRecord]) -> usize {
    records.iter().map(record_bytes).sum()
}

/// What reaches the run loop from the transform stage, in the order the source produced it.
pub enum Arrival {
    Chunk(Transformed),
    /// Partitions being taken away (Kafka), after every chunk read of them before.
    Revoked(Revocation),
}

/// One source chunk (of one partition) after the SmartModule chain.
pub struct Transformed {
    pub partition: Partition,
    /// The offset of the chunk's last source record.
    pub last: i64,
    /// Source records in the chunk.
    pub read: usize,
    /// Their bytes (keys and values).
    pub bytes: usize,
    /// Records the source could not make a message of (`defect` says why).
    pub unreadable: Vec<SourceRecord>,
    /// The chain's output, decoded.
    pub records: Vec<Decoded>,
}

/// One output record of the chain.
pub struct Decoded {
    pub offset: i64,
    /// The CDC record, or why the output is not one.
    pub record: Result<CdcRecord, String>,
    /// The output as the chain wrote it (what a dead letter carries); empty for a change the
    /// native chain handed on (`sink::payload` writes it when it is dead-lettered).
    pub value: Vec<u8>,
    /// The bytes (key and value) of the source record it came from.
    pub bytes: usize,
}

/// The source bytes the stage may have in hand (being transformed, or done and waiting for
/// the loop), at least one chunk: enough for the workers to go on while the loop commits
/// (~150 ms at a time). With room for two chunks per worker instead, they stopped then: 1M
/// events from a file took 7.8-8.1 s (native engine), 5.9-6.4 s with this, at the same peak
/// RSS; 16 and 32 MiB were no faster and held 30-80 MB more.
const AHEAD_BYTES: usize = 8 << 20;

/// Chunks the stage may have in hand per worker, however small (a Kafka partition's chunk
/// may hold one record).
const AHEAD_PER_WORKER: usize = 64;

/// [`AHEAD_BYTES`] is counted in KiB.
const AHEAD_UNIT: usize = 1 << 10;

/// The units of [`AHEAD_BYTES`] a chunk of `bytes` takes: at least one, at most all.
fn ahead_units(bytes: usize) -> u32 {
    let all = AHEAD_BYTES / AHEAD_UNIT;
    u32::try_from(bytes.div_ceil(AHEAD_UNIT).clamp(1, all)).unwrap_or(u32::MAX)
}

/// How many chains to run side by side: one per core, at most four.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// A chunk for a worker, and where its result goes.
type Job = (Vec<SourceRecord>, oneshot::Sender<Result<Arrival>>);

/// Starts the transform stage: source chunks in, [`Arrival`]s out, in the order the source
/// produced them. Each of `chains` runs on a worker thread of its own and takes the next
/// chunk when it is free (the SmartModule keeps no state between records that matters for
/// the output, so any instance may take any chunk); the results are handed on in source
/// order. Revocations, when the source has them, are handed on after every chunk that came
/// before them. Without chains (a Fluvio topic, transformed by the SPU) one worker only
/// decodes. An error of the source or of a chain is the stage's last item; the end of the
/// source ends the stage.
pub fn spawn(
    chains: Vec<Chain>,
    mut chunks: Chunks,
    mut revocations: Option<mpsc::Receiver<Revocation>>,
) -> Result<mpsc::Receiver<Result<Arrival>>> {
    let workers: Vec<Option<Chain>> = if chains.is_empty() {
        vec![None]
    } else {
        chains.into_iter().map(Some).collect()
    };
    let ahead = AHEAD_PER_WORKER * workers.len();
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(workers.len());
    let job_rx = Arc::new(Mutex::new(job_rx));
    for (n, mut chain) in workers.into_iter().enumerate() {
        let jobs = Arc::clone(&job_rx);
        std::thread::Builder::new()
            .name(format!("transform-{n}"))
            .spawn(move || {
                let mut columns = SharedColumns::default();
                loop {
                    // one worker waits for a job at a time; a poisoned lock means another
                    // worker panicked, and the stage is over
                    let job = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(_) => return,
                    };
                    let Ok((chunk, done)) = job else {
                        return;
                    };
                    let _ = done.send(transform(chain.as_mut(), &mut columns, chunk));
                }
            })
            .context("starting a transform worker")?;
    }

    // results in source order: one receiver per chunk (or revocation), queued as dispatched,
    // each chunk's with its share of the bytes ahead (given back once the loop took it)
    let (order_tx, mut order_rx) = mpsc::channel::<(
        oneshot::Receiver<Result<Arrival>>,
        Option<OwnedSemaphorePermit>,
    )>(ahead);
    let budget = Arc::new(Semaphore::new(AHEAD_BYTES / AHEAD_UNIT));
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("transform-dispatch".into())
        .spawn(move || loop {
            let next = runtime.block_on(async {
                tokio::select! {
                    biased;
                    chunk = chunks.recv() => match chunk {
                        // an empty chunk: the source has ended
                        None => None,
                        Some(Ok(c)) if c.is_empty() => None,
                        Some(c) => Some(c.map(Next::Chunk)),
                    },
                    Some(r) = async {
                        match revocations.as_mut() {
                            Some(r) => r.recv().await,
                            None => std::future::pending().await,
                        }
                    } => Some(Ok(Next::Revoked(r))),
                }
            });
            let (result_tx, result_rx) = oneshot::channel();
            let (last, permit) = match next {
                None => return,
                Some(Ok(Next::Chunk(chunk))) => {
                    let units = ahead_units(bytes_of(&chunk));
                    let budget = Arc::clone(&budget);
                    let Ok(permit) = runtime.block_on(budget.acquire_many_owned(units)) else {
                        return;
                    };
                    if job_tx.send((chunk, result_tx)).is_err() {
                        return;
                    }
                    (false, Some(permit))
                }
                Some(Ok(Next::Revoked(r))) => {
                    let _ = result_tx.send(Ok(Arrival::Revoked(r)));
                    (false, None)
                }
                Some(Err(e)) => {
                    let _ = result_tx.send(Err(e));
                    (true, None)
                }
            };
            if order_tx.blocking_send((result_rx, permit)).is_err() || last {
                return;
            }
        })
        .context("starting the transform stage")?;

    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some((result, permit)) = order_rx.recv().await {
            let arrival = result
                .await
                .unwrap_or_else(|_| Err(anyhow!("a transform worker stopped")));
            let failed = arrival.is_err();
            if tx.send(arrival).await.is_err() || failed {
                return;
            }
            drop(permit);
        }
    });
    Ok(rx)
}

enum Next {
    Chunk(Vec<SourceRecord>),
    Revoked(Revocation),
}

/// The column lists of the records one worker decoded, one copy per distinct list: every
/// record of a schema holds the same list, not one of its own (an open batch holds tens of
/// thousands of records; `products`' list is ~1.3 KB decoded).
#[derive(Default)]
struct SharedColumns(HashSet<Arc<Vec<Column>>>);

impl SharedColumns {
    /// Distinct lists kept at most; past it the set starts again (a stream of ever new
    /// schemas then shares nothing, which costs memory, not correctness).
    const MAX: usize = 1024;

    fn share(&mut self, record: &mut CdcRecord) {
        let CdcRecord::Change(change) = record else {
            return;
        };
        let Some(columns) = change.columns.as_mut() else {
            return;
        };
        match self.0.get(columns) {
            Some(known) => *columns = Arc::clone(known),
            None => {
                if self.0.len() >= Self::MAX {
                    self.0.clear();
                }
                self.0.insert(Arc::clone(columns));
            }
        }
    }
}

fn transform(
    chain: Option<&mut Chain>,
    columns: &mut SharedColumns,
    chunk: Vec<SourceRecord>,
) -> Result<Arrival> {
    let (partition, last) = match chunk.last() {
        Some(r) => (r.partition.clone(), r.offset),
        None => bail!("the source handed over an empty chunk"),
    };
    let read = chunk.len();
    let bytes = bytes_of(&chunk);
    let (unreadable, readable): (Vec<_>, Vec<_>) =
        chunk.into_iter().partition(|r| r.defect.is_some());
    let out = match chain {
        Some(chain) => chain.apply(&readable)?,
        None => readable.into_iter().map(Emitted::untransformed).collect(),
    };
    let records = out
        .into_iter()
        .map(|mut r| {
            let record = r.decode().map(|mut record| {
                columns.share(&mut record);
                record
            });
            // a change is written again only if it is dead-lettered; an error always is
            let value = match &record {
                Ok(error @ CdcRecord::Error(_)) => r.written(error).into_owned(),
                _ => r.value,
            };
            Decoded {
                offset: r.offset,
                bytes: r.bytes,
                record,
                value,
            }
        })
        .collect();
    Ok(Arrival::Chunk(Transformed {
        partition,
        last,
        read,
        bytes,
        unreadable,
        records,
    }))
}

/// The `transform` command: the SmartModule over a file of Debezium messages, chunk by chunk
/// (its memory holds one chunk at a time), the CDC records printed as JSON lines and a
/// count of each kind on stderr.
pub fn run_command(
    input: &str,
    format: LineFormat,
    step: Step,
    dead_letter: Option<&Path>,
) -> Result<()> {
    let mut source = FileSource::open(input, format, 0)?;
    let mut chain = Chain::new(&[step], Metrics::new())?;
    let stdout = std::io::stdout();
    let mut changes = std::io::BufWriter::new(stdout.lock());
    let mut dead_letter = match dead_letter {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let (mut read, mut emitted) = (0usize, 0usize);
    // chunk by chunk: the SmartModule's memory holds one chunk at a time
    loop {
        let chunk = source.next_chunk(crate::source::CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        read += chunk.len();
        let out = chain.apply(&chunk)?;
        emitted += out.len();
        for mut record in out {
            let parsed = record.decode().map_err(|e| {
                anyhow!(
                    "offset {}: the SmartModule emitted a record that is not a CDC record: {e}",
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
            sink.write_all(&record.written(&parsed))?;
            sink.write_all(b"\n")?;
        }
    }
    changes.flush()?;
    if let Some(f) = dead_letter.as_mut() {
        f.flush()?;
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    eprintln!(
        "{read} messages in, {emitted} records out ({})",
        summary.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(columns: &str) -> CdcRecord {
        let text = format!(
            r#"{{"kind":"change","v":1,"op":"c","source":{{"table":"t"}},"key":{{"id":1}},
            "after":{{"id":1}},"position":{{}},"columns":{columns}}}"#
        );
        serde_json::from_str(&text).expect("a CDC record")
    }

    fn columns_of(record: &CdcRecord) -> Arc<Vec<Column>> {
        match record {
            CdcRecord::Change(c) => c.columns.clone().expect("columns"),
            CdcRecord::Error(_) => panic!("not a change"),
        }
    }

    #[test]
    fn records_of_one_schema_share_one_column_list() {
        let one = r#"[{"name":"id","type":"long","optional":false}]"#;
        let two = r#"[{"name":"id","type":"int","optional":false}]"#;
        let mut shared = SharedColumns::default();
        let mut records = vec![change(one), change(two), change(one), change(two)];
        for r in &mut records {
            shared.share(r);
        }
        let lists: Vec<_> = records.iter().map(columns_of).collect();
        assert!(Arc::ptr_eq(&lists[0], &lists[2]));
        assert!(Arc::ptr_eq(&lists[1], &lists[3]));
        assert!(!Arc::ptr_eq(&lists[0], &lists[1]));
        assert_eq!(lists[0][0].ty, debezium_cdc::record::ColumnType::Long);
        assert_eq!(lists[1][0].ty, debezium_cdc::record::ColumnType::Int);
    }

    /// The generated stream's lines as one partition's records, offsets from `first`.
    fn generated(spec: &testkit::stream::Spec, first: i64) -> Vec<SourceRecord> {
        testkit::stream::generate(spec)
            .lines
            .iter()
            .zip(first..)
            .map(|(line, offset)| {
                let (key, value) = line.split_once('\t').unwrap_or(("", line));
                SourceRecord {
                    partition: Partition::fluvio(0),
                    offset,
                    key: (!key.is_empty()).then(|| key.as_bytes().to_vec()),
                    value: value.as_bytes().to_vec(),
                    defect: None,
                }
            })
            .collect()
    }

    #[test]
    fn a_chunk_of_several_wasm_calls_equals_the_native_pass() {
        // with bad messages among them, so some inputs give no output and others an error
        let spec = testkit::stream::Spec {
            events: RECORDS_PER_CALL * 2 + 137,
            keys: 300,
            bad_every: Some(97),
            ..Default::default()
        };
        let chunk = generated(&spec, 1000);
        assert!(chunk.len() > 2 * RECORDS_PER_CALL);
        let step = our_step();
        let wasm = Chain::new(std::slice::from_ref(&step), Metrics::new())
            .expect("the .wasm (smartmodule/build-wasm.sh)")
            .apply(&chunk)
            .expect("the .wasm chain");
        let native = Chain::native(&step, Metrics::new())
            .expect("the native engine")
            .apply(&chunk)
            .expect("the native chain");
        // the native records go on undecoded and unwritten: what writing them gives is what
        // the .wasm wrote, byte for byte, and decoding that gives them back, changes and
        // errors alike; each carries its source record's offset and bytes
        let view = |out: Vec<Emitted>| -> Vec<(i64, usize, Vec<u8>, CdcRecord)> {
            out.into_iter()
                .map(|mut r| {
                    let record = r.decode().expect("a CDC record");
                    (r.offset, r.bytes, r.written(&record).into_owned(), record)
                })
                .collect()
        };
        assert!(native
            .iter()
            .all(|r| r.value.is_empty() && r.record.is_some()));
        assert!(wasm.len() > 2 * RECORDS_PER_CALL);
        assert!(wasm.windows(2).all(|w| w[0].offset < w[1].offset));
        let (wasm, native) = (view(wasm), view(native));
        assert!(wasm.iter().any(|r| matches!(r.3, CdcRecord::Error(_))));
        assert!(wasm.iter().all(|r| {
            let from = &chunk[usize::try_from(r.0 - 1000).expect("an offset of the chunk")];
            r.1 == from.value.len() + from.key.as_ref().map_or(0, Vec::len)
        }));
        assert_eq!(wasm, native);
    }

    /// `count` source records of `bytes` bytes each (offsets from 0).
    fn sized(count: usize, bytes: usize) -> Vec<SourceRecord> {
        (0..count)
            .map(|i| SourceRecord {
                partition: Partition::fluvio(0),
                offset: i as i64,
                key: None,
                value: vec![b' '; bytes],
                defect: None,
            })
            .collect()
    }

    #[test]
    fn calls_hold_at_most_their_records_and_bytes_a_large_record_alone() {
        let lengths = |records: &[SourceRecord]| -> Vec<usize> {
            calls(records).iter().map(|c| c.len()).collect()
        };
        assert!(calls(&[]).is_empty());
        assert_eq!(lengths(&sized(1200, 10)), [500, 500, 200]);
        // 1 MiB each: four to a call
        assert_eq!(lengths(&sized(9, 1 << 20)), [4, 4, 1]);
        let mut mixed = sized(3, 100);
        mixed.extend(sized(1, BYTES_PER_CALL + 1));
        mixed.extend(sized(2, 100));
        assert_eq!(lengths(&mixed), [3, 1, 2]);
        let offsets: Vec<i64> = calls(&mixed).concat().iter().map(|r| r.offset).collect();
        let whole: Vec<i64> = mixed.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, whole, "every record once, in order");
    }

    fn renewals(metrics: &Metrics) -> u64 {
        let text = metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix("iceberg_cdc_smartmodule_renewals_total "))
            .and_then(|n| n.trim().parse().ok())
            .expect("the renewals counter")
    }

    fn our_step() -> Step {
        Step {
            name: SMARTMODULE_NAME.into(),
            wasm: testkit::wasm_path(),
            params: BTreeMap::new(),
        }
    }

    /// The engine never frees a call's output in the module's memory; the module writes each
    /// call's output where the previous call's was. Fed ~80 MB of Debezium messages, one
    /// instance stays within 32 MiB (a module that leaked its outputs, as the generated
    /// `filter_map` does, leaks ~30 MB of it and is replaced), and its output stays the
    /// native engine's.
    #[test]
    fn one_instance_takes_a_long_stream_in_bounded_memory() {
        let spec = testkit::stream::Spec {
            events: 2000,
            keys: 500,
            ..Default::default()
        };
        let chunk = generated(&spec, 0);
        let step = our_step();
        let metrics = Metrics::new();
        let mut wasm = Chain::with_memory(std::slice::from_ref(&step), metrics.clone(), 32 << 20)
            .expect("the .wasm (smartmodule/build-wasm.sh)");
        let mut native = Chain::native(&step, Metrics::new()).expect("the native engine");
        let mut fed = 0;
        while fed < 80_000_000 {
            let from_wasm = wasm.apply(&chunk).expect("the .wasm chain");
            let from_native = native.apply(&chunk).expect("the native chain");
            assert_eq!(from_wasm.len(), from_native.len());
            let wasm_records: Vec<CdcRecord> = from_wasm
                .into_iter()
                .map(|mut r| r.decode().expect("a CDC record"))
                .collect();
            let native_records: Vec<CdcRecord> = from_native
                .into_iter()
                .map(|mut r| r.decode().expect("a CDC record"))
                .collect();
            assert_eq!(wasm_records, native_records);
            fed += bytes_of(&chunk);
        }
        assert_eq!(renewals(&metrics), 0, "the instance was replaced");
    }

    /// A record that cannot fit an instance's memory fails on a fresh instance too: it
    /// becomes an error record carrying its bytes (dead-lettered, as the SmartModule's own
    /// are), and the records around it come out as the native engine gives them.
    #[test]
    fn a_record_beyond_the_memory_limit_becomes_an_error_record_and_the_rest_flows() {
        let spec = testkit::stream::Spec {
            events: 40,
            keys: 10,
            ..Default::default()
        };
        let mut chunk = generated(&spec, 0);
        let mut huge = sized(1, 24 << 20);
        huge[0].offset = 100;
        huge[0].key = Some(b"{\"id\":7}".to_vec());
        chunk.extend(huge);
        chunk.extend(generated(&spec, 101));
        let metrics = Metrics::new();
        let mut chain = Chain::with_memory(&[our_step()], metrics.clone(), 16 << 20)
            .expect("the .wasm (smartmodule/build-wasm.sh)");
        let out = chain
            .apply(&chunk)
            .expect("no failure for one record's sake");
        // what the native engine gives for the same records without the huge one
        let mut without = chunk.clone();
        without.retain(|r| r.offset != 100);
        let native = Chain::native(&our_step(), Metrics::new())
            .expect("the native engine")
            .apply(&without)
            .expect("the native chain");
        let (mut refused, mut rest): (Vec<Emitted>, Vec<Emitted>) =
            out.into_iter().partition(|r| r.offset == 100);
        assert_eq!(refused.len(), 1);
        match refused[0].decode().expect("a CDC record") {
            CdcRecord::Error(e) => {
                assert!(e.reason.contains("on a fresh instance too"), "{}", e.reason);
                assert_eq!(e.offset, Some(100));
                assert_eq!(e.key, Some(Original::from_bytes(b"{\"id\":7}")));
                assert_eq!(e.value, Original::from_bytes(&vec![b' '; 24 << 20]));
            }
            other => panic!("not an error record: {other:?}"),
        }
        // a fresh instance starts its counts of dropped records (tombstones) over
        let decoded = |out: &mut [Emitted]| -> Vec<(i64, CdcRecord)> {
            out.iter_mut()
                .map(|r| {
                    let mut record = r.decode().expect("a CDC record");
                    if let CdcRecord::Change(c) = &mut record {
                        c.dropped.clear();
                    }
                    (r.offset, record)
                })
                .collect()
        };
        let mut native = native;
        assert_eq!(decoded(&mut rest), decoded(&mut native));
        assert!(rest.len() > 40);
        // the instance that failed, then the one the record failed on
        assert_eq!(renewals(&metrics), 2);
        let next = chain.apply(&sized(10, 100)).expect("the next call");
        assert!(next.is_empty(), "blank values are tombstones");
        assert_eq!(renewals(&metrics), 2);
    }

    /// A call whose records fit an instance one at a time but not together fails whole, on
    /// a fresh instance too: its records then go through one by one, none refused, and what
    /// comes out is what the native engine gives.
    #[test]
    fn a_call_too_big_together_goes_record_by_record() {
        let spec = testkit::stream::Spec {
            events: 60,
            keys: 60,
            mix: (100, 0, 0),
            shape: testkit::stream::Shape::Products,
            ..Default::default()
        };
        // three creates, each with a description of 1.2 MiB: one call of three (under
        // BYTES_PER_CALL), more than the instance holds at once
        let mut call: Vec<SourceRecord> = generated(&spec, 0).into_iter().take(3).collect();
        for r in &mut call {
            let mut event: serde_json::Value =
                serde_json::from_slice(&r.value).expect("a generated event");
            event["payload"]["after"]["description"] = "d".repeat(1_200_000).into();
            r.value = serde_json::to_vec(&event).expect("JSON");
        }
        assert_eq!(calls(&call).len(), 1, "one call");
        let native = Chain::native(&our_step(), Metrics::new())
            .expect("the native engine")
            .apply(&call)
            .expect("the native chain");
        let metrics = Metrics::new();
        // one such record fits 12 MiB, three need more than 16 MiB (measured): between them
        let mut chain = Chain::with_memory(&[our_step()], metrics.clone(), 14 << 20)
            .expect("the .wasm (smartmodule/build-wasm.sh)");
        let out = chain
            .apply(&call)
            .expect("no failure for one record's sake");
        let decoded = |out: Vec<Emitted>| -> Vec<(i64, CdcRecord)> {
            out.into_iter()
                .map(|mut r| (r.offset, r.decode().expect("a CDC record")))
                .collect()
        };
        let (out, native) = (decoded(out), decoded(native));
        assert_eq!(out.len(), 3);
        assert!(
            out.iter().all(|r| matches!(r.1, CdcRecord::Change(_))),
            "none refused"
        );
        assert_eq!(out, native);
        // the instance that failed, the fresh one the whole call failed on again
        assert!(renewals(&metrics) >= 2, "{}", renewals(&metrics));
    }
    #[test]
    fn a_chunk_takes_its_bytes_of_the_room_ahead_at_least_one_unit_at_most_all() {
        let all = u32::try_from(AHEAD_BYTES / AHEAD_UNIT).unwrap();
        assert_eq!(ahead_units(0), 1);
        assert_eq!(ahead_units(1), 1);
        assert_eq!(ahead_units(AHEAD_UNIT), 1);
        assert_eq!(ahead_units(AHEAD_UNIT + 1), 2);
        assert_eq!(ahead_units(AHEAD_BYTES), all);
        assert_eq!(ahead_units(10 * AHEAD_BYTES), all);
    }

    /// While the loop takes nothing, the stage takes no more of the source than its room
    /// ahead (and the chunks in the workers' and the hand-over's hands); taken, everything
    /// comes out once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stage_holds_no_more_than_its_room_ahead_while_the_loop_takes_nothing() {
        const CHUNK_BYTES: usize = 1 << 20;
        const CHUNKS: usize = 40;
        let (tx, chunks) = mpsc::channel(CHUNKS + 1);
        for n in 0..CHUNKS {
            let mut chunk = sized(1, CHUNK_BYTES);
            chunk[0].offset = n as i64;
            tx.send(Ok(chunk)).await.expect("room for every chunk");
        }
        tx.send(Ok(Vec::new())).await.expect("room for the end");
        let mut arrivals = spawn(Vec::new(), chunks, None).expect("the stage");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        // the source's channel has room again for each chunk the stage took
        let taken = tx.capacity();
        // the room, the chunk waiting for it, one in the worker's hands and one handed over
        let most = AHEAD_BYTES / CHUNK_BYTES + 3;
        assert!(
            taken <= most,
            "took {taken} chunks of 1 MiB, at most {most}"
        );
        assert!(
            taken >= AHEAD_BYTES / CHUNK_BYTES,
            "took {taken} chunks of 1 MiB"
        );
        let mut offsets = Vec::new();
        while let Some(arrival) = arrivals.recv().await {
            match arrival.expect("a chunk") {
                Arrival::Chunk(c) => offsets.push(c.last),
                Arrival::Revoked(_) => panic!("no revocations here"),
            }
        }
        assert_eq!(offsets, (0..CHUNKS as i64).collect::<Vec<_>>());
    }
}
