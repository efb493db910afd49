//! SSE-C: the workload's own key for the provider's server-side encryption,
//! applied by the upstream on top of CloudTaser's. The upstream needs the key
//! on every request that touches the object's bytes or metadata, including
//! those the proxy makes on the workload's behalf (layout probes, header
//! reads, ranged reads, copy-source reads), so the key travels with the
//! request descriptor (`S3Request::sse_c`) and `UpstreamClient::request`
//! adds it to each of them. Nothing else sees it: it is never logged
//! (`Debug` is redacted, the header values are marked sensitive), and the
//! layout cache holds no key, so a request without the key never reads an
//! object that needs one (the upstream refuses it).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::ProxyError;

const ALGORITHM: &str = "x-amz-server-side-encryption-customer-algorithm";
const KEY: &str = "x-amz-server-side-encryption-customer-key";
const KEY_MD5: &str = "x-amz-server-side-encryption-customer-key-md5";
const COPY_ALGORITHM: &str = "x-amz-copy-source-server-side-encryption-customer-algorithm";
const COPY_KEY: &str = "x-amz-copy-source-server-side-encryption-customer-key";
const COPY_KEY_MD5: &str = "x-amz-copy-source-server-side-encryption-customer-key-md5";

/// The three SSE-C headers of one object.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey {
    algorithm: HeaderValue,
    key: HeaderValue,
    key_md5: HeaderValue,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(redacted)")
    }
}

impl CustomerKey {
    /// The object's key from the request's own SSE-C headers.
    pub fn of_object(headers: &HeaderMap) -> Result<Option<Self>, ProxyError> {
        Self::from_names(headers, [ALGORITHM, KEY, KEY_MD5])
    }

    /// The copy source's key, from `x-amz-copy-source-server-side-encryption-customer-*`.
    pub fn of_copy_source(headers: &HeaderMap) -> Result<Option<Self>, ProxyError> {
        Self::from_names(headers, [COPY_ALGORITHM, COPY_KEY, COPY_KEY_MD5])
    }

    /// All three headers or none, as S3 requires.
    fn from_names(headers: &HeaderMap, names: [&str; 3]) -> Result<Option<Self>, ProxyError> {
        let [algorithm, key, key_md5] = names.map(|n| headers.get(n).cloned());
        match (algorithm, key, key_md5) {
            (None, None, None) => Ok(None),
            (Some(algorithm), Some(mut key), Some(key_md5)) => {
                key.set_sensitive(true);
                Ok(Some(Self { algorithm, key, key_md5 }))
            }
            _ => Err(crate::error::ArgumentError::SseC.into()),
        }
    }

    /// Sets the object's SSE-C headers on an upstream request.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [(ALGORITHM, &self.algorithm), (KEY, &self.key), (KEY_MD5, &self.key_md5)] {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(names: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for n in names {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("v"));
        }
        h
    }

    #[test]
    fn all_three_or_none() {
        assert!(CustomerKey::of_object(&HeaderMap::new()).unwrap().is_none());
        let key = CustomerKey::of_object(&headers(&[ALGORITHM, KEY, KEY_MD5])).unwrap().unwrap();
        assert_eq!(format!("{key:?}"), "CustomerKey(redacted)");
        assert!(CustomerKey::of_object(&headers(&[ALGORITHM, KEY])).is_err());
        let source = CustomerKey::of_copy_source(&headers(&[COPY_ALGORITHM, COPY_KEY, COPY_KEY_MD5])).unwrap();
        let mut out = HeaderMap::new();
        source.unwrap().apply(&mut out);
        assert!(out.contains_key(KEY) && out.get(KEY).unwrap().is_sensitive() && !out.contains_key(COPY_KEY));
    }
}
