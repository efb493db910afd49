//! The multipart uploads still open under a prefix (ListMultipartUploads),
//! for `rewrap`. An open upload an upload's data key was chosen when it was created, and
//! the upstream's listing cannot say under which Transit key version it is
//! wrapped (the wrapped key lives in the workload's upload id and in the
//! upload's metadata, which no listing returns). What the listing does say
//! is when each upload began, and that is enough to tell which ones may
//! still be written under a version older than the newest.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::s3::classify::S3Request;
use crate::upstream::UpstreamClient;

use super::CommandError;
use super::listing::{body_of, s3_error, s3_time};

/// One open upload as the upstream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// `None` when the upstream's `Initiated` does not parse.
    pub initiated: Option<SystemTime>,
}

/// Every open upload under `prefix`, following the listing's markers;
/// `None` when the upstream does not implement the listing (s3s-fs).
pub async fn list(
    upstream: &UpstreamClient,
    bucket: &str,
    prefix: &str,
) -> Result<Option<Vec<OpenUpload>>, CommandError> {
    let mut uploads = Vec::new();
    let mut markers: Option<(String, String)> = None;
    loop {
        let mut query = vec![("uploads".into(), String::new()), ("prefix".into(), prefix.to_owned())];
        if let Some((key, id)) = &markers {
            query.push(("key-marker".into(), key.clone()));
            query.push(("upload-id-marker".into(), id.clone()));
        }
        let s3 = S3Request::internal(bucket, None, query);
        let resp = upstream.send_buffered(Method::GET, &s3, HeaderMap::new(), Bytes::new()).await?;
        let (status, _, body) = body_of(resp).await?;
        if status == http::StatusCode::NOT_IMPLEMENTED {
            return Ok(None);
        }
        if status != http::StatusCode::OK {
            return Err(s3_error("listing the open multipart uploads", status, &body));
        }
        let page = parse(&body)?;
        uploads.extend(page.uploads);
        match page.next {
            // A truncated page that does not move the markers would loop forever.
            Some(next) if markers.as_ref() != Some(&next) => markers = Some(next),
            Some(_) => return Err(CommandError::Object("the upload listing did not advance")),
            None => return Ok(Some(uploads)),
        }
    }
}

/// Whether an upload that began at `initiated` may be written under a key
/// version older than the one created at `settled_from` (the newest
/// version's creation plus the time proxies take to see it). Unknown times
/// count as "may": the answer must never be a false "nothing left".
pub fn may_use_an_older_version(initiated: Option<SystemTime>, settled_from: Option<SystemTime>) -> bool {
    match (initiated, settled_from) {
        (Some(began), Some(settled)) => began < settled,
        _ => true,
    }
}

struct Page {
    uploads: Vec<OpenUpload>,
    /// (NextKeyMarker, NextUploadIdMarker) when the listing is truncated.
    next: Option<(String, String)>,
}

fn parse(xml: &[u8]) -> Result<Page, CommandError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut uploads = Vec::new();
    let mut entry: Option<(String, String, Option<SystemTime>)> = None;
    let mut current: Option<Vec<u8>> = None;
    let (mut truncated, mut next_key, mut next_id) = (false, None, None);
    loop {
        match reader.read_event()? {
            Event::Eof => break,
            Event::Start(s) if s.name().as_ref() == b"Upload" => entry = Some(Default::default()),
            Event::End(e) if e.name().as_ref() == b"Upload" => {
                if let Some((key, upload_id, initiated)) = entry.take() {
                    uploads.push(OpenUpload { key, upload_id, initiated });
                }
            }
            Event::Start(s) => current = Some(s.name().as_ref().to_vec()),
            Event::End(_) => current = None,
            Event::Text(t) => {
                let text = t.unescape()?.into_owned();
                match (current.as_deref(), entry.as_mut()) {
                    (Some(b"Key"), Some(u)) => u.0 = text,
                    (Some(b"UploadId"), Some(u)) => u.1 = text,
                    (Some(b"Initiated"), Some(u)) => u.2 = s3_time(&text),
                    (Some(b"IsTruncated"), None) => truncated = text == "true",
                    (Some(b"NextKeyMarker"), None) => next_key = Some(text),
                    (Some(b"NextUploadIdMarker"), None) => next_id = Some(text),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let next = match (truncated, next_key) {
        (true, Some(key)) => Some((key, next_id.unwrap_or_default())),
        _ => None,
    };
    Ok(Page { uploads, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_uploads_their_start_and_the_markers() {
        let xml = br#"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>true</IsTruncated>
            <NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
            <Upload><Key>k1</Key><UploadId>u1</UploadId><Initiated>2026-12-05T12:00:00.000Z</Initiated></Upload>
            <Upload><Key>k&amp;2</Key><UploadId>u2</UploadId><Initiated>yesterday</Initiated></Upload>
            </ListMultipartUploadsResult>"#;
        let page = parse(xml).unwrap();
        assert_eq!(page.next, Some(("k2".into(), "u2".into())));
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].initiated, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_472_000)));
        assert_eq!((page.uploads[1].key.as_str(), page.uploads[1].initiated), ("k&2", None));
    }

    #[test]
    fn only_uploads_begun_after_the_version_settled_are_known_to_be_current() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = t + Duration::from_secs(1);
        assert!(may_use_an_older_version(Some(t), Some(later)));
        assert!(!may_use_an_older_version(Some(later), Some(t)));
        assert!(may_use_an_older_version(None, Some(t)), "an unknown start may be older");
        assert!(may_use_an_older_version(Some(t), None), "an unknown rotation time may be later");
    }
}
