//! The Iceberg REST catalog (the Apache Iceberg REST spec, `/v1/...`), spoken over HTTP by
//! us: the `iceberg` crate's REST client commits only what its own transaction actions make
//! (its `TableCommit` cannot be built outside the crate), and our snapshots carry delete
//! files and removals those actions cannot express. Loading, creating and listing go through
//! the same client, so one token and one set of headers serve every call.
//!
//! A commit is `POST /v1/{prefix}/namespaces/{ns}/tables/{table}` with the changes a
//! `TableMetadataBuilder` recorded as the updates, and requirements that hold only while the
//! metadata the commit was built on is current: the table's UUID, `main` at the snapshot it
//! was found at, and the schema ids when the schema changes. The catalog answers 409 when
//! another writer got there first ([`Outcome::Conflict`]: reload and try again, as with the
//! SQL catalog's compare-and-swap); a 5xx or a lost connection leaves the commit's fate
//! unknown, reported as a retryable commit error (the retry finds its own snapshot on
//! reload, and re-applying a batch over it writes the same rows).

use super::table_of;
use crate::commit::Outcome;
use crate::io::storage::Storage;
use crate::MergeError;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg::{NamespaceIdent, TableCreation, TableIdent, TableRequirement, TableUpdate};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;
use tokio::sync::Mutex;

/// How to reach a REST catalog, beside its URI and warehouse.
#[derive(Debug, Clone, Default)]
pub struct RestSettings {
    /// The path segment between `/v1/` and `namespaces` (Polaris: the catalog name). The
    /// catalog's `GET /v1/config` overrides it when it sets one.
    pub prefix: Option<String>,
    pub auth: RestAuth,
    /// Sent with every request (`X-Iceberg-Access-Delegation: vended-credentials`, a tenant
    /// header).
    pub headers: BTreeMap<String, String>,
    /// The bound of each request; 30 s when unset.
    pub timeout: Option<Duration>,
}

/// Who we are to the catalog.
#[derive(Clone, Default)]
pub enum RestAuth {
    #[default]
    None,
    /// A bearer token, sent as it is.
    Token(String),
    /// OAuth2 client credentials, exchanged for a bearer token (again when the catalog
    /// answers 401: the token expired).
    ClientCredentials {
        client_id: String,
        client_secret: String,
        /// The token endpoint; `{uri}/v1/oauth/tokens` when unset.
        server_uri: Option<String>,
        /// `catalog` when unset (Polaris wants `PRINCIPAL_ROLE:ALL`).
        scope: Option<String>,
    },
}

impl fmt::Debug for RestAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestAuth::None => f.write_str("None"),
            RestAuth::Token(_) => f.write_str("Token(***)"),
            RestAuth::ClientCredentials {
                client_id,
                server_uri,
                scope,
                ..
            } => f
                .debug_struct("ClientCredentials")
                .field("client_id", client_id)
                .field("client_secret", &"***")
                .field("server_uri", server_uri)
                .field("scope", scope)
                .finish(),
        }
    }
}

pub(super) struct Rest {
    http: reqwest::Client,
    /// `{uri}/v1/` or `{uri}/v1/{prefix}/`.
    base: String,
    uri: String,
    auth: RestAuth,
    /// The bearer token in use (`Token` or the one the client credentials bought).
    token: Mutex<Option<String>>,
    storage: Storage,
}

/// What `GET /v1/config` answers.
#[derive(Debug, Default, Deserialize)]
struct ConfigResponse {
    #[serde(default)]
    defaults: HashMap<String, String>,
    #[serde(default)]
    overrides: HashMap<String, String>,
}

/// What loading, creating and committing a table answer.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LoadTableResult {
    metadata_location: Option<String>,
    metadata: TableMetadata,
    /// Per-table settings for its files (vended S3 credentials).
    #[serde(default)]
    config: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct NamespacesPage {
    namespaces: Vec<Vec<String>>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct TablesPage {
    identifiers: Vec<Identifier>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Identifier {
    namespace: Vec<String>,
    name: String,
}

/// The characters a path segment keeps as they are (RFC 3986's unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A namespace as one path segment: its levels joined by the unit separator (0x1F), as the
/// spec has it, percent-encoded.
fn namespace_segment(ns: &NamespaceIdent) -> String {
    utf8_percent_encode(&ns.join("\u{1f}"), SEGMENT).to_string()
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// `{uri}/v1/` with the prefix, if any.
fn base_url(uri: &str, prefix: Option<&str>) -> String {
    let uri = uri.trim_end_matches('/');
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) => format!("{uri}/v1/{p}/"),
        None => format!("{uri}/v1/"),
    }
}

/// The requirements under which `updates`, made from `base`, may be applied: the same table
/// (not one dropped and created again under the name), `main` where `base` had it (no other
/// writer committed since), and the schema ids `base` had when the schema changes.
pub(super) fn requirements(base: &TableMetadata, updates: &[TableUpdate]) -> Vec<TableRequirement> {
    let mut out = vec![
        TableRequirement::UuidMatch { uuid: base.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: "main".to_owned(),
            snapshot_id: base.current_snapshot_id(),
        },
    ];
    if updates
        .iter()
        .any(|u| matches!(u, TableUpdate::AddSchema { .. }))
    {
        out.push(TableRequirement::LastAssignedFieldIdMatch {
            last_assigned_field_id: base.last_column_id(),
        });
    }
    if updates
        .iter()
        .any(|u| matches!(u, TableUpdate::SetCurrentSchema { .. }))
    {
        out.push(TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: base.current_schema_id(),
        });
    }
    out
}

/// The catalog's error message (`{"error": {"message": ..., "type": ...}}`), else the body.
fn error_text(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    match error {
        // OAuth2's form: {"error": "invalid_client", "error_description": "..."}
        Some(Value::String(code)) => {
            let description = parsed
                .as_ref()
                .and_then(|v| v.get("error_description"))
                .and_then(Value::as_str)
                .unwrap_or("");
            format!("{code}: {description}")
        }
        Some(e) => {
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
            let message = e.get("message").and_then(Value::as_str).unwrap_or("");
            format!("{kind}: {message}")
        }
        None => {
            let mut text: String = body.chars().take(300).collect();
            if text.is_empty() {
                text.push_str("(no body)");
            }
            text
        }
    }
}

/// An answer other than success, by whose fault: the catalog's or the network's (may pass:
/// retry) or ours (refused: wrong credentials, a request it will never take).
fn failure(what: &str, status: StatusCode, body: &str) -> MergeError {
    let context = format!(
        "{what}: the catalog answered {status}: {}",
        error_text(body)
    );
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        MergeError::catalog(context)
    } else {
        MergeError::refused(context)
    }
}

impl Rest {
    pub(super) async fn connect(
        uri: &str,
        warehouse: &str,
        settings: &RestSettings,
        storage: &Storage,
    ) -> Result<Rest, MergeError> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &settings.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(MergeError::refused_from(format!("header name `{k}`")))?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(
                MergeError::refused_from(format!("the value of header `{k}`")),
            )?;
            headers.insert(name, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(settings.timeout.unwrap_or(Duration::from_secs(30)))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(MergeError::catalog_from("the REST catalog's HTTP client"))?;
        let token = match &settings.auth {
            RestAuth::Token(t) => Some(t.clone()),
            _ => None,
        };
        let mut rest = Rest {
            http,
            base: base_url(uri, None),
            uri: uri.trim_end_matches('/').to_owned(),
            auth: settings.auth.clone(),
            token: Mutex::new(token),
            storage: storage.clone(),
        };
        if matches!(rest.auth, RestAuth::ClientCredentials { .. }) {
            rest.renew_token().await?;
        }
        let config = rest.config(warehouse).await?;
        // the spec's order: the catalog's defaults, then ours, then its overrides
        let prefix = config
            .overrides
            .get("prefix")
            .or(settings.prefix.as_ref())
            .or(config.defaults.get("prefix"));
        rest.base = base_url(uri, prefix.map(String::as_str));
        Ok(rest)
    }

    async fn config(&self, warehouse: &str) -> Result<ConfigResponse, MergeError> {
        let url = format!("{}config", self.base);
        let mut query: Vec<(&str, &str)> = Vec::new();
        if !warehouse.is_empty() {
            query.push(("warehouse", warehouse));
        }
        let (status, body) = self.send(Method::GET, &url, &query, None).await?;
        if !status.is_success() {
            return Err(failure(
                &format!("GET {url} (the catalog's configuration)"),
                status,
                &body,
            ));
        }
        serde_json::from_str(&body).map_err(MergeError::catalog_from(format!(
            "{url} answered something other than a catalog configuration"
        )))
    }

    /// Buys a bearer token with the client credentials.
    async fn renew_token(&self) -> Result<(), MergeError> {
        let RestAuth::ClientCredentials {
            client_id,
            client_secret,
            server_uri,
            scope,
        } = &self.auth
        else {
            return Ok(());
        };
        let url = server_uri
            .clone()
            .unwrap_or_else(|| format!("{}/v1/oauth/tokens", self.uri));
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
            ("scope", scope.as_deref().unwrap_or("catalog")),
        ];
        let response = self
            .http
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(MergeError::catalog_from(format!("POST {url} (a token)")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(MergeError::catalog_from(format!("POST {url} (a token)")))?;
        if !status.is_success() {
            return Err(failure(
                &format!("POST {url} (a token for client `{client_id}`)"),
                status,
                &body,
            ));
        }
        let token = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned))
            .ok_or_else(|| MergeError::refused(format!("{url} answered no access_token")))?;
        *self.token.lock().await = Some(token);
        Ok(())
    }

    /// One request with our token; on 401 with client credentials, a new token and once more.
    async fn send(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), MergeError> {
        let mut renewed = false;
        loop {
            let mut request = self.http.request(method.clone(), url).query(query);
            if let Some(token) = self.token.lock().await.as_ref() {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let what = || format!("{method} {url}");
            let response = request
                .send()
                .await
                .map_err(MergeError::catalog_from(what()))?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(MergeError::catalog_from(what()))?;
            let can_renew = matches!(self.auth, RestAuth::ClientCredentials { .. });
            if status == StatusCode::UNAUTHORIZED && can_renew && !renewed {
                renewed = true;
                self.renew_token().await?;
                continue;
            }
            return Ok((status, text));
        }
    }

    fn table_url(&self, ident: &TableIdent) -> String {
        format!(
            "{}namespaces/{}/tables/{}",
            self.base,
            namespace_segment(ident.namespace()),
            segment(ident.name())
        )
    }

    fn table_of(&self, ident: &TableIdent, loaded: LoadTableResult) -> Result<Table, MergeError> {
        let location = loaded.metadata_location.ok_or_else(|| {
            MergeError::catalog(format!("the catalog gave {ident} no metadata location"))
        })?;
        table_of(
            ident.clone(),
            loaded.metadata,
            location,
            self.storage.file_io_with(&loaded.config),
        )
    }

    fn parse_table(&self, ident: &TableIdent, what: &str, body: &str) -> Result<Table, MergeError> {
        let loaded: LoadTableResult = serde_json::from_str(body).map_err(
            MergeError::catalog_from(format!("{what}: the answer is not a table's metadata")),
        )?;
        self.table_of(ident, loaded)
    }

    pub(super) async fn load(&self, ident: &TableIdent) -> Result<Option<Table>, MergeError> {
        let url = self.table_url(ident);
        let (status, body) = self.send(Method::GET, &url, &[], None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => self
                .parse_table(ident, &format!("loading {ident}"), &body)
                .map(Some),
            s => Err(failure(&format!("loading {ident}"), s, &body)),
        }
    }

    pub(super) async fn create(
        &self,
        ident: &TableIdent,
        creation: TableCreation,
    ) -> Result<Table, MergeError> {
        let ns = ident.namespace();
        let ns_url = format!("{}namespaces/{}", self.base, namespace_segment(ns));
        let (status, body) = self.send(Method::HEAD, &ns_url, &[], None).await?;
        if status == StatusCode::NOT_FOUND {
            let url = format!("{}namespaces", self.base);
            let request = json!({"namespace": ns.as_ref(), "properties": {}});
            let (status, body) = self.send(Method::POST, &url, &[], Some(&request)).await?;
            // 409: made meanwhile by another writer
            if !status.is_success() && status != StatusCode::CONFLICT {
                return Err(failure(
                    &format!("creating namespace {}", ns.join(".")),
                    status,
                    &body,
                ));
            }
        } else if !status.is_success() {
            return Err(failure(
                &format!("looking up namespace {}", ns.join(".")),
                status,
                &body,
            ));
        }
        let mut properties = creation.properties;
        properties.insert(
            "format-version".to_owned(),
            (creation.format_version as u8).to_string(),
        );
        let mut request = json!({
            "name": creation.name,
            "schema": creation.schema,
            "stage-create": false,
            "properties": properties,
        });
        if let Some(location) = &creation.location {
            request["location"] = json!(location);
        }
        if let Some(spec) = &creation.partition_spec {
            let mut spec = serde_json::to_value(spec)
                .map_err(MergeError::schema_from("the partition spec as JSON"))?;
            // an unbound spec may leave its id out; the spec's request schema has it
            if spec.get("spec-id").is_none_or(Value::is_null) {
                spec["spec-id"] = json!(0);
            }
            request["partition-spec"] = spec;
        }
        if let Some(order) = &creation.sort_order {
            request["write-order"] = serde_json::to_value(order)
                .map_err(MergeError::schema_from("the sort order as JSON"))?;
        }
        let url = format!("{}namespaces/{}/tables", self.base, namespace_segment(ns));
        let (status, body) = self.send(Method::POST, &url, &[], Some(&request)).await?;
        let what = format!("creating {ident}");
        if !status.is_success() {
            return Err(failure(&what, status, &body));
        }
        self.parse_table(ident, &what, &body)
    }

    pub(super) async fn list_tables(&self) -> Result<Vec<TableIdent>, MergeError> {
        let mut out = Vec::new();
        let mut pending = self.namespaces(None).await?;
        while let Some(ns) = pending.pop() {
            let url = format!("{}namespaces/{}/tables", self.base, namespace_segment(&ns));
            let mut token: Option<String> = None;
            loop {
                let mut query = Vec::new();
                if let Some(t) = &token {
                    query.push(("pageToken", t.as_str()));
                }
                let (status, body) = self.send(Method::GET, &url, &query, None).await?;
                if !status.is_success() {
                    return Err(failure(
                        &format!("listing the tables of {}", ns.join(".")),
                        status,
                        &body,
                    ));
                }
                let page: TablesPage = serde_json::from_str(&body)
                    .map_err(MergeError::catalog_from(format!("listing {url}")))?;
                for id in page.identifiers {
                    let ident = TableIdent::new(
                        NamespaceIdent::from_vec(id.namespace)
                            .map_err(MergeError::catalog_from("a listed namespace"))?,
                        id.name,
                    );
                    out.push(ident);
                }
                match page.next_page_token {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => break,
                }
            }
            pending.extend(self.namespaces(Some(&ns)).await?);
        }
        Ok(out)
    }

    async fn namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>, MergeError> {
        let url = format!("{}namespaces", self.base);
        let parent_text = parent.map(|p| p.join("\u{1f}"));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = Vec::new();
            if let Some(p) = &parent_text {
                query.push(("parent", p.as_str()));
            }
            if let Some(t) = &token {
                query.push(("pageToken", t.as_str()));
            }
            let (status, body) = self.send(Method::GET, &url, &query, None).await?;
            if !status.is_success() {
                return Err(failure("listing namespaces", status, &body));
            }
            let page: NamespacesPage = serde_json::from_str(&body)
                .map_err(MergeError::catalog_from(format!("listing {url}")))?;
            for ns in page.namespaces {
                // a catalog without nested namespaces may list the parent itself
                let ns = NamespaceIdent::from_vec(ns)
                    .map_err(MergeError::catalog_from("a listed namespace"))?;
                if Some(&ns) != parent {
                    out.push(ns);
                }
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    pub(super) async fn commit(
        &self,
        table: &Table,
        updates: &[TableUpdate],
    ) -> Result<Outcome, MergeError> {
        let ident = table.identifier();
        let request = json!({
            "identifier": {"namespace": ident.namespace().as_ref(), "name": ident.name()},
            "requirements": requirements(table.metadata(), updates),
            "updates": updates,
        });
        let url = self.table_url(ident);
        let what = format!("committing {ident}");
        let (status, body) = match self.send(Method::POST, &url, &[], Some(&request)).await {
            Ok(answer) => answer,
            Err(e) => {
                return Err(MergeError::commit(format!(
                    "{what}: no answer, the commit may or may not have landed: {e}"
                )))
            }
        };
        match status {
            StatusCode::CONFLICT => Ok(Outcome::Conflict),
            s if s.is_success() => self
                .parse_table(ident, &what, &body)
                .map(|t| Outcome::Committed(Box::new(t))),
            s if s.is_server_error() => Err(MergeError::commit(format!(
                "{what}: the catalog answered {s}, the commit may or may not have landed: {}",
                error_text(&body)
            ))),
            s => Err(failure(&what, s, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_as_the_spec_has_them() {
        let ns = NamespaceIdent::from_strs(["sales", "eu west"]).unwrap();
        assert_eq!(namespace_segment(&ns), "sales%1Feu%20west");
        assert_eq!(segment("a/b.c_d-e~f"), "a%2Fb.c_d-e~f");
        assert_eq!(base_url("http://h:8181/", None), "http://h:8181/v1/");
        assert_eq!(
            base_url("https://h/api/catalog", Some("/prod/")),
            "https://h/api/catalog/v1/prod/"
        );
        assert_eq!(base_url("http://h", Some("")), "http://h/v1/");
    }

    #[test]
    fn the_catalogs_error_message_is_kept() {
        let body = r#"{"error":{"message":"Requirement failed: branch main has changed","type":"CommitFailedException","code":409}}"#;
        assert_eq!(
            error_text(body),
            "CommitFailedException: Requirement failed: branch main has changed"
        );
        assert_eq!(error_text(""), "(no body)");
        assert_eq!(
            error_text(r#"{"error":"invalid_client","error_description":"unknown client"}"#),
            "invalid_client: unknown client"
        );
        assert_eq!(
            error_text("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        let e = failure("loading a.b", StatusCode::SERVICE_UNAVAILABLE, "");
        assert!(e.is_retryable(), "{e}");
        let e = failure("loading a.b", StatusCode::FORBIDDEN, "{}");
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("403 Forbidden"), "{e}");
    }

    #[test]
    fn requirements_hold_only_while_the_base_is_current() {
        use iceberg::spec::{
            FormatVersion, NestedField, PartitionSpec, PrimitiveType, Schema, SortOrder,
            TableMetadataBuilder, Type,
        };
        let schema = |fields: Vec<NestedField>| {
            Schema::builder()
                .with_fields(fields.into_iter().map(std::sync::Arc::new))
                .build()
                .unwrap()
        };
        let id = NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long));
        let base = TableMetadataBuilder::new(
            schema(vec![id.clone()]),
            PartitionSpec::unpartition_spec(),
            SortOrder::unsorted_order(),
            "file:///w/t".into(),
            FormatVersion::V2,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata;
        // a new column: the schema is added and made current
        let name = NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String));
        let built = TableMetadataBuilder::new_from_metadata(base.clone(), None)
            .add_current_schema(schema(vec![id, name]))
            .unwrap()
            .build()
            .unwrap();
        let got = requirements(&base, &built.changes);
        assert_eq!(
            got,
            [
                TableRequirement::UuidMatch { uuid: base.uuid() },
                // no snapshot yet: main must still not exist
                TableRequirement::RefSnapshotIdMatch {
                    r#ref: "main".into(),
                    snapshot_id: None
                },
                TableRequirement::LastAssignedFieldIdMatch {
                    last_assigned_field_id: 1
                },
                TableRequirement::CurrentSchemaIdMatch {
                    current_schema_id: base.current_schema_id()
                },
            ]
        );
        // as the REST spec spells them
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(
            json[1],
            json!({"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": null})
        );
        assert_eq!(json[0]["type"], "assert-table-uuid");
        // metadata-only changes (expiry) carry the first two only
        assert_eq!(requirements(&base, &[]).len(), 2);
    }

    #[test]
    fn secrets_are_not_printed() {
        let auth = RestAuth::ClientCredentials {
            client_id: "me".into(),
            client_secret: "hunter2".into(),
            server_uri: None,
            scope: None,
        };
        let text = format!("{auth:?} {:?}", RestAuth::Token("t0ken".into()));
        assert!(
            !text.contains("hunter2") && !text.contains("t0ken"),
            "{text}"
        );
        assert!(text.contains("me"), "{text}");
    }
}
