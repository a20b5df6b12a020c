//! Where the run can be watched from outside: an HTTP endpoint (`/metrics` in the Prometheus
//! text format, `/health`, `/ready`) and Fluvio's connector-metrics Unix socket. Both only
//! read [`Metrics`]; neither can hold the run up.

use crate::metrics::Metrics;
use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `address` and serves the endpoint until the process ends; the bound address back
/// (port 0 picks one).
pub async fn serve(
    address: SocketAddr,
    metrics: Metrics,
    stall_after: Duration,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics endpoint to {address}"))?;
    let bound = listener
        .local_addr()
        .context("the metrics endpoint's address")?;
    tracing::info!("metrics on http://{bound}/metrics; /health, /ready");
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = answer(&req, &metrics, stall_after);
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("metrics endpoint: a connection ended: {e}");
                }
            });
        }
    });
    Ok(bound)
}

/// One request's answer.
fn answer<B>(req: &Request<B>, metrics: &Metrics, stall_after: Duration) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_owned());
    }
    match req.uri().path() {
        "/metrics" => Response::builder()
            .header(hyper::header::CONTENT_TYPE, OPENMETRICS)
            .body(Full::new(Bytes::from(metrics.encode())))
            .unwrap_or_default(),
        "/health" => status(metrics.health(stall_after)),
        "/ready" => status(metrics.ready()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /health or /ready\n".to_owned(),
        ),
    }
}

fn status(outcome: Result<String, String>) -> Response<Full<Bytes>> {
    match outcome {
        Ok(s) => text(StatusCode::OK, s + "\n"),
        Err(s) => text(StatusCode::SERVICE_UNAVAILABLE, s + "\n"),
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// Fluvio's connector-metrics socket: each connection gets one JSON document
/// ([`Metrics::fluvio_document`]) and is closed. A stale socket file is replaced; one that
/// another live process answers on is left alone (and this process serves none).
pub async fn serve_fluvio_socket(path: PathBuf, metrics: Metrics, smartmodule: String) {
    let listener = match bind_socket(&path).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("Fluvio's connector metrics are not served: {e:#}");
            return;
        }
    };
    tracing::info!("Fluvio connector metrics on {}", path.display());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let document = metrics.fluvio_document(&smartmodule);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
            });
        }
    });
}

async fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("another process answers on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[test]
    fn ready_only_with_tables_open_source_connected_and_nothing_paused() {
        let m = Metrics::new();
        let stall = Duration::from_secs(60);
        assert_eq!(answer(&get("/health"), &m, stall).status(), StatusCode::OK);
        assert_eq!(
            answer(&get("/ready"), &m, stall).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        m.tables_open();
        m.source_connected(true);
        assert_eq!(answer(&get("/ready"), &m, stall).status(), StatusCode::OK);
        m.paused("db.orders");
        assert_eq!(
            answer(&get("/ready"), &m, stall).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(m.ready(), Err("paused: db.orders".to_owned()));
        assert_eq!(
            answer(&get("/nope"), &m, stall).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn health_fails_once_the_loop_stalls() {
        let m = Metrics::new();
        std::thread::sleep(Duration::from_millis(30));
        assert!(m.health(Duration::from_millis(10)).is_err());
        m.beat();
        assert!(m.health(Duration::from_millis(10)).is_ok());
    }

    #[test]
    fn metrics_are_openmetrics_text_with_the_documented_names() {
        let m = Metrics::new();
        m.read("orders/0", 3, 300);
        m.change("db.orders", debezium_cdc::record::Op::Update);
        let applied = iceberg_cdc_merge::Applied {
            upserts: 2,
            deletes: 1,
            ..Default::default()
        };
        m.committed("db.orders", 3, &applied, Duration::from_millis(20), 7);
        let r = answer(&get("/metrics"), &m, Duration::from_secs(60));
        assert_eq!(r.headers()[hyper::header::CONTENT_TYPE], OPENMETRICS);
        let text = m.encode();
        for line in [
            "iceberg_cdc_source_records_read_total{partition=\"orders/0\"} 3",
            "iceberg_cdc_changes_total{table=\"db.orders\",op=\"u\"} 1",
            "iceberg_cdc_rows_upserted_total{table=\"db.orders\"} 2",
            "iceberg_cdc_rows_deleted_total{table=\"db.orders\"} 1",
            "iceberg_cdc_key_index_keys{table=\"db.orders\"} 7",
            "iceberg_cdc_commit_duration_seconds_count{table=\"db.orders\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(text.contains("iceberg_cdc_seconds_since_last_commit{table=\"db.orders\"}"));
        assert!(text.contains("\nprocess_resident_memory_bytes "));
        assert!(text.ends_with("# EOF\n"));
        let doc = m.fluvio_document("debezium-cdc");
        assert_eq!(doc["consumer"]["records"], 3);
        assert_eq!(doc["consumer"]["bytes"], 300);
    }
}
