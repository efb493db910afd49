//! Walking a bucket's keys with ListObjectsV2, for the admin commands.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;

use crate::request::classify::S3Request;
use crate::request::upstream::UpstreamClient;
use crate::request::xml;

/// A response read in full.
pub async fn body_of(resp: http::Response<hyper::body::Incoming>) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, bytes))
}

/// `what: status code` from an S3 error document.
pub fn s3_error(what: &str, status: StatusCode, body: &[u8]) -> String {
    let code = xml::texts_of(body, b"Code").ok().and_then(|mut c| c.pop()).unwrap_or_default();
    format!("{what}: {status} {code}")
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
    pub async fn next(&mut self) -> Result<Option<Vec<String>>, String> {
        if self.done {
            return Ok(None);
        }
        let (keys, next) =
            list_page(self.upstream, self.bucket, self.prefix, self.token.as_deref(), self.start_after.as_deref())
                .await?;
        self.done = next.is_none();
        self.token = next;
        Ok(Some(keys))
    }
}

/// One page of keys under `prefix`, after `start_after` on the first page;
/// the continuation token is `None` when the listing is done.
async fn list_page(
    upstream: &UpstreamClient,
    bucket: &str,
    prefix: &str,
    token: Option<&str>,
    start_after: Option<&str>,
) -> Result<(Vec<String>, Option<String>), String> {
    let mut query = vec![("list-type".into(), "2".into()), ("prefix".into(), prefix.to_owned())];
    if let Some(t) = token {
        query.push(("continuation-token".into(), t.to_owned()));
    } else if let Some(s) = start_after {
        query.push(("start-after".into(), s.to_owned()));
    }
    let s3 = S3Request::internal(bucket, None, query);
    let resp =
        upstream.send_buffered(Method::GET, &s3, HeaderMap::new(), Bytes::new()).await.map_err(|e| e.to_string())?;
    let (status, _, body) = body_of(resp).await?;
    if !status.is_success() {
        return Err(s3_error("listing the bucket", status, &body));
    }
    let keys = xml::texts_of(&body, b"Key").map_err(|e| e.to_string())?;
    let truncated =
        xml::texts_of(&body, b"IsTruncated").map_err(|e| e.to_string())?.first().is_some_and(|t| t == "true");
    let next = xml::texts_of(&body, b"NextContinuationToken").map_err(|e| e.to_string())?.pop();
    Ok((keys, if truncated { next } else { None }))
}

/// The last finished key recorded in a state file, to continue after it.
pub fn read_state(path: &Option<std::path::PathBuf>) -> Option<String> {
    let text = std::fs::read_to_string(path.as_ref()?).ok()?;
    let key = text.trim_end_matches('\n').to_owned();
    (!key.is_empty()).then_some(key)
}

/// Records `key` as finished, atomically (write, then rename).
pub fn write_state(path: &Option<std::path::PathBuf>, key: &str) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{key}\n"))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}
