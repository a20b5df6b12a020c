//! Who we are to a REST catalog: OAuth2 client credentials exchanged for a token at the token
//! endpoint, the token sent as the bearer of every call, a new one bought when the catalog
//! answers 401 (the token expired), the prefix the catalog's configuration sets. Apache
//! Iceberg's REST server takes any token or none, so these run against a catalog of the
//! test's own that checks them: a loopback HTTP server answering the spec's
//! `/v1/oauth/tokens`, `/v1/config` and a table lookup. (What the catalog does with tables
//! is tested against Apache Iceberg's server: model.rs, the connector's maintenance tests.)

use iceberg::TableIdent;
use iceberg_cdc_merge::catalog::{RestAuth, RestSettings};
use iceberg_cdc_merge::{Catalog, CatalogConfig};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as the catalog saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    bearer: Option<String>,
    tenant: Option<String>,
    body: String,
}

/// The catalog's state: the tokens it issued, which of them it still takes.
#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    issued: usize,
    /// Tokens the catalog takes.
    valid: Vec<String>,
}

/// Answers one request: the token endpoint issues `token-N` to `me:right`; everything else
/// wants a valid bearer.
fn answer(state: &mut State, req: &Seen) -> (u16, String) {
    if req.path == "/v1/oauth/tokens" {
        let form: HashMap<String, String> = req
            .body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":")))
            .collect();
        let good = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id").map(String::as_str) == Some("me")
            && form.get("client_secret").map(String::as_str) == Some("right");
        if !good {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"unknown client"}"#.into(),
            );
        }
        state.issued += 1;
        let token = format!("token-{}", state.issued);
        state.valid = vec![token.clone()];
        return (
            200,
            format!(r#"{{"access_token":"{token}","token_type":"bearer","expires_in":3600}}"#),
        );
    }
    let authorized = req.bearer.as_ref().is_some_and(|b| state.valid.contains(b));
    if !authorized {
        return (
            401,
            r#"{"error":{"message":"Not authorized","type":"NotAuthorizedException","code":401}}"#
                .into(),
        );
    }
    match req.path.split('?').next().unwrap_or("") {
        "/v1/config" => (200, r#"{"defaults":{},"overrides":{"prefix":"cat-7"}}"#.into()),
        "/v1/cat-7/namespaces/sales/tables/orders" => {
            // the token expires after this answer: the next call gets 401
            state.valid.clear();
            (
                404,
                r#"{"error":{"message":"Table does not exist: sales.orders","type":"NoSuchTableException","code":404}}"#
                    .into(),
            )
        }
        "/v1/cat-7/namespaces/sales/tables/items" => (
            404,
            r#"{"error":{"message":"Table does not exist","type":"NoSuchTableException","code":404}}"#
                .into(),
        ),
        _ => (400, r#"{"error":{"message":"unexpected","type":"BadRequestException","code":400}}"#.into()),
    }
}

/// Serves until the test ends; returns its URL and what it saw.
async fn catalog_server() -> (String, Arc<Mutex<State>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(State::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = shared.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                // one connection, many requests (keep-alive)
                loop {
                    let mut request_line = String::new();
                    if read.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = request_line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_owned();
                    let path = parts.next().unwrap_or_default().to_owned();
                    let mut length = 0;
                    let mut bearer = None;
                    let mut tenant = None;
                    loop {
                        let mut line = String::new();
                        read.read_line(&mut line).await.unwrap();
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap_or((line, ""));
                        let value = value.trim();
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.parse().unwrap_or(0),
                            "authorization" => {
                                bearer = value.strip_prefix("Bearer ").map(str::to_owned)
                            }
                            "x-tenant" => tenant = Some(value.to_owned()),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    read.read_exact(&mut body).await.unwrap();
                    let seen = Seen {
                        method,
                        path,
                        bearer,
                        tenant,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let (status, text) = {
                        let mut s = state.lock().unwrap();
                        let answer = answer(&mut s, &seen);
                        s.seen.push(seen);
                        answer
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if write.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, state)
}

fn config(uri: &str, warehouse: &std::path::Path, secret: &str) -> CatalogConfig {
    CatalogConfig {
        name: "rest".into(),
        uri: uri.to_owned(),
        warehouse: format!("file://{}", warehouse.display()),
        s3: Default::default(),
        rest: Some(RestSettings {
            auth: RestAuth::ClientCredentials {
                client_id: "me".into(),
                client_secret: secret.into(),
                server_uri: None,
                scope: Some("PRINCIPAL_ROLE:ALL".into()),
            },
            headers: BTreeMap::from([("X-Tenant".to_owned(), "acme".to_owned())]),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn client_credentials_buy_a_token_that_is_renewed_on_401() {
    let (uri, state) = catalog_server().await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::connect(&config(&uri, dir.path(), "right"))
        .await
        .expect("connect");
    let orders = TableIdent::from_strs(["sales", "orders"]).unwrap();
    let items = TableIdent::from_strs(["sales", "items"]).unwrap();
    assert!(catalog.load(&orders).await.unwrap().is_none());
    // the token expired with that answer: this call is refused once, a new token bought,
    // and the call made again
    assert!(catalog.load(&items).await.unwrap().is_none());

    let seen = state.lock().unwrap().seen.clone();
    let calls: Vec<(String, String, Option<String>)> = seen
        .iter()
        .map(|s| (s.method.clone(), s.path.clone(), s.bearer.clone()))
        .collect();
    let t = |s: &str| Some(s.to_owned());
    assert_eq!(
        calls,
        [
            ("POST".into(), "/v1/oauth/tokens".into(), None),
            (
                "GET".into(),
                "/v1/config?warehouse=".to_owned()
                    + &percent(&format!("file://{}", dir.path().display())),
                t("token-1")
            ),
            // the prefix from the catalog's configuration
            (
                "GET".into(),
                "/v1/cat-7/namespaces/sales/tables/orders".into(),
                t("token-1")
            ),
            (
                "GET".into(),
                "/v1/cat-7/namespaces/sales/tables/items".into(),
                t("token-1")
            ),
            ("POST".into(), "/v1/oauth/tokens".into(), None),
            (
                "GET".into(),
                "/v1/cat-7/namespaces/sales/tables/items".into(),
                t("token-2")
            ),
        ]
    );
    assert!(
        seen[0].body.contains("scope=PRINCIPAL_ROLE%3AALL"),
        "{}",
        seen[0].body
    );
    // the configured headers go with every call
    assert!(
        seen.iter().all(|s| s.tenant.as_deref() == Some("acme")),
        "{seen:?}"
    );
}

/// `application/x-www-form-urlencoded`'s form of a query value (what reqwest sends).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn wrong_credentials_are_refused_at_connect_not_retried() {
    let (uri, state) = catalog_server().await;
    let dir = tempfile::tempdir().unwrap();
    let err = match Catalog::connect(&config(&uri, dir.path(), "wrong")).await {
        Ok(_) => panic!("wrong credentials were taken"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(!err.is_retryable(), "{text}");
    assert!(
        text.contains("client `me`") && text.contains("401"),
        "{text}"
    );
    assert!(
        !text.contains("wrong"),
        "the secret is in the message: {text}"
    );
    assert_eq!(state.lock().unwrap().seen.len(), 1);
}
