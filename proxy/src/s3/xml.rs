//! Small rewrites of S3 XML documents, event by event with quick-xml.

use bytes::Bytes;
use quick_xml::events::{BytesText, Event};

use crate::error::{InternalError, ProxyError};

/// What to do with one element's text.
pub type TextMap<'a> = &'a dyn Fn(&[u8], &str) -> Option<String>;

fn bad_xml(e: impl Into<crate::body::BoxError>) -> ProxyError {
    InternalError::Xml { context: "XML from the upstream could not be read", source: e.into() }.into()
}

/// Drops every element whose name starts with `Checksum` (checksums of
/// ciphertext, or of plaintext the upstream never saw) and replaces the text
/// of elements for which `map` returns a value.
pub fn rewrite(xml: &[u8], map: TextMap<'_>) -> Result<Bytes, ProxyError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut writer = quick_xml::Writer::new(Vec::with_capacity(xml.len()));
    let mut skip_depth = 0usize;
    let mut current: Option<Vec<u8>> = None;
    loop {
        let event = reader.read_event().map_err(bad_xml)?;
        match &event {
            Event::Eof => break,
            Event::Start(s) if skip_depth > 0 || s.name().as_ref().starts_with(b"Checksum") => {
                skip_depth += 1;
                continue;
            }
            Event::End(_) if skip_depth > 0 => {
                skip_depth -= 1;
                continue;
            }
            Event::Empty(s) if s.name().as_ref().starts_with(b"Checksum") => continue,
            _ if skip_depth > 0 => continue,
            Event::Start(s) => current = Some(s.name().as_ref().to_vec()),
            Event::End(_) => current = None,
            Event::Text(t) => {
                if let Some(name) = &current {
                    let text = t.unescape().map_err(bad_xml)?;
                    if let Some(new) = map(name, &text) {
                        writer.write_event(Event::Text(BytesText::new(&new))).map_err(bad_xml)?;
                        continue;
                    }
                }
            }
            _ => {}
        }
        writer.write_event(event).map_err(bad_xml)?;
    }
    Ok(Bytes::from(writer.into_inner()))
}

/// The text of every `<tag>` element, in document order. A document that
/// does not parse is an internal error: the documents read this way come
/// from the upstream, and callers reading a client's document (DeleteObjects,
/// CompleteMultipartUpload) answer `MalformedXML` instead.
pub fn texts_of(xml: &[u8], tag: &[u8]) -> Result<Vec<String>, ProxyError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut inside = false;
    let mut out = Vec::new();
    loop {
        match reader.read_event().map_err(bad_xml)? {
            Event::Eof => return Ok(out),
            Event::Start(s) => inside = s.name().as_ref() == tag,
            Event::End(_) => inside = false,
            Event::Text(t) if inside => out.push(t.unescape().map_err(bad_xml)?.into_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_checksums_and_maps_text() {
        let xml = br#"<R><UploadId>up</UploadId><Part><PartNumber>1</PartNumber><ChecksumCRC32>x</ChecksumCRC32><Size>10</Size></Part><ChecksumType/></R>"#;
        let map = |name: &[u8], text: &str| match name {
            b"UploadId" => Some(format!("wrapped.{text}")),
            b"Size" => Some("7".into()),
            _ => None,
        };
        let out = rewrite(xml, &map).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "<R><UploadId>wrapped.up</UploadId><Part><PartNumber>1</PartNumber><Size>7</Size></Part></R>"
        );
        assert_eq!(texts_of(xml, b"PartNumber").unwrap(), vec!["1"]);
    }
}
