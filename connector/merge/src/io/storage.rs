//! Where table files live: a local folder (`file://`) or an S3-compatible bucket (`s3://`:
//! AWS S3, Ceph's RADOS Gateway, MinIO), always through the `iceberg` crate's `FileIO`, with
//! `iceberg-storage-opendal` for S3 (its operators retry failed requests with backoff and
//! bound each attempt with a timeout).
//!
//! [`Storage::check`] runs before anything is created: it writes, reads and deletes one small
//! object under the warehouse, and turns the store's refusal into a message that says what is
//! wrong (missing bucket, unknown access key, wrong secret, skewed clock, unreachable
//! endpoint).

use crate::MergeError;
use iceberg::io::{
    FileIO, FileIOBuilder, LocalFsStorageFactory, StorageFactory, S3_ACCESS_KEY_ID,
    S3_DISABLE_EC2_METADATA, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION, S3_SECRET_ACCESS_KEY,
    S3_SESSION_TOKEN,
};
use iceberg_storage_opendal::OpenDalStorageFactory;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Settings of an S3-compatible store. Everything is optional: without an endpoint this is
/// AWS S3 with the SDK's usual credential chain.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// `http://ceph.internal:7480`, `https://minio:9000`; none for AWS.
    pub endpoint: Option<String>,
    /// Defaults to `us-east-1` (what Ceph and MinIO accept unless configured otherwise).
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`); defaults to on when an endpoint is set
    /// (Ceph and MinIO need it), off for AWS.
    pub path_style: Option<bool>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key", &self.access_key)
            .field("secret_key", &hidden(&self.secret_key))
            .field("session_token", &hidden(&self.session_token))
            .finish()
    }
}

impl S3Settings {
    /// The `FileIO` properties (`s3.*`) these settings stand for.
    pub fn file_io_props(&self) -> HashMap<String, String> {
        let mut props = HashMap::new();
        let mut set = |k: &str, v: Option<&String>| {
            if let Some(v) = v {
                props.insert(k.to_owned(), v.clone());
            }
        };
        set(S3_ENDPOINT, self.endpoint.as_ref());
        set(S3_ACCESS_KEY_ID, self.access_key.as_ref());
        set(S3_SECRET_ACCESS_KEY, self.secret_key.as_ref());
        set(S3_SESSION_TOKEN, self.session_token.as_ref());
        props.insert(
            S3_REGION.to_owned(),
            self.region.clone().unwrap_or_else(|| "us-east-1".into()),
        );
        let custom_endpoint = self.endpoint.is_some();
        props.insert(
            S3_PATH_STYLE_ACCESS.to_owned(),
            self.path_style.unwrap_or(custom_endpoint).to_string(),
        );
        if custom_endpoint {
            // no instance-metadata lookups (and their timeouts) next to a private store
            props.insert(S3_DISABLE_EC2_METADATA.to_owned(), "true".into());
        }
        props
    }
}

/// The store behind a warehouse location.
#[derive(Debug, Clone)]
pub struct Storage {
    warehouse: String,
    kind: StoreKind,
    props: HashMap<String, String>,
    s3: S3Settings,
}

/// One object (file) found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its full location, in the form the table's metadata uses (`s3://bucket/key`,
    /// `file:///path`).
    pub path: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Local,
    S3,
}

impl Storage {
    /// `file:///path` (or a bare absolute path) or `s3://bucket/prefix` (`s3a://` too).
    pub fn new(warehouse: &str, s3: &S3Settings) -> Result<Storage, MergeError> {
        let scheme = warehouse.split_once("://").map(|(s, _)| s);
        let kind = match scheme {
            None if warehouse.starts_with('/') => StoreKind::Local,
            Some("file") => StoreKind::Local,
            Some("s3" | "s3a") => StoreKind::S3,
            _ => {
                return Err(MergeError::io(format!(
                    "warehouse `{warehouse}`: use file:///path or s3://bucket/prefix"
                )))
            }
        };
        if kind == StoreKind::S3 {
            let bucket = warehouse
                .split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
                .unwrap_or("");
            if bucket.is_empty() {
                return Err(MergeError::io(format!(
                    "warehouse `{warehouse}` names no bucket (s3://bucket/prefix)"
                )));
            }
        }
        let props = match kind {
            StoreKind::Local => HashMap::new(),
            StoreKind::S3 => s3.file_io_props(),
        };
        Ok(Storage {
            warehouse: warehouse.trim_end_matches('/').to_owned(),
            kind,
            props,
            s3: s3.clone(),
        })
    }

    /// The store of a REST catalog's tables. Its warehouse is a location (`file://`, `s3://`:
    /// as [`Storage::new`]) or a name the catalog knows (Polaris, Lakekeeper): then the
    /// tables are on S3 when S3 settings are given (an endpoint or keys), else local, and
    /// there is no location to probe before the first table is opened.
    pub fn for_rest(warehouse: &str, s3: &S3Settings) -> Result<Storage, MergeError> {
        let location = warehouse.starts_with('/')
            || matches!(
                warehouse.split_once("://").map(|(s, _)| s),
                Some("file" | "s3" | "s3a")
            );
        if location {
            return Storage::new(warehouse, s3);
        }
        let object_store = s3.endpoint.is_some() || s3.access_key.is_some();
        Ok(Storage {
            warehouse: String::new(),
            kind: if object_store {
                StoreKind::S3
            } else {
                StoreKind::Local
            },
            props: if object_store {
                s3.file_io_props()
            } else {
                HashMap::new()
            },
            s3: s3.clone(),
        })
    }

    /// A `FileIO` with `extra` properties over ours (a REST catalog's per-table settings:
    /// vended S3 credentials, its endpoint).
    pub fn file_io_with(&self, extra: &HashMap<String, String>) -> FileIO {
        let mut props = self.props.clone();
        if self.kind == StoreKind::S3 {
            props.extend(
                extra
                    .iter()
                    .filter(|(k, _)| k.starts_with("s3.") || k.starts_with("client."))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        FileIOBuilder::new(self.factory()).with_props(props).build()
    }

    pub fn is_object_store(&self) -> bool {
        self.kind == StoreKind::S3
    }

    /// The storage factory for the catalog's and the tables' `FileIO`.
    pub fn factory(&self) -> Arc<dyn StorageFactory> {
        match self.kind {
            StoreKind::Local => Arc::new(LocalFsStorageFactory),
            StoreKind::S3 => Arc::new(OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            }),
        }
    }

    /// The `FileIO` properties (S3 settings); the catalog passes them to every table.
    pub fn props(&self) -> &HashMap<String, String> {
        &self.props
    }

    pub fn file_io(&self) -> FileIO {
        FileIOBuilder::new(self.factory())
            .with_props(self.props.clone())
            .build()
    }

    /// Every object under `prefix` (a location: `s3://bucket/key/`, `file:///path/`), at any
    /// depth. The `iceberg` crate's `FileIO` cannot list, so this goes to the store itself:
    /// the file system, or an OpenDAL S3 operator built from the same settings.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, MergeError> {
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        match self.kind {
            StoreKind::Local => {
                let (scheme, dir) = match prefix.strip_prefix("file://") {
                    Some(path) => ("file://", path.to_owned()),
                    None => ("", prefix.clone()),
                };
                tokio::task::spawn_blocking(move || list_dir(scheme, &dir))
                    .await
                    .map_err(MergeError::io_from(format!("listing {prefix}")))?
            }
            StoreKind::S3 => {
                let (scheme, rest) = prefix.split_once("://").unwrap_or(("s3", &prefix));
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                let op = self.s3_operator(bucket)?;
                let failed = |e: opendal::Error| {
                    MergeError::io(format!(
                        "listing {prefix}: {}",
                        self.explain(&with_causes(&e))
                    ))
                };
                let entries = op.list_with(key).recursive(true).await.map_err(failed)?;
                let mut out = Vec::with_capacity(entries.len());
                for entry in entries {
                    let meta = entry.metadata();
                    if meta.is_dir() {
                        continue;
                    }
                    let modified = match meta.last_modified() {
                        Some(t) => t.into(),
                        None => op
                            .stat(entry.path())
                            .await
                            .map_err(failed)?
                            .last_modified()
                            .map(Into::into)
                            // unknown age: never old enough to delete
                            .unwrap_or_else(std::time::SystemTime::now),
                    };
                    out.push(Listed {
                        path: format!("{scheme}://{bucket}/{}", entry.path()),
                        size: meta.content_length(),
                        modified,
                    });
                }
                Ok(out)
            }
        }
    }

    fn s3_operator(&self, bucket: &str) -> Result<opendal::Operator, MergeError> {
        let s = &self.s3;
        let mut b = opendal::services::S3::default()
            .bucket(bucket)
            .region(s.region.as_deref().unwrap_or("us-east-1"));
        if let Some(e) = &s.endpoint {
            b = b.endpoint(e).disable_ec2_metadata();
        }
        if let Some(k) = &s.access_key {
            b = b.access_key_id(k);
        }
        if let Some(k) = &s.secret_key {
            b = b.secret_access_key(k);
        }
        if let Some(t) = &s.session_token {
            b = b.session_token(t);
        }
        if !s.path_style.unwrap_or(s.endpoint.is_some()) {
            b = b.enable_virtual_host_style();
        }
        Ok(opendal::Operator::new(b)
            .map_err(MergeError::io_from(format!(
                "S3 client for bucket {bucket}"
            )))?
            .finish())
    }

    /// Writes, reads back and deletes one small object under the warehouse: the first
    /// request that fails says, in words, what is wrong.
    pub async fn check(&self) -> Result<(), MergeError> {
        if self.warehouse.is_empty() {
            // a REST catalog's named warehouse: no location of ours to probe
            return Ok(());
        }
        if self.kind == StoreKind::Local {
            let path = self
                .warehouse
                .strip_prefix("file://")
                .unwrap_or(&self.warehouse);
            std::fs::create_dir_all(path).map_err(MergeError::io_from(format!(
                "warehouse folder {path} cannot be created"
            )))?;
        }
        let io = self.file_io();
        let probe = format!(
            "{}/.iceberg-cdc-probe-{}",
            self.warehouse,
            uuid::Uuid::new_v4()
        );
        let explain = |e: iceberg::Error| self.explain(&with_causes(&e));
        let output = io.new_output(&probe).map_err(explain)?;
        output
            .write(bytes::Bytes::from_static(b"probe"))
            .await
            .map_err(explain)?;
        let read = io
            .new_input(&probe)
            .map_err(explain)?
            .read()
            .await
            .map_err(explain)?;
        io.delete(&probe).await.map_err(explain)?;
        if read.as_ref() != b"probe" {
            return Err(MergeError::io(format!(
                "warehouse {}: an object written there read back different",
                self.warehouse
            )));
        }
        Ok(())
    }

    /// A store error in words, with the store's own text kept at the end.
    fn explain(&self, raw: &str) -> MergeError {
        let endpoint = self
            .props
            .get(S3_ENDPOINT)
            .map(String::as_str)
            .unwrap_or("AWS S3");
        let why = match refusal(raw) {
            Some(Refusal::NoSuchBucket) => format!(
                "the bucket of warehouse {} does not exist at {endpoint}",
                self.warehouse
            ),
            Some(Refusal::UnknownAccessKey) => {
                format!("{endpoint} does not know the access key (wrong S3 access key)")
            }
            Some(Refusal::BadSignature) => format!(
                "{endpoint} rejected the request signature (wrong S3 secret key for this access key)"
            ),
            Some(Refusal::ClockSkew) => format!(
                "{endpoint} rejected the request time: this machine's clock is too far from the server's (fix the clock, e.g. with NTP)"
            ),
            Some(Refusal::AccessDenied) => format!(
                "{endpoint} denied access to warehouse {} (the credentials lack permission to write there)",
                self.warehouse
            ),
            Some(Refusal::Unreachable) => format!("{endpoint} cannot be reached"),
            Some(Refusal::Tls) => format!(
                "TLS with {endpoint} failed (for a private CA set iceberg.storage.ca-file)"
            ),
            None => format!("warehouse {} is not usable", self.warehouse),
        };
        // OpenDAL chains its context with ` => `; what follows its first link (the request
        // and its response headers) is the store's answer and the causes
        let answer = raw.split_once(" => ").map_or(raw, |(_, rest)| rest);
        let answer = answer.rsplit_once("} => ").map_or(answer, |(_, rest)| rest);
        MergeError::io(format!("{why}: {answer}"))
    }
}

/// Files under a local folder, recursively; a missing folder has none.
fn list_dir(scheme: &str, dir: &str) -> Result<Vec<Listed>, MergeError> {
    let mut out = Vec::new();
    let mut pending = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(MergeError::io_from(format!("listing {}", d.display()))(e)),
        };
        for entry in entries {
            let entry =
                entry.map_err(|e| MergeError::io_from(format!("listing {}", d.display()))(e))?;
            let meta = entry
                .metadata()
                .map_err(|e| MergeError::io_from(entry.path().display().to_string())(e))?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                out.push(Listed {
                    path: format!("{scheme}{}", entry.path().display()),
                    size: meta.len(),
                    modified: meta
                        .modified()
                        .unwrap_or_else(|_| std::time::SystemTime::now()),
                });
            }
        }
    }
    Ok(out)
}

/// An error with the chain of its causes (the TLS or socket failure under an HTTP error).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(" => ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Why an object store refused a request, from the error text (S3 error codes and
/// transport failures as OpenDAL reports them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoSuchBucket,
    UnknownAccessKey,
    BadSignature,
    ClockSkew,
    AccessDenied,
    Unreachable,
    Tls,
}

pub fn refusal(raw: &str) -> Option<Refusal> {
    let has = |s: &str| raw.contains(s);
    if has("NoSuchBucket") {
        Some(Refusal::NoSuchBucket)
    } else if has("InvalidAccessKeyId") {
        Some(Refusal::UnknownAccessKey)
    } else if has("SignatureDoesNotMatch") {
        Some(Refusal::BadSignature)
    } else if has("RequestTimeTooSkewed") {
        Some(Refusal::ClockSkew)
    } else if has("AccessDenied") {
        Some(Refusal::AccessDenied)
    } else if has("certificate") || has("UnknownIssuer") || has("InvalidCertificate") {
        Some(Refusal::Tls)
    } else if has("Connection refused")
        || has("error sending request")
        || has("dns error")
        || has("timed out")
    {
        Some(Refusal::Unreachable)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_props_default_to_path_style_for_custom_endpoints() {
        let ceph = S3Settings {
            endpoint: Some("http://127.0.0.1:7480".into()),
            access_key: Some("ak".into()),
            secret_key: Some("sk".into()),
            ..Default::default()
        };
        let p = ceph.file_io_props();
        assert_eq!(p[S3_PATH_STYLE_ACCESS], "true");
        assert_eq!(p[S3_REGION], "us-east-1");
        assert_eq!(p[S3_SECRET_ACCESS_KEY], "sk");
        let aws = S3Settings {
            region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let p = aws.file_io_props();
        assert_eq!(p[S3_PATH_STYLE_ACCESS], "false");
        assert_eq!(p[S3_REGION], "eu-west-1");
        assert!(!p.contains_key(S3_DISABLE_EC2_METADATA));
        let forced = S3Settings {
            endpoint: Some("https://s3.example".into()),
            path_style: Some(false),
            ..Default::default()
        };
        assert_eq!(forced.file_io_props()[S3_PATH_STYLE_ACCESS], "false");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = S3Settings {
            access_key: Some("AKIA".into()),
            secret_key: Some("very-secret".into()),
            session_token: Some("token-value".into()),
            ..Default::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret") && !shown.contains("token-value"));
        assert!(shown.contains("AKIA"));
    }

    #[test]
    fn warehouse_locations() {
        let none = S3Settings::default();
        assert!(!Storage::new("file:///tmp/w", &none)
            .unwrap()
            .is_object_store());
        assert!(!Storage::new("/tmp/w", &none).unwrap().is_object_store());
        assert!(Storage::new("s3://lake/warehouse", &none)
            .unwrap()
            .is_object_store());
        for bad in ["s3:///nobucket", "gs://b/p", "tmp/w"] {
            assert!(Storage::new(bad, &none).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_from_error_text() {
        assert_eq!(
            refusal("S3Error { code: \"NoSuchBucket\", message: \"\" }"),
            Some(Refusal::NoSuchBucket)
        );
        assert_eq!(
            refusal("<Code>RequestTimeTooSkewed</Code>"),
            Some(Refusal::ClockSkew)
        );
        assert_eq!(
            refusal("error sending request: Connection refused (os error 111)"),
            Some(Refusal::Unreachable)
        );
        assert_eq!(refusal("something else"), None);
    }
}
