//! Drives aws-sdk-s3 (Rust) through the proxy: PutObject, a multipart
//! upload, GetObject whole and by range, HeadObject and ListObjectsV2, with
//! the SDK's own checksum calculation and validation on.
//! Usage: sdk-roundtrip <endpoint> <bucket>. Called by tests/e2e/test_clients.py.

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, CompletedMultipartUpload, CompletedPart};

const PART: usize = 5 << 20;

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, bucket) = (&args[1], &args[2]);
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("rust-workload", "rust-dummy-secret", None, None, "static"))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
        .response_checksum_validation(ResponseChecksumValidation::WhenSupported)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);

    let small = bytes(123_457, 1);
    s3.put_object().bucket(bucket).key("rust/small.bin").body(ByteStream::from(small.clone())).send().await?;

    let big = bytes(2 * PART + 4242, 2);
    let upload = s3.create_multipart_upload().bucket(bucket).key("rust/big.bin").send().await?;
    let id = upload.upload_id().ok_or("no upload id")?;
    let mut parts = Vec::new();
    for (i, chunk) in big.chunks(PART).enumerate() {
        let n = i as i32 + 1;
        let r = s3
            .upload_part()
            .bucket(bucket)
            .key("rust/big.bin")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await?;
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap_or_default())
                .set_checksum_crc32(r.checksum_crc32().map(str::to_owned))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key("rust/big.bin")
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await?;

    for (key, data) in [("rust/small.bin", &small), ("rust/big.bin", &big)] {
        let got = s3.get_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await?;
        let body = got.body.collect().await?.into_bytes();
        assert!(body.as_ref() == data.as_slice(), "{key}: whole read differs");
        let head = s3.head_object().bucket(bucket).key(key).send().await?;
        assert_eq!(head.content_length(), Some(data.len() as i64), "{key}: HEAD size");
    }
    let ranged = s3
        .get_object()
        .bucket(bucket)
        .key("rust/big.bin")
        .range(format!("bytes={}-{}", PART - 10, PART + 10))
        .send()
        .await?;
    let body = ranged.body.collect().await?.into_bytes();
    assert!(body.as_ref() == &big[PART - 10..=PART + 10], "ranged read differs");
    let listed = s3.list_objects_v2().bucket(bucket).prefix("rust/small").send().await?;
    assert_eq!(listed.contents()[0].size(), Some(small.len() as i64), "listed size");
    println!("{{\"rust_sdk\": true}}");
    Ok(())
}
