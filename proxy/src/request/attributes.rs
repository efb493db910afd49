//! GetObjectAttributes in plaintext terms. The upstream's answer describes
//! the ciphertext (its size, its checksums, its parts), so the proxy asks the
//! upstream first, which resolves missing keys, delete markers and versions
//! exactly as direct, and then answers from the object's envelope: the
//! plaintext size, the ETag as HEAD shows it, the plaintext part sizes of a
//! multipart object, and never a checksum.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::respond;
use super::{RequestPath, envelope_of};
use crate::body::ProxyBody;
use crate::error::{ArgumentError, ProxyError, xml_error};
use crate::format::ObjectLayout;
use crate::s3::classify::S3Request;

/// The attributes S3 knows, as named in `x-amz-object-attributes`.
const KNOWN: &[&str] = &["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"];

/// S3's default and largest `x-amz-max-parts`.
const MAX_PARTS: u32 = 1000;

/// Request headers the HEAD that reads the envelope carries over: the ones
/// that decide whether the upstream serves the object at all.
const HEAD_HEADERS: &[&str] = &[
    "x-amz-expected-bucket-owner",
    "x-amz-request-payer",
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
];

/// What the workload asked for.
#[derive(Debug, PartialEq, Eq)]
struct Wanted {
    etag: bool,
    parts: bool,
    storage_class: bool,
    size: bool,
    max_parts: u32,
    part_number_marker: u32,
}

impl Wanted {
    fn parse(headers: &HeaderMap) -> Result<Self, ProxyError> {
        let names: Vec<&str> = headers
            .get_all("x-amz-object-attributes")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err(ArgumentError::NoAttributes.into());
        }
        if let Some(bad) = names.iter().find(|n| !KNOWN.contains(n)) {
            return Err(ArgumentError::AttributeName { name: bad.to_string() }.into());
        }
        let number = |name: &'static str, default: u32| -> Result<u32, ProxyError> {
            match headers.get(name) {
                None => Ok(default),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| ProxyError::from(ArgumentError::NotNonNegative { header: name })),
            }
        };
        Ok(Self {
            etag: names.contains(&"ETag"),
            parts: names.contains(&"ObjectParts"),
            storage_class: names.contains(&"StorageClass"),
            size: names.contains(&"ObjectSize"),
            max_parts: number("x-amz-max-parts", MAX_PARTS)?.min(MAX_PARTS),
            part_number_marker: number("x-amz-part-number-marker", 0)?,
        })
    }
}

/// The facts of the upstream's answer the proxy keeps.
struct UpstreamAttributes {
    root: Vec<u8>,
    etag: Option<String>,
    storage_class: Option<String>,
}

impl UpstreamAttributes {
    fn parse(xml: &[u8]) -> Result<Self, ProxyError> {
        let bad = |e: &dyn std::fmt::Display| xml_error("upstream GetObjectAttributes", e);
        let mut reader = quick_xml::Reader::from_reader(xml);
        let mut root = None;
        let mut current: Option<Vec<u8>> = None;
        let (mut etag, mut storage_class) = (None, None);
        loop {
            match reader.read_event().map_err(|e| bad(&e))? {
                Event::Eof => break,
                Event::Start(s) => {
                    let name = s.name().as_ref().to_vec();
                    root.get_or_insert_with(|| name.clone());
                    current = Some(name);
                }
                Event::End(_) => current = None,
                Event::Text(t) => {
                    let text = t.unescape().map_err(|e| bad(&e))?.into_owned();
                    match current.as_deref() {
                        Some(b"ETag") => etag = Some(text),
                        Some(b"StorageClass") => storage_class = Some(text),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let root = root.ok_or_else(|| bad(&"an empty document"))?;
        Ok(Self { root, etag, storage_class })
    }
}

fn unquoted(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

impl RequestPath {
    pub(super) async fn get_object_attributes(
        &self,
        s3: &S3Request,
        headers: HeaderMap,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let wanted = Wanted::parse(&headers)?;
        // The upstream is always asked for the ETag: it pins the HEAD below
        // to the object this answer describes.
        let mut upstream_headers = headers.clone();
        let list = headers
            .get_all("x-amz-object-attributes")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let list = if wanted.etag { list } else { format!("{list},ETag") };
        upstream_headers.insert("x-amz-object-attributes", super::header_value(&list)?);
        let resp = self.send_buffered(Method::GET, s3, upstream_headers, Bytes::new()).await?;
        let (parts, doc) = match super::answers::accept_control(super::answers::Step::Control, resp).await? {
            super::answers::ControlAnswer::Expected(parts, doc) => (parts, doc),
            super::answers::ControlAnswer::Verdict(v) => return Ok(v),
        };
        let upstream = UpstreamAttributes::parse(&doc)?;

        // The version the upstream described, read again for its envelope.
        let version = s3
            .query_value("versionId")
            .map(str::to_owned)
            .or_else(|| parts.headers.get("x-amz-version-id").and_then(|v| v.to_str().ok()).map(str::to_owned));
        let mut object = S3Request::internal(
            s3.bucket.as_deref().unwrap_or_default(),
            s3.key.as_deref(),
            version.map(|v| vec![("versionId".to_owned(), v)]).unwrap_or_default(),
        );
        object.name = "GetObjectAttributes";
        let mut head_headers = HeaderMap::new();
        for name in HEAD_HEADERS {
            for value in headers.get_all(*name) {
                head_headers.append(*name, value.clone());
            }
        }
        let head = self.send_buffered(Method::HEAD, &object, head_headers, Bytes::new()).await?;
        if head.status() != http::StatusCode::OK {
            return Err(changed());
        }
        let head_etag = head.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let same = match (&upstream.etag, &head_etag) {
            (Some(a), Some(b)) => unquoted(a) == unquoted(b),
            _ => false,
        };
        if !same {
            return Err(changed());
        }
        if self.serves_plaintext(&object, head.headers()) {
            // Written before the proxy: the upstream's facts are the plaintext's.
            return Ok(respond::buffered(parts.headers, parts.status, doc));
        }
        let envelope = envelope_of(head.headers())?;
        // Checked as a read would be: a format-2 table against its manifest.
        let stored_len = head
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or(super::stored::malformed("no stored length"))?;
        let etag = head.headers().get(http::header::ETAG).cloned();
        let layout = self.stored_layout(&object, &envelope, stored_len, etag.as_ref(), None).await?.layout;
        let etag = head_etag.as_deref().map(crate::s3::etag::client_etag).unwrap_or_default();
        // S3 writes this ETag without quotes; keep whichever form the upstream used.
        let etag = match &upstream.etag {
            Some(e) if !e.trim().starts_with('"') => unquoted(&etag).to_owned(),
            _ => etag,
        };
        let facts = Facts {
            etag: wanted.etag.then_some(etag),
            storage_class: wanted
                .storage_class
                .then(|| upstream.storage_class.clone().unwrap_or_else(|| "STANDARD".to_owned())),
            size: wanted.size.then_some(layout.total),
            parts: (wanted.parts && envelope.layout.is_multipart()).then_some(&layout),
        };
        let xml = attributes_xml(&upstream.root, &facts, &wanted)?;
        let mut headers = parts.headers;
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        Ok(respond::buffered(headers, parts.status, xml))
    }
}

fn changed() -> ProxyError {
    ProxyError::ObjectChanged("read for its attributes")
}

/// The answer, in plaintext terms.
struct Facts<'a> {
    etag: Option<String>,
    storage_class: Option<String>,
    size: Option<u64>,
    parts: Option<&'a ObjectLayout>,
}

fn attributes_xml(root: &[u8], facts: &Facts<'_>, wanted: &Wanted) -> Result<Bytes, ProxyError> {
    let bad = |e: &dyn std::fmt::Display| xml_error("writing GetObjectAttributes", e);
    let root = std::str::from_utf8(root).map_err(|e| bad(&e))?;
    let mut w = quick_xml::Writer::new(Vec::new());
    let mut write = |e: Event<'_>| w.write_event(e).map_err(|e| bad(&e));
    let text = |write: &mut dyn FnMut(Event<'_>) -> Result<(), ProxyError>, name: &str, value: &str| {
        write(Event::Start(BytesStart::new(name)))?;
        write(Event::Text(BytesText::new(value)))?;
        write(Event::End(BytesEnd::new(name)))
    };
    write(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    write(Event::Start(BytesStart::new(root).with_attributes([("xmlns", "http://s3.amazonaws.com/doc/2006-03-01/")])))?;
    if let Some(etag) = &facts.etag {
        text(&mut write, "ETag", etag)?;
    }
    if let Some(layout) = facts.parts {
        let first = u64::from(wanted.part_number_marker) + 1;
        let last = layout.parts.min(u64::from(wanted.part_number_marker) + u64::from(wanted.max_parts));
        write(Event::Start(BytesStart::new("ObjectParts")))?;
        text(&mut write, "PartsCount", &layout.parts.to_string())?;
        text(&mut write, "PartNumberMarker", &wanted.part_number_marker.to_string())?;
        text(&mut write, "NextPartNumberMarker", &last.max(u64::from(wanted.part_number_marker)).to_string())?;
        text(&mut write, "MaxParts", &wanted.max_parts.to_string())?;
        text(&mut write, "IsTruncated", if last < layout.parts { "true" } else { "false" })?;
        for n in first..=last {
            write(Event::Start(BytesStart::new("Part")))?;
            text(&mut write, "PartNumber", &n.to_string())?;
            text(&mut write, "Size", &layout.stream_len(n - 1).to_string())?;
            write(Event::End(BytesEnd::new("Part")))?;
        }
        write(Event::End(BytesEnd::new("ObjectParts")))?;
    }
    if let Some(class) = &facts.storage_class {
        text(&mut write, "StorageClass", class)?;
    }
    if let Some(size) = facts.size {
        text(&mut write, "ObjectSize", &size.to_string())?;
    }
    write(Event::End(BytesEnd::new(root)))?;
    Ok(Bytes::from(w.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn attribute_names_are_checked() {
        assert_eq!(Wanted::parse(&HeaderMap::new()).unwrap_err().code(), "InvalidArgument");
        assert_eq!(
            Wanted::parse(&headers(&[("x-amz-object-attributes", "ETag,Size")])).unwrap_err().code(),
            "InvalidArgument"
        );
        let w = Wanted::parse(&headers(&[
            ("x-amz-object-attributes", "ETag, ObjectSize"),
            ("x-amz-object-attributes", "Checksum"),
            ("x-amz-max-parts", "5000"),
        ]))
        .unwrap();
        assert!(w.etag && w.size && !w.parts && !w.storage_class);
        assert_eq!(w.max_parts, MAX_PARTS);
        assert!(Wanted::parse(&headers(&[("x-amz-object-attributes", "ETag"), ("x-amz-max-parts", "-1")])).is_err());
    }

    #[test]
    fn plaintext_facts_and_no_checksums() {
        // Three parts of 5 MiB, 5 MiB and 10 bytes.
        let stored = 2 * crate::format::ciphertext_len(5 << 20) + crate::format::ciphertext_len(10);
        let layout = ObjectLayout::multipart(5 << 20, stored).unwrap();
        let wanted =
            Wanted { etag: true, parts: true, storage_class: true, size: true, max_parts: 2, part_number_marker: 1 };
        let facts = Facts {
            etag: Some("abc-3".into()),
            storage_class: Some("STANDARD".into()),
            size: Some(layout.total),
            parts: Some(&layout),
        };
        let xml = attributes_xml(b"GetObjectAttributesResponse", &facts, &wanted).unwrap();
        let xml = std::str::from_utf8(&xml).unwrap();
        assert!(xml.contains("<ETag>abc-3</ETag>"), "{xml}");
        assert!(xml.contains(&format!("<ObjectSize>{}</ObjectSize>", (10 << 20) + 10)), "{xml}");
        assert!(xml.contains("<PartsCount>3</PartsCount>"), "{xml}");
        assert!(xml.contains("<Part><PartNumber>2</PartNumber><Size>5242880</Size></Part>"), "{xml}");
        assert!(xml.contains("<Part><PartNumber>3</PartNumber><Size>10</Size></Part>"), "{xml}");
        assert!(!xml.contains("<PartNumber>1</PartNumber>"), "{xml}");
        assert!(xml.contains("<IsTruncated>false</IsTruncated><Part>"), "{xml}");
        assert!(!xml.contains("Checksum"));
    }
}
