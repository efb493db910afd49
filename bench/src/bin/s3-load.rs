//! The benchmark's S3 client: fast enough not to be the bottleneck. Sends
//! the same workload to whatever endpoint it is given (the upstream directly,
//! or the proxy) and prints one JSON line of results.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use clap::Parser;
use futures_util::stream::{self, StreamExt};
use http::{Method, Request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    endpoint: String,
    /// put | get | mp-put | ranged-get | range | create-bucket
    #[arg(long)]
    case: String,
    /// The upstream's key when sent directly (the proxy ignores the workload's).
    #[arg(long, default_value = "benchkey")]
    access_key: String,
    #[arg(long, default_value = "benchsecret")]
    secret_key: String,
    #[arg(long, default_value = "bench")]
    bucket: String,
    #[arg(long, default_value = "obj")]
    key: String,
    #[arg(long, default_value_t = 1 << 20)]
    size: u64,
    #[arg(long, default_value_t = 1)]
    count: usize,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 8 << 20)]
    part: u64,
    /// For `range`: the first byte of a `part`-sized range.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// For `get`: every request reads the one object `key`.
    #[arg(long)]
    same: bool,
}

struct Reply {
    status: u16,
    len: u64,
    body: Bytes,
    etag: String,
}

struct Bench {
    client: Client<HttpConnector, Body>,
    args: Args,
    chunk: Bytes,
}

fn body_of(len: u64, chunk: &Bytes) -> Body {
    let chunk = chunk.clone();
    let n = len.div_ceil(chunk.len() as u64);
    let frames = stream::iter((0..n).map(move |i| {
        let take = (len - i * chunk.len() as u64).min(chunk.len() as u64) as usize;
        Ok::<_, std::convert::Infallible>(Frame::data(chunk.slice(..take)))
    }));
    StreamBody::new(frames).boxed_unsync()
}

impl Bench {
    async fn send(&self, method: Method, path_query: &str, headers: &[(&str, String)], body: Body) -> Reply {
        let uri = format!("{}{}", self.args.endpoint, path_query);
        let mut req = Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut req = req.body(body).expect("request");
        let identity: Identity =
            Credentials::new(&self.args.access_key, &self.args.secret_key, None, None, "bench").into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let header_pairs: Vec<(String, String)> =
            req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            &uri,
            header_pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::UnsignedPayload,
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut req);
        let resp = self.client.request(req).await.expect("request sent");
        let status = resp.status().as_u16();
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let keep = matches!(self.args.case.as_str(), "mp-put") || status >= 300;
        let mut body = resp.into_body();
        let mut n = 0u64;
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body").into_data() {
                n += data.len() as u64;
                if keep {
                    kept.extend_from_slice(&data);
                }
            }
        }
        Reply { status, len: n, body: Bytes::from(kept), etag }
    }

    fn path(&self, suffix: &str) -> String {
        format!("/{}/{}{}", self.args.bucket, self.args.key, suffix)
    }

    async fn put(&self, i: usize) -> u64 {
        let len = self.args.size;
        let Reply { status, body, .. } = self
            .send(
                Method::PUT,
                &self.path(&format!("-{i}")),
                &[("content-length", len.to_string())],
                body_of(len, &self.chunk),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        len
    }

    async fn get(&self, i: usize) -> u64 {
        let path = if self.args.same { self.path("") } else { self.path(&format!("-{i}")) };
        let Reply { status, len: n, .. } = self.send(Method::GET, &path, &[], Empty::new().boxed_unsync()).await;
        assert_eq!(status, 200);
        n
    }

    async fn range(&self, first: u64, last: u64) -> u64 {
        let Reply { status, len: n, .. } = self
            .send(
                Method::GET,
                &self.path(""),
                &[("range", format!("bytes={first}-{last}"))],
                Empty::new().boxed_unsync(),
            )
            .await;
        assert_eq!(status, 206);
        n
    }

    async fn multipart_put(self: &Arc<Self>) -> u64 {
        let Reply { status, body: xml, .. } = self
            .send(
                Method::POST,
                &format!("{}?uploads", self.path("")),
                &[("content-length", "0".into())],
                Empty::new().boxed_unsync(),
            )
            .await;
        assert_eq!(status, 200);
        let xml = String::from_utf8_lossy(&xml).into_owned();
        let id =
            xml.split("<UploadId>").nth(1).and_then(|r| r.split("</UploadId>").next()).expect("upload id").to_owned();
        let parts = self.args.size.div_ceil(self.args.part);
        let mut numbers: Vec<(u64, String)> = stream::iter(0..parts)
            .map(|p| {
                let me = self.clone();
                let id = id.clone();
                async move {
                    let len = (me.args.size - p * me.args.part).min(me.args.part);
                    let q = format!("{}?partNumber={}&uploadId={}", me.path(""), p + 1, id);
                    let reply =
                        me.send(Method::PUT, &q, &[("content-length", len.to_string())], body_of(len, &me.chunk)).await;
                    assert_eq!(reply.status, 200);
                    (p + 1, reply.etag)
                }
            })
            .buffer_unordered(self.args.concurrency)
            .collect()
            .await;
        numbers.sort();
        let doc: String = numbers
            .iter()
            .map(|(n, etag)| format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"))
            .collect();
        let doc = format!("<CompleteMultipartUpload>{doc}</CompleteMultipartUpload>");
        let len = doc.len();
        let Reply { status, body, .. } = self
            .send(
                Method::POST,
                &format!("{}?uploadId={id}", self.path("")),
                &[("content-length", len.to_string())],
                body_of(len as u64, &Bytes::from(doc)),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        self.args.size
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
    let chunk = Bytes::from((0..(1u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect::<Vec<u8>>());
    let bench = Arc::new(Bench { client, args: args.clone(), chunk });
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::new();
    let bytes: u64 = match args.case.as_str() {
        "put" | "get" => {
            let results: Vec<(u64, Duration)> = stream::iter(0..args.count)
                .map(|i| {
                    let b = bench.clone();
                    async move {
                        let t = Instant::now();
                        let n = if b.args.case == "put" { b.put(i).await } else { b.get(i).await };
                        (n, t.elapsed())
                    }
                })
                .buffer_unordered(args.concurrency)
                .collect()
                .await;
            latencies = results.iter().map(|(_, d)| *d).collect();
            results.iter().map(|(n, _)| n).sum()
        }
        "mp-put" => bench.multipart_put().await,
        "ranged-get" => {
            let parts = args.size.div_ceil(args.part);
            let sizes: Vec<u64> = stream::iter(0..parts)
                .map(|p| {
                    let b = bench.clone();
                    async move { b.range(p * b.args.part, ((p + 1) * b.args.part).min(b.args.size) - 1).await }
                })
                .buffer_unordered(args.concurrency)
                .collect()
                .await;
            sizes.iter().sum()
        }
        "range" => bench.range(args.offset, args.offset + args.part - 1).await,
        "create-bucket" => {
            let path = format!("/{}", args.bucket);
            let Reply { status, body, .. } =
                bench.send(Method::PUT, &path, &[("content-length", "0".into())], Empty::new().boxed_unsync()).await;
            assert!(status == 200 || status == 409, "{status}: {}", String::from_utf8_lossy(&body));
            0
        }
        other => panic!("unknown case {other}"),
    };
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({"case": args.case, "bytes": bytes, "seconds": seconds, "ops": args.count,
                           "p50_ms": pct(0.50), "p99_ms": pct(0.99)})
    );
}
