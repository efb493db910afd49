//! A `RequestPath` on an in-memory Vault and an in-memory S3, and requests
//! shaped as SDK clients send them (SigV4 with the workload's key id,
//! `x-amz-content-sha256`, aws-chunked bodies with a checksum trailer).

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use md5::Digest as _;

use crate::credentials::CredentialSource;
use crate::keys::{AuthMethod, KeyService, Secret, Session, TransitClient, VaultHttp};
use crate::request::RequestPath;
use crate::request::policy::PlaintextReadPolicy;
use crate::stream::framing::UploadIntegrity;
use crate::testing::s3::{FakeS3, PROXY_ACCESS_KEY, Recorded};
use crate::testing::vault::FakeVault;
use crate::upstream::sign::Signer;
use crate::upstream::{Upstream, UpstreamClient};

/// The workload's access key id; it must never reach the upstream.
pub const WORKLOAD_KEY: &str = "AKIAWORKLOADKEY00001";
pub const WORKLOAD_SIGNATURE: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const BUCKET: &str = "bkt";
pub const TRANSIT_KEY: &str = "cloudtaser";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub struct Harness {
    pub s3: FakeS3,
    pub vault: Arc<FakeVault>,
    pub proxy: RequestPath,
}

/// A response, collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The S3 error code of an error document.
    pub fn code(&self) -> String {
        self.xml(b"Code").pop().unwrap_or_default()
    }

    pub fn xml(&self, tag: &[u8]) -> Vec<String> {
        crate::s3::xml::texts_of(&self.body, tag).unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        self
    }

    /// Status and error code, with the document on failure.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!((self.status.as_u16(), self.code().as_str()), (status, code), "{}", self.text());
        assert_eq!(self.header("content-type"), "application/xml");
        self
    }
}

/// A request path on `s3` and `vault`, as `app.rs` assembles the real one
/// (no key pool: every new data key is a Transit call).
pub fn proxy(s3: &FakeS3, vault: &Arc<FakeVault>, plaintext_reads: &[&str]) -> RequestPath {
    let transit = TransitClient::new(session(vault), "transit", TRANSIT_KEY);
    let keys = Arc::new(KeyService::new(transit, 1024, Duration::from_secs(300)));
    let credentials = Credentials::new(PROXY_ACCESS_KEY, "proxy-secret-key", None, None, "test");
    let credentials = Arc::new(CredentialSource::new(SharedCredentialsProvider::new(credentials)));
    let signer = Signer::new(credentials, "us-east-1".into(), false);
    let upstream = Upstream {
        endpoint: "http://s3.fake:9000".parse().unwrap(),
        region: "us-east-1".into(),
        is_gcs: false,
        integrity: UploadIntegrity::Crc32cTrailer,
    };
    let client = UpstreamClient::new(signer, upstream, Arc::new(s3.clone()));
    let allowed: Vec<String> = plaintext_reads.iter().map(|s| s.to_string()).collect();
    let plaintext = PlaintextReadPolicy::new(&allowed).unwrap();
    RequestPath::new(keys, client, plaintext, "localhost".into())
}

pub fn session(vault: &Arc<FakeVault>) -> Arc<Session> {
    let jwt = Secret::Value(zeroize::Zeroizing::new("good-jwt".into()));
    let method = AuthMethod::Kubernetes { mount: "kubernetes".into(), role: "proxy".into(), jwt };
    Session::new(VaultHttp::with_transport(vault.clone()), method)
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|p| p)
    }

    /// A harness whose request path `configure` adjusts (policy, seal method, …).
    pub fn with(configure: impl FnOnce(RequestPath) -> RequestPath) -> Self {
        Self::with_plaintext_reads(&[], configure)
    }

    pub fn with_plaintext_reads(allowed: &[&str], configure: impl FnOnce(RequestPath) -> RequestPath) -> Self {
        let s3 = FakeS3::new();
        s3.create_bucket(BUCKET);
        let vault = FakeVault::new();
        let proxy = configure(proxy(&s3, &vault, allowed));
        Self { s3, vault, proxy }
    }

    /// A new proxy on the same S3 and Vault, as after a restart: its key
    /// cache is cold, so every read unwraps its key from Vault.
    pub fn restart(&mut self) {
        self.proxy = proxy(&self.s3, &self.vault, &[]);
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = self.proxy.handle(req).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    }

    /// Like `send`, but the body may fail part-way (a failed verification):
    /// the status, the bytes received before the body ended, and its error.
    pub async fn send_streaming(&self, req: Request<Full<Bytes>>) -> (StatusCode, Vec<u8>, Option<String>) {
        let resp = self.proxy.handle(req).await;
        let (parts, mut body) = resp.into_parts();
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => received.extend_from_slice(f.data_ref().map_or(&[][..], |d| d.as_ref())),
                Err(e) => return (parts.status, received, Some(e.to_string())),
            }
        }
        (parts.status, received, None)
    }

    pub async fn put(&self, key: &str, data: &[u8]) -> Reply {
        self.send(with_body(client("PUT", &object_uri(key)), data)).await
    }

    pub async fn get(&self, key: &str) -> Reply {
        self.send(no_body(client("GET", &object_uri(key)))).await
    }

    pub async fn get_with(&self, key: &str, headers: &[(&str, &str)]) -> Reply {
        let mut b = client("GET", &object_uri(key));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(no_body(b)).await
    }

    pub async fn head(&self, key: &str) -> Reply {
        self.send(no_body(client("HEAD", &object_uri(key)))).await
    }

    /// CreateMultipartUpload; the upload id the workload sees.
    pub async fn create_upload(&self, key: &str) -> String {
        let r = self.send(no_body(client("POST", &format!("{}?uploads", object_uri(key))))).await;
        r.expect(200);
        r.xml(b"UploadId").pop().expect("UploadId")
    }

    pub async fn upload_part(&self, key: &str, upload: &str, number: u32, data: &[u8]) -> Reply {
        let uri = format!("{}?partNumber={number}&uploadId={}", object_uri(key), enc(upload));
        self.send(with_body(client("PUT", &uri), data)).await
    }

    pub async fn complete(&self, key: &str, upload: &str, parts: &[(u32, String)]) -> Reply {
        let uri = format!("{}?uploadId={}", object_uri(key), enc(upload));
        self.send(with_body(client("POST", &uri), complete_doc(parts).as_bytes())).await
    }

    /// A whole multipart upload of `parts`; the Complete reply.
    pub async fn multipart(&self, key: &str, parts: &[&[u8]]) -> Reply {
        let upload = self.create_upload(key).await;
        let mut etags = Vec::new();
        for (i, data) in parts.iter().enumerate() {
            let r = self.upload_part(key, &upload, i as u32 + 1, data).await;
            r.expect(200);
            etags.push((i as u32 + 1, r.header("etag").to_owned()));
        }
        self.complete(key, &upload, &etags).await
    }

    /// Requests that reached the upstream.
    pub fn upstream(&self) -> Vec<Recorded> {
        self.s3.requests()
    }

    /// The stored body of an object.
    pub fn stored(&self, key: &str) -> Bytes {
        self.s3.object(BUCKET, key).expect("stored object").body
    }
}

pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn object_uri(key: &str) -> String {
    format!("/{BUCKET}/{}", crate::testing::s3::encode_path(key))
}

pub fn complete_doc(parts: &[(u32, String)]) -> String {
    let mut doc = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (n, etag) in parts {
        doc.push_str(&format!(
            "<Part><ETag>{}</ETag><PartNumber>{n}</PartNumber></Part>",
            quick_xml::escape::escape(etag)
        ));
    }
    doc.push_str("</CompleteMultipartUpload>");
    doc
}

/// A request as an SDK signs it with the workload's credentials (the
/// signature is never checked; its key id must never reach the upstream).
pub fn client(method: &str, uri: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:8080")
        .header("x-amz-date", "20260101T000000Z")
        .header("user-agent", "aws-sdk-rust/1.0 test")
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={WORKLOAD_KEY}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={WORKLOAD_SIGNATURE}"
            ),
        )
}

pub fn no_body(b: http::request::Builder) -> Request<Full<Bytes>> {
    b.header("x-amz-content-sha256", EMPTY_SHA256).body(Full::new(Bytes::new())).unwrap()
}

/// A body signed with its SHA-256, with Content-Length (and Content-MD5,
/// as clients send on DeleteObjects).
pub fn with_body(b: http::request::Builder, data: &[u8]) -> Request<Full<Bytes>> {
    let sha = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data));
    b.header("x-amz-content-sha256", sha)
        .header("content-length", data.len())
        .header("content-md5", STANDARD.encode(md5::Md5::digest(data)))
        .body(Full::new(Bytes::copy_from_slice(data)))
        .unwrap()
}

/// The CRC32 of `data`, base64, as botocore puts it in its trailer.
pub fn crc32(data: &[u8]) -> String {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc);
    d.update(data);
    STANDARD.encode((d.finalize() as u32).to_be_bytes())
}

/// An aws-chunked body as botocore sends it (unsigned payload, CRC32
/// trailer), in chunks of `chunk` bytes; `trailer` overrides the checksum.
pub fn chunked(b: http::request::Builder, data: &[u8], chunk: usize, trailer: Option<&str>) -> Request<Full<Bytes>> {
    let mut body = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    let checksum = trailer.map(str::to_owned).unwrap_or_else(|| crc32(data));
    body.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n").as_bytes());
    b.header("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
        .header("content-encoding", "aws-chunked")
        .header("x-amz-decoded-content-length", data.len())
        .header("x-amz-trailer", "x-amz-checksum-crc32")
        .header("x-amz-sdk-checksum-algorithm", "CRC32")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Recognisable plaintext of `len` bytes that never repeats a 16-byte window
/// within the first few megabytes.
pub fn plaintext(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[i % 4] ^ seed).collect()
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no stored object and no request body that reached the
/// upstream carries a 16-byte run of `plain`, and that no workload
/// credential reached it.
#[track_caller]
pub fn assert_sealed(h: &Harness, plain: &[u8]) {
    let probe = &plain[..plain.len().min(16)];
    for (key, obj) in h.s3.objects(BUCKET) {
        assert!(obj.body.starts_with(&crate::format::MAGIC), "{key} is not a CTS3 stream");
        assert!(!contains(&obj.body, probe), "{key} holds plaintext");
    }
    for r in h.upstream() {
        assert!(!contains(&r.body, probe), "{} carried plaintext upstream", r.line());
        assert_no_workload_credentials(&r);
    }
}

#[track_caller]
pub fn assert_no_workload_credentials(r: &Recorded) {
    for (name, value) in &r.headers {
        let v = value.to_str().unwrap_or("");
        assert!(
            !v.contains(WORKLOAD_KEY) && !v.contains(WORKLOAD_SIGNATURE),
            "{name} of {} is the workload's",
            r.line()
        );
    }
    let auth = r.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(auth.contains(PROXY_ACCESS_KEY), "{} is not signed by the proxy: {auth}", r.line());
}
