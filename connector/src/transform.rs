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
    instance: SmartModuleChainInstance,
}

impl Chain {
    /// Loads and initializes every step; a module that refuses its params fails here.
    pub fn new(steps: &[Step]) -> Result<Chain> {
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
        let instance = builder
            .initialize(&SmartEngine::new())
            .context("initializing the SmartModule chain")?;
        Ok(Chain { instance })
    }

    /// Runs a batch (of one partition) through the chain. Output records keep the offset of
    /// the input record they came from.
    pub fn apply(&mut self, batch: &[SourceRecord]) -> Result<Vec<SourceRecord>> {
        let Some((partition, base)) = batch.first().map(|r| (r.partition.clone(), r.offset)) else {
            return Ok(Vec::new());
        };
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
