//! What a run did, for the log: counts kept by the run loop, and the progress line every few
//! seconds (rate, lag, open records, positions).

use crate::batch::Batches;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::source::Source;
use iceberg_cdc_merge::Applied;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub read: u64,
    pub changes: BTreeMap<char, u64>,
    pub dead_lettered: u64,
    pub stale: u64,
    pub skipped_committed: u64,
    pub commits: u64,
    pub last_commit_ms: Option<u128>,
}

impl Stats {
    pub fn committed(&mut self, applied: &Applied, took: Duration) {
        self.commits += 1;
        self.stale += applied.stale;
        self.last_commit_ms = Some(took.as_millis());
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ops: Vec<String> = self
            .changes
            .iter()
            .map(|(op, n)| format!("{op}={n}"))
            .collect();
        write!(
            f,
            "read {} messages; changes [{}]; {} commits (last {} ms); {} dead-lettered; {} stale; {} already committed",
            self.read,
            ops.join(" "),
            self.commits,
            self.last_commit_ms.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            self.dead_lettered,
            self.stale,
            self.skipped_committed,
        )
    }
}

/// The progress line's clock.
pub struct Progress {
    last: Instant,
    read_at_last: u64,
}

impl Progress {
    /// How often progress is logged.
    pub const EVERY: Duration = Duration::from_secs(10);

    pub fn new(stats: &Stats) -> Progress {
        Progress {
            last: Instant::now(),
            read_at_last: stats.read,
        }
    }

    /// Logs the progress line when it is due.
    pub async fn report(
        &mut self,
        stats: &Stats,
        ledger: &Ledger,
        batches: &Batches,
        source: &dyn Source,
        metrics: &Metrics,
    ) {
        if self.last.elapsed() < Progress::EVERY {
            return;
        }
        let rate = (stats.read - self.read_at_last) as f64 / self.last.elapsed().as_secs_f64();
        let read = ledger.resume();
        let lag = source.high_watermarks().await.map(|hw| {
            hw.iter()
                .map(|(p, h)| {
                    let behind = (h - read.get(p).copied().unwrap_or(0)).max(0);
                    metrics.lag(p.as_str(), behind);
                    behind
                })
                .sum::<i64>()
        });
        tracing::info!(
            lag = ?lag,
            open = batches.records(),
            position = ?read,
            "progress: {rate:.0} messages/s; {stats}"
        );
        self.last = Instant::now();
        self.read_at_last = stats.read;
    }
}
