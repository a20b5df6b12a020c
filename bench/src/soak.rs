//! The memory soak: a long stream generated straight into the connector's stdin (file
//! source, `-`: no stream file on disk, whatever its length), the connector's resident set
//! sampled every second beside how many events it has been given, then its table checked
//! against the model. Writes the samples as CSV and plots them (`bench/plot_rss.py`).

use crate::measure::table_facts;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::stream::{write_stream, Spec};

#[derive(Debug, Serialize)]
pub struct Soak {
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub peak_rss_mb: f64,
    /// The highest sample after the first tenth of the stream, and the lowest.
    pub rss_after_warmup_mb: (f64, f64),
    pub samples: usize,
    pub equals_model: bool,
}

/// `extra`: more keys of the connector's `iceberg:` section.
pub fn run(bench: &crate::Bench, spec: &Spec, csv: &Path, extra: &str) -> Result<Soak> {
    let dir = crate::fresh_dir(bench.work.join("soak"))?;
    let source = "    type: file\n    path: \"-\"\n    format: key-value\n";
    let cfg = bench.config(&dir, source, extra)?;
    let mut child = bench
        .connector_cmd(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the connector")?;
    let pid = child.id();
    let mut stdin =
        std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().context("stdin")?);
    let mut stderr = child.stderr.take().context("stderr")?;
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let fed = Arc::new(AtomicU64::new(0));
    let feeder = {
        let fed = fed.clone();
        let spec = spec.clone();
        std::thread::spawn(move || -> Result<testkit::stream::Written> {
            let written = write_stream(&spec, |_, key, value| {
                stdin.write_all(key)?;
                stdin.write_all(b"\t")?;
                stdin.write_all(value.unwrap_or_default())?;
                stdin.write_all(b"\n")?;
                fed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })?;
            stdin.flush()?;
            drop(stdin); // the end of the stream: the connector commits and exits
            Ok(written)
        })
    };
    let started = Instant::now();
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let status = loop {
        if let Some(rss) = crate::measure::vm_status(pid, "VmRSS") {
            samples.push((
                started.elapsed().as_secs_f64(),
                fed.load(Ordering::Relaxed),
                rss,
            ));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let seconds = started.elapsed().as_secs_f64();
    let log = err_t.join().unwrap_or_default();
    let written = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the feeder panicked"))??;
    if !status.success() {
        bail!(
            "the connector exited with {status}: {}",
            crate::measure::tail(&log)
        );
    }
    let mut out = String::from("seconds,messages_fed,rss_bytes\n");
    for (t, n, rss) in &samples {
        out.push_str(&format!("{t:.1},{n},{rss}\n"));
    }
    std::fs::write(csv, out)?;
    let table = spec.shape.table().to_owned();
    let facts = bench.runtime.block_on(table_facts(
        &crate::catalog(&dir),
        &table,
        Some(&written.only_versions()),
    ))?;
    let warm = written.messages / 10;
    let after: Vec<f64> = samples
        .iter()
        .filter(|(_, n, _)| *n >= warm)
        .map(|(_, _, rss)| *rss as f64 / 1e6)
        .collect();
    let peak = samples.iter().map(|s| s.2).max().unwrap_or(0) as f64 / 1e6;
    Ok(Soak {
        events: written.events,
        seconds,
        events_per_s: written.events as f64 / seconds,
        peak_rss_mb: peak,
        rss_after_warmup_mb: (
            after.iter().cloned().fold(f64::MIN, f64::max),
            after.iter().cloned().fold(f64::MAX, f64::min),
        ),
        samples: samples.len(),
        equals_model: facts.equals_model,
    })
}
