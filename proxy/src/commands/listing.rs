//! Walking a bucket's keys with ListObjectsV2, for the admin commands.

use std::time::SystemTime;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use super::CommandError;
use crate::format::MAGIC;
use crate::s3::classify::S3Request;
use crate::s3::range::content_range_span;
use crate::s3::xml;
use crate::upstream::UpstreamClient;

/// A response read in full.
pub async fn body_of(
    resp: http::Response<crate::body::ProxyBody>,
) -> Result<(StatusCode, HeaderMap, Bytes), CommandError> {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(CommandError::Body)?.to_bytes();
    Ok((parts.status, parts.headers, bytes))
}

/// `operation: status code` from an S3 error document.
pub fn s3_error(operation: &'static str, status: StatusCode, body: &[u8]) -> CommandError {
    let code = xml::texts_of(body, b"Code").ok().and_then(|mut c| c.pop()).unwrap_or_default();
    CommandError::S3 { operation, status, code }
}

/// A line about one object (why it was refused, skipped or failed): above
/// the progress bar, or on standard error when the bar is hidden (`--quiet`,
/// `--json`), where it would otherwise vanish with the bar.
pub fn say(progress: &indicatif::ProgressBar, line: String) {
    if progress.is_hidden() { eprintln!("{line}") } else { progress.println(line) }
}

/// What an object's first bytes say about an object without an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// The body starts with the format's magic: CloudTaser ciphertext whose
    /// envelope was stripped or replaced. Never plaintext: encrypting it would
    /// bury the original data key's only record, and reads would then return
    /// the old ciphertext as the object.
    Ciphertext,
    /// Anything else (the empty object included).
    Other,
    /// The object changed since it was examined (`If-Match` failed).
    Changed,
}

/// Reads only the first bytes of the object `s3` names (`len` bytes long, at
/// the version `etag` names) and says whether they are the format's magic.
/// The answer must be what a ranged read gets: 206 with exactly the asked
/// range as `Content-Range`, or 200 with the whole object when it is shorter
/// than the range; anything else is an error, never a guess.
pub async fn lead_of(
    upstream: &UpstreamClient,
    s3: &S3Request,
    etag: &HeaderValue,
    len: u64,
) -> Result<Lead, CommandError> {
    let want = MAGIC.len() as u64;
    if len == 0 {
        // A range on an empty object is unsatisfiable (416); nothing to read.
        return Ok(Lead::Other);
    }
    let mut headers = HeaderMap::new();
    headers.insert(http::header::RANGE, HeaderValue::from_str(&format!("bytes=0-{}", want - 1))?);
    headers.insert(http::header::IF_MATCH, etag.clone());
    let resp = upstream.send_buffered(Method::GET, s3, headers, Bytes::new()).await?;
    let (status, headers, body) = body_of(resp).await?;
    let expected = want.min(len);
    let answered = match status {
        StatusCode::PRECONDITION_FAILED => return Ok(Lead::Changed),
        StatusCode::PARTIAL_CONTENT => content_range_span(&headers) == Some((0, expected - 1, len)),
        StatusCode::OK => len < want,
        _ => return Err(s3_error("ranged GET of the first bytes", status, &body)),
    };
    if !answered || body.len() as u64 != expected {
        return Err(CommandError::Answered { operation: "ranged GET of the first bytes", status });
    }
    Ok(if body[..] == MAGIC[..] { Lead::Ciphertext } else { Lead::Other })
}

/// A bucket's keys under a prefix, page by page, optionally continuing
/// after a key (a state file's resume point).
pub struct KeyPages<'a> {
    upstream: &'a UpstreamClient,
    bucket: &'a str,
    prefix: &'a str,
    start_after: Option<String>,
    token: Option<String>,
    done: bool,
}

impl<'a> KeyPages<'a> {
    pub fn new(upstream: &'a UpstreamClient, bucket: &'a str, prefix: &'a str, start_after: Option<String>) -> Self {
        Self { upstream, bucket, prefix, start_after, token: None, done: false }
    }

    /// The next page, or `None` once the listing is done.
    pub async fn next(&mut self) -> Result<Option<Vec<String>>, CommandError> {
        Ok(self.next_objects().await?.map(|page| page.into_iter().map(|(key, _)| key).collect()))
    }

    /// The next page with each object's `LastModified` (`None` when it
    /// does not parse), or `None` once the listing is done.
    pub async fn next_objects(&mut self) -> Result<Option<Vec<(String, Option<SystemTime>)>>, CommandError> {
        if self.done {
            return Ok(None);
        }
        let (objects, next) =
            list_page(self.upstream, self.bucket, self.prefix, self.token.as_deref(), self.start_after.as_deref())
                .await?;
        self.done = next.is_none();
        self.token = next;
        Ok(Some(objects))
    }
}

/// A time in an S3 listing (`2026-12-05T12:00:00.000Z`).
pub fn s3_time(text: &str) -> Option<SystemTime> {
    DateTime::from_str(text, Format::DateTime).ok().and_then(|d| SystemTime::try_from(d).ok())
}

/// One page of keys under `prefix`, after `start_after` on the first page;
/// the continuation token is `None` when the listing is done.
async fn list_page(
    upstream: &UpstreamClient,
    bucket: &str,
    prefix: &str,
    token: Option<&str>,
    start_after: Option<&str>,
) -> Result<ObjectPage, CommandError> {
    let mut query = vec![("list-type".into(), "2".into()), ("prefix".into(), prefix.to_owned())];
    if let Some(t) = token {
        query.push(("continuation-token".into(), t.to_owned()));
    } else if let Some(s) = start_after {
        query.push(("start-after".into(), s.to_owned()));
    }
    let s3 = S3Request::internal(bucket, None, query);
    let resp = upstream.send_buffered(Method::GET, &s3, HeaderMap::new(), Bytes::new()).await?;
    let (status, _, body) = body_of(resp).await?;
    if status != StatusCode::OK {
        return Err(s3_error("listing the bucket", status, &body));
    }
    parse_objects(&body)
}

type ObjectPage = (Vec<(String, Option<SystemTime>)>, Option<String>);

fn parse_objects(xml: &[u8]) -> Result<ObjectPage, CommandError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut objects = Vec::new();
    let mut entry: Option<(String, Option<SystemTime>)> = None;
    let mut current: Option<Vec<u8>> = None;
    let (mut truncated, mut next) = (false, None);
    loop {
        match reader.read_event()? {
            Event::Eof => break,
            Event::Start(s) if s.name().as_ref() == b"Contents" => entry = Some(Default::default()),
            Event::End(e) if e.name().as_ref() == b"Contents" => objects.extend(entry.take()),
            Event::Start(s) => current = Some(s.name().as_ref().to_vec()),
            Event::End(_) => current = None,
            Event::Text(t) => {
                let text = t.unescape()?.into_owned();
                match (current.as_deref(), entry.as_mut()) {
                    (Some(b"Key"), Some(o)) => o.0 = text,
                    (Some(b"LastModified"), Some(o)) => o.1 = s3_time(&text),
                    (Some(b"IsTruncated"), None) => truncated = text == "true",
                    (Some(b"NextContinuationToken"), None) => next = Some(text),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok((objects, if truncated { next } else { None }))
}

/// One stored version of an object, from ListObjectVersions (delete markers
/// are left out: they hold no data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
}

/// Every version of every object under a prefix, page by page.
pub struct VersionPages<'a> {
    upstream: &'a UpstreamClient,
    bucket: &'a str,
    prefix: &'a str,
    markers: Option<(String, String)>,
    done: bool,
}

impl<'a> VersionPages<'a> {
    pub fn new(upstream: &'a UpstreamClient, bucket: &'a str, prefix: &'a str) -> Self {
        Self { upstream, bucket, prefix, markers: None, done: false }
    }

    /// The next page, or `None` once the listing is done.
    pub async fn next(&mut self) -> Result<Option<Vec<ObjectVersion>>, CommandError> {
        if self.done {
            return Ok(None);
        }
        let mut query = vec![("versions".into(), String::new()), ("prefix".into(), self.prefix.to_owned())];
        if let Some((key, version)) = &self.markers {
            query.push(("key-marker".into(), key.clone()));
            query.push(("version-id-marker".into(), version.clone()));
        }
        let s3 = S3Request::internal(self.bucket, None, query);
        let resp = self.upstream.send_buffered(Method::GET, &s3, HeaderMap::new(), Bytes::new()).await?;
        let (status, _, body) = body_of(resp).await?;
        if !status.is_success() {
            return Err(s3_error("listing the bucket's versions", status, &body));
        }
        let page = parse_versions(&body)?;
        self.done = page.next.is_none();
        self.markers = page.next;
        Ok(Some(page.versions))
    }
}

struct VersionPage {
    versions: Vec<ObjectVersion>,
    /// (NextKeyMarker, NextVersionIdMarker) when the listing is truncated.
    next: Option<(String, String)>,
}

fn parse_versions(xml: &[u8]) -> Result<VersionPage, CommandError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut versions = Vec::new();
    let mut entry: Option<ObjectVersion> = None;
    let mut current: Option<Vec<u8>> = None;
    let (mut truncated, mut next_key, mut next_version) = (false, None, None);
    loop {
        match reader.read_event()? {
            Event::Eof => break,
            Event::Start(s) if s.name().as_ref() == b"Version" => {
                entry = Some(ObjectVersion { key: String::new(), version_id: String::new(), is_latest: false });
            }
            Event::End(e) if e.name().as_ref() == b"Version" => versions.extend(entry.take()),
            Event::Start(s) => current = Some(s.name().as_ref().to_vec()),
            Event::End(_) => current = None,
            Event::Text(t) => {
                let text = t.unescape()?.into_owned();
                match (current.as_deref(), entry.as_mut()) {
                    (Some(b"Key"), Some(v)) => v.key = text,
                    (Some(b"VersionId"), Some(v)) => v.version_id = text,
                    (Some(b"IsLatest"), Some(v)) => v.is_latest = text == "true",
                    (Some(b"IsTruncated"), None) => truncated = text == "true",
                    (Some(b"NextKeyMarker"), None) => next_key = Some(text),
                    (Some(b"NextVersionIdMarker"), None) => next_version = Some(text),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let next = match (truncated, next_key) {
        (true, Some(key)) => Some((key, next_version.unwrap_or_default())),
        _ => None,
    };
    Ok(VersionPage { versions, next })
}

/// The last finished key recorded in a state file, to continue after it.
pub fn read_state(path: &Option<std::path::PathBuf>) -> Option<String> {
    let text = std::fs::read_to_string(path.as_ref()?).ok()?;
    let key = text.trim_end_matches('\n').to_owned();
    (!key.is_empty()).then_some(key)
}

/// Records `key` as finished, atomically (write, then rename).
pub fn write_state(path: &Option<std::path::PathBuf>, key: &str) -> Result<(), CommandError> {
    let Some(path) = path else { return Ok(()) };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{key}\n")).and_then(|_| std::fs::rename(&tmp, path)).map_err(CommandError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objects_and_when_they_changed() {
        let xml =
            br#"<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>t2</NextContinuationToken>
            <Contents><Key>a</Key><LastModified>2026-12-05T12:00:00.000Z</LastModified></Contents>
            <CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes>
            <Contents><Key>b</Key><LastModified>garbled</LastModified></Contents></ListBucketResult>"#;
        let (objects, next) = parse_objects(xml).unwrap();
        assert_eq!(next.as_deref(), Some("t2"));
        assert_eq!(
            objects[0],
            ("a".to_owned(), Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_472_000)))
        );
        assert_eq!(objects[1], ("b".to_owned(), None));
        assert_eq!(objects.len(), 2, "common prefixes are not objects");
    }

    #[test]
    fn versions_without_delete_markers() {
        let xml = br#"<ListVersionsResult><IsTruncated>true</IsTruncated><NextKeyMarker>b</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker><Version><Key>a&amp;1</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest><Size>1</Size></Version><DeleteMarker><Key>b</Key><VersionId>v8</VersionId><IsLatest>true</IsLatest></DeleteMarker><Version><Key>b</Key><VersionId>v9</VersionId><IsLatest>false</IsLatest></Version></ListVersionsResult>"#;
        let page = parse_versions(xml).unwrap();
        assert_eq!(
            page.versions,
            vec![
                ObjectVersion { key: "a&1".into(), version_id: "v2".into(), is_latest: true },
                ObjectVersion { key: "b".into(), version_id: "v9".into(), is_latest: false },
            ]
        );
        assert_eq!(page.next, Some(("b".into(), "v9".into())));
    }
}
