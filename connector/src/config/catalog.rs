//! `iceberg.catalog`: which catalog holds the tables. A SQL catalog (SQLite or PostgreSQL,
//! the JDBC catalog's schema) by default; `type: rest` for an Iceberg REST catalog
//! (Polaris, Lakekeeper, Nessie, Unity, Glue's and S3 Tables' REST endpoints), with its
//! prefix, a bearer token or OAuth2 client credentials, and extra headers.

use super::Span;
use anyhow::{bail, Result};
use iceberg_cdc_merge::catalog::{RestAuth, RestSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CatalogSection {
    /// `sql` (default) or `rest`.
    #[serde(default, rename = "type")]
    pub kind: CatalogKind,
    #[serde(default = "default_catalog_name")]
    pub name: String,
    /// SQL: `sqlite:///path/catalog.db` or `postgres://user:pass@host/db`. REST: the base URL
    /// (`http://rest:8181`, `https://polaris/api/catalog`).
    pub uri: String,
    /// SQL: `file:///path/warehouse` or `s3://bucket/prefix`. REST: the warehouse to ask the
    /// catalog for (a location, or the name it knows the warehouse by).
    pub warehouse: String,
    /// REST: the path segment after `/v1/` (the catalog's own configuration may set it).
    #[serde(default)]
    pub prefix: Option<String>,
    /// REST: a bearer token (`${{ secrets.NAME }}`).
    #[serde(default)]
    pub token: Option<String>,
    /// REST: OAuth2 client credentials, `client-id:client-secret`, exchanged for a token.
    #[serde(default)]
    pub credential: Option<String>,
    /// REST: the OAuth2 token endpoint; `{uri}/v1/oauth/tokens` when unset.
    #[serde(default)]
    pub oauth2_server_uri: Option<String>,
    /// REST: the OAuth2 scope; `catalog` when unset.
    #[serde(default)]
    pub scope: Option<String>,
    /// REST: headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// REST: the bound of each request; 30s when unset.
    #[serde(default)]
    pub timeout: Option<Span>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatalogKind {
    #[default]
    Sql,
    Rest,
}

fn default_catalog_name() -> String {
    "cdc".into()
}

impl fmt::Debug for CatalogSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("CatalogSection")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("uri", &iceberg_cdc_merge::catalog::redact(&self.uri))
            .field("warehouse", &self.warehouse)
            .field("prefix", &self.prefix)
            .field("token", &hidden(&self.token))
            .field("credential", &hidden(&self.credential))
            .field("oauth2_server_uri", &self.oauth2_server_uri)
            .field("scope", &self.scope)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CatalogSection {
    pub(super) fn validate(&self) -> Result<()> {
        let rest_only = [
            ("prefix", self.prefix.is_some()),
            ("token", self.token.is_some()),
            ("credential", self.credential.is_some()),
            ("oauth2-server-uri", self.oauth2_server_uri.is_some()),
            ("scope", self.scope.is_some()),
            ("headers", !self.headers.is_empty()),
            ("timeout", self.timeout.is_some()),
        ];
        match self.kind {
            CatalogKind::Sql => {
                if let Some((key, _)) = rest_only.iter().find(|(_, set)| *set) {
                    bail!("iceberg.catalog.{key} is for a REST catalog (type: rest)");
                }
                if self.uri.starts_with("http://") || self.uri.starts_with("https://") {
                    bail!(
                        "iceberg.catalog.uri `{}` is an HTTP URL: for a REST catalog set type: rest",
                        self.uri
                    );
                }
            }
            CatalogKind::Rest => {
                if !(self.uri.starts_with("http://") || self.uri.starts_with("https://")) {
                    bail!(
                        "iceberg.catalog.uri `{}`: a REST catalog is an http:// or https:// URL",
                        iceberg_cdc_merge::catalog::redact(&self.uri)
                    );
                }
                if self.token.is_some() && self.credential.is_some() {
                    bail!("iceberg.catalog: give token or credential, not both");
                }
                if let Some(c) = &self.credential {
                    if !c.contains(':') {
                        bail!("iceberg.catalog.credential is `client-id:client-secret`");
                    }
                }
                if (self.oauth2_server_uri.is_some() || self.scope.is_some())
                    && self.credential.is_none()
                {
                    bail!("iceberg.catalog: oauth2-server-uri and scope go with credential");
                }
            }
        }
        Ok(())
    }

    /// The REST settings for the merge engine; `None` for a SQL catalog.
    pub fn rest(&self) -> Option<RestSettings> {
        if self.kind != CatalogKind::Rest {
            return None;
        }
        let auth = match (&self.token, &self.credential) {
            (Some(t), _) => RestAuth::Token(t.clone()),
            (None, Some(c)) => {
                let (id, secret) = c.split_once(':').unwrap_or((c, ""));
                RestAuth::ClientCredentials {
                    client_id: id.to_owned(),
                    client_secret: secret.to_owned(),
                    server_uri: self.oauth2_server_uri.clone(),
                    scope: self.scope.clone(),
                }
            }
            (None, None) => RestAuth::None,
        };
        Some(RestSettings {
            prefix: self.prefix.clone(),
            auth,
            headers: self.headers.clone(),
            timeout: self.timeout.map(|s| s.0),
        })
    }
}

impl super::ConnectorConfig {
    /// Where the catalog and the warehouse are, for the merge engine.
    pub fn catalog_config(&self) -> iceberg_cdc_merge::CatalogConfig {
        let c = &self.iceberg.catalog;
        iceberg_cdc_merge::CatalogConfig {
            name: c.name.clone(),
            uri: c.uri.clone(),
            warehouse: c.warehouse.clone(),
            s3: self.iceberg.storage.s3(),
            rest: c.rest(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConnectorConfig, Secrets};
    use super::*;

    const REST: &str = r#"
apiVersion: 0.2.0
meta:
  name: cdc
  type: iceberg-cdc-sink
  version: 0.1.0
  topic:
    meta:
      name: cdc
  secrets:
    - name: REST_SECRET
iceberg:
  dead-letter:
    file: /tmp/dl.jsonl
  catalog:
    type: rest
    uri: https://polaris.internal/api/catalog
    warehouse: lake
CATALOG_EXTRA
"#;

    fn parse(extra: &str) -> Result<ConnectorConfig> {
        let secrets = Secrets {
            file: Some(std::collections::HashMap::from([(
                "REST_SECRET".to_owned(),
                "s3cr:et#x".to_owned(),
            )])),
        };
        ConnectorConfig::parse(&REST.replace("CATALOG_EXTRA", extra), &secrets)
    }

    #[test]
    fn a_rest_catalog_with_client_credentials_from_a_secret() {
        let c = parse(
            "    credential: client-7:${{ secrets.REST_SECRET }}\n    scope: PRINCIPAL_ROLE:ALL\n    prefix: prod\n    headers:\n      X-Iceberg-Access-Delegation: vended-credentials\n    timeout: 5s",
        )
        .unwrap();
        let cc = c.catalog_config();
        let rest = cc.rest.expect("rest settings");
        assert_eq!(rest.prefix.as_deref(), Some("prod"));
        assert_eq!(rest.timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!(
            rest.headers
                .get("X-Iceberg-Access-Delegation")
                .map(String::as_str),
            Some("vended-credentials")
        );
        match rest.auth {
            RestAuth::ClientCredentials {
                client_id,
                client_secret,
                scope,
                server_uri,
            } => {
                assert_eq!(client_id, "client-7");
                // split at the first colon: the secret keeps its own
                assert_eq!(client_secret, "s3cr:et#x");
                assert_eq!(scope.as_deref(), Some("PRINCIPAL_ROLE:ALL"));
                assert_eq!(server_uri, None);
            }
            other => panic!("{other:?}"),
        }
        let shown = format!("{:?}", c.iceberg.catalog);
        assert!(!shown.contains("s3cr"), "{shown}");
    }

    #[test]
    fn a_rest_catalog_with_a_token_or_nothing() {
        let c = parse("    token: abc").unwrap();
        assert!(matches!(c.catalog_config().rest.unwrap().auth, RestAuth::Token(t) if t == "abc"));
        let c = parse("").unwrap();
        assert!(matches!(
            c.catalog_config().rest.unwrap().auth,
            RestAuth::None
        ));
    }

    #[test]
    fn what_does_not_fit_is_refused_with_the_key_named() {
        for (extra, expected) in [
            ("    token: a\n    credential: b:c", "not both"),
            ("    credential: nocolon", "client-id:client-secret"),
            ("    scope: catalog", "go with credential"),
        ] {
            let e = format!("{:#}", parse(extra).unwrap_err());
            assert!(e.contains(expected), "{extra}: {e}");
        }
        let e = format!(
            "{:#}",
            ConnectorConfig::parse(
                &REST
                    .replace(
                        "uri: https://polaris.internal/api/catalog",
                        "uri: sqlite:///tmp/c.db"
                    )
                    .replace("CATALOG_EXTRA", ""),
                &Secrets::default()
            )
            .unwrap_err()
        );
        assert!(e.contains("http:// or https://"), "{e}");
        // the SQL catalog takes none of the REST keys, and no HTTP URL
        let sql = REST.replace("    type: rest\n", "");
        let e = format!(
            "{:#}",
            ConnectorConfig::parse(&sql.replace("CATALOG_EXTRA", ""), &Secrets::default())
                .unwrap_err()
        );
        assert!(e.contains("type: rest"), "{e}");
        let e = format!(
            "{:#}",
            ConnectorConfig::parse(
                &sql.replace(
                    "uri: https://polaris.internal/api/catalog",
                    "uri: sqlite:///tmp/c.db"
                )
                .replace("CATALOG_EXTRA", "    token: x"),
                &Secrets::default()
            )
            .unwrap_err()
        );
        assert!(
            e.contains("iceberg.catalog.token is for a REST catalog"),
            "{e}"
        );
    }
}
