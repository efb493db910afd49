//! Every S3 operation the proxy recognises, as an exact allow-list.
//!
//! A request is classified by its method, its target (the service, a bucket
//! or an object) and the names of its query parameters. It matches an entry
//! only when every parameter the entry requires is present and every other
//! parameter is one the entry takes. Anything else matches nothing and is
//! refused before a byte is forwarded: an upstream that reads an unknown
//! parameter differently (s3s-fs treats `PUT /b/k?attributes` as PutObject)
//! would otherwise store the body as it came.

/// What a request is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Service,
    Bucket,
    Object,
}

/// How the proxy carries out an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    PutObject,
    GetObject,
    HeadObject,
    CopyObject,
    ListObjects,
    ListObjectsV2,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    /// Listed like ListObjects: sizes in plaintext terms, ETags marked.
    ListObjectVersions,
    /// Answered in plaintext terms from the upstream's answer and the envelope.
    GetObjectAttributes,
    /// No object data either way: forwarded re-signed, its small body (an XML
    /// configuration or nothing) read in full first.
    Forward,
    /// Recognised, but it would carry object data the proxy cannot encrypt or
    /// decrypt; refused with this reason.
    Refused(&'static str),
}

/// One row of the allow-list.
#[derive(Debug)]
pub struct OperationSpec {
    /// The AWS API name: what the allow-list setting, logs and metrics use.
    pub name: &'static str,
    pub method: &'static str,
    pub target: Target,
    /// Query parameters that must all be present (the sub-resource).
    pub requires: &'static [&'static str],
    /// Optional query parameters it takes.
    pub params: &'static [&'static str],
    pub operation: Operation,
}

/// Taken by every operation: the AWS SDKs add `x-id` for routing; it means
/// nothing to the upstream.
pub const ANY_OPERATION_PARAMS: &[&str] = &["x-id"];

const VERSION: &[&str] = &["versionId"];
const READ_OBJECT: &[&str] = &[
    "versionId",
    "partNumber",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
];
const LIST_V1: &[&str] = &["prefix", "delimiter", "marker", "max-keys", "encoding-type"];
const LIST_V2: &[&str] =
    &["prefix", "delimiter", "max-keys", "encoding-type", "continuation-token", "fetch-owner", "start-after"];
const LIST_VERSIONS: &[&str] = &["prefix", "delimiter", "key-marker", "version-id-marker", "max-keys", "encoding-type"];
const LIST_UPLOADS: &[&str] =
    &["prefix", "delimiter", "key-marker", "upload-id-marker", "max-uploads", "encoding-type"];
const LIST_PARTS: &[&str] = &["max-parts", "part-number-marker", "encoding-type"];
const CONTINUATION: &[&str] = &["continuation-token"];

const fn spec(
    name: &'static str,
    method: &'static str,
    target: Target,
    requires: &'static [&'static str],
    params: &'static [&'static str],
    operation: Operation,
) -> OperationSpec {
    OperationSpec { name, method, target, requires, params, operation }
}

/// Shorthand for the many bucket configuration operations that are forwarded.
const fn bucket_config(name: &'static str, method: &'static str, requires: &'static [&'static str]) -> OperationSpec {
    spec(name, method, Target::Bucket, requires, &[], Operation::Forward)
}

use Operation as O;
use Target::{Bucket, Object, Service};

/// The allow-list. Order matters only for readability: the unit tests check
/// that no request shape matches two rows.
pub const OPERATIONS: &[OperationSpec] = &[
    // Objects: the operations that carry object data.
    spec("PutObject", "PUT", Object, &[], &[], O::PutObject),
    spec("GetObject", "GET", Object, &[], READ_OBJECT, O::GetObject),
    spec("HeadObject", "HEAD", Object, &[], READ_OBJECT, O::HeadObject),
    spec("DeleteObject", "DELETE", Object, &[], VERSION, O::Forward),
    spec("CreateMultipartUpload", "POST", Object, &["uploads"], &[], O::CreateMultipartUpload),
    spec("UploadPart", "PUT", Object, &["partNumber", "uploadId"], &[], O::UploadPart),
    spec("CompleteMultipartUpload", "POST", Object, &["uploadId"], &[], O::CompleteMultipartUpload),
    spec("AbortMultipartUpload", "DELETE", Object, &["uploadId"], &[], O::AbortMultipartUpload),
    spec("ListParts", "GET", Object, &["uploadId"], LIST_PARTS, O::ListParts),
    // Object sub-resources with no object data.
    spec("GetObjectTagging", "GET", Object, &["tagging"], VERSION, O::Forward),
    spec("PutObjectTagging", "PUT", Object, &["tagging"], VERSION, O::Forward),
    spec("DeleteObjectTagging", "DELETE", Object, &["tagging"], VERSION, O::Forward),
    spec("GetObjectAcl", "GET", Object, &["acl"], VERSION, O::Forward),
    spec("PutObjectAcl", "PUT", Object, &["acl"], VERSION, O::Forward),
    spec("GetObjectRetention", "GET", Object, &["retention"], VERSION, O::Forward),
    spec("PutObjectRetention", "PUT", Object, &["retention"], VERSION, O::Forward),
    spec("GetObjectLegalHold", "GET", Object, &["legal-hold"], VERSION, O::Forward),
    spec("PutObjectLegalHold", "PUT", Object, &["legal-hold"], VERSION, O::Forward),
    spec("RestoreObject", "POST", Object, &["restore"], VERSION, O::Forward),
    // Object sub-resources whose answers are about the ciphertext.
    spec("GetObjectAttributes", "GET", Object, &["attributes"], VERSION, O::GetObjectAttributes),
    spec(
        "GetObjectTorrent",
        "GET",
        Object,
        &["torrent"],
        &[],
        O::Refused("a torrent of an object would describe its ciphertext"),
    ),
    spec(
        "SelectObjectContent",
        "POST",
        Object,
        &["select", "select-type"],
        &[],
        O::Refused("SelectObjectContent cannot read client-side encrypted objects"),
    ),
    // Buckets.
    spec("ListObjects", "GET", Bucket, &[], LIST_V1, O::ListObjects),
    spec("ListObjectsV2", "GET", Bucket, &["list-type"], LIST_V2, O::ListObjectsV2),
    spec("ListObjectVersions", "GET", Bucket, &["versions"], LIST_VERSIONS, O::ListObjectVersions),
    spec("ListMultipartUploads", "GET", Bucket, &["uploads"], LIST_UPLOADS, O::Forward),
    spec("DeleteObjects", "POST", Bucket, &["delete"], &[], O::Forward),
    spec("HeadBucket", "HEAD", Bucket, &[], &[], O::Forward),
    spec("CreateBucket", "PUT", Bucket, &[], &[], O::Forward),
    spec("DeleteBucket", "DELETE", Bucket, &[], &[], O::Forward),
    spec(
        "PostObject",
        "POST",
        Bucket,
        &[],
        &[],
        O::Refused("browser-form POST uploads are not encrypted by the proxy"),
    ),
    bucket_config("GetBucketLocation", "GET", &["location"]),
    bucket_config("GetBucketAccelerateConfiguration", "GET", &["accelerate"]),
    bucket_config("PutBucketAccelerateConfiguration", "PUT", &["accelerate"]),
    bucket_config("GetBucketAcl", "GET", &["acl"]),
    bucket_config("PutBucketAcl", "PUT", &["acl"]),
    bucket_config("GetBucketAnalyticsConfiguration", "GET", &["analytics", "id"]),
    bucket_config("PutBucketAnalyticsConfiguration", "PUT", &["analytics", "id"]),
    bucket_config("DeleteBucketAnalyticsConfiguration", "DELETE", &["analytics", "id"]),
    spec("ListBucketAnalyticsConfigurations", "GET", Bucket, &["analytics"], CONTINUATION, O::Forward),
    bucket_config("GetBucketCors", "GET", &["cors"]),
    bucket_config("PutBucketCors", "PUT", &["cors"]),
    bucket_config("DeleteBucketCors", "DELETE", &["cors"]),
    bucket_config("GetBucketEncryption", "GET", &["encryption"]),
    bucket_config("PutBucketEncryption", "PUT", &["encryption"]),
    bucket_config("DeleteBucketEncryption", "DELETE", &["encryption"]),
    bucket_config("GetBucketIntelligentTieringConfiguration", "GET", &["intelligent-tiering", "id"]),
    bucket_config("PutBucketIntelligentTieringConfiguration", "PUT", &["intelligent-tiering", "id"]),
    bucket_config("DeleteBucketIntelligentTieringConfiguration", "DELETE", &["intelligent-tiering", "id"]),
    spec(
        "ListBucketIntelligentTieringConfigurations",
        "GET",
        Bucket,
        &["intelligent-tiering"],
        CONTINUATION,
        O::Forward,
    ),
    bucket_config("GetBucketInventoryConfiguration", "GET", &["inventory", "id"]),
    bucket_config("PutBucketInventoryConfiguration", "PUT", &["inventory", "id"]),
    bucket_config("DeleteBucketInventoryConfiguration", "DELETE", &["inventory", "id"]),
    spec("ListBucketInventoryConfigurations", "GET", Bucket, &["inventory"], CONTINUATION, O::Forward),
    bucket_config("GetBucketLifecycleConfiguration", "GET", &["lifecycle"]),
    bucket_config("PutBucketLifecycleConfiguration", "PUT", &["lifecycle"]),
    bucket_config("DeleteBucketLifecycle", "DELETE", &["lifecycle"]),
    bucket_config("GetBucketLogging", "GET", &["logging"]),
    bucket_config("PutBucketLogging", "PUT", &["logging"]),
    bucket_config("GetBucketMetricsConfiguration", "GET", &["metrics", "id"]),
    bucket_config("PutBucketMetricsConfiguration", "PUT", &["metrics", "id"]),
    bucket_config("DeleteBucketMetricsConfiguration", "DELETE", &["metrics", "id"]),
    spec("ListBucketMetricsConfigurations", "GET", Bucket, &["metrics"], CONTINUATION, O::Forward),
    bucket_config("GetBucketNotificationConfiguration", "GET", &["notification"]),
    bucket_config("PutBucketNotificationConfiguration", "PUT", &["notification"]),
    bucket_config("GetObjectLockConfiguration", "GET", &["object-lock"]),
    bucket_config("PutObjectLockConfiguration", "PUT", &["object-lock"]),
    bucket_config("GetBucketOwnershipControls", "GET", &["ownershipControls"]),
    bucket_config("PutBucketOwnershipControls", "PUT", &["ownershipControls"]),
    bucket_config("DeleteBucketOwnershipControls", "DELETE", &["ownershipControls"]),
    bucket_config("GetBucketPolicy", "GET", &["policy"]),
    bucket_config("PutBucketPolicy", "PUT", &["policy"]),
    bucket_config("DeleteBucketPolicy", "DELETE", &["policy"]),
    bucket_config("GetBucketPolicyStatus", "GET", &["policyStatus"]),
    bucket_config("GetPublicAccessBlock", "GET", &["publicAccessBlock"]),
    bucket_config("PutPublicAccessBlock", "PUT", &["publicAccessBlock"]),
    bucket_config("DeletePublicAccessBlock", "DELETE", &["publicAccessBlock"]),
    bucket_config("GetBucketReplication", "GET", &["replication"]),
    bucket_config("PutBucketReplication", "PUT", &["replication"]),
    bucket_config("DeleteBucketReplication", "DELETE", &["replication"]),
    bucket_config("GetBucketRequestPayment", "GET", &["requestPayment"]),
    bucket_config("PutBucketRequestPayment", "PUT", &["requestPayment"]),
    bucket_config("GetBucketTagging", "GET", &["tagging"]),
    bucket_config("PutBucketTagging", "PUT", &["tagging"]),
    bucket_config("DeleteBucketTagging", "DELETE", &["tagging"]),
    bucket_config("GetBucketVersioning", "GET", &["versioning"]),
    bucket_config("PutBucketVersioning", "PUT", &["versioning"]),
    bucket_config("GetBucketWebsite", "GET", &["website"]),
    bucket_config("PutBucketWebsite", "PUT", &["website"]),
    bucket_config("DeleteBucketWebsite", "DELETE", &["website"]),
    // The account.
    spec(
        "ListBuckets",
        "GET",
        Service,
        &[],
        &["max-buckets", "continuation-token", "prefix", "bucket-region"],
        O::Forward,
    ),
];

/// What `CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS` allows when unset (the word
/// `default`): reading and writing objects, multipart uploads, listing,
/// HEAD and GetObjectAttributes, object tags, deletes, and reading an
/// object's retention and legal hold (HEAD shows both anyway). Bucket
/// creation and deletion, bucket configuration writes, ACLs, setting
/// retention or legal holds and ListBuckets are refused: a workload's data path needs none of them, and the proxy's
/// identity must not become a way to manage the account (docs/SECURITY.md).
pub const DEFAULT_ALLOWED: &[&str] = &[
    "PutObject",
    "GetObject",
    "HeadObject",
    "GetObjectAttributes",
    "CopyObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
    "ListMultipartUploads",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "HeadBucket",
    "GetBucketLocation",
    "GetBucketVersioning",
    "GetObjectTagging",
    "PutObjectTagging",
    "DeleteObjectTagging",
    "GetObjectRetention",
    "GetObjectLegalHold",
];

/// Names that are not rows of the table because a header, not the query,
/// tells them apart (`x-amz-copy-source`).
pub const HEADER_DISTINGUISHED: &[&str] = &["CopyObject", "UploadPartCopy"];

/// Whether `name` is an operation the proxy knows.
pub fn is_known(name: &str) -> bool {
    HEADER_DISTINGUISHED.contains(&name) || OPERATIONS.iter().any(|s| s.name == name)
}

/// The row a request matches, given its method, target and query names.
pub fn find<'a>(
    method: &str,
    target: Target,
    names: impl Iterator<Item = &'a str> + Clone,
) -> Option<&'static OperationSpec> {
    OPERATIONS.iter().find(|s| {
        s.method == method
            && s.target == target
            && s.requires.iter().all(|r| names.clone().any(|n| n == *r))
            && names
                .clone()
                .all(|n| s.requires.contains(&n) || s.params.contains(&n) || ANY_OPERATION_PARAMS.contains(&n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No request shape matches two rows: each row's minimal request (its
    /// required parameters) and its maximal one (all its parameters) match
    /// exactly that row.
    #[test]
    fn every_row_is_reachable_and_unambiguous() {
        for s in OPERATIONS {
            let minimal: Vec<&str> = s.requires.to_vec();
            let maximal: Vec<&str> = s.requires.iter().chain(s.params).copied().collect();
            for names in [minimal, maximal] {
                let matches: Vec<_> = OPERATIONS
                    .iter()
                    .filter(|o| {
                        o.method == s.method
                            && o.target == s.target
                            && o.requires.iter().all(|r| names.contains(r))
                            && names.iter().all(|n| o.requires.contains(n) || o.params.contains(n))
                    })
                    .map(|o| o.name)
                    .collect();
                assert_eq!(matches, vec![s.name], "{names:?}");
            }
        }
    }

    #[test]
    fn default_allows_only_known_names() {
        for name in DEFAULT_ALLOWED {
            assert!(is_known(name), "{name}");
        }
        let mut names: Vec<_> = OPERATIONS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPERATIONS.len(), "operation names are unique");
    }

    #[test]
    fn unknown_parameters_match_nothing() {
        assert!(find("PUT", Target::Object, ["attributes"].into_iter()).is_none());
        assert!(find("PUT", Target::Object, ["uploadId"].into_iter()).is_none());
        assert!(find("PUT", Target::Object, ["uploadId", "partnumber"].into_iter()).is_none());
        assert!(find("PUT", Target::Object, ["torrent"].into_iter()).is_none());
        assert!(find("GET", Target::Object, ["restore"].into_iter()).is_none());
        assert!(find("GET", Target::Object, ["uploads"].into_iter()).is_none());
        assert_eq!(find("PUT", Target::Object, ["x-id"].into_iter()).map(|s| s.name), Some("PutObject"));
    }
}
