//! What the workload may do with the proxy's identity: which operations
//! (`CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS`) on which buckets and prefixes
//! (`CLOUDTASER_S3PROXY_BUCKETS`). Checked after classification and before
//! anything is forwarded; a refusal is 403 `AccessDenied` naming the setting.

use std::collections::BTreeSet;

use crate::config_error::{ConfigError, invalid};
use crate::error::{PolicyDenial, ProxyError};
use crate::s3::classify::S3Request;
use crate::s3::operations::{DEFAULT_ALLOWED, HEADER_DISTINGUISHED, OPERATIONS};

pub const OPERATIONS_SETTING: &str = "CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS";
pub const BUCKETS_SETTING: &str = "CLOUDTASER_S3PROXY_BUCKETS";

/// Bucket-level reads that SDKs make before touching objects (region and
/// versioning discovery). A prefix-scoped entry allows them on its bucket.
const BUCKET_DISCOVERY: &[&str] = &["HeadBucket", "GetBucketLocation", "GetBucketVersioning"];

/// Listings, whose `prefix` parameter must stay inside a prefix-scoped entry.
const LISTINGS: &[&str] = &["ListObjects", "ListObjectsV2", "ListObjectVersions", "ListMultipartUploads"];

#[derive(Debug, Clone)]
pub struct AccessPolicy {
    operations: BTreeSet<&'static str>,
    /// `None`: any bucket. Otherwise (bucket, key prefix); an empty prefix is the whole bucket.
    buckets: Option<Vec<(String, String)>>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self { operations: DEFAULT_ALLOWED.iter().copied().collect(), buckets: None }
    }
}

impl AccessPolicy {
    /// `operations`: names, `default`, `all`, and `-Name` to take one away.
    /// Empty means `default`.
    pub fn new(operations: &[String], buckets: &[String]) -> Result<Self, ConfigError> {
        let mut allowed = BTreeSet::new();
        let entries: Vec<&str> = operations.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).collect();
        let entries = if entries.is_empty() { vec!["default"] } else { entries };
        for entry in &entries {
            match *entry {
                "default" => allowed.extend(DEFAULT_ALLOWED.iter().copied()),
                "all" => {
                    allowed.extend(OPERATIONS.iter().map(|s| s.name));
                    allowed.extend(HEADER_DISTINGUISHED.iter().copied());
                }
                _ => {}
            }
        }
        for entry in &entries {
            let (remove, name) = match entry.strip_prefix('-') {
                Some(name) => (true, name),
                None => (false, *entry),
            };
            if matches!(name, "default" | "all") {
                continue;
            }
            let known = OPERATIONS
                .iter()
                .map(|s| s.name)
                .chain(HEADER_DISTINGUISHED.iter().copied())
                .find(|n| *n == name)
                .ok_or_else(|| {
                    invalid(OPERATIONS_SETTING, format!("`{name}` is not an S3 operation name the proxy knows"))
                })?;
            if remove {
                allowed.remove(known);
            } else {
                allowed.insert(known);
            }
        }
        let buckets = buckets.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).collect::<Vec<_>>();
        let buckets = if buckets.is_empty() {
            None
        } else {
            let mut scoped = Vec::new();
            for entry in buckets {
                let (bucket, prefix) = entry.split_once('/').unwrap_or((entry, ""));
                let valid_bucket = !bucket.is_empty()
                    && !matches!(bucket, "." | "..")
                    && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
                if !valid_bucket {
                    return Err(invalid(BUCKETS_SETTING, format!("`{entry}` does not start with a bucket name")));
                }
                if prefix.split('/').any(|s| s == "..") {
                    return Err(invalid(BUCKETS_SETTING, format!("`{entry}` has a `..` segment")));
                }
                scoped.push((bucket.to_owned(), prefix.to_owned()));
            }
            Some(scoped)
        };
        Ok(Self { operations: allowed, buckets })
    }

    /// Whether the request may be forwarded at all. `copy_source` is the
    /// source of a CopyObject or UploadPartCopy: reading it decrypts it, so
    /// it must be inside the allowed buckets too.
    pub fn check(&self, s3: &S3Request, copy_source: Option<&S3Request>) -> Result<(), ProxyError> {
        if !self.operations.contains(s3.name) {
            return Err(PolicyDenial::Operation { operation: s3.name, setting: OPERATIONS_SETTING }.into());
        }
        let Some(scopes) = &self.buckets else { return Ok(()) };
        let denied = || {
            ProxyError::from(PolicyDenial::Outside {
                operation: s3.name,
                resource: s3.resource(),
                setting: BUCKETS_SETTING,
            })
        };
        let Some(bucket) = s3.bucket.as_deref() else { return Err(denied()) };
        let allowed = match s3.key.as_deref() {
            Some(key) => self.covers(bucket, key),
            _ if LISTINGS.contains(&s3.name) => self.covers(bucket, s3.query_value("prefix").unwrap_or("")),
            _ if BUCKET_DISCOVERY.contains(&s3.name) => scopes.iter().any(|(b, _)| b == bucket),
            // DeleteObjects names its keys in the body: `check_keys` checks them.
            _ if s3.name == "DeleteObjects" => scopes.iter().any(|(b, _)| b == bucket),
            // Anything else acts on the whole bucket.
            _ => self.covers(bucket, ""),
        };
        if !allowed {
            return Err(denied());
        }
        if let Some(source) = copy_source {
            let (b, k) = (source.bucket.as_deref().unwrap_or(""), source.key.as_deref().unwrap_or(""));
            if !self.covers(b, k) {
                return Err(PolicyDenial::CopySource { resource: source.resource(), setting: BUCKETS_SETTING }.into());
            }
        }
        Ok(())
    }

    /// Operations a write's headers perform besides the write itself: an
    /// ACL or an object lock set on PutObject, CopyObject or
    /// CreateMultipartUpload must be allowed as PutObjectAcl,
    /// PutObjectRetention or PutObjectLegalHold would be, or the headers
    /// would do what the policy refuses. Bypassing governance-mode retention
    /// (`x-amz-bypass-governance-retention`, on deletes and retention
    /// changes) is a retention change, so it needs PutObjectRetention too.
    pub fn check_implied(&self, s3: &S3Request, headers: &http::HeaderMap) -> Result<(), ProxyError> {
        const PRIVATE_ACLS: &[&str] = &["private", "bucket-owner-full-control"];
        let grants = headers.keys().any(|k| k.as_str().starts_with("x-amz-grant-"));
        let public_acl = headers
            .get("x-amz-acl")
            .is_some_and(|v| !PRIVATE_ACLS.iter().any(|p| v.as_bytes().eq_ignore_ascii_case(p.as_bytes())));
        let acl = if s3.name == "CreateBucket" { "PutBucketAcl" } else { "PutObjectAcl" };
        let implied = [
            (grants || public_acl, acl),
            (
                headers.contains_key("x-amz-object-lock-mode")
                    || headers.contains_key("x-amz-object-lock-retain-until-date")
                    || headers.contains_key("x-amz-bypass-governance-retention"),
                "PutObjectRetention",
            ),
            (headers.contains_key("x-amz-object-lock-legal-hold"), "PutObjectLegalHold"),
        ];
        match implied.iter().find(|(present, op)| *present && !self.operations.contains(op)) {
            Some((_, op)) => {
                Err(PolicyDenial::Implied { operation: s3.name, implied: op, setting: OPERATIONS_SETTING }.into())
            }
            None => Ok(()),
        }
    }

    /// Whether a DeleteObjects body may name these keys.
    pub fn check_keys<'a>(&self, bucket: &str, mut keys: impl Iterator<Item = &'a str>) -> Result<(), ProxyError> {
        match keys.find(|k| !self.covers(bucket, k)) {
            Some(k) => {
                Err(PolicyDenial::DeleteKey { bucket: bucket.to_owned(), key: k.to_owned(), setting: BUCKETS_SETTING }
                    .into())
            }
            None => Ok(()),
        }
    }

    /// Whether a bucket list is set at all.
    pub fn scopes_buckets(&self) -> bool {
        self.buckets.is_some()
    }

    /// Whether DeleteObjects bodies must be inspected (some entry is a prefix).
    pub fn scopes_keys(&self) -> bool {
        self.buckets.as_ref().is_some_and(|s| s.iter().any(|(_, p)| !p.is_empty()))
    }

    fn covers(&self, bucket: &str, key: &str) -> bool {
        match &self.buckets {
            None => true,
            Some(scopes) => scopes.iter().any(|(b, p)| b == bucket && key.starts_with(p.as_str())),
        }
    }
}

/// Which unencrypted (pre-proxy) objects may be served as they are.
#[derive(Debug, Clone, Default)]
pub struct PlaintextReadPolicy {
    /// (bucket, key prefix); an empty prefix covers the whole bucket.
    allowed: Vec<(String, String)>,
}

impl PlaintextReadPolicy {
    pub fn new(entries: &[String]) -> Result<Self, ConfigError> {
        let mut allowed = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (bucket, prefix) = entry.split_once('/').unwrap_or((entry, ""));
            if bucket.is_empty() {
                return Err(invalid("CLOUDTASER_S3PROXY_PLAINTEXT_READS", format!("`{entry}` names no bucket")));
            }
            allowed.push((bucket.to_owned(), prefix.to_owned()));
        }
        Ok(Self { allowed })
    }

    pub fn allows(&self, bucket: &str, key: &str) -> bool {
        self.allowed.iter().any(|(b, p)| b == bucket && key.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::classify::classify;
    use http::{HeaderMap, Method};

    fn req(method: Method, uri: &str) -> S3Request {
        classify(&method, &uri.parse().unwrap(), &HeaderMap::new(), "localhost").unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_refuses_account_and_bucket_management() {
        let p = AccessPolicy::new(&[], &[]).unwrap();
        for (m, uri) in [
            (Method::PUT, "/b/k"),
            (Method::GET, "/b/k"),
            (Method::DELETE, "/b/k"),
            (Method::GET, "/b?list-type=2"),
            (Method::POST, "/b?delete"),
            (Method::PUT, "/b/k?tagging"),
        ] {
            assert!(p.check(&req(m.clone(), uri), None).is_ok(), "{m} {uri}");
        }
        for (m, uri) in [
            (Method::GET, "/"),
            (Method::PUT, "/b"),
            (Method::DELETE, "/b"),
            (Method::PUT, "/b?policy"),
            (Method::PUT, "/b?acl"),
            (Method::PUT, "/b?cors"),
            (Method::PUT, "/b?lifecycle"),
            (Method::PUT, "/b?replication"),
            (Method::PUT, "/b?encryption"),
            (Method::PUT, "/b?website"),
            (Method::PUT, "/b?versioning"),
            (Method::PUT, "/b/k?acl"),
        ] {
            let e = p.check(&req(m.clone(), uri), None).unwrap_err();
            assert_eq!(e.code(), "AccessDenied", "{m} {uri}");
            assert!(e.to_string().contains(OPERATIONS_SETTING));
        }
    }

    #[test]
    fn headers_that_set_acls_or_locks_need_those_operations() {
        let p = AccessPolicy::new(&[], &[]).unwrap();
        let put = req(Method::PUT, "/b/k");
        let with = |name: &str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            h
        };
        assert!(p.check_implied(&put, &with("x-amz-acl", "private")).is_ok());
        assert!(p.check_implied(&put, &with("x-amz-acl", "bucket-owner-full-control")).is_ok());
        assert!(p.check_implied(&put, &with("x-amz-acl", "public-read-write")).is_err());
        assert!(p.check_implied(&put, &with("x-amz-grant-full-control", "id=x")).is_err());
        assert!(p.check_implied(&put, &with("x-amz-object-lock-mode", "COMPLIANCE")).is_err());
        assert!(p.check_implied(&put, &with("x-amz-object-lock-legal-hold", "ON")).is_err());
        let delete = req(Method::DELETE, "/b/k?versionId=v");
        assert!(p.check_implied(&delete, &with("x-amz-bypass-governance-retention", "true")).is_err());
        assert!(p.check_implied(&delete, &HeaderMap::new()).is_ok());
        let lock = AccessPolicy::new(&strings(&["default", "PutObjectRetention", "PutObjectLegalHold"]), &[]).unwrap();
        assert!(lock.check_implied(&delete, &with("x-amz-bypass-governance-retention", "true")).is_ok());
        assert!(lock.check_implied(&put, &with("x-amz-object-lock-legal-hold", "ON")).is_ok());
        let all = AccessPolicy::new(&strings(&["all"]), &[]).unwrap();
        assert!(all.check_implied(&put, &with("x-amz-object-lock-mode", "COMPLIANCE")).is_ok());
    }

    #[test]
    fn operation_lists_add_and_remove() {
        let p = AccessPolicy::new(&strings(&["default", "CreateBucket", "-DeleteObject"]), &[]).unwrap();
        assert!(p.check(&req(Method::PUT, "/b"), None).is_ok());
        assert!(p.check(&req(Method::DELETE, "/b/k"), None).is_err());
        let all = AccessPolicy::new(&strings(&["all"]), &[]).unwrap();
        assert!(all.check(&req(Method::PUT, "/b?policy"), None).is_ok());
        let e = AccessPolicy::new(&strings(&["GetObjects"]), &[]).unwrap_err();
        assert!(e.to_string().starts_with(OPERATIONS_SETTING));
    }

    #[test]
    fn buckets_and_prefixes() {
        let p = AccessPolicy::new(&[], &strings(&["data", "shared/team-a/"])).unwrap();
        assert!(p.check(&req(Method::GET, "/data/any"), None).is_ok());
        assert!(p.check(&req(Method::GET, "/shared/team-a/x"), None).is_ok());
        assert!(p.check(&req(Method::GET, "/shared/team-b/x"), None).is_err());
        assert!(p.check(&req(Method::GET, "/other/x"), None).is_err());
        assert!(p.check(&req(Method::GET, "/shared?list-type=2&prefix=team-a/"), None).is_ok());
        assert!(p.check(&req(Method::GET, "/shared?list-type=2"), None).is_err());
        assert!(p.check(&req(Method::HEAD, "/shared"), None).is_ok());
        assert!(p.check(&req(Method::GET, "/"), None).is_err());
        let source = req(Method::HEAD, "/other/secret");
        let e = p.check(&req(Method::PUT, "/data/copy"), Some(&source)).unwrap_err();
        assert!(e.to_string().contains(BUCKETS_SETTING));
        assert!(p.check_keys("shared", ["team-a/1", "team-b/2"].into_iter()).is_err());
        assert!(p.check_keys("shared", ["team-a/1"].into_iter()).is_ok());
        assert!(p.scopes_keys());
        assert!(AccessPolicy::new(&[], &strings(&["/x"])).is_err());
        assert!(AccessPolicy::new(&[], &strings(&["b/../c"])).is_err());
    }
}
