//! Serves `/mutate` over HTTPS; probes and `/metrics` on a plain port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use tokio::net::TcpListener;

use super::admission::{Admission, to_wire};
use crate::metrics::Metrics;

async fn mutate(
    State(admission): State<Arc<Admission>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<serde_json::Value> {
    Json(to_wire(&admission.review(review)))
}

pub fn webhook_router(admission: Arc<Admission>) -> Router {
    Router::new().route("/mutate", post(mutate)).with_state(admission)
}

/// Accepts TLS connections and serves `router` on each.
pub async fn serve_https(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: Router) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

#[derive(Clone)]
pub struct Probes {
    pub metrics: Arc<Metrics>,
    /// Ready once the configuration cache has synced.
    pub ready: Arc<AtomicBool>,
}

pub fn probes_router(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(p): State<Probes>| async move {
                if p.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "configuration cache not synced")
                }
            }),
        )
        .route("/metrics", get(|State(p): State<Probes>| async move { p.metrics.encode() }))
        .with_state(probes)
}

pub async fn serve_http(addr: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    axum::serve(listener, router).await
}
