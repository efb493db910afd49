//! The one place an upstream request's header section is rebuilt: only
//! fields the S3 API defines for requests are carried, each with the one
//! value the proxy read (repeats were refused at admission). Anything else
//! a workload sent (SDK telemetry, unknown `x-amz-*` fields, hop-by-hop
//! fields) stays behind, so the upstream never acts on a field the proxy
//! did not read.

use http::{HeaderMap, HeaderName};

/// Request fields of the S3 API (RFC 9110 fields S3 reads, and S3's own).
const FIELDS: &[&str] = &[
    // Representation and preconditions.
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "expires",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-unmodified-since",
    "range",
    // S3's own.
    "x-amz-acl",
    "x-amz-bucket-object-lock-enabled",
    "x-amz-bypass-governance-retention",
    "x-amz-checksum-algorithm",
    "x-amz-checksum-mode",
    "x-amz-checksum-type",
    "x-amz-confirm-remove-self-bucket-access",
    "x-amz-copy-source",
    "x-amz-copy-source-if-match",
    "x-amz-copy-source-if-modified-since",
    "x-amz-copy-source-if-none-match",
    "x-amz-copy-source-if-unmodified-since",
    "x-amz-copy-source-range",
    "x-amz-copy-source-version-id",
    "x-amz-decoded-content-length",
    "x-amz-expected-bucket-owner",
    "x-amz-if-match-initiated-time",
    "x-amz-if-match-last-modified-time",
    "x-amz-if-match-size",
    "x-amz-max-parts",
    "x-amz-metadata-directive",
    "x-amz-mfa",
    "x-amz-mp-object-size",
    "x-amz-object-attributes",
    "x-amz-object-ownership",
    "x-amz-optional-object-attributes",
    "x-amz-part-number-marker",
    "x-amz-request-payer",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-source-expected-bucket-owner",
    "x-amz-storage-class",
    "x-amz-tagging",
    "x-amz-tagging-directive",
    "x-amz-trailer",
    "x-amz-website-redirect-location",
];

/// Families of S3 request fields, by prefix.
const FAMILIES: &[&str] = &[
    "x-amz-meta-",
    "x-amz-grant-",
    "x-amz-checksum-",
    "x-amz-server-side-encryption",
    "x-amz-copy-source-server-side-encryption-",
    "x-amz-object-lock-",
];

fn is_s3_field(name: &HeaderName) -> bool {
    let name = name.as_str();
    FIELDS.contains(&name) || FAMILIES.iter().any(|prefix| name.starts_with(prefix))
}

/// The header section the upstream gets: each S3 request field of
/// `headers`, once. Host, the signature and the payload hash are the
/// signer's to add.
pub fn rebuild(headers: HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.keys_len());
    // The owned iterator names a field at its first value only (`None`
    // after): a field's first value is the one the proxy read.
    for (name, value) in headers {
        if let Some(name) = name.filter(is_s3_field) {
            out.insert(name, value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s3_request_fields_go_upstream_once() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "text/plain"),
            ("x-amz-meta-color", "blue"),
            ("x-amz-meta-cloudtaser-key", "vault:v1:x"),
            ("x-amz-server-side-encryption-customer-key", "k"),
            ("x-amz-checksum-crc32", "AAAAAA=="),
            ("x-amz-user-agent", "aws-sdk-js"),
            ("amz-sdk-invocation-id", "1"),
            ("x-amz-some-future-field", "1"),
            ("authorization", "AWS4-HMAC-SHA256 …"),
            ("x-amz-security-token", "t"),
            ("x-amz-date", "20260101T000000Z"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("host", "bucket.localhost"),
        ] {
            h.insert(HeaderName::from_static(k), v.parse().unwrap());
        }
        h.append("x-amz-meta-color", "red".parse().unwrap());
        let out = rebuild(h);
        let mut names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "content-type",
                "x-amz-checksum-crc32",
                "x-amz-meta-cloudtaser-key",
                "x-amz-meta-color",
                "x-amz-server-side-encryption-customer-key"
            ]
        );
        assert_eq!(out.get_all("x-amz-meta-color").iter().count(), 1);
    }
}
