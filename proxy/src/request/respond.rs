//! Step 6: shape the upstream's response for the workload: plaintext sizes
//! and ranges, no envelope metadata, no checksums of ciphertext.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use quick_xml::events::{BytesText, Event};

use crate::body::{ProxyBody, full};
use crate::error::ProxyError;
use crate::format::{HEADER_LEN, META_PREFIX, plaintext_len};
use crate::s3::etag::client_etag;
use crate::stream::checksum::VerifiedChecksum;

const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"];

/// Tells clients the ETag is not an MD5 of the body (they skip that check
/// for SSE-KMS objects), which holds for every object the proxy writes.
const SSE_HEADER: &str = "x-amz-server-side-encryption";

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// Checksums the upstream computed describe ciphertext, never what the client holds.
fn remove_ciphertext_checksums(headers: &mut HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-amz-checksum-") || k.as_str() == "content-md5")
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

fn remove_envelope_metadata(headers: &mut HeaderMap) {
    let names: Vec<_> = headers.keys().filter(|k| k.as_str().starts_with(META_PREFIX)).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

/// Any response relayed as the upstream sent it.
pub fn pass_through(resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body)
}

pub struct PlaintextView {
    pub status: StatusCode,
    pub content_length: u64,
    pub content_range: Option<String>,
    pub transit_key: String,
}

/// Headers of a GET or HEAD on an encrypted object, in plaintext terms.
pub fn object_response(mut headers: HeaderMap, view: PlaintextView, body: ProxyBody) -> Response<ProxyBody> {
    remove_hop_by_hop(&mut headers);
    // Some upstreams (s3s-fs) store the proxy's aws-chunked upload framing
    // as the object's Content-Encoding; S3 never returns it.
    crate::s3::headers::set_content_encoding(&mut headers, false);
    remove_ciphertext_checksums(&mut headers);
    remove_envelope_metadata(&mut headers);
    headers.remove("x-amz-checksum-type");
    headers.remove(http::header::CONTENT_RANGE);
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(view.content_length));
    if let Some(range) = view.content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        headers.insert(http::header::CONTENT_RANGE, range);
    }
    mark_encrypted(&mut headers, Some(&view.transit_key));
    mark_etag(&mut headers);
    let mut resp = Response::new(body);
    *resp.status_mut() = view.status;
    *resp.headers_mut() = headers;
    resp
}

fn mark_etag(headers: &mut HeaderMap) {
    let marked = headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(client_etag);
    if let Some(v) = marked.and_then(|m| HeaderValue::from_str(&m).ok()) {
        headers.insert(http::header::ETAG, v);
    }
}

/// `transit_key`: the object's; `None` for a part, whose answer names no key.
fn mark_encrypted(headers: &mut HeaderMap, transit_key: Option<&str>) {
    headers.insert(SSE_HEADER, HeaderValue::from_static("aws:kms"));
    headers.remove("x-amz-server-side-encryption-aws-kms-key-id");
    if let Some(v) = transit_key.and_then(|k| HeaderValue::from_str(&format!("vault-transit:{k}")).ok()) {
        headers.insert("x-amz-server-side-encryption-aws-kms-key-id", v);
    }
}

/// The response to an encrypted write: the upstream's, with the client's own
/// (verified) checksums in place of the ciphertext's.
/// `whole_object` is false for UploadPart, whose ETag the client only echoes back.
pub fn write_response(
    resp: Response<ProxyBody>,
    verified: &[VerifiedChecksum],
    transit_key: Option<&str>,
    whole_object: bool,
) -> Response<ProxyBody> {
    // Rebuilt, not relayed: a write's answer is headers S3 defines and no
    // body, so envelope metadata or an object's bytes a hostile upstream
    // put there never reach the workload. Its checksums are the ones the
    // proxy verified on the plaintext, not the upstream's of the ciphertext.
    let (upstream, _body) = resp.into_parts();
    let mut headers = HeaderMap::new();
    for (name, value) in &upstream.headers {
        if WRITE_ANSWER_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("x-amz-server-side-encryption") {
            headers.append(name.clone(), value.clone());
        }
    }
    for v in verified {
        if let Ok(value) = HeaderValue::from_str(&v.value) {
            headers.insert(v.header_name, value);
        }
    }
    mark_encrypted(&mut headers, transit_key);
    if whole_object {
        mark_etag(&mut headers);
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = upstream.status;
    *resp.headers_mut() = headers;
    resp
}

/// The headers of a PutObject or UploadPart answer the workload gets.
const WRITE_ANSWER_HEADERS: &[&str] = &[
    "etag",
    "date",
    "x-amz-request-id",
    "x-amz-id-2",
    "x-amz-version-id",
    "x-amz-expiration",
    "x-amz-request-charged",
];

/// A response whose body the proxy rewrote in full.
pub fn buffered(mut headers: HeaderMap, status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    remove_hop_by_hop(&mut headers);
    remove_ciphertext_checksums(&mut headers);
    headers.remove("x-amz-checksum-algorithm");
    headers.remove("x-amz-checksum-type");
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A listing (ListObjects, ListObjectsV2, ListObjectVersions) with every
/// encrypted object's size in plaintext bytes. Sizes are inverted from the
/// ciphertext length, so no per-object request is needed.
pub fn listing_response(headers: HeaderMap, status: StatusCode, xml: Bytes) -> Result<Response<ProxyBody>, ProxyError> {
    let xml = if status.is_success() { rewrite_listing_sizes(&xml)? } else { xml };
    Ok(buffered(headers, status, xml))
}

fn rewrite_listing_sizes(xml: &[u8]) -> Result<Bytes, ProxyError> {
    let bad = |e: &dyn std::fmt::Display| crate::error::xml_error("upstream listing is not valid XML", e);
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut writer = quick_xml::Writer::new(Vec::with_capacity(xml.len()));
    // Events of the current entry (`<Contents>`, or `<Version>` in
    // ListObjectVersions), held until its ETag is known. Delete markers have
    // neither size nor ETag and pass unchanged.
    let mut entry: Option<Vec<Event<'static>>> = None;
    loop {
        let event = reader.read_event().map_err(|e| bad(&e))?.into_owned();
        match (&event, entry.as_mut()) {
            (Event::Eof, _) => break,
            (Event::Start(s), None) if is_entry(s.name().as_ref()) => entry = Some(vec![event]),
            (Event::End(e), Some(events)) if is_entry(e.name().as_ref()) => {
                events.push(event);
                for ev in plaintext_sizes(std::mem::take(events)) {
                    writer.write_event(ev).map_err(|e| bad(&e))?;
                }
                entry = None;
            }
            (_, Some(events)) => events.push(event),
            (_, None) => writer.write_event(event).map_err(|e| bad(&e))?,
        }
    }
    Ok(Bytes::from(writer.into_inner()))
}

fn is_entry(name: &[u8]) -> bool {
    matches!(name, b"Contents" | b"Version")
}

/// An entry without its `Checksum*` elements (`ChecksumAlgorithm`,
/// `ChecksumType`): they describe the ciphertext's checksum, which GET and
/// HEAD never return.
fn without_checksums(events: Vec<Event<'static>>) -> Vec<Event<'static>> {
    let mut depth = 0usize;
    let mut kept = Vec::with_capacity(events.len());
    for event in events {
        match &event {
            Event::Start(s) if depth > 0 || s.name().as_ref().starts_with(b"Checksum") => depth += 1,
            Event::End(_) if depth > 0 => depth -= 1,
            Event::Empty(s) if s.name().as_ref().starts_with(b"Checksum") => {}
            _ if depth > 0 => {}
            _ => kept.push(event),
        }
    }
    kept
}

/// Rewrites `<Size>` in one entry. A multipart object (ETag `…-N`) is N
/// streams whose non-final parts are whole segments (enforced at Complete),
/// so its segments read like one stream with N−1 extra headers.
fn plaintext_sizes(events: Vec<Event<'static>>) -> Vec<Event<'static>> {
    let mut events = without_checksums(events);
    let text_of = |events: &[Event<'static>], tag: &[u8]| -> Option<(usize, String)> {
        let start = events.iter().position(|e| matches!(e, Event::Start(s) if s.name().as_ref() == tag))?;
        match events.get(start + 1) {
            Some(Event::Text(t)) => Some((start + 1, t.unescape().ok()?.into_owned())),
            _ => None,
        }
    };
    let parts: u64 = text_of(&events, b"ETag")
        .and_then(|(_, etag)| etag.trim_matches('"').rsplit_once('-').and_then(|(_, n)| n.parse().ok()))
        .unwrap_or(1);
    if let Some((i, etag)) = text_of(&events, b"ETag") {
        events[i] = Event::Text(BytesText::new(&client_etag(&etag)).into_owned());
    }
    if let Some((i, size)) = text_of(&events, b"Size") {
        let extra_headers = (parts.max(1) - 1) * HEADER_LEN as u64;
        let plain = size.trim().parse::<u64>().ok().and_then(|s| s.checked_sub(extra_headers)).and_then(plaintext_len);
        if let Some(p) = plain {
            events[i] = Event::Text(BytesText::new(&p.to_string()).into_owned());
        }
    }
    events
}

/// The `<Error>` element for `error`, without an XML declaration.
pub fn error_document(error: &ProxyError, resource: &str, request_id: &str) -> Bytes {
    Bytes::from(format!(
        "<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        error.code(),
        quick_xml::escape::escape(error.to_string()),
        quick_xml::escape::escape(resource),
        quick_xml::escape::escape(request_id)
    ))
}

/// The S3 error document for `error`; HEAD responses carry no body. The only
/// place an error becomes a response (linkerd's error responder, rustls's
/// alert mapping): handlers return `ProxyError`, and `RequestPath::handle`
/// renders it here.
pub fn error_response(error: &ProxyError, resource: &str, request_id: &str, head: bool) -> Response<ProxyBody> {
    let status = error.status();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
        String::from_utf8_lossy(&error_document(error, resource, request_id))
    );
    let len = xml.len();
    let mut resp = Response::new(if head { full(Bytes::new()) } else { full(Bytes::from(xml)) });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(if head { 0 } else { len }));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amz-request-id", v);
    }
    if let ProxyError::InvalidRange { object_len } = error
        && let Ok(v) = HeaderValue::from_str(&format!("bytes */{object_len}"))
    {
        h.insert(http::header::CONTENT_RANGE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ciphertext_len;

    #[test]
    fn etags_carry_a_part_count() {
        assert_eq!(client_etag("\"9dd4e461268c8034f5c8564e155c67a6\""), "\"9dd4e461268c8034f5c8564e155c67a6-1\"");
        assert_eq!(client_etag("\"9dd4e461268c8034f5c8564e155c67a6-4\""), "\"9dd4e461268c8034f5c8564e155c67a6-4\"");
        assert_eq!(client_etag(""), "");
    }

    #[test]
    fn listing_sizes_become_plaintext() {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Contents><Key>a&amp;b</Key><ETag>&quot;abc&quot;</ETag><Size>{}</Size></Contents><Contents><Key>mp</Key><ETag>&quot;abc-3&quot;</ETag><Size>{}</Size></Contents><Contents><Key>odd</Key><Size>3</Size></Contents></ListBucketResult>"#,
            ciphertext_len(1000),
            // Three parts of 1 MiB, 1 MiB and 10 bytes.
            2 * ciphertext_len(1 << 20) + ciphertext_len(10)
        );
        let out = String::from_utf8(rewrite_listing_sizes(xml.as_bytes()).unwrap().to_vec()).unwrap();
        assert!(out.contains("<Key>a&amp;b</Key><ETag>&quot;abc-1&quot;</ETag><Size>1000</Size>"), "{out}");
        assert!(out.contains("<ETag>&quot;abc-3&quot;</ETag>"), "{out}");
        assert!(out.contains(&format!("<Size>{}</Size>", (2 << 20) + 10)), "{out}");
        assert!(out.contains("<Size>3</Size>"));
        assert!(out.contains("<Name>b</Name>"));
    }

    #[test]
    fn version_listings_get_plaintext_sizes_and_lose_checksums() {
        let xml = format!(
            r#"<ListVersionsResult><Name>b</Name><Version><Key>k</Key><VersionId>2</VersionId><IsLatest>true</IsLatest><ETag>"e2"</ETag><Size>{}</Size><ChecksumAlgorithm>CRC32C</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType></Version><DeleteMarker><Key>k</Key><VersionId>3</VersionId></DeleteMarker><Version><Key>k</Key><VersionId>1</VersionId><ETag>"e1-2"</ETag><Size>{}</Size></Version></ListVersionsResult>"#,
            ciphertext_len(90_000),
            ciphertext_len(5 << 20) + ciphertext_len(7)
        );
        let out = String::from_utf8(rewrite_listing_sizes(xml.as_bytes()).unwrap().to_vec()).unwrap();
        assert!(out.contains("<ETag>&quot;e2-1&quot;</ETag><Size>90000</Size></Version>"), "{out}");
        assert!(out.contains("<ETag>&quot;e1-2&quot;</ETag><Size>5242887</Size>"), "{out}");
        assert!(out.contains("<DeleteMarker><Key>k</Key><VersionId>3</VersionId></DeleteMarker>"), "{out}");
        assert!(!out.contains("Checksum"), "{out}");
    }
}

#[cfg(test)]
mod error_response_tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(resp: Response<ProxyBody>) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn renders_the_s3_error_document() {
        let e = ProxyError::from(crate::error::ArgumentError::AttributeName { name: "a <bad> & odd value".into() });
        let resp = error_response(&e, "/b/k?x=<1>", "REQ1", false);
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["x-amz-request-id"], "REQ1");
        let xml = body(resp);
        assert!(xml.contains("<Code>InvalidArgument</Code>"), "{xml}");
        assert!(xml.contains("a &lt;bad&gt; &amp; odd value") && xml.contains("<Resource>/b/k?x=&lt;1&gt;</Resource>"));
        let head = error_response(&ProxyError::InvalidRange { object_len: 7 }, "/b/k", "R", true);
        assert_eq!(
            (head.status().as_u16(), &head.headers()[http::header::CONTENT_RANGE]),
            (416, &"bytes */7".parse::<HeaderValue>().unwrap())
        );
        assert_eq!(body(head), "", "HEAD carries no body");
    }
}
