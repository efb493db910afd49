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

use super::admission::{Admission, Route, to_wire};
use super::notify::{Notifier, Origin, event_for};
use crate::metrics::Metrics;

#[derive(Clone)]
struct Webhook {
    admission: Arc<Admission>,
    notifier: Option<Arc<Notifier>>,
}

impl Webhook {
    fn review(&self, review: AdmissionReview<DynamicObject>, route: Route) -> Json<serde_json::Value> {
        let origin = self.notifier.as_ref().and_then(|_| Origin::of(&review));
        let answer = self.admission.review_routed(review, route);
        if let (Some(notifier), Some(origin)) = (&self.notifier, origin)
            && let Some(event) = answer.response.as_ref().and_then(event_for)
        {
            let notifier = notifier.clone();
            tokio::spawn(async move { notifier.publish(origin, event).await });
        }
        Json(to_wire(&answer))
    }
}

async fn mutate(
    State(w): State<Webhook>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<serde_json::Value> {
    w.review(review, Route::Pod)
}

async fn mutate_namespace(
    State(w): State<Webhook>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<serde_json::Value> {
    w.review(review, Route::Namespace)
}

/// `/mutate` for annotated pods, `/mutate-namespace` for the pods of
/// enabled namespaces (the chart's two webhooks).
pub fn webhook_router(admission: Arc<Admission>) -> Router {
    webhook_router_with_events(admission, None)
}

/// As [`webhook_router`], and denials and warnings become events on the
/// pod's workload (the operator; tests without an API server pass `None`).
pub fn webhook_router_with_events(admission: Arc<Admission>, notifier: Option<Arc<Notifier>>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/mutate-namespace", post(mutate_namespace))
        .with_state(Webhook { admission, notifier })
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
