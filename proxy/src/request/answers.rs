//! The one table of upstream answers each step of an operation accepts.
//!
//! The upstream is treated like any other input: an answer is either the
//! one the step asked for (a whole GET's `200`, a ranged read's `206`, a
//! write's `200`), a conditional read's verdict (`304`, `412`), or an S3
//! error (`4xx`, `5xx`, and S3's `301`/`307` redirects), which the workload
//! gets rebuilt from its parsed fields, never as the upstream's bytes.
//! Anything else (a `206` to a whole-object GET, a `203`, a `201`) is a
//! `502`: an upstream that answers what was not asked is never relayed,
//! since its body would reach the workload unverified.

use std::time::Duration;

use bytes::Bytes;
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use quick_xml::events::Event;

use crate::body::{ProxyBody, collect_limited, empty, full};
use crate::error::{ProxyError, UpstreamFailure};
use crate::format::MAGIC;

/// What one upstream request of an operation asked for, and so which
/// statuses it takes as the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// GET of a whole object (GetObject, `scan --verify`, a copy's source).
    ObjectRead,
    /// The proxy's own ranged read of a stream header (`bytes=0-51`).
    HeaderProbe,
    /// A workload's ranged read of an object written before the proxy,
    /// relayed as stored (`CLOUDTASER_S3PROXY_PLAINTEXT_READS`).
    PlaintextRead,
    /// HEAD of an object.
    ObjectHead,
    /// HEAD of a copy's source: anything but `200` refuses the copy.
    CopySource,
    /// PUT of object data (PutObject, UploadPart).
    ObjectWrite,
    /// A request without object data whose answer is `200` and nothing else
    /// (listings, CopyObject, CreateMultipartUpload, Complete, ListParts,
    /// GetObjectAttributes).
    Control,
    /// A forwarded operation without object data (tagging, deletes,
    /// configuration): `200`, or `204` (deletes, some configuration
    /// writes), or RestoreObject's `202`.
    Forwarded,
}

impl Step {
    /// The statuses that are this step's answer. The one table.
    fn expects(self, status: StatusCode) -> bool {
        use StatusCode as S;
        match self {
            Step::ObjectRead | Step::ObjectHead | Step::CopySource | Step::ObjectWrite | Step::Control => {
                status == S::OK
            }
            Step::HeaderProbe => status == S::PARTIAL_CONTENT,
            Step::PlaintextRead => matches!(status, S::OK | S::PARTIAL_CONTENT),
            Step::Forwarded => matches!(status, S::OK | S::NO_CONTENT | S::ACCEPTED),
        }
    }

    /// Whether the workload's own conditions went with this request, so
    /// that `304` and `412` are verdicts rather than surprises.
    fn conditional(self) -> bool {
        matches!(self, Step::ObjectRead | Step::HeaderProbe | Step::PlaintextRead | Step::ObjectHead)
    }

    /// Whether the answer's body would be object bytes: an unexpected
    /// answer here is counted as an integrity failure.
    pub fn carries_object_bytes(self) -> bool {
        matches!(self, Step::ObjectRead | Step::HeaderProbe | Step::PlaintextRead | Step::CopySource)
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::ObjectRead => "an object read",
            Step::HeaderProbe => "a stream header read",
            Step::PlaintextRead => "a plaintext read",
            Step::ObjectHead => "an object HEAD",
            Step::CopySource => "the copy source's HEAD",
            Step::ObjectWrite => "an object write",
            Step::Control => "a request without object data",
            Step::Forwarded => "a forwarded request",
        }
    }
}

/// An upstream answer sorted by the table.
pub enum Answer {
    /// The answer the step asked for, for the handler to go on with.
    Expected(Response<ProxyBody>),
    /// What the workload gets instead, already rebuilt: a `304` with its
    /// validators, or an S3 error document made from the upstream's fields.
    Verdict(Response<ProxyBody>),
}

/// Sorts `resp` by what `step` accepts. `head`: the workload's request was
/// a HEAD, so a verdict carries no body.
pub async fn accept(step: Step, resp: Response<ProxyBody>, head: bool) -> Result<Answer, ProxyError> {
    let status = resp.status();
    if step.expects(status) {
        return Ok(Answer::Expected(resp));
    }
    if step.conditional() && matches!(status, StatusCode::NOT_MODIFIED | StatusCode::PRECONDITION_FAILED) {
        return not_modified_or_failed(status, resp.into_parts().0.headers).map(Answer::Verdict);
    }
    if is_error(status) {
        let (parts, body) = resp.into_parts();
        return Ok(Answer::Verdict(rebuilt_error(step, parts, body, head).await));
    }
    Err(unexpected(step, status))
}

/// A step's answer that must be the expected one, held in full (a control
/// document): the parts and the body, or the workload's verdict.
pub enum ControlAnswer {
    Expected(Parts, Bytes),
    Verdict(Response<ProxyBody>),
}

/// `accept` for answers whose body is a small document, read in full and
/// checked not to be object data.
pub async fn accept_control(step: Step, resp: Response<ProxyBody>) -> Result<ControlAnswer, ProxyError> {
    match accept(step, resp, false).await? {
        Answer::Expected(resp) => {
            let (parts, body) = resp.into_parts();
            let body = super::collect_control(&parts.headers, body).await?;
            Ok(ControlAnswer::Expected(parts, body))
        }
        Answer::Verdict(v) => Ok(ControlAnswer::Verdict(v)),
    }
}

/// The error for an answer no table row takes.
pub fn unexpected(step: Step, status: StatusCode) -> ProxyError {
    UpstreamFailure::Unexpected { step: step.name(), status, object_bytes: step.carries_object_bytes() }.into()
}

/// Statuses an S3 error document comes with.
fn is_error(status: StatusCode) -> bool {
    status.is_client_error()
        || status.is_server_error()
        || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::TEMPORARY_REDIRECT)
}

/// A failed condition: `304` with the validators, or S3's `412` error.
pub fn not_modified_or_failed(status: StatusCode, upstream: HeaderMap) -> Result<Response<ProxyBody>, ProxyError> {
    if status != StatusCode::NOT_MODIFIED {
        return Err(ProxyError::PreconditionFailed);
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    if let Some(v) = upstream.get(http::header::LAST_MODIFIED) {
        resp.headers_mut().insert(http::header::LAST_MODIFIED, v.clone());
    }
    let etag = upstream.get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(crate::s3::etag::client_etag);
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    Ok(resp)
}

/// The stored length a ranged answer gives, once its `Content-Range` is
/// checked to be exactly the bytes asked for (`last` clamped to the
/// object): bytes from another offset are never taken for these.
pub fn range_answered(step: Step, headers: &HeaderMap, first: u64, last: u64) -> Result<u64, ProxyError> {
    let wrong = || ProxyError::from(UpstreamFailure::WrongRange { step: step.name() });
    let (a, b, total) = crate::s3::range::content_range_span(headers).ok_or_else(wrong)?;
    if a != first || b != last.min(total - 1) {
        return Err(wrong());
    }
    Ok(total)
}

/// An object relayed as stored (written before the proxy, in a
/// `CLOUDTASER_S3PROXY_PLAINTEXT_READS` prefix) whose bytes are a CTS3
/// stream has lost its envelope (stripped by whoever can write to the
/// bucket): it is refused, never passed off as the object's plaintext.
pub fn refuse_headless_stream(first_bytes: &[u8]) -> Result<(), ProxyError> {
    if first_bytes.starts_with(&MAGIC) {
        return Err(ProxyError::Envelope(crate::format::MetadataError(crate::format::META_WRAPPED_KEY)));
    }
    Ok(())
}

/// Headers of an upstream error that the workload gets: identifiers, and
/// what SDKs act on (a delete marker's version, a redirect's region, when
/// to retry). Everything else (envelope metadata, the stored object's
/// length, range and checksums) stays behind.
const ERROR_HEADERS: &[&str] = &[
    "x-amz-request-id",
    "x-amz-id-2",
    "x-amz-delete-marker",
    "x-amz-version-id",
    "x-amz-bucket-region",
    "retry-after",
    "allow",
    "last-modified",
];

/// The most of an upstream error document that is read.
const MAX_ERROR_BODY: usize = 64 << 10;

/// How long the rest of an upstream error is waited for.
const ERROR_BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Fields of an error document kept, and the longest value kept.
const MAX_ERROR_FIELDS: usize = 16;
const MAX_ERROR_FIELD_LEN: usize = 2048;

/// An upstream S3 error rebuilt from its parsed fields: the same status,
/// the allow-listed headers, and an `<Error>` document whose elements are
/// the upstream's simple text fields (`Code`, `Message`, `Key`, `Region`…).
/// A body that is not such a document, or too large, gives a document with
/// a code derived from the status.
pub async fn rebuilt_error(step: Step, parts: Parts, body: ProxyBody, head: bool) -> Response<ProxyBody> {
    let mut headers = HeaderMap::new();
    for name in ERROR_HEADERS {
        for v in parts.headers.get_all(*name) {
            headers.append(HeaderName::from_static(name), v.clone());
        }
    }
    let fields = if head {
        Vec::new()
    } else {
        match tokio::time::timeout(ERROR_BODY_DEADLINE, collect_limited(body, MAX_ERROR_BODY)).await {
            Ok(Ok(doc)) => error_fields(&doc),
            _ => Vec::new(),
        }
    };
    let doc = if head { Bytes::new() } else { error_document(code_of(step, parts.status), &fields) };
    if !doc.is_empty() {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(doc.len()));
    let mut resp = Response::new(if doc.is_empty() { empty() } else { full(doc) });
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = headers;
    resp
}

/// The simple text children of a root `<Error>` element, in order; empty
/// when the document is anything else. Names are ASCII alphanumeric, and
/// a value that carries the stream magic is dropped.
pub fn error_fields(doc: &[u8]) -> Vec<(String, String)> {
    let mut reader = quick_xml::Reader::from_reader(doc);
    let mut fields = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<(String, String)> = None;
    loop {
        let Ok(event) = reader.read_event() else { return Vec::new() };
        match event {
            Event::Start(s) => {
                depth += 1;
                let name = s.name().as_ref().to_vec();
                match depth {
                    1 if name != b"Error" => return Vec::new(),
                    2 if name.iter().all(u8::is_ascii_alphanumeric) && !name.is_empty() => {
                        current = Some((String::from_utf8_lossy(&name).into_owned(), String::new()));
                    }
                    _ => current = None,
                }
            }
            Event::End(_) => {
                if depth == 2
                    && let Some((name, value)) = current.take()
                    && fields.len() < MAX_ERROR_FIELDS
                    && value.len() <= MAX_ERROR_FIELD_LEN
                    && !value.as_bytes().windows(MAGIC.len()).any(|w| w == MAGIC)
                {
                    fields.push((name, value));
                }
                depth = depth.saturating_sub(1);
            }
            Event::Empty(s) if depth == 0 && s.name().as_ref() != b"Error" => return Vec::new(),
            Event::Text(t) if depth == 2 => match (current.as_mut(), t.unescape()) {
                (Some((_, value)), Ok(text)) => value.push_str(&text),
                _ => current = None,
            },
            Event::CData(c) if depth == 2 => match (current.as_mut(), std::str::from_utf8(&c)) {
                (Some((_, value)), Ok(text)) => value.push_str(text),
                _ => current = None,
            },
            Event::Text(t) if depth <= 1 && t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Text(_) | Event::CData(_) if depth <= 1 => return Vec::new(),
            Event::Eof => break,
            _ => {}
        }
    }
    fields
}

/// An `<Error>` document of `fields`; with no `Code`, one derived from
/// the status, as S3 names it for bodiless answers.
fn error_document(code: &str, fields: &[(String, String)]) -> Bytes {
    let mut doc = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
    if !fields.iter().any(|(n, _)| n == "Code") {
        doc.push_str(&format!("<Code>{code}</Code>"));
    }
    for (name, value) in fields {
        doc.push_str(&format!("<{name}>{}</{name}>", quick_xml::escape::escape(value.as_str())));
    }
    doc.push_str("</Error>");
    Bytes::from(doc)
}

/// The code S3 gives a bodiless answer of this status (a HEAD's); a
/// copy whose source is missing is S3's `NoSuchKey`.
fn code_of(step: Step, status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND if step == Step::CopySource => "NoSuchKey",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::FORBIDDEN => "AccessDenied",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::PRECONDITION_FAILED => "PreconditionFailed",
        StatusCode::RANGE_NOT_SATISFIABLE => "InvalidRange",
        StatusCode::MOVED_PERMANENTLY => "PermanentRedirect",
        StatusCode::TEMPORARY_REDIRECT => "TemporaryRedirect",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        s if s.is_server_error() => "InternalError",
        _ => "UnknownError",
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> Response<ProxyBody> {
        let mut resp = Response::new(full(Bytes::from_static(body)));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            resp.headers_mut().insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        resp
    }

    async fn text(resp: Response<ProxyBody>) -> String {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_table() {
        use StatusCode as S;
        let rows: &[(Step, &[u16])] = &[
            (Step::ObjectRead, &[200]),
            (Step::HeaderProbe, &[206]),
            (Step::PlaintextRead, &[200, 206]),
            (Step::ObjectHead, &[200]),
            (Step::CopySource, &[200]),
            (Step::ObjectWrite, &[200]),
            (Step::Control, &[200]),
            (Step::Forwarded, &[200, 202, 204]),
        ];
        for (step, expected) in rows {
            for code in 100..600u16 {
                let Ok(status) = S::from_u16(code) else { continue };
                assert_eq!(step.expects(status), expected.contains(&code), "{step:?} {code}");
            }
        }
    }

    #[tokio::test]
    async fn answers_not_asked_for_are_bad_gateway() {
        for (step, status) in [
            (Step::ObjectRead, 206),
            (Step::ObjectRead, 203),
            (Step::ObjectRead, 201),
            (Step::ObjectRead, 204),
            (Step::HeaderProbe, 200),
            (Step::ObjectHead, 203),
            (Step::ObjectWrite, 201),
            (Step::Control, 206),
            (Step::Forwarded, 206),
            (Step::ObjectRead, 302),
        ] {
            let Err(e) = accept(step, answer(status, &[], b"CTS3 attacker bytes"), false).await else {
                panic!("{step:?} accepted {status}");
            };
            assert_eq!((e.status(), e.code()), (StatusCode::BAD_GATEWAY, "BadGateway"), "{step:?} {status}");
            assert_eq!(e.is_integrity_failure(), step.carries_object_bytes(), "{step:?}");
        }
    }

    #[tokio::test]
    async fn errors_are_rebuilt_from_their_fields() {
        let resp = answer(
            404,
            &[
                ("x-amz-meta-cloudtaser-key", "vault:v1:abc"),
                ("content-range", "bytes */1068"),
                ("x-amz-request-id", "R1"),
                ("x-amz-delete-marker", "true"),
            ],
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>a &amp; b</Message><Key><![CDATA[k<1>]]></Key><Blob>CTS3\x01</Blob><Nested><X>1</X></Nested></Error>",
        );
        let Ok(Answer::Verdict(v)) = accept(Step::ObjectRead, resp, false).await else { panic!() };
        assert_eq!(v.status(), 404);
        assert_eq!(v.headers()["x-amz-request-id"], "R1");
        assert_eq!(v.headers()["x-amz-delete-marker"], "true");
        assert!(v.headers().get("x-amz-meta-cloudtaser-key").is_none() && v.headers().get("content-range").is_none());
        let doc = text(v).await;
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>a &amp; b</Message><Key>k&lt;1&gt;</Key></Error>"
        );
    }

    #[tokio::test]
    async fn an_error_body_that_is_not_an_error_document_is_replaced() {
        for body in [&b"CTS3\x02\x00ciphertext"[..], b"<ListBucketResult><Code>x</Code></ListBucketResult>", b""] {
            let resp = answer(500, &[], Box::leak(body.to_vec().into_boxed_slice()));
            let Ok(Answer::Verdict(v)) = accept(Step::ObjectRead, resp, false).await else { panic!() };
            assert_eq!(v.status(), 500);
            assert_eq!(
                text(v).await,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code></Error>"
            );
        }
        let Ok(Answer::Verdict(v)) = accept(Step::ObjectHead, answer(404, &[], b""), true).await else { panic!() };
        assert_eq!((v.status().as_u16(), v.headers()[http::header::CONTENT_LENGTH].to_str().unwrap()), (404, "0"));
    }

    #[tokio::test]
    async fn conditions_are_verdicts_only_where_the_workload_sent_them() {
        let Ok(Answer::Verdict(v)) = accept(Step::ObjectRead, answer(304, &[("etag", "\"e\"")], b""), false).await
        else {
            panic!()
        };
        assert_eq!((v.status().as_u16(), v.headers()["etag"].to_str().unwrap()), (304, "\"e-1\""));
        assert!(matches!(
            accept(Step::ObjectHead, answer(412, &[], b""), true).await,
            Err(ProxyError::PreconditionFailed)
        ));
        assert!(accept(Step::Control, answer(304, &[], b""), false).await.is_err());
    }

    #[tokio::test]
    async fn control_answers_must_not_be_objects() {
        for resp in [answer(200, &[("x-amz-meta-cloudtaser-key", "k")], b"<a/>"), answer(200, &[], b"CTS3\x02")] {
            assert!(matches!(accept_control(Step::Control, resp).await, Err(ProxyError::UnexpectedObject)));
        }
    }
}
