//! Single-object operations: PutObject, GetObject, HeadObject, listings,
//! GetObjectAttributes, CopyObject, and the forwarded operations.

use super::harness::*;

#[tokio::test]
async fn put_then_get_round_trips_and_stores_only_ciphertext() {
    let h = Harness::new();
    let data = plaintext(100_000, 1);
    let put = h.put("dir/a b.txt", &data).await;
    put.expect(200);
    assert!(put.header("etag").ends_with("-1\""), "{:?}", put.headers);
    assert_eq!(put.header("x-amz-server-side-encryption"), "aws:kms");
    let get = h.get("dir/a b.txt").await;
    get.expect(200);
    assert_eq!(get.body, data);
    assert_eq!(get.header("content-length"), "100000");
    assert_eq!(get.header("etag"), put.header("etag"));
    assert!(!get.headers.keys().any(|k| k.as_str().starts_with("x-amz-meta-cloudtaser")), "{:?}", get.headers);
    let stored = h.s3.object(BUCKET, "dir/a b.txt").unwrap();
    assert_eq!(stored.body.len() as u64, crate::format::ciphertext_len(100_000));
    assert!(stored.meta.contains_key("x-amz-meta-cloudtaser-key"), "{:?}", stored.meta);
    assert_sealed(&h, &data);
}

#[tokio::test]
async fn metadata_and_content_headers_survive_and_head_answers_in_plaintext_terms() {
    let h = Harness::new();
    let data = plaintext(70_000, 2);
    let req = with_body(
        client("PUT", &object_uri("m"))
            .header("content-type", "text/plain")
            .header("x-amz-meta-color", "blue")
            .header("cache-control", "no-cache"),
        &data,
    );
    h.send(req).await.expect(200);
    let head = h.head("m").await;
    head.expect(200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), "70000");
    assert_eq!(head.header("content-type"), "text/plain");
    assert_eq!(head.header("x-amz-meta-color"), "blue");
    assert_eq!(head.header("cache-control"), "no-cache");
    assert_eq!(head.header("x-amz-server-side-encryption-aws-kms-key-id"), format!("vault-transit:{TRANSIT_KEY}"));
    assert!(!head.headers.keys().any(|k| k.as_str().starts_with("x-amz-meta-cloudtaser")));
    let get = h.get("m").await;
    assert_eq!((get.header("x-amz-meta-color"), get.body.as_ref()), ("blue", data.as_slice()));
    // The upstream holds the ciphertext's length, never the plaintext's.
    let stored = h.s3.object(BUCKET, "m").unwrap();
    assert_eq!(stored.meta["x-amz-meta-color"], "blue");
    assert!(stored.meta.get("content-encoding").is_none(), "aws-chunked framing is not the object's");
}

#[tokio::test]
async fn an_aws_chunked_put_with_a_trailer_is_verified_and_its_checksum_echoed() {
    let h = Harness::new();
    let data = plaintext(200_000, 3);
    let put = h.send(chunked(client("PUT", &object_uri("c")), &data, 65_536, None)).await;
    put.expect(200);
    assert_eq!(put.header("x-amz-checksum-crc32"), crc32(&data));
    let up = h.upstream().into_iter().find(|r| r.method == "PUT").unwrap();
    // The upstream gets the proxy's own framing: CRC32C of the ciphertext.
    assert_eq!(up.headers["x-amz-content-sha256"], "STREAMING-UNSIGNED-PAYLOAD-TRAILER");
    assert_eq!(up.headers["x-amz-trailer"], "x-amz-checksum-crc32c");
    assert!(up.headers.get("x-amz-checksum-crc32").is_none());
    assert_eq!(h.get("c").await.body, data);
    assert_sealed(&h, &data);
}

#[tokio::test]
async fn a_wrong_trailer_or_content_md5_is_bad_digest_and_nothing_is_stored() {
    let h = Harness::new();
    let data = plaintext(100_000, 4);
    let wrong = crc32(b"something else");
    let put = h.send(chunked(client("PUT", &object_uri("c")), &data, 8192, Some(&wrong))).await;
    put.expect_error(400, "BadDigest");
    let req = client("PUT", &object_uri("d")).header("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==");
    let req = req
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .header("content-length", data.len())
        .body(http_body_util::Full::new(bytes::Bytes::from(data.clone())))
        .unwrap();
    h.send(req).await.expect_error(400, "BadDigest");
    assert!(h.s3.objects(BUCKET).is_empty(), "{:?}", h.s3.objects(BUCKET).keys());
}

#[tokio::test]
async fn a_short_body_is_incomplete_and_nothing_is_stored() {
    let h = Harness::new();
    let req = client("PUT", &object_uri("short"))
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .header("content-length", "1000")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"only this")))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(h.s3.object(BUCKET, "short").is_none());
}

#[tokio::test]
async fn an_empty_object_round_trips() {
    let h = Harness::new();
    h.put("empty", b"").await.expect(200);
    let get = h.get("empty").await;
    get.expect(200);
    assert!(get.body.is_empty());
    assert_eq!(get.header("content-length"), "0");
    assert!(h.stored("empty").starts_with(&crate::format::MAGIC));
}

#[tokio::test]
async fn ranges_are_served_from_the_covering_segments() {
    let h = Harness::new();
    let len = 200_000usize;
    let data = plaintext(len, 5);
    h.put("r", &data).await.expect(200);
    for (range, a, b) in [
        ("bytes=0-9", 0, 9),
        ("bytes=65530-65545", 65_530, 65_545),
        ("bytes=-5", len - 5, len - 1),
        ("bytes=199990-", 199_990, len - 1),
        ("bytes=150000-999999", 150_000, len - 1),
    ] {
        let r = h.get_with("r", &[("range", range)]).await;
        r.expect(206);
        assert_eq!(r.header("content-range"), format!("bytes {a}-{b}/{len}"), "{range}");
        assert_eq!(r.body, &data[a..=b], "{range}");
        assert_eq!(r.header("content-length"), (b - a + 1).to_string());
    }
    // A ranged read fetches only the covering segments, never the whole object.
    let reads: Vec<_> = h.upstream().into_iter().filter(|r| r.method == "GET").collect();
    assert!(
        reads.iter().all(|r| r.headers.contains_key("range")),
        "{:?}",
        reads.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
    let r = h.get_with("r", &[("range", "bytes=200000-")]).await;
    r.expect_error(416, "InvalidRange");
    assert_eq!(r.header("content-range"), format!("bytes */{len}"));
}

#[tokio::test]
async fn part_number_reads_of_a_single_object() {
    let h = Harness::new();
    let data = plaintext(1000, 6);
    h.put("p", &data).await.expect(200);
    let r = h.send(no_body(client("GET", &format!("{}?partNumber=1", object_uri("p"))))).await;
    r.expect(206);
    assert_eq!(r.body, data);
    let r = h.send(no_body(client("GET", &format!("{}?partNumber=2", object_uri("p"))))).await;
    r.expect_error(416, "InvalidPartNumber");
    let r = h.send(no_body(client("GET", &format!("{}?partNumber=0", object_uri("p"))))).await;
    r.expect_error(400, "InvalidArgument");
    let r = h.get_with("p?partNumber=1", &[]).await;
    assert_eq!(r.status, 404, "a key with ? in it is another object: {}", r.text());
    let both =
        h.send(no_body(client("GET", &format!("{}?partNumber=1", object_uri("p"))).header("range", "bytes=0-1"))).await;
    both.expect_error(400, "InvalidRequest");
    let head = h.send(no_body(client("HEAD", &format!("{}?partNumber=1", object_uri("p"))))).await;
    head.expect(200);
    assert_eq!(head.header("content-length"), "1000");
}

#[tokio::test]
async fn conditional_reads_use_the_etag_the_workload_holds() {
    let h = Harness::new();
    let data = plaintext(5000, 7);
    let etag = h.put("c", &data).await.header("etag").to_owned();
    let r = h.get_with("c", &[("if-none-match", &etag)]).await;
    r.expect(304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), etag);
    h.get_with("c", &[("if-match", "\"0123456789abcdef0123456789abcdef-1\"")])
        .await
        .expect_error(412, "PreconditionFailed");
    assert_eq!(h.get_with("c", &[("if-match", &etag)]).await.expect(200).body, data);
    // The upstream's own form of the ETag is accepted too, as S3 would.
    let upstream_etag = h.s3.object(BUCKET, "c").unwrap().etag;
    h.get_with("c", &[("if-match", &upstream_etag)]).await.expect(200);
    h.get_with("c", &[("if-none-match", &etag), ("range", "bytes=0-3")]).await.expect(304);
    h.get_with("c", &[("if-match", "\"nope\""), ("range", "bytes=0-3")]).await.expect_error(412, "PreconditionFailed");
    let head = h.send(no_body(client("HEAD", &object_uri("c")).header("if-match", "\"nope\""))).await;
    assert_eq!((head.status.as_u16(), head.body.len()), (412, 0), "HEAD errors carry no body");
    // Conditional writes go upstream in the upstream's ETag form.
    let req = with_body(client("PUT", &object_uri("c")).header("if-match", &etag), b"new");
    h.send(req).await.expect(200);
    assert_eq!(h.get("c").await.body, b"new"[..]);
    let req = with_body(client("PUT", &object_uri("c")).header("if-none-match", "*"), b"newer");
    h.send(req).await.expect_error(412, "PreconditionFailed");
}

#[tokio::test]
async fn missing_objects_are_the_upstreams_404() {
    let h = Harness::new();
    h.get("nothing").await.expect_error(404, "NoSuchKey");
    let head = h.head("nothing").await;
    assert_eq!((head.status.as_u16(), head.body.len()), (404, 0));
    h.get_with("nothing", &[("range", "bytes=0-1")]).await.expect_error(404, "NoSuchKey");
    let r = h.send(no_body(client("GET", "/no-such-bucket/k"))).await;
    r.expect_error(404, "NoSuchBucket");
}

#[tokio::test]
async fn listings_show_plaintext_sizes_and_marked_etags() {
    let h = Harness::new();
    let sizes = [0usize, 1, 65_536, 70_000];
    for (i, n) in sizes.iter().enumerate() {
        h.put(&format!("l/{i}"), &plaintext(*n, 8)).await.expect(200);
    }
    h.put("other", b"x").await.expect(200);
    for query in ["?prefix=l%2F", "?list-type=2&prefix=l%2F", "?versions&prefix=l%2F"] {
        let r = h.send(no_body(client("GET", &format!("/{BUCKET}{query}")))).await;
        r.expect(200);
        let listed: Vec<usize> = r.xml(b"Size").iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(listed, sizes, "{query}: {}", r.text());
        assert!(r.xml(b"ETag").iter().all(|e| e.ends_with("-1\"")), "{}", r.text());
        assert_eq!(r.xml(b"Key").len(), 4, "{}", r.text());
    }
    let r = h.send(no_body(client("GET", &format!("/{BUCKET}?list-type=2&delimiter=%2F")))).await;
    assert_eq!(r.xml(b"Prefix"), vec!["l/".to_owned()], "{}", r.text());
    assert_eq!(r.xml(b"Size"), vec!["1".to_owned()]);
}

#[tokio::test]
async fn object_attributes_are_the_plaintexts() {
    let h = Harness::new();
    let data = plaintext(123_456, 9);
    let etag = h.put("a", &data).await.header("etag").to_owned();
    let req = client("GET", &format!("{}?attributes", object_uri("a")))
        .header("x-amz-object-attributes", "ETag,ObjectSize,StorageClass,Checksum");
    let r = h.send(no_body(req)).await;
    r.expect(200);
    assert_eq!(r.xml(b"ObjectSize"), vec!["123456".to_owned()], "{}", r.text());
    assert_eq!(r.xml(b"ETag"), vec![etag.trim_matches('"').to_owned()]);
    assert_eq!(r.xml(b"StorageClass"), vec!["STANDARD".to_owned()]);
    assert!(!r.text().contains("Checksum"));
    let bad = client("GET", &format!("{}?attributes", object_uri("a"))).header("x-amz-object-attributes", "Size");
    h.send(no_body(bad)).await.expect_error(400, "InvalidArgument");
    let missing = client("GET", &format!("{}?attributes", object_uri("zz"))).header("x-amz-object-attributes", "ETag");
    h.send(no_body(missing)).await.expect_error(404, "NoSuchKey");
}

#[tokio::test]
async fn copies_keep_the_envelope_with_either_directive() {
    let h = Harness::new();
    let data = plaintext(80_000, 10);
    let req = with_body(client("PUT", &object_uri("src")).header("x-amz-meta-color", "red"), &data);
    let etag = h.send(req).await.header("etag").to_owned();
    let copy =
        h.send(no_body(client("PUT", &object_uri("copy")).header("x-amz-copy-source", format!("/{BUCKET}/src")))).await;
    copy.expect(200);
    assert!(copy.xml(b"ETag")[0].ends_with("-1\""), "{}", copy.text());
    let got = h.get("copy").await;
    assert_eq!((got.body.as_ref(), got.header("x-amz-meta-color")), (data.as_slice(), "red"));
    let replace = client("PUT", &object_uri("replaced"))
        .header("x-amz-copy-source", format!("{BUCKET}/src"))
        .header("x-amz-metadata-directive", "REPLACE")
        .header("x-amz-meta-color", "green")
        .header("x-amz-copy-source-if-match", &etag);
    h.send(no_body(replace)).await.expect(200);
    let got = h.get("replaced").await;
    assert_eq!((got.body.as_ref(), got.header("x-amz-meta-color")), (data.as_slice(), "green"));
    // The copy was pinned to the version examined.
    let copied = h.upstream().into_iter().filter(|r| r.method == "PUT" && r.headers.contains_key("x-amz-copy-source"));
    assert!(
        copied.clone().count() == 2 && copied.into_iter().all(|r| r.headers.contains_key("x-amz-copy-source-if-match"))
    );
    let stale = client("PUT", &object_uri("stale"))
        .header("x-amz-copy-source", format!("{BUCKET}/src"))
        .header("x-amz-copy-source-if-match", "\"0000-1\"");
    h.send(no_body(stale)).await.expect_error(412, "PreconditionFailed");
    assert!(h.s3.object(BUCKET, "stale").is_none());
    let missing = client("PUT", &object_uri("x")).header("x-amz-copy-source", format!("{BUCKET}/none"));
    h.send(no_body(missing)).await.expect_error(404, "NoSuchKey");
    assert_sealed(&h, &data);
}

#[tokio::test]
async fn a_copy_of_an_unencrypted_object_is_refused() {
    let h = Harness::with_plaintext_reads(&[BUCKET], |p| p);
    h.s3.put_raw(BUCKET, "legacy", b"written before the proxy", &[]);
    let copy = client("PUT", &object_uri("new")).header("x-amz-copy-source", format!("{BUCKET}/legacy"));
    h.send(no_body(copy)).await.expect_error(403, "AccessDenied");
    assert!(h.s3.object(BUCKET, "new").is_none());
    // Reading it is allowed where plaintext reads are.
    assert_eq!(h.get("legacy").await.expect(200).body, b"written before the proxy"[..]);
    assert_eq!(h.get_with("legacy", &[("range", "bytes=0-6")]).await.expect(206).body, b"written"[..]);
}

#[tokio::test]
async fn unencrypted_objects_are_refused_outside_the_plaintext_allow_list() {
    let h = Harness::with_plaintext_reads(&["bkt/public/"], |p| p);
    h.s3.put_raw(BUCKET, "public/a", b"open data", &[]);
    h.s3.put_raw(BUCKET, "private/a", b"secret plaintext", &[]);
    assert_eq!(h.get("public/a").await.expect(200).body, b"open data"[..]);
    let r = h.get("private/a").await;
    r.expect_error(403, "AccessDenied");
    assert!(!r.text().contains("secret plaintext"));
    h.head("private/a").await.expect(403);
    h.get_with("private/a", &[("range", "bytes=0-3")]).await.expect_error(403, "AccessDenied");
}

#[tokio::test]
async fn tagging_and_deletes_are_forwarded() {
    let h = Harness::new();
    h.put("t", b"tagged").await.expect(200);
    let tags = "<Tagging><TagSet><Tag><Key>team</Key><Value>a&amp;b</Value></Tag></TagSet></Tagging>";
    h.send(with_body(client("PUT", &format!("{}?tagging", object_uri("t"))), tags.as_bytes())).await.expect(200);
    assert_eq!(h.s3.object(BUCKET, "t").unwrap().tags, vec![("team".to_owned(), "a&b".to_owned())]);
    let got = h.send(no_body(client("GET", &format!("{}?tagging", object_uri("t"))))).await;
    got.expect(200);
    assert_eq!(got.xml(b"Value"), vec!["a&b".to_owned()]);
    // A tagged object still reads (HEAD shows the tag count).
    assert_eq!(h.head("t").await.header("x-amz-tagging-count"), "1");
    h.send(no_body(client("DELETE", &object_uri("t")))).await.expect(204);
    assert!(h.s3.object(BUCKET, "t").is_none());
    h.put("d1", b"1").await;
    h.put("d2", b"2").await;
    let doc = "<Delete><Object><Key>d1</Key></Object><Object><Key>d2</Key></Object></Delete>";
    let r = h.send(with_body(client("POST", &format!("/{BUCKET}?delete")), doc.as_bytes())).await;
    r.expect(200);
    assert_eq!(r.xml(b"Key"), vec!["d1".to_owned(), "d2".to_owned()]);
    assert!(h.s3.objects(BUCKET).is_empty());
    for r in h.upstream() {
        assert_no_workload_credentials(&r);
    }
}

#[tokio::test]
async fn an_aws_chunked_control_body_is_unframed_and_its_trailer_becomes_a_header() {
    let h = Harness::new();
    h.put("d1", b"1").await;
    let doc = b"<Delete><Object><Key>d1</Key></Object></Delete>";
    let r = h.send(chunked(client("POST", &format!("/{BUCKET}?delete")), doc, 10, None)).await;
    r.expect(200);
    let up = h.upstream().into_iter().find(|r| r.has_query("delete")).unwrap();
    // The trailer was checked against the client's document; the upstream
    // gets the proxy's own document (`s3::delete`) with its MD5 instead.
    let canonical = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Object><Key>d1</Key></Object></Delete>";
    assert_eq!(up.body, canonical.as_bytes());
    assert_eq!(up.headers["content-md5"], crate::s3::delete::content_md5(canonical.as_bytes()).as_str());
    assert!(up.headers.get("x-amz-checksum-crc32").is_none());
    assert!(up.headers.get("content-encoding").is_none() && up.headers.get("x-amz-decoded-content-length").is_none());
    // A trailer that does not match the client's document is BadDigest.
    let bad = chunked(client("POST", &format!("/{BUCKET}?delete")), doc, 10, Some("AAAAAA=="));
    h.send(bad).await.expect_error(400, "BadDigest");
}

#[tokio::test]
async fn virtual_host_requests_go_upstream_path_style() {
    let h = Harness::new();
    let mut req = with_body(client("PUT", "/vh/key"), b"hello");
    req.headers_mut().insert("host", format!("{BUCKET}.localhost:8080").parse().unwrap());
    h.send(req).await.expect(200);
    let up = h.upstream().into_iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(up.path, format!("/{BUCKET}/vh/key"));
    assert_eq!(up.headers["host"], "s3.fake:9000");
    assert_eq!(h.get("vh/key").await.body, b"hello"[..]);
}

#[tokio::test]
async fn keys_with_reserved_characters_round_trip() {
    let h = Harness::new();
    let key = "dir/ü +%&=?#x";
    h.put(key, b"odd key").await.expect(200);
    assert!(h.s3.object(BUCKET, key).is_some(), "{:?}", h.s3.objects(BUCKET).keys());
    assert_eq!(h.get(key).await.body, b"odd key"[..]);
}

#[tokio::test]
async fn a_remembered_layout_is_dropped_when_the_object_changes() {
    let h = Harness::new();
    let first = plaintext(150_000, 61);
    let second = plaintext(90_000, 62);
    h.put("swap", &first).await.expect(200);
    assert_eq!(h.get_with("swap", &[("range", "bytes=70000-70009")]).await.expect(206).body, &first[70_000..70_010]);
    let before = h.upstream().len();
    // The second range of the same object skips the header read: one upstream GET, pinned by If-Match.
    assert_eq!(h.get_with("swap", &[("range", "bytes=100-109")]).await.expect(206).body, &first[100..110]);
    let reads: Vec<_> = h.upstream().into_iter().skip(before).collect();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert!(reads[0].headers.contains_key("if-match"), "{:?}", reads[0].headers);
    // The object is replaced (another writer, another data key): the
    // remembered layout no longer matches, and the new object is served.
    h.put("swap", &second).await.expect(200);
    let r = h.get_with("swap", &[("range", "bytes=80000-80009")]).await;
    r.expect(206);
    assert_eq!(r.body, &second[80_000..80_010]);
    assert_eq!(r.header("content-range"), "bytes 80000-80009/90000");
    assert_eq!(h.get_with("swap", &[("range", "bytes=100-109")]).await.expect(206).body, &second[100..110]);
}
