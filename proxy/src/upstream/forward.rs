//! Step 5: send the signed request to the upstream and hand back its
//! response. `Forwarder` is the real [`Transport`]: hyper's pooled client.
//! The addressing (`UpstreamAddress`) is pure and shared with every transport.

use std::time::Duration;

use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::body::{BoxError, ProxyBody};
use crate::error::{ArgumentError, InternalError, ProxyError, UpstreamTimeout};
use crate::upstream::Upstream;

/// Sends a signed request and hands back the response, its body boxed so
/// that the handlers above do not depend on hyper's connection types. The
/// proxy uses [`Forwarder`]; in-process tests use an in-memory S3.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, req: http::Request<ProxyBody>) -> BoxFuture<'static, Result<http::Response<ProxyBody>, BoxError>>;
}

/// Everything but RFC 3986 unreserved characters, as SigV4 requires.
const S3_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A key percent-encoded as S3 expects it in a path or `x-amz-copy-source`.
pub fn encode_key(key: &str) -> String {
    key.split('/').map(|seg| utf8_percent_encode(seg, S3_ENCODE).to_string()).collect::<Vec<_>>().join("/")
}

/// How long the upstream may take: without a bound, a stalled upstream
/// holds the client's connection slot (and an admin tool) for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// To accept a TCP connection.
    pub connect: Duration,
    /// From sending a request (connecting included) to its response head.
    /// The response body is not covered: objects stream for as long as
    /// they take, and S3 sends the head of a slow CompleteMultipartUpload
    /// or CopyObject early, keeping the connection alive with spaces.
    pub response_head: Duration,
}

/// hyper's pooled HTTP/1 client over rustls (or plain TCP for `http://`).
pub struct Forwarder {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>,
    timeouts: UpstreamTimeouts,
}

impl Transport for Forwarder {
    fn send(&self, req: http::Request<ProxyBody>) -> BoxFuture<'static, Result<http::Response<ProxyBody>, BoxError>> {
        let sent = self.client.request(req);
        let UpstreamTimeouts { connect, response_head } = self.timeouts;
        Box::pin(async move {
            // Dropping the request on a timeout closes its connection.
            let resp = match tokio::time::timeout(response_head, sent).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) if e.is_connect() && timed_out(&e) => return Err(UpstreamTimeout::Connect(connect).into()),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(UpstreamTimeout::ResponseHead(response_head).into()),
            };
            Ok(resp.map(|body| body.map_err(BoxError::from).boxed_unsync()))
        })
    }
}

/// Whether a connect error is the connector's timeout (an `io::Error` of
/// kind `TimedOut` somewhere in its chain).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = err.source();
    }
    false
}

impl Forwarder {
    /// `buffer`: the most bytes hyper holds per connection (the server's
    /// `CONNECTION_BUFFER`, passed in so this layer does not reach up).
    pub fn new(buffer: usize, timeouts: UpstreamTimeouts) -> Result<Self, ProxyError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.connect));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(InternalError::TlsRoots)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).http1_max_buf_size(buffer).build(https);
        Ok(Self { client, timeouts })
    }
}

/// Where requests go: the upstream's scheme and authority, and the exact
/// path-style URI of a bucket, key and query.
pub struct UpstreamAddress {
    upstream: Upstream,
    authority: String,
}

impl UpstreamAddress {
    pub fn new(upstream: Upstream) -> Self {
        let authority = upstream.endpoint.authority().map(|a| a.to_string()).unwrap_or_default();
        Self { upstream, authority }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The exact upstream URI, path-style, canonically encoded so that what
    /// is signed is byte for byte what is sent.
    pub fn uri(
        &self,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(String, String)],
    ) -> Result<http::Uri, ProxyError> {
        let mut path = String::from("/");
        if let Some(b) = bucket {
            path.push_str(&utf8_percent_encode(b, S3_ENCODE).to_string());
            if let Some(k) = key {
                path.push('/');
                path.push_str(&encode_key(k));
            }
        }
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    let k = utf8_percent_encode(k, S3_ENCODE);
                    if v.is_empty() { format!("{k}=") } else { format!("{k}={}", utf8_percent_encode(v, S3_ENCODE)) }
                })
                .collect();
            path.push('?');
            path.push_str(&q.join("&"));
        }
        let scheme = self.upstream.endpoint.scheme_str().unwrap_or("https");
        format!("{scheme}://{}{path}", self.authority).parse().map_err(|e| ArgumentError::Unmappable(e).into())
    }

    pub fn host_header(&self) -> &str {
        &self.authority
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::framing::UploadIntegrity;

    fn fwd() -> UpstreamAddress {
        UpstreamAddress::new(Upstream {
            endpoint: "http://127.0.0.1:9000".parse().unwrap(),
            region: "us-east-1".into(),
            is_gcs: false,
            integrity: UploadIntegrity::Crc32cTrailer,
        })
    }

    #[tokio::test]
    async fn a_silent_upstream_times_out_at_the_response_head() {
        // Accepts, reads, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                held.push(socket);
            }
        });
        let timeouts = UpstreamTimeouts { connect: Duration::from_secs(5), response_head: Duration::from_millis(300) };
        let forwarder = Forwarder::new(64 << 10, timeouts).unwrap();
        let req = http::Request::get(format!("http://{addr}/b/k")).body(crate::body::empty()).unwrap();
        let started = std::time::Instant::now();
        let e = forwarder.send(req).await.unwrap_err();
        assert_eq!(e.downcast_ref::<UpstreamTimeout>(), Some(&UpstreamTimeout::ResponseHead(timeouts.response_head)));
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        silent.abort();
    }

    #[test]
    fn encodes_keys_and_query_canonically() {
        let uri = fwd()
            .uri(Some("b"), Some("dir/a b+c~é"), &[("prefix".into(), "x y/".into()), ("uploads".into(), String::new())])
            .unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:9000/b/dir/a%20b%2Bc~%C3%A9?prefix=x%20y%2F&uploads=");
    }
}
