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

    /// The key's bytes (base64-decoded), in a wiping buffer: what an
    /// upload id carries, sealed, for CompleteMultipartUpload's seal.
    /// `None` unless it is the 32-byte AES256 key S3 requires.
    pub fn key_bytes(&self) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        use base64::Engine;
        let bytes =
            zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(self.key.as_bytes()).ok()?);
        (bytes.len() == 32 && self.algorithm == "AES256").then_some(bytes)
    }

    /// The headers of an AES256 customer key given as its bytes.
    pub fn from_key_bytes(bytes: &[u8]) -> Option<Self> {
        use base64::Engine;
        use md5::Digest as _;
        if bytes.len() != 32 {
            return None;
        }
        let engine = base64::engine::general_purpose::STANDARD;
        let mut key = HeaderValue::from_str(&zeroize::Zeroizing::new(engine.encode(bytes))).ok()?;
        key.set_sensitive(true);
        let key_md5 = HeaderValue::from_str(&engine.encode(md5::Md5::digest(bytes))).ok()?;
        Some(Self { algorithm: HeaderValue::from_static("AES256"), key, key_md5 })
    }

    /// Sets the key as a copy source's (`x-amz-copy-source-server-side-encryption-customer-*`).
    pub fn apply_as_copy_source(&self, headers: &mut HeaderMap) {
        for (name, value) in [(COPY_ALGORITHM, &self.algorithm), (COPY_KEY, &self.key), (COPY_KEY_MD5, &self.key_md5)] {
            headers.insert(HeaderName::from_static(name), value.clone());
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

    #[test]
    fn a_key_round_trips_through_its_bytes_with_its_md5() {
        use base64::Engine;
        use md5::Digest as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let mut h = HeaderMap::new();
        h.insert(ALGORITHM, HeaderValue::from_static("AES256"));
        h.insert(KEY, engine.encode([3u8; 32]).parse().unwrap());
        h.insert(KEY_MD5, engine.encode(md5::Md5::digest([3u8; 32])).parse().unwrap());
        let key = CustomerKey::of_object(&h).unwrap().unwrap();
        let bytes = key.key_bytes().unwrap();
        assert_eq!(CustomerKey::from_key_bytes(&bytes).unwrap(), key);
        let mut copy = HeaderMap::new();
        key.apply_as_copy_source(&mut copy);
        assert_eq!(copy.get(COPY_KEY_MD5), h.get(KEY_MD5));
        assert!(CustomerKey::from_key_bytes(&[1; 16]).is_none());
    }
}
