//! The Fluvio contender's cluster: a local Fluvio cluster (started here unless one already
//! answers), a topic of one partition holding the stream, and the debezium-cdc SmartModule
//! registered with it so that the SPU runs it as the connector's `transforms:` step. Only
//! where `fluvio` and `fluvio-run` are on PATH: no registry has them (README, "A local Fluvio
//! cluster"); without them the run says the contender was skipped, and why.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testkit::stream::{self, Spec as StreamSpec, Written};

/// The name the SmartModule is registered under, and the one `transforms:` uses.
pub const MODULE: &str = "debezium-cdc";

/// Why the contender cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    let absent: Vec<&str> = ["fluvio", "fluvio-run"]
        .into_iter()
        .filter(|name| !on_path(name))
        .collect();
    (!absent.is_empty()).then(|| format!("{} not on PATH", absent.join(" and ")))
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// `fluvio ARGS`, its standard output; an error with what it said when it fails.
fn cli(args: &[&str]) -> Result<String> {
    let out = Command::new("fluvio")
        .args(args)
        .output()
        .with_context(|| format!("running fluvio {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "fluvio {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A topic holding the stream and the SmartModule beside it, on a cluster that is removed
/// again when this run started it; both go when dropped.
pub struct Cluster {
    started: bool,
    pub topic: String,
}

impl Cluster {
    /// The cluster answering `fluvio`, or a local one started now; a fresh topic of one
    /// partition named `topic`, and `wasm` registered as [`MODULE`].
    pub fn up(topic: &str, wasm: &Path) -> Result<Cluster> {
        let started = cli(&["topic", "list"]).is_err();
        if started {
            cli(&["cluster", "start", "--local"])?;
        }
        let cluster = Cluster {
            started,
            topic: topic.to_owned(),
        };
        cli(&["topic", "create", topic, "-p", "1"])?;
        let wasm = wasm.to_str().context("the .wasm's path is not UTF-8")?;
        // a module of that name from an earlier run would stand in for this build's
        let _ = cli(&["smartmodule", "delete", MODULE]);
        cli(&["smartmodule", "create", MODULE, "--wasm-file", wasm])?;
        // a new module takes a moment to reach the SPU
        std::thread::sleep(Duration::from_secs(3));
        Ok(cluster)
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

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = cli(&["topic", "delete", &self.topic]);
        let _ = cli(&["smartmodule", "delete", MODULE]);
        if self.started {
            let _ = cli(&["cluster", "delete", "--force"]);
        }
    }
}
