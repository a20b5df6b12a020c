//! SmartModules applied in-process with `fluvio-smartengine`, the engine Fluvio's SPU runs:
//! the same `.wasm` and the same `with:` params as a `transforms:` entry, for sources that do
//! not pass through a Fluvio topic (files, Kafka read directly).

use crate::source::SourceRecord;
use anyhow::{bail, Context, Result};
use fluvio_smartengine::{
    SmartEngine, SmartModuleChainBuilder, SmartModuleChainInstance, SmartModuleConfig,
    DEFAULT_SMARTENGINE_VERSION,
};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use fluvio_smartmodule::Record;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One SmartModule of a chain: its compiled module and its params.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub wasm: PathBuf,
    pub params: BTreeMap<String, String>,
}

/// A SmartModule chain ready to process batches.
pub struct Chain {
    steps: Vec<Step>,
    instance: SmartModuleChainInstance,
    /// Input bytes the instance has processed.
    fed: usize,
}

/// Input bytes after which the chain gets a fresh instance. A WebAssembly instance's memory
/// never shrinks, and the SmartModule's input decoding leaves it fragmented: measured, an
/// instance fed ~2 GB of Debezium messages with schemas reached the engine's 1 GB memory
/// limit and failed. A fresh instance every 256 MiB keeps it small (instantiating takes a
/// few milliseconds; only the counts of dropped records a module had not reported yet are
/// lost).
const RENEW_AFTER_BYTES: usize = 256 << 20;

impl Chain {
    /// Loads and initializes every step; a module that refuses its params fails here.
    pub fn new(steps: &[Step]) -> Result<Chain> {
        Ok(Chain {
            steps: steps.to_vec(),
            instance: Chain::instantiate(steps)?,
            fed: 0,
        })
    }

    fn instantiate(steps: &[Step]) -> Result<SmartModuleChainInstance> {
        let mut builder = SmartModuleChainBuilder::default();
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
    pub fn apply(&mut self, batch: &[SourceRecord]) -> Result<Vec<SourceRecord>> {
        let Some((partition, base)) = batch.first().map(|r| (r.partition.clone(), r.offset)) else {
            return Ok(Vec::new());
        };
        if self.fed > RENEW_AFTER_BYTES {
            self.instance = Chain::instantiate(&self.steps)?;
            self.fed = 0;
        }
        self.fed += batch
            .iter()
            .map(|r| r.value.len() + r.key.as_ref().map_or(0, |k| k.len()))
            .sum::<usize>();
        let records: Vec<Record> = batch
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
        let output = self
            .instance
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
            .map(|r| SourceRecord {
                partition: partition.clone(),
                offset: base + r.preamble.offset_delta(),
                key: r.key().map(|k| k.as_ref().to_vec()),
                value: r.value().as_ref().to_vec(),
                defect: None,
            })
            .collect())
    }
}
