//! An S3 upstream that keeps objects in memory and checks no signatures:
//! fast enough that the proxy's cost is what a benchmark sees.
//! Usage: s3-memory <port>

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cloudtaser_s3proxy::stream::aws_chunked::ChunkedDecoder;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A body as the chunks it arrived in: nothing is copied into one buffer.
#[derive(Clone, Default)]
struct Chunks(Arc<Vec<Bytes>>);

impl Chunks {
    fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// The bytes `first..=last`, as slices of the stored chunks.
    fn range(&self, first: usize, last: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut offset = 0;
        for c in self.0.iter() {
            let (start, end) = (offset, offset + c.len());
            offset = end;
            if end <= first || start > last {
                continue;
            }
            out.push(c.slice(first.max(start) - start..(last + 1).min(end) - start));
        }
        out
    }
}

#[derive(Clone)]
struct Object {
    body: Chunks,
    meta: Vec<(String, String)>,
    etag: String,
}

/// An upload in progress: the object's metadata and its parts by number.
type Upload = (Vec<(String, String)>, HashMap<u32, Chunks>);

#[derive(Default)]
struct Store {
    objects: Mutex<HashMap<String, Object>>,
    uploads: Mutex<HashMap<String, Upload>>,
    next_upload: AtomicU64,
    /// Bytes served by GETs, so a ranged read's upstream cost can be measured.
    served: AtomicU64,
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn is_chunked(h: &HeaderMap) -> bool {
    h.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("STREAMING-"))
}

/// The body's frames as they arrive, aws-chunked framing removed on the fly.
async fn read_body(headers: &HeaderMap, mut body: Incoming) -> Chunks {
    let mut decoder = is_chunked(headers).then(ChunkedDecoder::any_trailers);
    let mut out = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            match &mut decoder {
                Some(d) => d.feed(data, &mut out).expect("valid aws-chunked body"),
                None => out.push(data),
            }
        }
    }
    Chunks(Arc::new(out))
}

fn meta_of(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-amz-meta-") || k.as_str() == "content-type")
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

async fn handle(store: Arc<Store>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let q = query(&req);
    let method = req.method().clone();
    let headers = req.headers().clone();
    let is_bucket = path.trim_start_matches('/').split_once('/').is_none_or(|(_, k)| k.is_empty());
    let resp = match method {
        Method::PUT if is_bucket => reply(StatusCode::OK, ""),
        // UploadPartCopy: the proxy's Complete seals a multipart object with a
        // self-copy by parts (pinned by x-amz-copy-source-if-match).
        Method::PUT if q.contains_key("uploadId") && headers.contains_key("x-amz-copy-source") => {
            let source = headers["x-amz-copy-source"].to_str().unwrap_or_default();
            let source = source.split_once("?versionId=").map_or(source, |(s, _)| s);
            let source = format!("/{}", source.trim_start_matches('/'));
            let Some(obj) = store.objects.lock().unwrap().get(&source).cloned() else {
                return Ok(reply(StatusCode::NOT_FOUND, "<Error><Code>NoSuchKey</Code></Error>"));
            };
            if headers.get("x-amz-copy-source-if-match").is_some_and(|m| m.as_bytes() != obj.etag.as_bytes()) {
                return Ok(reply(StatusCode::PRECONDITION_FAILED, "<Error><Code>PreconditionFailed</Code></Error>"));
            }
            let len = obj.body.len();
            let (first, last) = headers
                .get("x-amz-copy-source-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes=")?.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
                .unwrap_or((0, len.saturating_sub(1)));
            if len == 0 || last >= len || first > last {
                return Ok(reply(StatusCode::RANGE_NOT_SATISFIABLE, "<Error><Code>InvalidRange</Code></Error>"));
            }
            let part = Chunks(Arc::new(obj.body.range(first, last)));
            let n: u32 = q["partNumber"].parse().unwrap_or(0);
            let etag = format!("\"p{n}-{}\"", part.len());
            if let Some(u) = store.uploads.lock().unwrap().get_mut(&q["uploadId"]) {
                u.1.insert(n, part);
            }
            reply(
                StatusCode::OK,
                format!(
                    "<CopyPartResult><LastModified>2026-11-25T10:00:00.000Z</LastModified><ETag>{etag}</ETag></CopyPartResult>"
                ),
            )
        }
        Method::PUT if q.contains_key("uploadId") => {
            let body = read_body(&headers, req.into_body()).await;
            let n: u32 = q["partNumber"].parse().unwrap_or(0);
            let etag = format!("\"p{n}-{}\"", body.len());
            if let Some(u) = store.uploads.lock().unwrap().get_mut(&q["uploadId"]) {
                u.1.insert(n, body);
            }
            let mut r = reply(StatusCode::OK, "");
            r.headers_mut().insert("etag", HeaderValue::from_str(&etag).unwrap());
            r
        }
        Method::PUT => {
            let body = read_body(&headers, req.into_body()).await;
            let etag = format!("\"{:032x}\"", body.len());
            store.objects.lock().unwrap().insert(path, Object { body, meta: meta_of(&headers), etag: etag.clone() });
            let mut r = reply(StatusCode::OK, "");
            r.headers_mut().insert("etag", HeaderValue::from_str(&etag).unwrap());
            r
        }
        Method::POST if q.contains_key("uploads") => {
            let id = format!("u{}", store.next_upload.fetch_add(1, Ordering::Relaxed));
            store.uploads.lock().unwrap().insert(id.clone(), (meta_of(&headers), HashMap::new()));
            reply(
                StatusCode::OK,
                format!("<InitiateMultipartUploadResult><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"),
            )
        }
        Method::GET if q.contains_key("uploadId") => {
            let uploads = store.uploads.lock().unwrap();
            let mut xml = String::from("<ListPartsResult><IsTruncated>false</IsTruncated>");
            if let Some((_, parts)) = uploads.get(&q["uploadId"]) {
                let mut numbers: Vec<_> = parts.keys().copied().collect();
                numbers.sort();
                for n in numbers {
                    // The same ETag the part's PUT answered, as S3 lists it
                    // (the proxy refuses a part list without ETags).
                    let len = parts[&n].len();
                    xml.push_str(&format!(
                        "<Part><PartNumber>{n}</PartNumber><ETag>&quot;p{n}-{len}&quot;</ETag><Size>{len}</Size></Part>"
                    ));
                }
            }
            xml.push_str("</ListPartsResult>");
            reply(StatusCode::OK, xml)
        }
        Method::POST if q.contains_key("uploadId") => {
            let _ = req.into_body().collect().await;
            let Some((meta, parts)) = store.uploads.lock().unwrap().remove(&q["uploadId"]) else {
                return Ok(reply(StatusCode::NOT_FOUND, "<Error><Code>NoSuchUpload</Code></Error>"));
            };
            let mut numbers: Vec<_> = parts.keys().copied().collect();
            numbers.sort();
            let body = Chunks(Arc::new(numbers.iter().flat_map(|n| parts[n].0.iter().cloned()).collect()));
            let etag = format!("\"{:032x}-{}\"", body.len(), numbers.len());
            store.objects.lock().unwrap().insert(path, Object { body, meta, etag: etag.clone() });
            reply(
                StatusCode::OK,
                format!("<CompleteMultipartUploadResult><ETag>{etag}</ETag></CompleteMultipartUploadResult>"),
            )
        }
        Method::GET | Method::HEAD => {
            let Some(obj) = store.objects.lock().unwrap().get(&path).cloned() else {
                return Ok(reply(StatusCode::NOT_FOUND, "<Error><Code>NoSuchKey</Code></Error>"));
            };
            let len = obj.body.len() as u64;
            let range = headers.get("range").and_then(|v| v.to_str().ok()).and_then(|v| {
                let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
                let a: u64 = a.parse().ok()?;
                let b: u64 = if b.is_empty() { len - 1 } else { b.parse::<u64>().ok()?.min(len - 1) };
                Some((a, b))
            });
            let (status, first, last, content_range) = match range {
                Some((a, b)) if a < len => (StatusCode::PARTIAL_CONTENT, a, b, Some(format!("bytes {a}-{b}/{len}"))),
                Some(_) => {
                    return Ok(reply(StatusCode::RANGE_NOT_SATISFIABLE, "<Error><Code>InvalidRange</Code></Error>"));
                }
                None => (StatusCode::OK, 0, len.saturating_sub(1), None),
            };
            let size = if len == 0 { 0 } else { (last - first + 1) as usize };
            let chunks = if method == Method::HEAD || size == 0 {
                Vec::new()
            } else {
                obj.body.range(first as usize, last as usize)
            };
            if method == Method::GET {
                store.served.fetch_add(size as u64, Ordering::Relaxed);
            }
            let frames = futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, Infallible>(Frame::data(c))));
            let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
            *r.status_mut() = status;
            let h = r.headers_mut();
            h.insert("content-length", HeaderValue::from(size));
            h.insert("etag", HeaderValue::from_str(&obj.etag).unwrap());
            h.insert("last-modified", HeaderValue::from_static("Wed, 25 Nov 2026 10:00:00 GMT"));
            if let Some(cr) = content_range {
                h.insert("content-range", HeaderValue::from_str(&cr).unwrap());
            }
            for (k, v) in &obj.meta {
                h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            r
        }
        Method::DELETE => {
            store.objects.lock().unwrap().remove(&path);
            reply(StatusCode::NO_CONTENT, "")
        }
        _ => reply(StatusCode::NOT_IMPLEMENTED, ""),
    };
    Ok(resp)
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).expect("usage: s3-memory <port>");
    let store = Arc::new(Store::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    // `GET /__served` reports the bytes served by GETs so far.
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        let _ = stream.set_nodelay(true);
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let store = store.clone();
                async move {
                    if req.uri().path() == "/__served" {
                        return Ok(reply(StatusCode::OK, store.served.load(Ordering::Relaxed).to_string()));
                    }
                    handle(store, req).await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
