//! A plain forwarding proxy, for reference only (issue 15): what any S3
//! proxy on this path costs before encryption. It does what the real proxy
//! does to a request except the cryptography: hyper server and client on
//! one worker thread, `TCP_NODELAY`, the same 256 KiB connection buffers,
//! the workload's signature stripped (`strip_workload_auth`) and the request
//! re-signed with SigV4 through aws-sigv4. Bodies stream through untouched
//! in both directions; an upload is signed `UNSIGNED-PAYLOAD`, as the bench
//! client sends it.
//!
//! Usage: forward-baseline <listen port> <upstream URL> <access key> <secret key>

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use cloudtaser_s3proxy::server::CONNECTION_BUFFER;
use cloudtaser_s3proxy::upstream::sign::strip_workload_auth;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

struct Forward {
    client: Client<HttpConnector, Incoming>,
    upstream: http::Uri,
    authority: String,
    identity: Identity,
}

impl Forward {
    async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
        let (mut parts, body) = req.into_parts();
        let payload = parts
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.starts_with("STREAMING-UNSIGNED"))
            .unwrap_or("UNSIGNED-PAYLOAD")
            .to_owned();
        strip_workload_auth(&mut parts.headers);
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let scheme = self.upstream.scheme_str().unwrap_or("http");
        parts.uri = format!("{scheme}://{}{path}", self.authority).parse()?;
        parts.headers.insert(http::header::HOST, HeaderValue::from_str(&self.authority)?);
        let mut req = Request::from_parts(parts, body);
        self.sign(&mut req, &payload)?;
        let resp = self.client.request(req).await?;
        Ok(resp.map(|b| b.map_err(BoxError::from).boxed()))
    }

    /// The proxy's signing settings (proxy/src/request/sign.rs).
    fn sign(&self, req: &mut Request<Incoming>, payload: &str) -> Result<(), BoxError> {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let uri = req.uri().to_string();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| v.to_str().map(|v| (k.as_str(), v)))
            .collect::<Result<Vec<(&str, &str)>, http::header::ToStrError>>()?;
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            headers.into_iter(),
            SignableBody::Precomputed(payload.to_owned()),
        )
        .map_err(|e| e.to_string())?;
        // Errors as text: aws-sigv4's borrow the request, which a spawned task cannot hold.
        let (instructions, _) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(args.len(), 5, "usage: forward-baseline <listen port> <upstream URL> <access key> <secret key>");
    let port: u16 = args[1].parse().expect("listen port");
    let upstream: http::Uri = args[2].parse().expect("upstream URL");
    let authority = upstream.authority().expect("upstream host").to_string();
    let identity: Identity = Credentials::new(&args[3], &args[4], None, None, "baseline").into();
    // One worker thread, as the proxy runs by default.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).http1_max_buf_size(CONNECTION_BUFFER).build(http);
        let forward = Arc::new(Forward { client, upstream, authority, identity });
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let forward = forward.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let forward = forward.clone();
                    // An infallible service: a BoxError here trips a rustc
                    // higher-ranked lifetime limitation in hyper's bounds.
                    async move {
                        Ok::<_, std::convert::Infallible>(forward.handle(req).await.unwrap_or_else(|e| {
                            let body = http_body_util::Full::new(Bytes::from(e.to_string()));
                            let mut resp = Response::new(body.map_err(|never| match never {}).boxed());
                            *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
                            resp
                        }))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(CONNECTION_BUFFER)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
