//! Error paths: the key service refusing or failing, ciphertext tampered
//! with at rest, an upstream that fails or answers with the wrong thing,
//! and the error documents themselves.

use std::sync::atomic::Ordering;

use super::harness::*;
use crate::format::{HEADER_LEN, MAGIC};
use crate::testing::s3::Fault;

const META_WRAPPED_KEY: &str = "x-amz-meta-cloudtaser-key";
const META_TRANSIT_KEY: &str = "x-amz-meta-cloudtaser-transit-key";
const META_SALT: &str = "x-amz-meta-cloudtaser-salt";
const SEALED_SEGMENT: usize = (1 << 16) + 16;

#[tokio::test]
async fn a_wrapped_key_vault_refuses_is_kms_access_denied_without_vaults_words() {
    let mut h = Harness::new();
    let data = plaintext(1000, 40);
    h.put("k", &data).await.expect(200);
    h.s3.tamper(BUCKET, "k", |o| {
        o.meta.insert(META_WRAPPED_KEY, "vault:v1:AAAAAAAAAAE=".parse().unwrap());
    });
    h.restart();
    let r = h.get("k").await;
    r.expect_error(403, "KMS.AccessDeniedException");
    assert!(!r.text().contains("authentication failed") && !r.text().contains("vault:v1"), "{}", r.text());
    assert!(h.vault.count("/decrypt/") >= 1, "{:?}", h.vault.calls());
    h.get_with("k", &[("range", "bytes=0-1")]).await.expect_error(403, "KMS.AccessDeniedException");
    // A Transit key the proxy is not configured for is refused without asking Vault.
    h.s3.tamper(BUCKET, "k", |o| {
        o.meta.insert(META_TRANSIT_KEY, "someone-elses".parse().unwrap());
    });
    let calls = h.vault.calls().len();
    h.get("k").await.expect_error(403, "KMS.AccessDeniedException");
    assert_eq!(h.vault.calls().len(), calls);
}

#[tokio::test]
async fn a_key_version_below_min_decryption_version_is_refused_with_a_fixed_sentence() {
    let mut h = Harness::new();
    h.put("old", b"old data").await.expect(200);
    h.vault.min_decryption_version.store(2, Ordering::Relaxed);
    h.restart();
    let r = h.get("old").await;
    r.expect_error(403, "KMS.AccessDeniedException");
    assert!(r.text().contains("min_decryption_version"), "{}", r.text());
}

#[tokio::test]
async fn with_vault_down_nothing_is_written_upstream() {
    let h = Harness::new();
    h.vault.transit_status.store(503, Ordering::Relaxed);
    let data = plaintext(5000, 41);
    h.put("k", &data).await.expect_error(503, "ServiceUnavailable");
    h.send(chunked(client("PUT", &object_uri("c")), &data, 1000, None)).await.expect_error(503, "ServiceUnavailable");
    let create = h.send(no_body(client("POST", &format!("{}?uploads", object_uri("m"))))).await;
    create.expect_error(503, "ServiceUnavailable");
    assert!(h.upstream().is_empty(), "{:?}", h.upstream().iter().map(|r| r.line()).collect::<Vec<_>>());
    assert!(h.s3.objects(BUCKET).is_empty());
    h.vault.transit_status.store(429, Ordering::Relaxed);
    h.put("k", &data).await.expect_error(503, "SlowDown");
    assert!(h.upstream().is_empty());
    h.vault.transit_status.store(0, Ordering::Relaxed);
    h.put("k", &data).await.expect(200);
}

#[tokio::test]
async fn with_vault_down_reads_and_parts_fail_before_any_object_byte() {
    let mut h = Harness::new();
    let data = plaintext(5000, 42);
    h.put("k", &data).await.expect(200);
    let upload = h.create_upload("m").await;
    h.restart();
    h.vault.transit_status.store(503, Ordering::Relaxed);
    let r = h.get("k").await;
    r.expect_error(503, "ServiceUnavailable");
    assert!(!contains(&r.body, &data[..16]) && !contains(&r.body, &MAGIC));
    h.get_with("k", &[("range", "bytes=10-20")]).await.expect_error(503, "ServiceUnavailable");
    h.upload_part("m", &upload, 1, &data).await.expect_error(503, "ServiceUnavailable");
    assert!(!h.upstream().iter().any(|r| r.has_query("partNumber")));
    // HEAD verifies the envelope MAC, which needs the data key (format 3).
    h.head("k").await.expect(503);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_a_new_login_and_the_request_succeeds() {
    let mut h = Harness::new();
    let (a, b) = (plaintext(3000, 43), plaintext(3000, 44));
    h.put("a", &a).await.expect(200);
    h.put("b", &b).await.expect(200);
    assert_eq!(h.vault.logins(), 1);
    h.restart();
    assert_eq!(h.get("a").await.expect(200).body, a);
    assert_eq!(h.vault.logins(), 2);
    h.vault.revoke_all_tokens();
    assert_eq!(h.get("b").await.expect(200).body, b);
    assert_eq!(h.vault.logins(), 3, "one new login after the refusal");
    h.vault.revoke_all_tokens();
    h.put("c", b"after a revocation").await.expect(200);
    assert_eq!(h.vault.logins(), 4);
}

#[tokio::test]
async fn ciphertext_tampered_in_the_first_segment_is_an_internal_error_and_no_plaintext() {
    let h = Harness::new();
    let data = plaintext(150_000, 45);
    h.put("k", &data).await.expect(200);
    h.s3.tamper(BUCKET, "k", |o| {
        let mut body = o.body.to_vec();
        body[HEADER_LEN + 10] ^= 1;
        o.body = body.into();
    });
    let r = h.get("k").await;
    r.expect_error(500, "InternalError");
    assert!(!contains(&r.body, &data[..16]), "{}", r.text());
    h.get_with("k", &[("range", "bytes=0-99")]).await.expect_error(500, "InternalError");
    // Ranges in untouched segments still read.
    let r = h.get_with("k", &[("range", "bytes=70000-70099")]).await;
    assert_eq!(r.expect(206).body, &data[70_000..70_100]);
}

#[tokio::test]
async fn ciphertext_tampered_later_stops_the_body_before_the_bad_segment() {
    let h = Harness::new();
    let data = plaintext(200_000, 46);
    h.put("k", &data).await.expect(200);
    h.s3.tamper(BUCKET, "k", |o| {
        let mut body = o.body.to_vec();
        body[HEADER_LEN + SEALED_SEGMENT + 5] ^= 0x80;
        o.body = body.into();
    });
    let (status, received, error) = h.send_streaming(no_body(client("GET", &object_uri("k")))).await;
    assert_eq!(status, 200, "the first segment verified, so the answer had begun");
    assert!(error.is_some(), "the body must fail, not end short and clean");
    assert!(received.len() <= 1 << 16, "{} bytes served", received.len());
    assert_eq!(received, &data[..received.len()], "only verified plaintext was served");
    let r = h.get_with("k", &[("range", "bytes=65536-65600")]).await;
    r.expect_error(500, "InternalError");
}

#[tokio::test]
async fn a_truncated_or_relabelled_object_is_refused_before_a_byte() {
    let h = Harness::new();
    let (a, b) = (plaintext(9000, 47), plaintext(9000, 48));
    h.put("a", &a).await.expect(200);
    h.put("b", &b).await.expect(200);
    h.put("t", &a).await.expect(200);
    h.s3.tamper(BUCKET, "t", |o| o.body = o.body.slice(..o.body.len() - 1));
    h.get("t").await.expect_error(500, "InternalError");
    h.head("t").await.expect(500);
    h.get_with("t", &[("range", "bytes=0-9")]).await.expect_error(500, "InternalError");
    // b's body under a's envelope: same key, other salt.
    let envelope = h.s3.object(BUCKET, "a").unwrap().meta;
    h.s3.tamper(BUCKET, "b", |o| o.meta = envelope.clone());
    let r = h.get("b").await;
    r.expect_error(500, "InternalError");
    assert!(!contains(&r.body, &b[..16]) && !contains(&r.body, &a[..16]));
    // A broken envelope (the key gone, the rest there).
    h.s3.tamper(BUCKET, "a", |o| {
        o.meta.remove(META_WRAPPED_KEY);
    });
    h.get("a").await.expect_error(500, "InternalError");
    h.s3.tamper(BUCKET, "b", |o| {
        o.meta.remove(META_SALT);
        o.meta.insert(META_WRAPPED_KEY, "vault:v1:AAAAAAAAAAA=".parse().unwrap());
    });
    h.get("b").await.expect(500);
}

#[tokio::test]
async fn an_upstream_answering_a_control_request_with_an_object_is_a_bad_gateway() {
    let h = Harness::new();
    let data = plaintext(2000, 49);
    h.put("k", &data).await.expect(200);
    let stored = h.stored("k");
    let object = stored.clone();
    h.s3.set_hook(move |r| {
        (r.method == "GET" && r.has_query("list-type")).then(|| Fault::Answer {
            status: 200,
            headers: vec![],
            body: object.clone(),
        })
    });
    let r = h.send(no_body(client("GET", &format!("/{BUCKET}?list-type=2")))).await;
    r.expect_error(502, "BadGateway");
    assert!(!contains(&r.body, &stored[..32]));
    // Or with the envelope in its headers (it ran a GetObject).
    let meta = h.s3.object(BUCKET, "k").unwrap().meta;
    let wrapped = meta[META_WRAPPED_KEY].to_str().unwrap().to_owned();
    h.s3.set_hook(move |r| {
        r.has_query("tagging").then(|| Fault::Answer {
            status: 200,
            headers: vec![(META_WRAPPED_KEY, wrapped.clone())],
            body: "<Tagging><TagSet/></Tagging>".into(),
        })
    });
    let r = h.send(no_body(client("GET", &format!("{}?tagging", object_uri("k"))))).await;
    r.expect_error(502, "BadGateway");
    assert!(!r.text().contains("vault:"));
    assert!(r.headers.keys().all(|k| !k.as_str().starts_with("x-amz-meta-cloudtaser")));
}

#[tokio::test]
async fn upstream_failures_are_passed_on_or_a_bad_gateway() {
    let h = Harness::new();
    let data = plaintext(2000, 50);
    h.put("k", &data).await.expect(200);
    h.s3.set_hook(|_| Some(Fault::Disconnect));
    h.get("k").await.expect_error(502, "BadGateway");
    h.put("new", &data).await.expect_error(502, "BadGateway");
    h.head("k").await.expect(502);
    h.s3.set_hook(|r| {
        (r.method == "GET" || r.method == "PUT").then(|| Fault::Answer {
            status: 503,
            headers: vec![("content-type", "application/xml".into())],
            body: "<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>".into(),
        })
    });
    h.get("k").await.expect_error(503, "SlowDown");
    h.put("new", &data).await.expect_error(503, "SlowDown");
    h.s3.clear_hook();
    assert!(h.s3.object(BUCKET, "new").is_none());
    assert_eq!(h.get("k").await.expect(200).body, data);
}

#[tokio::test]
async fn an_upstream_document_that_does_not_parse_is_the_proxys_failure_not_the_clients() {
    let h = Harness::new();
    h.s3.set_hook(|r| {
        (r.method == "POST" && r.has_query("uploads")).then(|| Fault::Answer {
            status: 200,
            headers: vec![("content-type", "application/xml".into())],
            body: "<InitiateMultipartUploadResult><UploadId>x</Bucket>".into(),
        })
    });
    let r = h.send(no_body(client("POST", &format!("{}?uploads", object_uri("mp"))))).await;
    r.expect_error(500, "InternalError");
    assert!(!r.text().contains("not well-formed"), "the workload's XML was fine: {}", r.text());
}

#[tokio::test]
async fn error_documents_name_the_resource_and_the_request_id() {
    let h = Harness::new();
    h.s3.set_hook(|_| Some(Fault::Disconnect));
    let r = h.get("dir/k").await;
    r.expect_error(502, "BadGateway");
    assert_eq!(r.xml(b"Resource"), vec![format!("/{BUCKET}/dir/k")]);
    assert_eq!(r.xml(b"RequestId"), vec![r.header("x-amz-request-id").to_owned()]);
    assert_eq!(r.header("content-length"), r.body.len().to_string());
    assert!(r.text().starts_with("<?xml"), "{}", r.text());
    // Refused at admission: the same shape.
    let put = client("PUT", &object_uri("dir/k")).header("x-amz-meta-cloudtaser-key", "x");
    let r = h.send(with_body(put, b"x")).await;
    r.expect_error(400, "InvalidArgument");
    assert_eq!(r.xml(b"Resource"), vec![format!("/{BUCKET}/dir/k")]);
    assert_eq!(r.xml(b"RequestId"), vec![r.header("x-amz-request-id").to_owned()]);
    assert_eq!(r.header("x-amz-request-id").len(), 16);
    let head = h.head("dir/k").await;
    assert_eq!((head.status.as_u16(), head.body.len(), head.header("content-length")), (502, 0, "0"));
}

#[tokio::test]
async fn workload_credentials_never_reach_the_upstream() {
    let h = Harness::new();
    let data = plaintext(70_000, 51);
    let put = client("PUT", &object_uri("k")).header("x-amz-security-token", "WORKLOAD-SESSION-TOKEN");
    h.send(with_body(put, &data)).await.expect(200);
    h.get("k").await.expect(200);
    h.get_with("k", &[("range", "bytes=5-10")]).await.expect(206);
    h.head("k").await.expect(200);
    h.multipart("m", &[&data]).await.expect(200);
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
        .replace(['-', ':'], "");
    let now = format!("{}Z", &now[..15]);
    let presigned = format!(
        "{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={WORKLOAD_KEY}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={now}&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature={WORKLOAD_SIGNATURE}&X-Amz-Security-Token=WORKLOAD-SESSION-TOKEN",
        object_uri("k")
    );
    let r = h.send(no_body(http::Request::get(presigned).header("host", "127.0.0.1:8080"))).await;
    assert_eq!(r.expect(200).body, data);
    let expired = format!(
        "{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={WORKLOAD_KEY}%2Fx&X-Amz-Date=20200101T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
        object_uri("k")
    );
    h.send(no_body(http::Request::get(expired).header("host", "127.0.0.1:8080")))
        .await
        .expect_error(403, "AccessDenied");
    let requests = h.upstream();
    assert!(requests.len() > 8);
    for r in &requests {
        assert_no_workload_credentials(r);
        assert!(!r.headers.contains_key("x-amz-security-token"), "{}", r.line());
        assert!(
            r.query.iter().all(|(k, v)| !k.to_ascii_lowercase().starts_with("x-amz-") && !v.contains(WORKLOAD_KEY)),
            "{}",
            r.line()
        );
    }
    assert_sealed(&h, &data);
}

/// A request body that records whether it was read to its end.
struct Watched {
    inner: http_body_util::Full<bytes::Bytes>,
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            self.ended.store(true, Ordering::SeqCst);
        }
        polled
    }
}

#[tokio::test]
async fn a_handler_that_fails_before_reading_a_small_body_reads_it_before_answering() {
    // With `Expect: 100-continue`, reading the body is what makes hyper send
    // `100 Continue`; an answer without it left botocore's connection out of
    // step with the server (its next request arrived as `ELETE`).
    let h = Harness::new();
    h.create_upload("fx").await;
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (parts, body) =
        with_body(client("PUT", &format!("{}?partNumber=1&uploadId=1~Up.foreign", object_uri("fx"))), b"x")
            .into_parts();
    let req = http::Request::from_parts(parts, Watched { inner: body, ended: ended.clone() });
    let resp = h.proxy.handle(req).await;
    assert_eq!(resp.status(), 404);
    assert!(ended.load(Ordering::SeqCst), "the unread body was left for the connection");
}
