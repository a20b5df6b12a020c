//! The Fluvio contender's cluster: a local Fluvio cluster (testkit's: started here unless
//! one already answers), a topic of one partition holding the stream, and the debezium-cdc
//! SmartModule registered with it so that the SPU runs it as the connector's `transforms:`
//! step. Only where `fluvio` and `fluvio-run` are on PATH: no registry has them (README, "A
//! local Fluvio cluster"); without them the run says the contender was skipped, and why.

use anyhow::{Context, Result};
use std::path::Path;
use testkit::stream::{self, Spec as StreamSpec, Written};

pub use testkit::fluvio::missing;

/// The name the SmartModule is registered under, and the one `transforms:` uses.
pub const MODULE: &str = "debezium-cdc";

/// A topic holding the stream and the SmartModule beside it; both go when dropped, and the
/// cluster too when this run started it.
pub struct Cluster {
    _cluster: testkit::fluvio::Cluster,
    pub topic: String,
}

impl Cluster {
    /// The cluster answering `fluvio`, or a local one started now; a fresh topic of one
    /// partition named `topic`, and `wasm` registered as [`MODULE`].
    pub fn up(topic: &str, wasm: &Path) -> Result<Cluster> {
        let mut cluster = testkit::fluvio::Cluster::up()?;
        cluster.topic(topic, 1)?;
        cluster.module(MODULE, wasm)?;
        Ok(Cluster {
            _cluster: cluster,
            topic: topic.to_owned(),
        })
    }

    /// The stream of `spec` produced to the topic, tombstones (empty values) included: the
    /// generator on a thread of its own, the producer here.
    pub fn produce(&self, runtime: &tokio::runtime::Runtime, spec: &StreamSpec) -> Result<Written> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, Vec<u8>)>(8192);
        let spec = spec.clone();
        let generator = std::thread::spawn(move || {
            stream::write_stream(&spec, |_, key, value| {
                let value = value.unwrap_or_default().to_vec();
                tx.blocking_send((key.to_vec(), value))
                    .context("the producer stopped")
            })
        });
        let topic = self.topic.clone();
        // the receiver goes with the block, so a failed producer never leaves the generator
        // waiting for room
        let sent = runtime.block_on(async move {
            let client = ::fluvio::Fluvio::connect().await?;
            let producer = client.topic_producer(topic).await?;
            while let Some((key, value)) = rx.recv().await {
                producer.send(key, value).await?;
            }
            producer.flush().await?;
            anyhow::Ok(())
        });
        // a failed producer stops the generator ("the producer stopped"): its error first
        let generated = generator.join();
        sent?;
        generated.map_err(|_| anyhow::anyhow!("the stream generator panicked"))?
    }
}
