//! The envelope's object metadata: what a reader needs besides the body.

use http::HeaderMap;

use super::constants::{ENVELOPE_MAC_LEN, FORMAT_1, FORMAT_2, FORMAT_3, MANIFEST_TAG_LEN};
use super::layout::ObjectLayout;
use super::manifest::{decode_part_table, encode_part_table};

pub const META_PREFIX: &str = "x-amz-meta-cloudtaser-";
pub const META_FORMAT: &str = "x-amz-meta-cloudtaser-format";
pub const META_WRAPPED_KEY: &str = "x-amz-meta-cloudtaser-key";
pub const META_TRANSIT_KEY: &str = "x-amz-meta-cloudtaser-transit-key";
pub const META_SIZE: &str = "x-amz-meta-cloudtaser-size";
pub const META_LAYOUT: &str = "x-amz-meta-cloudtaser-layout";
pub const META_SALT: &str = "x-amz-meta-cloudtaser-salt";

pub const META_PARTS: &str = "x-amz-meta-cloudtaser-parts";
pub const META_MANIFEST: &str = "x-amz-meta-cloudtaser-manifest";
pub const META_BINDING: &str = "x-amz-meta-cloudtaser-binding";
pub const META_STREAMS: &str = "x-amz-meta-cloudtaser-streams";
pub const META_MAC: &str = "x-amz-meta-cloudtaser-mac";
/// A format-3 single object whose data key is derived from a bucket key:
/// the derivation's salt (docs/FORMAT.md, "Bucket keys").
pub const META_KEY_SALT: &str = "x-amz-meta-cloudtaser-key-salt";

const LAYOUT_MULTIPART: &str = "multipart";
const LAYOUT_PENDING: &str = "multipart-pending";

/// How the body is laid out, as far as the metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredLayout {
    /// One stream of this many plaintext bytes (single PUT).
    Single(u64),
    /// Format 1: one stream per part, equal parts numbered 1..=N; the sizes
    /// are in the streams' headers and nothing records the part count.
    Multipart,
    /// Format 2, completed upstream but its manifest not yet written: a
    /// crash (or failure) between CompleteMultipartUpload and sealing left
    /// it so. Never served; `cloudtaser-s3proxy seal` finishes it.
    MultipartPending,
    /// Format 2, sealed.
    MultipartSealed(SealedParts),
}

impl StoredLayout {
    pub fn is_multipart(&self) -> bool {
        !matches!(self, StoredLayout::Single(_))
    }
}

/// What a sealed multipart object's metadata records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedParts {
    /// Plaintext length of the whole object.
    pub total: u64,
    /// (part number, plaintext length) of every stream. Format 2 leaves out
    /// a table too long to store ([`MAX_PART_TABLE_LEN`]); format 3 always
    /// has one.
    pub table: Option<Vec<(u32, u64)>>,
    /// Format 2: `format::manifest_tag` of the table. Format 3: SHA-256 of
    /// the stream headers in stored order (`cloudtaser-streams`), which the
    /// envelope MAC covers.
    pub tag: [u8; MANIFEST_TAG_LEN],
}

/// Which name of the object the format-3 envelope MAC binds
/// (`CLOUDTASER_S3PROXY_NAME_BINDING`; docs/THREAT-MODEL.md says what each allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Binding {
    /// Neither: the object reads under any name.
    None,
    /// The object key: replicas and DR copies in other buckets keep reading.
    #[default]
    Key,
    /// The bucket and the key.
    BucketKey,
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::None => "none",
            Binding::Key => "key",
            Binding::BucketKey => "bucket-key",
        }
    }

    /// The byte the MAC input carries.
    pub fn code(self) -> u8 {
        match self {
            Binding::None => 0,
            Binding::Key => 1,
            Binding::BucketKey => 2,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Binding::None, Binding::Key, Binding::BucketKey].into_iter().find(|b| b.as_str() == text)
    }
}

/// What makes an envelope format 3: the name binding and the MAC over the
/// whole envelope (`format::envelope_mac`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    pub binding: Binding,
    /// `None` only while the envelope is being built, and on
    /// `multipart-pending` objects, which are never served.
    pub mac: Option<[u8; ENVELOPE_MAC_LEN]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeMetadata {
    /// The data key wrapped by Transit, `vault:vN:…`.
    pub wrapped_key: String,
    /// Transit key name the data key is wrapped under.
    pub transit_key: String,
    pub layout: StoredLayout,
    /// The stream salt of a single-PUT object: binds the body to this
    /// metadata, so bodies cannot be swapped between objects that share a
    /// data key (written by earlier proxies' reuse window, or other writers;
    /// docs/FORMAT.md).
    pub salt: Option<[u8; 32]>,
    /// Format 3's binding and MAC; `None` for formats 1 and 2.
    pub auth: Option<Authenticated>,
    /// Set when `wrapped_key` holds a bucket key (an intermediate key shared
    /// by one window's objects) and the object's data key is derived from it
    /// with this salt; only on format-3 single objects.
    pub key_salt: Option<[u8; 32]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("object metadata {0} is missing or malformed")]
pub struct MetadataError(pub &'static str);

impl EnvelopeMetadata {
    /// The format the layout belongs to.
    pub fn format(&self) -> u8 {
        if self.auth.is_some() {
            return FORMAT_3;
        }
        match self.layout {
            StoredLayout::Single(_) | StoredLayout::Multipart => FORMAT_1,
            StoredLayout::MultipartPending | StoredLayout::MultipartSealed(_) => FORMAT_2,
        }
    }

    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (META_FORMAT, self.format().to_string()),
            (META_WRAPPED_KEY, self.wrapped_key.clone()),
            (META_TRANSIT_KEY, self.transit_key.clone()),
        ];
        match &self.layout {
            StoredLayout::Single(len) => out.push((META_SIZE, len.to_string())),
            StoredLayout::Multipart => out.push((META_LAYOUT, LAYOUT_MULTIPART.to_owned())),
            StoredLayout::MultipartPending => out.push((META_LAYOUT, LAYOUT_PENDING.to_owned())),
            StoredLayout::MultipartSealed(sealed) => {
                out.push((META_LAYOUT, LAYOUT_MULTIPART.to_owned()));
                out.push((META_SIZE, sealed.total.to_string()));
                let tag_name = if self.auth.is_some() { META_STREAMS } else { META_MANIFEST };
                out.push((tag_name, hex::encode(sealed.tag)));
                if let Some(table) = &sealed.table
                    && let Ok(layout) = ObjectLayout::from_parts(table)
                {
                    out.push((META_PARTS, encode_part_table(&layout)));
                }
            }
        }
        if let Some(salt) = &self.salt {
            out.push((META_SALT, hex::encode(salt)));
        }
        if let Some(key_salt) = &self.key_salt {
            out.push((META_KEY_SALT, hex::encode(key_salt)));
        }
        if let Some(auth) = &self.auth {
            out.push((META_BINDING, auth.binding.as_str().to_owned()));
            if let Some(mac) = &auth.mac {
                out.push((META_MAC, hex::encode(mac)));
            }
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
        let format: u8 = get(META_FORMAT).and_then(|v| v.parse().ok()).ok_or(MetadataError(META_FORMAT))?;
        let transit_key = get(META_TRANSIT_KEY)
            .filter(|k| !k.is_empty() && !k.contains('/'))
            .ok_or(MetadataError(META_TRANSIT_KEY))?;
        let size = || get(META_SIZE).and_then(|v| v.parse::<u64>().ok()).ok_or(MetadataError(META_SIZE));
        let absent = |name: &'static str| if headers.contains_key(name) { Err(MetadataError(name)) } else { Ok(()) };
        let layout = match (format, get(META_LAYOUT).as_deref()) {
            (FORMAT_1 | FORMAT_3, None) => StoredLayout::Single(size()?),
            (FORMAT_1, Some(LAYOUT_MULTIPART)) => {
                absent(META_SIZE)?;
                StoredLayout::Multipart
            }
            (FORMAT_2 | FORMAT_3, Some(LAYOUT_PENDING)) => {
                absent(META_SIZE)?;
                StoredLayout::MultipartPending
            }
            (FORMAT_2, Some(LAYOUT_MULTIPART)) => {
                absent(META_STREAMS)?;
                StoredLayout::MultipartSealed(sealed_parts(&get, size()?, META_MANIFEST)?)
            }
            (FORMAT_3, Some(LAYOUT_MULTIPART)) => {
                absent(META_MANIFEST)?;
                let sealed = sealed_parts(&get, size()?, META_STREAMS)?;
                // Format 3 always stores its table: no read walks the headers.
                if sealed.table.is_none() {
                    return Err(MetadataError(META_PARTS));
                }
                StoredLayout::MultipartSealed(sealed)
            }
            (FORMAT_1 | FORMAT_2 | FORMAT_3, _) => return Err(MetadataError(META_LAYOUT)),
            _ => return Err(MetadataError(META_FORMAT)),
        };
        if !matches!(layout, StoredLayout::MultipartSealed(_)) {
            absent(META_MANIFEST)?;
            absent(META_STREAMS)?;
            absent(META_PARTS)?;
        }
        if !wrapped_key.starts_with("vault:v") {
            return Err(MetadataError(META_WRAPPED_KEY));
        }
        let single = matches!(layout, StoredLayout::Single(_));
        let salt = match get(META_SALT) {
            Some(h) if single || (format == FORMAT_1) => {
                Some(hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or(MetadataError(META_SALT))?)
            }
            // Each part stream has its own salt; the upload's key is never shared.
            Some(_) => return Err(MetadataError(META_SALT)),
            // Required of every single-PUT object: without it a reader could
            // not tell this object's body from another one under a shared
            // data key, and deleting it would switch the check off.
            None if single => return Err(MetadataError(META_SALT)),
            None => None,
        };
        let auth = if format == FORMAT_3 {
            let binding = get(META_BINDING).and_then(|b| Binding::parse(&b)).ok_or(MetadataError(META_BINDING))?;
            let mac = match get(META_MAC) {
                Some(h) => Some(
                    hex::decode(h)
                        .ok()
                        .and_then(|b| <[u8; ENVELOPE_MAC_LEN]>::try_from(b).ok())
                        .ok_or(MetadataError(META_MAC))?,
                ),
                None => return Err(MetadataError(META_MAC)),
            };
            Some(Authenticated { binding, mac })
        } else {
            absent(META_BINDING)?;
            absent(META_MAC)?;
            None
        };
        // Only a format-3 single object may derive its key: its MAC covers
        // the salt, and no upload id or part table has to carry one.
        let key_salt = match get(META_KEY_SALT) {
            Some(h) if format == FORMAT_3 && single => Some(
                hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or(MetadataError(META_KEY_SALT))?,
            ),
            Some(_) => return Err(MetadataError(META_KEY_SALT)),
            None => None,
        };
        Ok(Some(Self { wrapped_key, transit_key, layout, salt, auth, key_salt }))
    }
}

fn sealed_parts(
    get: &dyn Fn(&'static str) -> Option<String>,
    total: u64,
    tag_name: &'static str,
) -> Result<SealedParts, MetadataError> {
    let tag = get(tag_name)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; MANIFEST_TAG_LEN]>::try_from(b).ok())
        .ok_or(MetadataError(tag_name))?;
    let table = match get(META_PARTS) {
        Some(text) => {
            let table = decode_part_table(&text).ok_or(MetadataError(META_PARTS))?;
            let layout = ObjectLayout::from_parts(&table).map_err(|_| MetadataError(META_PARTS))?;
            if layout.total != total {
                return Err(MetadataError(META_PARTS));
            }
            Some(table)
        }
        None => None,
    };
    Ok(SealedParts { total, table, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A single-PUT envelope and its headers.
    fn single_put() -> (EnvelopeMetadata, HeaderMap) {
        let m = EnvelopeMetadata {
            wrapped_key: "vault:v1:abc".into(),
            transit_key: "k".into(),
            layout: StoredLayout::Single(42),
            salt: Some([7; 32]),
            auth: None,
            key_salt: None,
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

    fn headers_of(m: &EnvelopeMetadata) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in m.to_headers() {
            h.insert(k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn format_2_layouts_round_trip() {
        let base = EnvelopeMetadata {
            wrapped_key: "vault:v1:abc".into(),
            transit_key: "k".into(),
            layout: StoredLayout::MultipartPending,
            salt: None,
            auth: None,
            key_salt: None,
        };
        let sealed = |table| EnvelopeMetadata {
            layout: StoredLayout::MultipartSealed(SealedParts { total: 15, table, tag: [9; 32] }),
            ..base.clone()
        };
        for m in [base.clone(), sealed(Some(vec![(1, 10), (3, 5)])), sealed(None)] {
            let h = headers_of(&m);
            assert_eq!(h.get(META_FORMAT).unwrap(), "2");
            assert_eq!(EnvelopeMetadata::from_headers(&h).unwrap(), Some(m));
        }
        assert_eq!(headers_of(&sealed(Some(vec![(1, 10), (3, 5)]))).get(META_PARTS).unwrap(), "1:10,3:5");
    }

    #[test]
    fn format_2_metadata_must_be_consistent() {
        let sealed = EnvelopeMetadata {
            wrapped_key: "vault:v1:abc".into(),
            transit_key: "k".into(),
            layout: StoredLayout::MultipartSealed(SealedParts { total: 15, table: Some(vec![(1, 15)]), tag: [9; 32] }),
            salt: None,
            auth: None,
            key_salt: None,
        };
        let broken = |edit: &dyn Fn(&mut HeaderMap)| {
            let mut h = headers_of(&sealed);
            edit(&mut h);
            EnvelopeMetadata::from_headers(&h)
        };
        assert_eq!(broken(&|h| drop(h.remove(META_MANIFEST))), Err(MetadataError(META_MANIFEST)));
        assert_eq!(
            broken(&|h| drop(h.insert(META_MANIFEST, "00".parse().unwrap()))),
            Err(MetadataError(META_MANIFEST))
        );
        assert_eq!(broken(&|h| drop(h.insert(META_SIZE, "14".parse().unwrap()))), Err(MetadataError(META_PARTS)));
        assert_eq!(
            broken(&|h| drop(h.insert(META_PARTS, "2:15,1:0".parse().unwrap()))),
            Err(MetadataError(META_PARTS))
        );
        assert_eq!(broken(&|h| drop(h.remove(META_SIZE))), Err(MetadataError(META_SIZE)));
        // A format-1 label on format-2 facts, or the reverse, is refused.
        assert_eq!(broken(&|h| drop(h.insert(META_FORMAT, "1".parse().unwrap()))), Err(MetadataError(META_SIZE)));
        assert_eq!(
            broken(&|h| {
                h.insert(META_FORMAT, "1".parse().unwrap());
                h.remove(META_SIZE);
            }),
            Err(MetadataError(META_MANIFEST))
        );
        assert_eq!(broken(&|h| drop(h.insert(META_LAYOUT, "other".parse().unwrap()))), Err(MetadataError(META_LAYOUT)));
        assert_eq!(broken(&|h| drop(h.insert(META_FORMAT, "4".parse().unwrap()))), Err(MetadataError(META_FORMAT)));
        // A format-3 label on a format-2 envelope lacks the streams digest.
        assert_eq!(broken(&|h| drop(h.insert(META_FORMAT, "3".parse().unwrap()))), Err(MetadataError(META_MANIFEST)));
        assert_eq!(
            broken(&|h| drop(h.insert(META_SALT, hex::encode([1u8; 32]).parse().unwrap()))),
            Err(MetadataError(META_SALT))
        );
    }

    #[test]
    fn format_3_envelopes_round_trip_and_need_their_mac_binding_and_table() {
        let auth = Some(Authenticated { binding: Binding::BucketKey, mac: Some([4; 32]) });
        let single = EnvelopeMetadata {
            wrapped_key: "vault:v1:abc".into(),
            transit_key: "k".into(),
            layout: StoredLayout::Single(42),
            salt: Some([7; 32]),
            auth,
            key_salt: None,
        };
        let sealed = EnvelopeMetadata {
            layout: StoredLayout::MultipartSealed(SealedParts {
                total: 15,
                table: Some(vec![(1, 10), (3, 5)]),
                tag: [9; 32],
            }),
            salt: None,
            ..single.clone()
        };
        let pending = EnvelopeMetadata { layout: StoredLayout::MultipartPending, salt: None, ..single.clone() };
        for m in [&single, &sealed, &pending] {
            let h = headers_of(m);
            assert_eq!(h.get(META_FORMAT).unwrap(), "3");
            assert_eq!(h.get(META_BINDING).unwrap(), "bucket-key");
            assert_eq!(EnvelopeMetadata::from_headers(&h).unwrap().as_ref(), Some(m));
            for field in [META_MAC, META_BINDING] {
                let mut broken = h.clone();
                broken.remove(field);
                assert_eq!(EnvelopeMetadata::from_headers(&broken), Err(MetadataError(field)));
            }
        }
        let h = headers_of(&sealed);
        assert!(h.contains_key(META_STREAMS) && !h.contains_key(META_MANIFEST));
        let mut no_table = h.clone();
        no_table.remove(META_PARTS);
        assert_eq!(EnvelopeMetadata::from_headers(&no_table), Err(MetadataError(META_PARTS)));
        let mut other_binding = headers_of(&single);
        other_binding.insert(META_BINDING, "bucket".parse().unwrap());
        assert_eq!(EnvelopeMetadata::from_headers(&other_binding), Err(MetadataError(META_BINDING)));
        // Format 2 fields under a format-3 label, and the reverse, are refused.
        let mut with_manifest = h.clone();
        with_manifest.insert(META_MANIFEST, hex::encode([1u8; 32]).parse().unwrap());
        assert_eq!(EnvelopeMetadata::from_headers(&with_manifest), Err(MetadataError(META_MANIFEST)));
        let mut v1 = headers_of(&single);
        v1.insert(META_FORMAT, "1".parse().unwrap());
        assert_eq!(EnvelopeMetadata::from_headers(&v1), Err(MetadataError(META_BINDING)));
    }
}
