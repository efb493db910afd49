//! The listeners: the S3 API on one port, health probes on another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::body::{ProxyBody, full};
use crate::keys::KeyService;
use crate::request::RequestPath;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Read and write buffer bound per connection, each way. hyper's default
/// (about 400 KiB) let 64 concurrent downloads reach 170 MiB; two
/// segments' worth keeps throughput and bounds memory per transfer.
pub const CONNECTION_BUFFER: usize = 256 << 10;

pub async fn serve_s3(
    listener: TcpListener,
    path: Arc<RequestPath>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let path = path.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let path = path.clone();
            async move { Ok::<_, std::convert::Infallible>(path.handle(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(CONNECTION_BUFFER)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain timed out"),
    }
    Ok(())
}

/// `/healthz`: the process serves. `/readyz`: Vault answers with a valid token.
pub async fn serve_health(listener: TcpListener, keys: Arc<KeyService>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let keys = keys.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let keys = keys.clone();
            async move { Ok::<_, std::convert::Infallible>(health(req.uri().path(), &keys).await) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn health(path: &str, keys: &KeyService) -> Response<ProxyBody> {
    let (status, text) = match path {
        "/healthz" => (StatusCode::OK, "ok".to_owned()),
        "/readyz" => match keys.check_ready().await {
            Ok(()) => (StatusCode::OK, "ready".to_owned()),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")),
        },
        _ => (StatusCode::NOT_FOUND, "not found".to_owned()),
    };
    let mut resp = Response::new(full(text.into()));
    *resp.status_mut() = status;
    resp
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
