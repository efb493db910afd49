//! The envelope's object metadata: what a reader needs besides the body.

use http::HeaderMap;

pub const META_PREFIX: &str = "x-amz-meta-cloudtaser-";
pub const META_FORMAT: &str = "x-amz-meta-cloudtaser-format";
pub const META_WRAPPED_KEY: &str = "x-amz-meta-cloudtaser-key";
pub const META_TRANSIT_KEY: &str = "x-amz-meta-cloudtaser-transit-key";
pub const META_SIZE: &str = "x-amz-meta-cloudtaser-size";
pub const META_LAYOUT: &str = "x-amz-meta-cloudtaser-layout";
pub const META_SALT: &str = "x-amz-meta-cloudtaser-salt";

/// How the body is laid out, as far as metadata written up front can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredLayout {
    /// One stream of this many plaintext bytes (single PUT).
    Single(u64),
    /// One stream per part; the sizes are in the streams' headers.
    Multipart,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeMetadata {
    pub format: u8,
    /// The data key wrapped by Transit, `vault:vN:…`.
    pub wrapped_key: String,
    /// Transit key name the data key is wrapped under.
    pub transit_key: String,
    pub layout: StoredLayout,
    /// The stream salt of a single-PUT object: binds the body to this
    /// metadata, so bodies cannot be swapped between objects that share a
    /// data key (docs/SECURITY.md, data key reuse).
    pub salt: Option<[u8; 32]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("object metadata {0} is missing or malformed")]
pub struct MetadataError(pub &'static str);

impl EnvelopeMetadata {
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let layout = match self.layout {
            StoredLayout::Single(len) => (META_SIZE, len.to_string()),
            StoredLayout::Multipart => (META_LAYOUT, "multipart".to_owned()),
        };
        let mut out = vec![
            (META_FORMAT, self.format.to_string()),
            (META_WRAPPED_KEY, self.wrapped_key.clone()),
            (META_TRANSIT_KEY, self.transit_key.clone()),
            layout,
        ];
        if let Some(salt) = &self.salt {
            out.push((META_SALT, hex::encode(salt)));
        }
        out
    }

    /// `Ok(None)` when the object carries no envelope at all (written
    /// without the proxy); an error when it carries a broken one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, MetadataError> {
        let get = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let Some(wrapped_key) = get(META_WRAPPED_KEY) else {
            return if headers.keys().any(|k| k.as_str().starts_with(META_PREFIX)) {
                Err(MetadataError(META_WRAPPED_KEY))
            } else {
                Ok(None)
            };
        };
        let format = get(META_FORMAT).and_then(|v| v.parse().ok()).ok_or(MetadataError(META_FORMAT))?;
        let transit_key = get(META_TRANSIT_KEY)
            .filter(|k| !k.is_empty() && !k.contains('/'))
            .ok_or(MetadataError(META_TRANSIT_KEY))?;
        let layout = match (get(META_SIZE), get(META_LAYOUT).as_deref()) {
            (Some(size), None) => StoredLayout::Single(size.parse().map_err(|_| MetadataError(META_SIZE))?),
            (None, Some("multipart")) => StoredLayout::Multipart,
            (None, _) => return Err(MetadataError(META_SIZE)),
            (Some(_), Some(_)) => return Err(MetadataError(META_LAYOUT)),
        };
        if !wrapped_key.starts_with("vault:v") {
            return Err(MetadataError(META_WRAPPED_KEY));
        }
        let salt = match get(META_SALT) {
            Some(h) => {
                Some(hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or(MetadataError(META_SALT))?)
            }
            // Required of every single-PUT object: without it a reader could
            // not tell this object's body from another one under a shared
            // data key, and deleting it would switch the check off.
            None if matches!(layout, StoredLayout::Single(_)) => return Err(MetadataError(META_SALT)),
            None => None,
        };
        Ok(Some(Self { format, wrapped_key, transit_key, layout, salt }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A single-PUT envelope and its headers.
    fn single_put() -> (EnvelopeMetadata, HeaderMap) {
        let m = EnvelopeMetadata {
            format: 1,
            wrapped_key: "vault:v1:abc".into(),
            transit_key: "k".into(),
            layout: StoredLayout::Single(42),
            salt: Some([7; 32]),
        };
        let mut h = HeaderMap::new();
        for (k, v) in m.to_headers() {
            h.insert(k, v.parse().unwrap());
        }
        (m, h)
    }

    #[test]
    fn round_trips_through_headers() {
        let (m, mut h) = single_put();
        assert_eq!(EnvelopeMetadata::from_headers(&h).unwrap(), Some(m));
        h.remove(META_SIZE);
        assert_eq!(EnvelopeMetadata::from_headers(&h), Err(MetadataError(META_SIZE)));
        assert_eq!(EnvelopeMetadata::from_headers(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn single_put_objects_must_carry_their_salt() {
        let (_, mut h) = single_put();
        h.remove(META_SALT);
        assert_eq!(EnvelopeMetadata::from_headers(&h), Err(MetadataError(META_SALT)));
        h.insert(META_SALT, "00".parse().unwrap());
        assert_eq!(EnvelopeMetadata::from_headers(&h), Err(MetadataError(META_SALT)));
    }
}
