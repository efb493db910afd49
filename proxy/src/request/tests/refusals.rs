//! Requests refused before anything is forwarded: the classification
//! allow-list, malformed requests, reserved metadata, and the access policy.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Digest as _;

use super::harness::*;
use crate::request::policy::AccessPolicy;

/// Sends `req` and checks the refusal: status, code, and that nothing
/// reached the upstream.
async fn refused(
    h: &Harness,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
    status: u16,
    code: &str,
) -> Reply {
    let before = h.upstream().len();
    let r = h.send(req).await;
    r.expect_error(status, code);
    assert_eq!(h.upstream().len(), before, "{:?}", h.upstream().last().map(|r| r.line()));
    r
}

#[tokio::test]
async fn requests_outside_the_allow_list_are_not_implemented() {
    let h = Harness::new();
    let r =
        refused(&h, with_body(client("PUT", &format!("{}?attributes", object_uri("k"))), b"x"), 501, "NotImplemented")
            .await;
    assert!(r.text().contains("nothing was forwarded"), "{}", r.text());
    refused(&h, no_body(client("GET", &format!("{}?torrent", object_uri("k")))), 501, "NotImplemented").await;
    refused(
        &h,
        with_body(client("POST", &format!("{}?select&select-type=2", object_uri("k"))), b"<x/>"),
        501,
        "NotImplemented",
    )
    .await;
    refused(&h, no_body(client("PATCH", &object_uri("k"))), 501, "NotImplemented").await;
    let form = client("POST", &format!("/{BUCKET}")).header("content-type", "multipart/form-data; boundary=x");
    refused(&h, with_body(form, b"--x--"), 501, "NotImplemented").await;
    let append = client("PUT", &object_uri("k")).header("x-amz-write-offset-bytes", "10");
    refused(&h, with_body(append, b"more"), 501, "NotImplemented").await;
    assert!(h.s3.objects(BUCKET).is_empty());
}

#[tokio::test]
async fn malformed_requests_are_bad_requests() {
    let h = Harness::new();
    let dup = client("GET", &format!("{}?versionId=1&versionId=2", object_uri("k")));
    refused(&h, no_body(dup), 400, "InvalidArgument").await;
    refused(&h, no_body(client("GET", &format!("/{BUCKET}/a/../b"))), 400, "InvalidArgument").await;
    refused(&h, no_body(client("GET", &format!("/{BUCKET}/a%00b"))), 400, "InvalidArgument").await;
    refused(&h, no_body(client("GET", &format!("/{BUCKET}/bad%zz"))), 400, "InvalidArgument").await;
    refused(&h, no_body(client("GET", "/bad!bucket/k")), 400, "InvalidBucketName").await;
    let hint = client("PUT", &format!("{}?tagging&x-id=PutObject", object_uri("k")));
    refused(&h, with_body(hint, b"<Tagging/>"), 400, "InvalidArgument").await;
    refused(&h, no_body(client("GET", &format!("/{BUCKET}?list-type=1"))), 400, "InvalidArgument").await;
    let mut big = client("GET", &object_uri("k"));
    for i in 0..100 {
        big = big.header(format!("x-custom-{i}"), "v".repeat(80));
    }
    refused(&h, no_body(big), 400, "RequestHeaderSectionTooLarge").await;
    // A refused HEAD is answered without a body.
    let head = h.send(no_body(client("HEAD", &format!("{}?torrent", object_uri("k"))))).await;
    assert_eq!((head.status.as_u16(), head.body.len()), (501, 0));
}

#[tokio::test]
async fn reserved_envelope_metadata_is_refused_wherever_it_appears() {
    let h = Harness::new();
    let put = client("PUT", &object_uri("k")).header("x-amz-meta-cloudtaser-key", "vault:v1:forged");
    let r = refused(&h, with_body(put, b"x"), 400, "InvalidArgument").await;
    assert!(r.text().contains("x-amz-meta-cloudtaser-key"), "{}", r.text());
    let query = client("PUT", &format!("{}?x-amz-meta-cloudtaser-layout=multipart", object_uri("k")));
    refused(&h, with_body(query, b"x"), 400, "InvalidArgument").await;
    let create = client("POST", &format!("{}?uploads", object_uri("k"))).header("x-amz-meta-cloudtaser-size", "1");
    refused(&h, no_body(create), 400, "InvalidArgument").await;
    h.put("src", b"source").await.expect(200);
    let copy = client("PUT", &object_uri("k"))
        .header("x-amz-copy-source", format!("{BUCKET}/src"))
        .header("x-amz-metadata-directive", "REPLACE")
        .header("x-amz-meta-cloudtaser-wrapped-key", "vault:v1:x");
    refused(&h, no_body(copy), 400, "InvalidArgument").await;
    // Other user metadata passes.
    let ok = client("PUT", &object_uri("k")).header("x-amz-meta-cloudtaserish", "fine");
    h.send(with_body(ok, b"x")).await.expect(200);
}

#[tokio::test]
async fn the_default_policy_refuses_account_management() {
    let h = Harness::new();
    refused(&h, no_body(client("PUT", "/new-bucket")), 403, "AccessDenied").await;
    refused(&h, no_body(client("GET", "/")), 403, "AccessDenied").await;
    refused(&h, with_body(client("PUT", &format!("/{BUCKET}?policy")), b"{}"), 403, "AccessDenied").await;
    refused(&h, with_body(client("PUT", &format!("{}?acl", object_uri("k"))), b"<x/>"), 403, "AccessDenied").await;
    // An ACL set through a write's headers is an ACL write too.
    let public = client("PUT", &object_uri("k")).header("x-amz-acl", "public-read");
    refused(&h, with_body(public, b"x"), 403, "AccessDenied").await;
    let lock = client("PUT", &object_uri("k")).header("x-amz-object-lock-mode", "GOVERNANCE");
    refused(&h, with_body(lock, b"x"), 403, "AccessDenied").await;
    let private = client("PUT", &object_uri("k")).header("x-amz-acl", "private");
    h.send(with_body(private, b"x")).await.expect(200);
}

#[tokio::test]
async fn the_access_policy_scopes_operations_buckets_and_prefixes() {
    let ops = ["default".to_owned(), "-DeleteObject".to_owned()];
    let policy = AccessPolicy::new(&ops, &[format!("{BUCKET}/team-a/")]).unwrap();
    let h = Harness::with(|p| p.with_policy(policy));
    h.s3.create_bucket("other");
    h.put("team-a/x", b"mine").await.expect(200);
    let r = refused(&h, no_body(client("DELETE", &object_uri("team-a/x"))), 403, "AccessDenied").await;
    assert!(r.text().contains("CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS"), "{}", r.text());
    let r = refused(&h, with_body(client("PUT", &object_uri("team-b/x")), b"theirs"), 403, "AccessDenied").await;
    assert!(r.text().contains("CLOUDTASER_S3PROXY_BUCKETS"), "{}", r.text());
    refused(&h, with_body(client("PUT", "/other/team-a/x"), b"x"), 403, "AccessDenied").await;
    refused(&h, no_body(client("GET", &format!("/{BUCKET}?list-type=2&prefix=team-b%2F"))), 403, "AccessDenied").await;
    h.send(no_body(client("GET", &format!("/{BUCKET}?list-type=2&prefix=team-a%2F")))).await.expect(200);
    // Reading a copy source decrypts it: it must be inside the scope too.
    h.s3.put_raw(BUCKET, "team-b/secret", b"x", &[]);
    let copy = client("PUT", &object_uri("team-a/copy")).header("x-amz-copy-source", format!("{BUCKET}/team-b/secret"));
    refused(&h, no_body(copy), 403, "AccessDenied").await;
    // DeleteObjects names its keys in the body.
    let doc = "<Delete><Object><Key>team-a/x</Key></Object><Object><Key>team-b/secret</Key></Object></Delete>";
    refused(&h, with_body(client("POST", &format!("/{BUCKET}?delete")), doc.as_bytes()), 403, "AccessDenied").await;
    assert!(h.s3.object(BUCKET, "team-a/x").is_some() && h.s3.object(BUCKET, "team-b/secret").is_some());
}

#[tokio::test]
async fn delete_objects_keys_with_dot_segments_are_refused() {
    let h = Harness::new();
    h.put("a/x", b"1").await.expect(200);
    let doc = "<Delete><Object><Key>a/x</Key></Object><Object><Key>team-a/../team-b/x</Key></Object></Delete>";
    refused(&h, with_body(client("POST", &format!("/{BUCKET}?delete")), doc.as_bytes()), 400, "InvalidArgument").await;
    let doc = "<Delete><Object><Key>a/x</Key></Object></Delete";
    refused(&h, with_body(client("POST", &format!("/{BUCKET}?delete")), doc.as_bytes()), 400, "MalformedXML").await;
    assert!(h.s3.object(BUCKET, "a/x").is_some());
}

fn with_customer_key(b: http::request::Builder, key: &[u8]) -> http::request::Builder {
    b.header("x-amz-server-side-encryption-customer-algorithm", "AES256")
        .header("x-amz-server-side-encryption-customer-key", STANDARD.encode(key))
        .header("x-amz-server-side-encryption-customer-key-md5", STANDARD.encode(md5::Md5::digest(key)))
}

#[tokio::test]
async fn sse_c_multipart_uploads_carry_their_key_sealed_to_the_seal() {
    let h = Harness::new();
    let key = [7u8; 32];
    // A key S3 would not take is refused before anything is sent.
    let short = with_customer_key(client("POST", &format!("{}?uploads", object_uri("k"))), &[7u8; 16]);
    refused(&h, no_body(short), 400, "InvalidArgument").await;
    let r = h.send(no_body(with_customer_key(client("POST", &format!("{}?uploads", object_uri("k"))), &key))).await;
    r.expect(200);
    let upload = r.xml(b"UploadId").pop().unwrap();
    assert!(upload.starts_with("ctu3c."), "{upload}");
    for encoded in [STANDARD.encode(key), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)] {
        assert!(!upload.contains(&encoded[..20]), "the customer key is sealed in the id");
    }
    let data = [5u8; 3000];
    let part = format!("{}?partNumber=1&uploadId={}", object_uri("k"), enc(&upload));
    let r = h.send(with_body(with_customer_key(client("PUT", &part), &key), &data)).await;
    r.expect(200);
    let before = h.upstream().len();
    // Clients send no key at Complete: the seal takes it from the id.
    h.complete("k", &upload, &[(1, r.header("etag").to_owned())]).await.expect(200);
    let seal = &h.upstream()[before..];
    let has = |r: &crate::testing::s3::Recorded, name: &str| r.headers.contains_key(name);
    for r in seal {
        let reads_or_writes_bytes = r.method == "HEAD"
            || (r.method == "GET" && r.headers.contains_key("range"))
            || (r.method == "POST" && r.has_query("uploads"))
            || (r.method == "PUT" && has(r, "x-amz-copy-source"));
        if reads_or_writes_bytes {
            assert!(has(r, "x-amz-server-side-encryption-customer-key"), "{} {} lacks the key", r.method, r.path);
        }
        if r.method == "PUT" && has(r, "x-amz-copy-source") {
            assert!(has(r, "x-amz-copy-source-server-side-encryption-customer-key"), "the copy source's key");
        }
        if r.method == "POST" && r.has_query("uploadId") {
            assert!(!has(r, "x-amz-server-side-encryption-customer-key"), "Completes carry no key");
        }
    }
    assert!(
        seal.iter().any(|r| r.method == "PUT" && has(r, "x-amz-copy-source")),
        "the object was sealed by part copies"
    );
    // The same id under another key cannot open the customer key.
    h.complete("other", &upload, &[(1, "\"x\"".into())]).await.expect_error(404, "NoSuchUpload");
}

#[tokio::test]
async fn refused_requests_never_call_vault() {
    let h = Harness::new();
    let put = client("PUT", &object_uri("k")).header("x-amz-meta-cloudtaser-key", "x");
    h.send(with_body(put, b"x")).await.expect(400);
    h.send(no_body(client("GET", &format!("{}?torrent", object_uri("k"))))).await.expect(501);
    assert!(h.vault.calls().is_empty(), "{:?}", h.vault.calls());
}

/// The log lines a request writes, captured for the duration of `f`.
async fn logged<F: std::future::Future<Output = ()>>(f: F) -> String {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    f.await;
    String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn policy_refusals_name_keys_in_logs_only_with_key_logging() {
    let scoped = || AccessPolicy::new(&["default".to_owned()], &[format!("{BUCKET}/team-a/")]).unwrap();
    let refuse = |h: Harness| async move {
        let put = with_body(client("PUT", &object_uri("team-b/jane-doe-medical.pdf")), b"x");
        let r = refused(&h, put, 403, "AccessDenied").await;
        // The workload is told which key was outside the scope.
        assert!(r.text().contains("jane-doe-medical.pdf"), "{}", r.text());
    };
    let quiet = logged(refuse(Harness::with(|p| p.with_policy(scoped())))).await;
    assert!(quiet.contains("request refused") && quiet.contains("AccessDenied"), "{quiet}");
    assert!(!quiet.contains("jane-doe"), "a key reached the log with key logging off: {quiet}");
    let verbose = logged(refuse(Harness::with(|p| p.with_policy(scoped()).with_key_logging(true)))).await;
    assert!(verbose.contains("jane-doe-medical.pdf"), "{verbose}");
}
