//! Multipart uploads: Create, UploadPart (plain and aws-chunked),
//! UploadPartCopy, ListParts, Abort, Complete and its seal, and reads of
//! the sealed object.

use super::harness::*;
use crate::testing::s3::Fault;

const MIB: usize = 1 << 20;

fn uri(key: &str, query: &str) -> String {
    format!("{}?{query}", object_uri(key))
}

#[tokio::test]
async fn a_one_part_upload_is_sealed_with_an_authenticated_envelope() {
    let h = Harness::new();
    let data = plaintext(100_000, 20);
    let upload = h.create_upload("mp").await;
    assert!(upload.starts_with("ctu3."), "the upload id carries the wrapped key: {upload}");
    let upstream_id = h.s3.requests().last().unwrap().clone();
    assert!(upstream_id.has_query("uploads"));
    assert_eq!(upstream_id.headers["x-amz-meta-cloudtaser-layout"], "multipart-pending");
    let part = h.upload_part("mp", &upload, 1, &data).await;
    part.expect(200);
    let up = h.upstream().into_iter().rfind(|r| r.has_query("partNumber")).unwrap();
    assert!(!up.query_value("uploadId").unwrap().starts_with("ctu"), "the upstream gets its own id");
    let done = h.complete("mp", &upload, &[(1, part.header("etag").to_owned())]).await;
    done.expect(200);
    let etag = done.xml(b"ETag").pop().unwrap();
    assert!(etag.ends_with("-1\""), "{}", done.text());
    let stored = h.s3.object(BUCKET, "mp").unwrap();
    for field in ["mac", "streams", "parts"] {
        assert!(stored.meta.contains_key(format!("x-amz-meta-cloudtaser-{field}")), "{:?}", stored.meta);
    }
    assert_eq!(stored.meta["x-amz-meta-cloudtaser-format"], "3");
    assert_eq!(stored.meta["x-amz-meta-cloudtaser-layout"], "multipart");
    assert_eq!(stored.etag, etag);
    let get = h.get("mp").await;
    get.expect(200);
    assert_eq!((get.body.as_ref(), get.header("etag")), (data.as_slice(), etag.as_str()));
    assert_eq!(h.head("mp").await.header("content-length"), "100000");
    assert_eq!(h.s3.upload_count(), 0, "the seal's own upload is completed too");
    assert_sealed(&h, &data);
}

#[tokio::test]
async fn a_two_part_object_reads_whole_by_range_and_by_part() {
    let h = Harness::new();
    let first = plaintext(5 * MIB, 21);
    let second = plaintext(1000, 22);
    let done = h.multipart("big", &[&first, &second]).await;
    done.expect(200);
    assert!(done.xml(b"ETag")[0].ends_with("-2\""), "{}", done.text());
    let whole = [first.as_slice(), second.as_slice()].concat();
    assert_eq!(h.get("big").await.expect(200).body, whole);
    let (a, b) = (5 * MIB - 10, 5 * MIB + 9);
    let r = h.get_with("big", &[("range", &format!("bytes={a}-{b}"))]).await;
    r.expect(206);
    assert_eq!(r.body, &whole[a..=b]);
    let part = h.send(no_body(client("GET", &uri("big", "partNumber=2")))).await;
    part.expect(206);
    assert_eq!((part.body.as_ref(), part.header("x-amz-mp-parts-count")), (second.as_slice(), "2"));
    let head = h.send(no_body(client("HEAD", &uri("big", "partNumber=1")))).await;
    assert_eq!((head.header("content-length"), head.header("x-amz-mp-parts-count")), ("5242880", "2"));
    h.send(no_body(client("GET", &uri("big", "partNumber=3")))).await.expect_error(416, "InvalidPartNumber");
    let list = h.send(no_body(client("GET", &format!("/{BUCKET}?list-type=2")))).await;
    assert_eq!(list.xml(b"Size"), vec![whole.len().to_string()], "{}", list.text());
    let attrs = client("GET", &uri("big", "attributes")).header("x-amz-object-attributes", "ObjectParts,ObjectSize");
    let attrs = h.send(no_body(attrs)).await;
    attrs.expect(200);
    assert_eq!(attrs.xml(b"PartsCount"), vec!["2".to_owned()], "{}", attrs.text());
    assert_eq!(attrs.xml(b"Size"), vec!["5242880".to_owned(), "1000".to_owned()]);
    assert_eq!(attrs.xml(b"ObjectSize"), vec![whole.len().to_string()]);
}

#[tokio::test]
async fn list_parts_shows_plaintext_sizes_and_the_workloads_upload_id() {
    let h = Harness::new();
    let upload = h.create_upload("lp").await;
    h.upload_part("lp", &upload, 1, &plaintext(70_000, 23)).await.expect(200);
    h.upload_part("lp", &upload, 3, &plaintext(10, 24)).await.expect(200);
    let r = h.send(no_body(client("GET", &uri("lp", &format!("uploadId={}", enc(&upload)))))).await;
    r.expect(200);
    assert_eq!(r.xml(b"UploadId"), vec![upload.clone()]);
    assert_eq!(r.xml(b"Size"), vec!["70000".to_owned(), "10".to_owned()], "{}", r.text());
    assert_eq!(r.xml(b"PartNumber"), vec!["1".to_owned(), "3".to_owned()]);
    let unknown = h.send(no_body(client("GET", &uri("lp", "uploadId=nonexistent")))).await;
    unknown.expect_error(404, "NoSuchUpload");
}

#[tokio::test]
async fn an_aborted_upload_is_gone() {
    let h = Harness::new();
    let upload = h.create_upload("ab").await;
    let part = h.upload_part("ab", &upload, 1, b"data").await;
    h.send(no_body(client("DELETE", &uri("ab", &format!("uploadId={}", enc(&upload)))))).await.expect(204);
    assert_eq!(h.s3.upload_count(), 0);
    let r = h.complete("ab", &upload, &[(1, part.header("etag").to_owned())]).await;
    r.expect_error(404, "NoSuchUpload");
    assert!(h.s3.object(BUCKET, "ab").is_none());
}

#[tokio::test]
async fn an_aws_chunked_part_is_verified() {
    let h = Harness::new();
    let data = plaintext(90_000, 25);
    let upload = h.create_upload("ch").await;
    let req =
        chunked(client("PUT", &uri("ch", &format!("partNumber=1&uploadId={}", enc(&upload)))), &data, 16_384, None);
    let part = h.send(req).await;
    part.expect(200);
    assert_eq!(part.header("x-amz-checksum-crc32"), crc32(&data));
    let wrong = crc32(b"not it");
    let req = chunked(
        client("PUT", &uri("ch", &format!("partNumber=2&uploadId={}", enc(&upload)))),
        &data,
        16_384,
        Some(&wrong),
    );
    h.send(req).await.expect_error(400, "BadDigest");
    h.complete("ch", &upload, &[(1, part.header("etag").to_owned())]).await.expect(200);
    assert_eq!(h.get("ch").await.body, data);
}

#[tokio::test]
async fn upload_part_copy_reencrypts_a_range_of_the_source() {
    let h = Harness::new();
    let src = plaintext(150_000, 26);
    h.put("src", &src).await.expect(200);
    let upload = h.create_upload("dst").await;
    let copy = client("PUT", &uri("dst", &format!("partNumber=1&uploadId={}", enc(&upload))))
        .header("x-amz-copy-source", format!("/{BUCKET}/src"))
        .header("x-amz-copy-source-range", "bytes=1000-100999");
    let part = h.send(no_body(copy)).await;
    part.expect(200);
    let etag = part.xml(b"ETag").pop().expect("CopyPartResult ETag");
    let past_end = client("PUT", &uri("dst", &format!("partNumber=2&uploadId={}", enc(&upload))))
        .header("x-amz-copy-source", format!("/{BUCKET}/src"))
        .header("x-amz-copy-source-range", "bytes=100-150000");
    h.send(no_body(past_end)).await.expect_error(416, "InvalidRange");
    let stale = client("PUT", &uri("dst", &format!("partNumber=2&uploadId={}", enc(&upload))))
        .header("x-amz-copy-source", format!("/{BUCKET}/src"))
        .header("x-amz-copy-source-if-match", "\"00-1\"");
    h.send(no_body(stale)).await.expect_error(412, "PreconditionFailed");
    h.complete("dst", &upload, &[(1, etag)]).await.expect(200);
    assert_eq!(h.get("dst").await.body, &src[1000..=100_999]);
    assert_sealed(&h, &src);
}

#[tokio::test]
async fn complete_checks_the_parts_as_s3_does() {
    let h = Harness::new();
    let upload = h.create_upload("cx").await;
    let p1 = h.upload_part("cx", &upload, 1, &plaintext(1000, 27)).await.header("etag").to_owned();
    let p2 = h.upload_part("cx", &upload, 2, &plaintext(1000, 28)).await.header("etag").to_owned();
    h.complete("cx", &upload, &[(1, "\"0123\"".into())]).await.expect_error(400, "InvalidPart");
    h.complete("cx", &upload, &[(2, p2.clone()), (1, p1.clone())]).await.expect_error(400, "InvalidPartOrder");
    h.complete("cx", &upload, &[(1, p1.clone()), (2, p2.clone())]).await.expect_error(400, "EntityTooSmall");
    let uri = uri("cx", &format!("uploadId={}", enc(&upload)));
    h.send(with_body(client("POST", &uri), b"<CompleteMultipartUpload>")).await.expect_error(400, "MalformedXML");
    // None of these reached the upstream's Complete.
    assert!(!h.upstream().iter().any(|r| r.method == "POST" && r.has_query("uploadId")));
    assert!(h.s3.object(BUCKET, "cx").is_none());
    // The last part alone may be small.
    h.complete("cx", &upload, &[(2, p2)]).await.expect(200);
    assert_eq!(h.get("cx").await.body, plaintext(1000, 28));
}

#[tokio::test]
async fn upload_ids_no_proxy_issued_are_no_such_upload() {
    let h = Harness::new();
    let upload = h.create_upload("fx").await;
    let foreign = h.s3.requests().last().map(|_| "1~Up.foreign").unwrap();
    h.upload_part("fx", foreign, 1, b"x").await.expect_error(404, "NoSuchUpload");
    // An id whose wrapped key Vault refuses was never issued by a proxy.
    let key = crate::s3::upload_id::UploadKey {
        transit_key: TRANSIT_KEY.into(),
        wrapped_key: "vault:v1:AAAAAAAAAAE=".into(),
        tag: Some(vec![0; 16]),
        sse_c: None,
    };
    let upstream = crate::s3::upload_id::decode(&upload).upstream;
    let forged = crate::s3::upload_id::encode(&upstream, &key);
    h.upload_part("fx", &forged, 1, b"x").await.expect_error(404, "NoSuchUpload");
    // A Transit key the proxy is not configured for is refused before Vault.
    let other = crate::s3::upload_id::UploadKey { transit_key: "other".into(), ..key.clone() };
    let calls = h.vault.calls().len();
    h.upload_part("fx", &crate::s3::upload_id::encode(&upstream, &other), 1, b"x")
        .await
        .expect_error(404, "NoSuchUpload");
    assert_eq!(h.vault.calls().len(), calls);
    // A format-2 id (no tag) is refused unless legacy ids are accepted.
    let legacy = crate::s3::upload_id::UploadKey { tag: None, ..key };
    h.upload_part("fx", &crate::s3::upload_id::encode(&upstream, &legacy), 1, b"x")
        .await
        .expect_error(404, "NoSuchUpload");
    assert_eq!(h.vault.calls().len(), calls, "refused before Vault");
    assert!(!h.upstream().iter().any(|r| r.method == "PUT"), "no part was sent");
}

#[tokio::test]
async fn a_format_3_upload_id_works_only_for_its_upload_bucket_and_key() {
    let h = Harness::new();
    let upload = h.create_upload("mine").await;
    assert!(upload.starts_with("ctu3."), "{upload}");
    let decoded = crate::s3::upload_id::decode(&upload);
    let key = decoded.key.clone().unwrap();
    // Moved to another object, or to another upstream upload of the same one.
    h.upload_part("theirs", &upload, 1, b"x").await.expect_error(404, "NoSuchUpload");
    let other = h.create_upload("mine").await;
    let moved = crate::s3::upload_id::encode(&crate::s3::upload_id::decode(&other).upstream, &key);
    h.upload_part("mine", &moved, 1, b"x").await.expect_error(404, "NoSuchUpload");
    // Minted from the wrapped key alone: without the tag it would be a
    // format-2 id, whose version-2 parts no format-3 object accepts; with
    // a guessed tag it is refused.
    let guessed = crate::s3::upload_id::UploadKey { tag: Some(vec![0; 16]), ..key.clone() };
    let minted = crate::s3::upload_id::encode(&decoded.upstream, &guessed);
    h.upload_part("mine", &minted, 1, b"x").await.expect_error(404, "NoSuchUpload");
    h.complete("mine", &minted, &[(1, "\"x\"".into())]).await.expect_error(404, "NoSuchUpload");
    assert!(!h.upstream().iter().any(|r| r.method == "PUT"), "no part was sent");
    // The genuine id still works.
    h.upload_part("mine", &upload, 1, b"x").await.expect(200);
}

#[tokio::test]
async fn an_interrupted_seal_leaves_the_object_unreadable_until_complete_is_retried() {
    let h = Harness::new();
    let data = plaintext(40_000, 29);
    let upload = h.create_upload("seal").await;
    let etag = h.upload_part("seal", &upload, 1, &data).await.header("etag").to_owned();
    h.s3.set_hook(|r| {
        (r.method == "PUT" && r.headers.contains_key("x-amz-copy-source-range")).then(|| Fault::Answer {
            status: 500,
            headers: vec![("content-type", "application/xml".into())],
            body: "<Error><Code>InternalError</Code><Message>boom</Message></Error>".into(),
        })
    });
    h.complete("seal", &upload, &[(1, etag.clone())]).await.expect_error(502, "BadGateway");
    h.s3.clear_hook();
    let stored = h.s3.object(BUCKET, "seal").unwrap();
    assert_eq!(stored.meta["x-amz-meta-cloudtaser-layout"], "multipart-pending");
    h.get("seal").await.expect_error(503, "ServiceUnavailable");
    h.get_with("seal", &[("range", "bytes=0-9")]).await.expect_error(503, "ServiceUnavailable");
    h.head("seal").await.expect(503);
    assert_eq!(h.s3.upload_count(), 0, "the failed seal's upload was aborted");
    // The retried Complete finds the pending object and seals it.
    let done = h.complete("seal", &upload, &[(1, etag)]).await;
    done.expect(200);
    assert!(h.s3.object(BUCKET, "seal").unwrap().meta.contains_key("x-amz-meta-cloudtaser-mac"));
    assert_eq!(h.get("seal").await.expect(200).body, data);
}

#[tokio::test]
async fn object_copy_sealing_works_where_there_is_no_upload_part_copy() {
    let h = Harness::with(|p| p.with_seal_method(crate::request::seal::SealMethod::Auto, true));
    let data = plaintext(30_000, 30);
    h.multipart("gcs", &[&data]).await.expect(200);
    assert!(!h.upstream().iter().any(|r| r.headers.contains_key("x-amz-copy-source-range")));
    let stored = h.s3.object(BUCKET, "gcs").unwrap();
    assert!(stored.meta.contains_key("x-amz-meta-cloudtaser-mac"));
    assert_eq!(h.get("gcs").await.body, data);
}

#[tokio::test]
async fn a_multipart_object_whose_sealed_envelope_was_altered_is_refused() {
    let h = Harness::new();
    let data = plaintext(20_000, 31);
    h.multipart("mf", &[&data]).await.expect(200);
    for field in ["x-amz-meta-cloudtaser-mac", "x-amz-meta-cloudtaser-streams"] {
        let before = h.s3.object(BUCKET, "mf").unwrap().meta[field].clone();
        h.s3.tamper(BUCKET, "mf", |o| {
            let mut flipped = o.meta[field].to_str().unwrap().to_owned().into_bytes();
            flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
            o.meta.insert(field, String::from_utf8(flipped).unwrap().parse().unwrap());
        });
        let r = h.get("mf").await;
        r.expect_error(500, "InternalError");
        assert!(!contains(&r.body, &data[..16]));
        h.head("mf").await.expect(500);
        h.s3.tamper(BUCKET, "mf", |o| drop(o.meta.insert(field, before.clone())));
        assert_eq!(h.get("mf").await.expect(200).body, data);
    }
}

/// Whether `r` is the seal's own CompleteMultipartUpload (its body lists
/// ETags of UploadPartCopy results; the workload's Complete came first).
fn is_complete(r: &crate::testing::s3::Recorded) -> bool {
    r.method == "POST" && r.has_query("uploadId")
}

#[tokio::test(start_paused = true)]
async fn a_slow_seal_answers_200_at_once_and_keeps_the_connection_alive() {
    let h = Harness::with(|p| p.with_complete_keepalive(std::time::Duration::from_secs(1)));
    let data = plaintext(10_000, 32);
    let upload = h.create_upload("slow").await;
    let etag = h.upload_part("slow", &upload, 1, &data).await.header("etag").to_owned();
    let completes = std::sync::atomic::AtomicUsize::new(0);
    h.s3.set_hook(move |r| {
        // The second Complete is the seal's.
        (is_complete(r) && completes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 1)
            .then_some(Fault::Delay(std::time::Duration::from_secs(3)))
    });
    let r = h.complete("slow", &upload, &[(1, etag)]).await;
    r.expect(200);
    let text = r.text();
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n "), "spaces kept it alive: {text:?}");
    assert!(text.contains("<CompleteMultipartUploadResult"), "{text}");
    assert!(r.header("content-length").is_empty());
    assert_eq!(h.get("slow").await.expect(200).body, data);
}

#[tokio::test(start_paused = true)]
async fn a_slow_seal_that_fails_reports_an_error_inside_the_200() {
    let h = Harness::with(|p| p.with_complete_keepalive(std::time::Duration::from_secs(1)));
    let upload = h.create_upload("slowfail").await;
    let etag = h.upload_part("slowfail", &upload, 1, b"x").await.header("etag").to_owned();
    h.s3.set_hook(|r| {
        (r.method == "PUT" && r.headers.contains_key("x-amz-copy-source-range"))
            .then_some(Fault::Delay(std::time::Duration::from_secs(3)))
    });
    // The delayed copy then fails: the source changed meanwhile.
    let s3 = h.s3.clone();
    let named = [(1, etag)];
    let complete = h.complete("slowfail", &upload, &named);
    let tamper = async {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        s3.tamper(BUCKET, "slowfail", |o| o.etag = "\"00000000000000000000000000000000-1\"".into());
    };
    let (r, ()) = tokio::join!(complete, tamper);
    r.expect(200);
    // The copy's failed condition: another writer's change, which a retry
    // of the Complete finishes or finds (`request::seal`).
    assert_eq!(r.code(), "ServiceUnavailable", "{}", r.text());
    assert!(r.text().contains("changed while it was being copied"), "{}", r.text());
    assert_eq!(h.s3.object(BUCKET, "slowfail").unwrap().meta["x-amz-meta-cloudtaser-layout"], "multipart-pending");
}

#[tokio::test]
async fn with_vault_down_complete_fails_before_the_object_exists() {
    let mut h = Harness::new();
    let upload = h.create_upload("vd").await;
    let etag = h.upload_part("vd", &upload, 1, b"part").await.header("etag").to_owned();
    h.restart();
    h.vault.transit_status.store(503, std::sync::atomic::Ordering::Relaxed);
    h.complete("vd", &upload, &[(1, etag)]).await.expect_error(503, "ServiceUnavailable");
    assert!(h.s3.object(BUCKET, "vd").is_none());
    assert_eq!(h.s3.upload_count(), 1, "the upload can still be completed");
}

#[tokio::test]
async fn an_error_document_in_a_200_complete_is_passed_on_and_nothing_is_sealed() {
    let h = Harness::new();
    let upload = h.create_upload("e200").await;
    let etag = h.upload_part("e200", &upload, 1, b"part").await.header("etag").to_owned();
    h.s3.set_hook(|r| {
        is_complete(r).then(|| Fault::Answer {
            status: 200,
            headers: vec![("content-type", "application/xml".into())],
            body: "<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code><Message>try again</Message></Error>"
                .into(),
        })
    });
    let r = h.complete("e200", &upload, &[(1, etag)]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (200, "InternalError"), "{}", r.text());
    h.s3.clear_hook();
    assert!(!h.upstream().iter().any(|r| r.headers.contains_key("x-amz-copy-source")), "no seal was attempted");
}

#[tokio::test]
async fn list_multipart_uploads_is_forwarded() {
    let h = Harness::new();
    h.create_upload("u1").await;
    let r = h.send(no_body(client("GET", &format!("/{BUCKET}?uploads")))).await;
    r.expect(200);
    assert_eq!(r.xml(b"Key"), vec!["u1".to_owned()], "{}", r.text());
}

#[tokio::test]
async fn the_seal_refuses_a_stored_envelope_naming_another_transit_key_than_the_upload_id() {
    // The upstream rewrites the pending object's envelope to name another
    // Transit key, just before the seal reads it: sealing under the upload
    // id's key name would relabel the object. It stays pending instead.
    let h = Harness::new();
    let upload = h.create_upload("relabel").await;
    let etag = h.upload_part("relabel", &upload, 1, b"part").await.header("etag").to_owned();
    let s3 = h.s3.clone();
    h.s3.set_hook(move |r| {
        if r.method == "HEAD" && r.headers.contains_key("if-match") {
            s3.tamper(BUCKET, "relabel", |o| {
                o.meta.insert("x-amz-meta-cloudtaser-transit-key", http::HeaderValue::from_static("other"));
            });
        }
        None
    });
    h.complete("relabel", &upload, &[(1, etag.clone())]).await.expect_error(503, "ServiceUnavailable");
    let stored = h.s3.object(BUCKET, "relabel").unwrap();
    assert_eq!(stored.meta["x-amz-meta-cloudtaser-layout"], "multipart-pending");
    assert_eq!(stored.meta["x-amz-meta-cloudtaser-transit-key"], "other");
    // A retried Complete does not finish it under the upload id's key either.
    h.s3.clear_hook();
    let retry = h.complete("relabel", &upload, &[(1, etag)]).await;
    assert!(!retry.status.is_success(), "{}", retry.text());
    assert_eq!(h.s3.object(BUCKET, "relabel").unwrap().meta["x-amz-meta-cloudtaser-layout"], "multipart-pending");
}
