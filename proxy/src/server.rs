//! The listeners: the S3 API on one port, health probes on another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{ProxyBody, full};
use crate::keys::KeyService;
use crate::keys::health::VaultHealth;
use crate::metrics::metrics;
use crate::request::RequestPath;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Read and write buffer bound per connection, each way. hyper's default
/// (about 400 KiB) let 64 concurrent downloads reach 170 MiB; two
/// segments' worth keeps throughput and bounds memory per transfer.
pub const CONNECTION_BUFFER: usize = 256 << 10;

/// How many connections a listener holds at once, and how long a client
/// may take to send its request headers.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// A client slow to send its headers is dropped after this long.
pub const S3_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Probes are tiny and sent at once: a client slower than this is not a
/// kubelet. Short, because the health port is on the pod network: with 5 s,
/// 24 idle connections against 16 slots failed most liveness probes.
pub const HEALTH_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest pause between accept retries after a resource error.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The next connection, once the listener has a free slot. A failed accept
/// never ends the listener: errors about one connection are skipped, and
/// resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) back off and retry, so
/// a descriptor shortage passes instead of killing the process.
async fn accept(listener: &TcpListener, slots: &Arc<Semaphore>) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let permit = slots.clone().acquire_owned().await.expect("the connection semaphore is never closed");
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, permit),
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Errors that concern only the connection being accepted.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock)
}

pub async fn serve_s3(
    listener: TcpListener,
    path: Arc<RequestPath>,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, permit) = tokio::select! {
            accepted = accept(&listener, &slots) => accepted,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        metrics().connection_opened();
        let path = path.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let path = path.clone();
            async move { Ok::<_, std::convert::Infallible>(path.handle(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(CONNECTION_BUFFER)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            metrics().connection_closed();
            drop(permit);
        });
    }
    tracing::info!("draining in-flight requests");
    // Seals run as their own tasks (a client that went away does not stop
    // one): the drain waits for them too, or the process would exit with
    // objects left pending and copy uploads open.
    let drained = async {
        graceful.shutdown().await;
        path.seals().idle().await;
    };
    tokio::select! {
        () = drained => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!(seals_running = path.seals().running(), "drain timed out")
        }
    }
    Ok(())
}

/// `/healthz`: the process serves. `/readyz`: see `readiness`.
pub async fn serve_health(listener: TcpListener, keys: Arc<KeyService>, limits: ListenerLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, _, permit) = accept(&listener, &slots).await;
        let keys = keys.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let keys = keys.clone();
            async move {
                let resp = if req.uri().path() == "/metrics" && matches!(*req.method(), Method::GET | Method::HEAD) {
                    metrics_response()
                } else {
                    health(req.method(), req.uri().path(), keys.health())
                };
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
}

/// Readiness reads the cached Vault state and never calls Vault.
///
/// Not ready until Vault has answered once since start: the native sidecar's
/// startup probe holds the workload back until the proxy can encrypt. After
/// that the proxy stays ready through Vault outages and reports them in the
/// body (and in its log): readiness gates a pod's Service endpoints, and a
/// short Vault blip must not take every injected application out of its
/// Services, including the requests that never touch S3 (docs/OPERATIONS.md).
fn readiness(health: &VaultHealth) -> (StatusCode, &'static str) {
    match (health.ever_reached(), health.is_reachable()) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: vault unreachable"),
        (true, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::OK, "ready (degraded: vault unreachable)"),
    }
}

fn metrics_response() -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::from(metrics().encode())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

fn health(method: &Method, path: &str, vault: &VaultHealth) -> Response<ProxyBody> {
    let (status, text) = match (method, path) {
        (&Method::GET | &Method::HEAD, "/healthz") => (StatusCode::OK, "ok"),
        (&Method::GET | &Method::HEAD, "/readyz") => readiness(vault),
        (_, "/healthz" | "/readyz") => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => (StatusCode::NOT_FOUND, "not found"),
    };
    let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from_static(text.as_bytes()) };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
    }
    resp
}

/// Connections the kernel completes and queues while the proxy is at its
/// connection cap or out of descriptors. std's default of 128 turned a
/// burst of 600 connections into client-side connect timeouts here.
const ACCEPT_BACKLOG: u32 = 1024;

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_cached_and_survives_outages_after_start() {
        let h = VaultHealth::default();
        assert_eq!(readiness(&h).0, StatusCode::SERVICE_UNAVAILABLE);
        let _ = h.observe(Ok::<_, crate::keys::VaultError>(()));
        assert_eq!(readiness(&h), (StatusCode::OK, "ready"));
        let _ = h.observe::<()>(Err(crate::keys::VaultError::Unreachable("Vault's own text".into())));
        let (status, text) = readiness(&h);
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("vault unreachable") && !text.contains("own text"));
    }

    #[test]
    fn probes_answer_get_and_head_only() {
        let h = VaultHealth::default();
        assert_eq!(health(&Method::GET, "/healthz", &h).status(), StatusCode::OK);
        assert_eq!(health(&Method::HEAD, "/healthz", &h).status(), StatusCode::OK);
        let post = health(&Method::POST, "/readyz", &h);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[http::header::ALLOW], "GET, HEAD");
        assert_eq!(health(&Method::GET, "/other", &h).status(), StatusCode::NOT_FOUND);
    }
}
