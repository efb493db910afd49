//! The layout of an encrypted object as stored, settled before a byte of it
//! is served: from the single stream's size, from a format-1 object's first
//! header and stored length, or from a format-2 object's part table checked
//! against its manifest (docs/FORMAT.md).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::RequestPath;
use crate::error::{ProxyError, UpstreamFailure};
use crate::format::{
    EnvelopeMetadata, FormatError, HEADER_LEN, Header, LayoutSpan, MAX_PARTS, ObjectLayout, ObjectName, Opener,
    SealedParts, StoredLayout, VERSION, VERSION_3, ciphertext_len, verify_envelope, verify_manifest,
};
use crate::keys::DataKey;
use crate::s3::classify::S3Request;
use crate::s3::range::content_range;
use std::sync::Arc;

/// A layout a reader may trust: its stored length matched, a format-2
/// object's part table matched its manifest, and a format-3 object's
/// envelope MAC verified for the name it was read under.
#[derive(Debug, Clone)]
pub struct CheckedLayout {
    pub layout: ObjectLayout,
    /// Whether a manifest or envelope MAC vouched for the part table
    /// (formats 2 and 3): only then are multipart streams accepted.
    pub sealed: bool,
    /// Format 3: the one stream version its streams may have.
    pub version: Option<u8>,
    /// Format 3 multipart: the SHA-256 the stream headers hash to, which a
    /// whole read checks.
    pub streams: Option<[u8; 32]>,
}

impl CheckedLayout {
    /// An opener for the whole object.
    pub fn whole(&self, key: &Arc<DataKey>, envelope: &EnvelopeMetadata) -> Opener {
        let opener = self.with_policy(Opener::whole(key.clone(), self.layout.clone()), envelope);
        match self.streams {
            Some(digest) => opener.expect_streams(digest),
            None => opener,
        }
    }

    /// An opener for `take` bytes from `span`.
    pub fn range(&self, key: &Arc<DataKey>, envelope: &EnvelopeMetadata, span: &LayoutSpan, take: u64) -> Opener {
        self.with_policy(Opener::range(key.clone(), self.layout.clone(), span, take), envelope)
    }

    fn with_policy(&self, opener: Opener, envelope: &EnvelopeMetadata) -> Opener {
        let opener = opener.expect_salt(envelope.salt);
        let opener = if self.sealed { opener.manifest_checked() } else { opener };
        match self.version {
            Some(version) => opener.require_version(version),
            None => opener,
        }
    }
}

/// A format-1 multipart layout from its first header. A format-2 stream
/// under a format-1 label is a relabelled object (format 1 needs no
/// manifest), refused before anything, HEAD included, trusts its size.
fn format_1_layout(first: &Header, stored_len: u64) -> Result<ObjectLayout, ProxyError> {
    if first.version != VERSION {
        return Err(ProxyError::Ciphertext(FormatError::VersionMismatch(first.version)));
    }
    ObjectLayout::multipart(first.plaintext_len, stored_len)
        .ok_or(malformed("part layout does not match the stored length"))
}

/// The name a request reads an object under: what a format-3 MAC binds.
pub(super) fn object_name(s3: &S3Request) -> ObjectName<'_> {
    ObjectName { bucket: s3.bucket.as_deref().unwrap_or(""), key: s3.key.as_deref().unwrap_or("") }
}

pub(super) fn malformed(what: &'static str) -> ProxyError {
    ProxyError::Ciphertext(FormatError::MalformedHeader(what))
}

impl RequestPath {
    /// The checked layout of an encrypted object of `stored_len` bytes, at
    /// the version `etag` names. `first_header` saves a read when the caller
    /// already holds the first stream's header.
    pub(super) async fn stored_layout(
        &self,
        s3: &S3Request,
        envelope: &EnvelopeMetadata,
        stored_len: u64,
        etag: Option<&HeaderValue>,
        first_header: Option<&[u8]>,
    ) -> Result<CheckedLayout, ProxyError> {
        if envelope.auth.is_some() {
            return self.authenticated_layout(s3, envelope, stored_len).await;
        }
        if !self.legacy_reads {
            return Err(ProxyError::LegacyFormatRefused);
        }
        let (layout, sealed) = match &envelope.layout {
            StoredLayout::Single(len) => {
                // Formats 1 and 2 have no MAC: what HEAD reports is checked
                // against the stream header (a format-3 body relabelled as
                // format 1 says version 3 there; a cut one its real length).
                let header = match first_header {
                    Some(h) => Header::decode(h),
                    None => Header::decode(&self.stored_header(s3, etag, 0).await?),
                }
                .map_err(ProxyError::Ciphertext)?;
                if header.version != VERSION {
                    return Err(ProxyError::Ciphertext(FormatError::VersionMismatch(header.version)));
                }
                if header.plaintext_len != *len || envelope.salt != Some(header.salt) {
                    return Err(malformed("stream header does not match the envelope"));
                }
                (ObjectLayout::single(*len), false)
            }
            StoredLayout::Multipart => {
                if !self.format_1_multipart_reads {
                    return Err(ProxyError::Format1Refused);
                }
                let header = match first_header {
                    Some(h) => Header::decode(h),
                    None => Header::decode(&self.stored_header(s3, etag, 0).await?),
                }
                .map_err(ProxyError::Ciphertext)?;
                (format_1_layout(&header, stored_len)?, false)
            }
            StoredLayout::MultipartPending => return Err(ProxyError::SealPending),
            StoredLayout::MultipartSealed(sealed) => {
                (self.sealed_layout(s3, envelope, sealed, stored_len, etag).await?, true)
            }
        };
        if layout.stored_len() != stored_len {
            return Err(ProxyError::Ciphertext(FormatError::LengthMismatch {
                declared: layout.stored_len(),
                actual: stored_len,
            }));
        }
        Ok(CheckedLayout { layout, sealed, version: None, streams: None })
    }

    /// The data key of the object `envelope` describes: the unwrapped key,
    /// or (bucket keys) the key derived from it with the object's key salt.
    pub(super) async fn object_data_key(&self, envelope: &EnvelopeMetadata) -> Result<Arc<DataKey>, ProxyError> {
        let unwrapped = self.keys.unwrap(&envelope.transit_key, &envelope.wrapped_key).await?;
        Ok(crate::format::object_key(unwrapped, envelope.key_salt.as_ref()))
    }

    /// A format-3 object's layout, from its metadata alone once the MAC
    /// verified: no stream header is read, so a HEAD costs one upstream
    /// request (and a Transit `decrypt` when the data key is not cached).
    async fn authenticated_layout(
        &self,
        s3: &S3Request,
        envelope: &EnvelopeMetadata,
        stored_len: u64,
    ) -> Result<CheckedLayout, ProxyError> {
        let (layout, streams) = match &envelope.layout {
            StoredLayout::Single(len) => (ObjectLayout::single(*len), None),
            StoredLayout::MultipartSealed(SealedParts { table: Some(table), tag, .. }) => {
                (ObjectLayout::from_parts(table).map_err(ProxyError::Ciphertext)?, Some(*tag))
            }
            StoredLayout::MultipartPending => return Err(ProxyError::SealPending),
            StoredLayout::Multipart | StoredLayout::MultipartSealed(_) => {
                return Err(ProxyError::Ciphertext(FormatError::Envelope));
            }
        };
        let key = self.object_data_key(envelope).await?;
        verify_envelope(key.bytes(), envelope, object_name(s3)).map_err(ProxyError::Ciphertext)?;
        if layout.stored_len() != stored_len {
            return Err(ProxyError::Ciphertext(FormatError::LengthMismatch {
                declared: layout.stored_len(),
                actual: stored_len,
            }));
        }
        Ok(CheckedLayout { layout, sealed: true, version: Some(VERSION_3), streams })
    }

    /// The layout the stored object claims, unverified: for tools that move
    /// ciphertext without reading it (`rewrap`'s self-copy, `seal`), which
    /// need no decrypt permission. A pending object's comes from its headers.
    pub async fn claimed_layout(
        &self,
        s3: &S3Request,
        envelope: &EnvelopeMetadata,
        stored_len: u64,
        etag: Option<&HeaderValue>,
    ) -> Result<ObjectLayout, ProxyError> {
        let layout = match &envelope.layout {
            StoredLayout::Single(len) => ObjectLayout::single(*len),
            StoredLayout::Multipart => {
                let header = Header::decode(&self.stored_header(s3, etag, 0).await?).map_err(ProxyError::Ciphertext)?;
                format_1_layout(&header, stored_len)?
            }
            StoredLayout::MultipartSealed(SealedParts { table: Some(table), .. }) => {
                ObjectLayout::from_parts(table).map_err(ProxyError::Ciphertext)?
            }
            StoredLayout::MultipartSealed(_) | StoredLayout::MultipartPending => {
                ObjectLayout::from_parts(&self.walk_streams(s3, etag, stored_len).await?)
                    .map_err(ProxyError::Ciphertext)?
            }
        };
        if layout.stored_len() != stored_len {
            return Err(malformed("part layout does not match the stored length"));
        }
        Ok(layout)
    }

    /// A format-2 layout: the stored part table, or the one the stream
    /// headers describe when it was too long to store; either way checked
    /// against the manifest before it is used.
    async fn sealed_layout(
        &self,
        s3: &S3Request,
        envelope: &EnvelopeMetadata,
        sealed: &SealedParts,
        stored_len: u64,
        etag: Option<&HeaderValue>,
    ) -> Result<ObjectLayout, ProxyError> {
        let table = match &sealed.table {
            Some(table) => table.clone(),
            None => self.walk_streams(s3, etag, stored_len).await?,
        };
        let layout = ObjectLayout::from_parts(&table).map_err(ProxyError::Ciphertext)?;
        let key = self.keys.unwrap(&envelope.transit_key, &envelope.wrapped_key).await?;
        verify_manifest(key.bytes(), &layout, &sealed.tag).map_err(ProxyError::Ciphertext)?;
        if layout.total != sealed.total {
            return Err(ProxyError::Ciphertext(FormatError::Manifest));
        }
        Ok(layout)
    }

    /// (part number, plaintext length) of every stream, read header by
    /// header (one 52-byte ranged read per part). The headers are not yet
    /// authenticated: callers check the result against a manifest, or (the
    /// `seal` command) say that they trust what is stored.
    pub async fn walk_streams(
        &self,
        s3: &S3Request,
        etag: Option<&HeaderValue>,
        stored_len: u64,
    ) -> Result<Vec<(u32, u64)>, ProxyError> {
        let mut table = Vec::new();
        let mut offset = 0;
        while offset < stored_len {
            if table.len() >= MAX_PARTS as usize {
                return Err(malformed("more streams than parts"));
            }
            let header =
                Header::decode(&self.stored_header(s3, etag, offset).await?).map_err(ProxyError::Ciphertext)?;
            table.push((header.part_number, header.plaintext_len));
            offset += ciphertext_len(header.plaintext_len);
        }
        if offset != stored_len || table.is_empty() {
            return Err(malformed("streams do not end where the object ends"));
        }
        Ok(table)
    }

    /// The 52 header bytes at `offset` of the stored object.
    async fn stored_header(
        &self,
        s3: &S3Request,
        etag: Option<&HeaderValue>,
        offset: u64,
    ) -> Result<Bytes, ProxyError> {
        let resp = self.read_stored(s3, etag.cloned(), offset, offset + HEADER_LEN as u64 - 1).await?;
        let bytes = super::collect_small(resp.into_body()).await?;
        if bytes.len() != HEADER_LEN {
            return Err(ProxyError::Ciphertext(FormatError::Truncated));
        }
        Ok(bytes)
    }

    /// An inclusive range of the stored ciphertext, of the version `etag` names.
    pub(super) async fn read_stored(
        &self,
        s3: &S3Request,
        etag: Option<HeaderValue>,
        first: u64,
        last: u64,
    ) -> Result<http::Response<crate::body::ProxyBody>, ProxyError> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RANGE, super::header_value(&format!("bytes={first}-{last}"))?);
        if let Some(etag) = etag {
            headers.insert(http::header::IF_MATCH, etag);
        }
        let resp = self.send_buffered(Method::GET, s3, headers, Bytes::new()).await?;
        if resp.status() == StatusCode::PRECONDITION_FAILED {
            return Err(ProxyError::ObjectChanged("read"));
        }
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(UpstreamFailure::Answered {
                step: "a ranged read",
                status: resp.status(),
                code: String::new(),
            }
            .into());
        }
        if content_range(resp.headers()).is_none() {
            return Err(malformed("no stored length"));
        }
        Ok(resp)
    }
}
