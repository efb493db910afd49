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
