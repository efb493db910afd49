//! Layouts of recently read encrypted objects, so that every ranged read
//! after the first goes straight to its covering segments instead of first
//! reading the stream header. Each use is pinned with If-Match to the ETag
//! the layout was learned with: a changed object answers 412, and its
//! layout is learned again.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

use super::stored::CheckedLayout;
use crate::bounded_map::BoundedMap;
use crate::format::EnvelopeMetadata;
use crate::s3::classify::S3Request;

/// Bucket, key and version.
type ObjectId = (String, String, Option<String>);

/// What a ranged read needs before it can pick the ciphertext to fetch.
#[derive(Debug)]
pub struct KnownLayout {
    /// The upstream ETag of the version this describes.
    pub etag: Option<HeaderValue>,
    pub checked: CheckedLayout,
    /// The envelope the layout was checked under: every later read must
    /// find the same one, and its data key is the one used.
    pub envelope: EnvelopeMetadata,
    /// The first stream's header.
    pub first_header: Bytes,
}

/// Bounded by count; entries need no age limit, as If-Match guards each use.
pub struct LayoutCache {
    by_object: BoundedMap<ObjectId, Arc<KnownLayout>>,
}

impl LayoutCache {
    pub fn new(capacity: usize) -> Self {
        Self { by_object: BoundedMap::new(capacity) }
    }

    pub fn id(s3: &S3Request) -> ObjectId {
        (
            s3.bucket.clone().unwrap_or_default(),
            s3.key.clone().unwrap_or_default(),
            s3.query_value("versionId").map(str::to_owned),
        )
    }

    pub fn get(&self, id: &ObjectId) -> Option<Arc<KnownLayout>> {
        self.by_object.get(id)
    }

    /// Keeps `known` unless it has no ETag to pin later reads to.
    pub fn insert(&self, id: ObjectId, known: Arc<KnownLayout>) {
        if known.etag.is_some() {
            self.by_object.insert(id, known);
        }
    }

    pub fn remove(&self, id: &ObjectId) {
        self.by_object.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(etag: Option<&'static str>) -> Arc<KnownLayout> {
        Arc::new(KnownLayout {
            etag: etag.map(HeaderValue::from_static),
            checked: CheckedLayout {
                layout: crate::format::ObjectLayout::single(10),
                sealed: false,
                version: None,
                streams: None,
            },
            envelope: EnvelopeMetadata {
                wrapped_key: "vault:v1:k".into(),
                transit_key: "t".into(),
                layout: crate::format::StoredLayout::Single(10),
                salt: Some([0; 32]),
                auth: None,
                key_salt: None,
            },
            first_header: Bytes::new(),
        })
    }

    fn id(key: &str) -> ObjectId {
        ("b".into(), key.into(), None)
    }

    #[test]
    fn keeps_the_newest_and_skips_entries_without_an_etag() {
        let c = LayoutCache::new(2);
        c.insert(id("a"), known(Some("\"1\"")));
        c.insert(id("b"), known(Some("\"2\"")));
        c.insert(id("c"), known(Some("\"3\"")));
        assert!(c.get(&id("a")).is_none());
        assert_eq!(c.get(&id("c")).unwrap().etag.as_ref().unwrap(), "\"3\"");
        c.insert(id("d"), known(None));
        assert!(c.get(&id("d")).is_none());
        c.remove(&id("c"));
        assert!(c.get(&id("c")).is_none());
        assert!(c.get(&id("b")).is_some());
    }
}
