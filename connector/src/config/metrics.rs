//! `iceberg.metrics`: where the connector can be watched. Off unless `address` is set (or
//! `--metrics-address` given): Prometheus text on `/metrics`, `/health` and `/ready`; and
//! Fluvio's connector-metrics socket, when a path is set here or in
//! `FLUVIO_METRIC_CONNECTOR` (how Fluvio's connector runtime asks a connector for it).

use super::Span;
use anyhow::{bail, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MetricsSection {
    /// `host:port` of the HTTP endpoint, e.g. `0.0.0.0:9464`.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// `/health` answers 503 once the run loop has not come round for this long (a commit
    /// or a maintenance run longer than this reads as a stall). Default 10m.
    #[serde(default)]
    pub stall_after: Option<Span>,
    /// Fluvio's connector-metrics Unix socket (JSON, one document per connection).
    #[serde(default)]
    pub fluvio_socket: Option<PathBuf>,
}

/// The environment variable Fluvio's connector runtime sets for the socket.
pub const FLUVIO_METRIC_ENV: &str = "FLUVIO_METRIC_CONNECTOR";

impl MetricsSection {
    pub fn stall_after(&self) -> Duration {
        self.stall_after.map_or(Duration::from_secs(600), |s| s.0)
    }

    /// The socket path: the config's, else `FLUVIO_METRIC_CONNECTOR`'s.
    pub fn fluvio_socket(&self) -> Option<PathBuf> {
        self.fluvio_socket.clone().or_else(|| {
            std::env::var_os(FLUVIO_METRIC_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.stall_after() < Duration::from_secs(1) {
            bail!("iceberg.metrics.stall-after must be at least 1s");
        }
        Ok(())
    }
}
