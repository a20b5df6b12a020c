//! `iceberg.storage`: the S3-compatible store of an `s3://` warehouse, with the old job's
//! variables as fallbacks.

use super::secrets::Secrets;
use super::CatalogKind;
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// The object store of an `s3://` warehouse. Keys left out fall back to the old job's
/// variables (secret store first, then the environment): `S3_ACCESS_KEY`, `S3_SECRET_KEY`,
/// and `EXTERNAL_IP` for the endpoint (`host`, `host:port` or a URL; port 7480, Ceph's
/// gateway, when none is given).
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Defaults to on when an endpoint is set (Ceph, MinIO), off for AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    /// A PEM file with the CA that signed the endpoint's certificate (trusted in addition
    /// to the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for StorageSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSection")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl StorageSection {
    pub(super) fn validate(&self, catalog: CatalogKind, warehouse: &str) -> Result<()> {
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                bail!("iceberg.storage.ca-file {} is not a file", ca.display());
            }
        }
        let s3 = self.s3();
        match catalog {
            CatalogKind::Sql => iceberg_cdc_merge::Storage::new(warehouse, &s3),
            CatalogKind::Rest => iceberg_cdc_merge::Storage::for_rest(warehouse, &s3),
        }
        .map_err(|e| anyhow!("iceberg.catalog.warehouse: {e}"))?;
        Ok(())
    }
}

impl StorageSection {
    /// Fills what is left out from the old job's variables.
    pub(super) fn with_fallbacks(mut self, secrets: &Secrets) -> StorageSection {
        let old = |name: &str| {
            secrets
                .get(name)
                .or_else(|| std::env::var(name).ok())
                .filter(|v| !v.trim().is_empty())
        };
        if self.access_key.is_none() {
            self.access_key = old("S3_ACCESS_KEY");
        }
        if self.secret_key.is_none() {
            self.secret_key = old("S3_SECRET_KEY");
        }
        if self.endpoint.is_none() {
            self.endpoint = old("EXTERNAL_IP").map(|ip| endpoint_from_external_ip(&ip));
        }
        self
    }

    pub fn s3(&self) -> iceberg_cdc_merge::S3Settings {
        iceberg_cdc_merge::S3Settings {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            session_token: self.session_token.clone(),
        }
    }
}

/// The old job's `EXTERNAL_IP` as an endpoint: `10.0.0.5` -> `http://10.0.0.5:7480`;
/// `host:port` and URLs are kept.
pub(super) fn endpoint_from_external_ip(ip: &str) -> String {
    let ip = ip.trim();
    if ip.contains("://") {
        ip.to_owned()
    } else if ip.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("http://[{ip}]:7480")
    } else if ip.parse::<std::net::SocketAddr>().is_ok()
        || ip
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.contains(':') && port.parse::<u16>().is_ok())
    {
        format!("http://{ip}")
    } else {
        format!("http://{ip}:7480")
    }
}
