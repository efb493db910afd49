//! Whether the upstream enforces conditional writes, found out before a
//! command that rewrites objects in place (`rewrap`, `seal`, `migrate`)
//! starts. Those commands pin every write to the ETag they examined
//! (`If-Match` on PutObject, CopyObject and CompleteMultipartUpload); an
//! upstream that ignores the condition lets a workload's write that lands
//! during the copy be silently replaced by the old content. Such an
//! upstream is refused unless the operator says the bucket's writers are
//! stopped (`--assume-quiesced`).
//!
//! The probe writes a small, constant, non-secret object under a reserved
//! key (`.cloudtaser-probe/<random>`), checks that PutObject's two
//! conditional forms and each form the command's copies rely on are
//! refused with `412`, and deletes what it wrote
//! (every version of it, in a versioned bucket).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::CommandError;
use super::listing::{body_of, s3_error};
use crate::s3::classify::S3Request;
use crate::s3::xml;
use crate::upstream::UpstreamClient;

/// Where probe objects are written: outside any prefix a workload uses.
pub const PROBE_PREFIX: &str = ".cloudtaser-probe/";

/// The probe object's body: says what it is to whoever lists the bucket.
const PROBE_BODY: &[u8] = b"cloudtaser-s3proxy conditional-write probe; safe to delete\n";

/// An ETag no object has.
const WRONG_ETAG: &str = "\"00000000000000000000000000000000\"";

/// A conditional write a command relies on. Stores differ per operation
/// (measured: s3s-fs 0.17 enforces If-Match on PutObject and Complete but
/// not on CopyObject; moto 5.2 on PutObject only; Garage 2.x on none), so
/// each is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// PutObject with `If-Match` and with `If-None-Match: *`.
    Put,
    /// CopyObject with `If-Match` (`SealMethod::ObjectCopy`, `rewrap`'s
    /// single objects).
    Copy,
    /// CompleteMultipartUpload with `If-Match` (`SealMethod::PartCopy`).
    Complete,
}

/// The condition the copies of `copier` rely on.
pub fn of_seal(copier: &crate::request::seal::SelfCopier) -> Condition {
    match copier.method() {
        crate::request::seal::SealMethod::ObjectCopy => Condition::Copy,
        _ => Condition::Complete,
    }
}

/// Refuses to go on where the upstream does not enforce every condition
/// in `needs`, unless `assume_quiesced`. A dry run writes nothing, so it
/// needs no probe.
pub async fn require_conditional_writes(
    upstream: &UpstreamClient,
    bucket: &str,
    needs: &[Condition],
    assume_quiesced: bool,
    dry_run: bool,
) -> Result<(), CommandError> {
    if assume_quiesced || dry_run {
        return Ok(());
    }
    match unenforced_condition(upstream, bucket, needs).await? {
        None => Ok(()),
        Some(check) => Err(CommandError::NoConditionalWrites { check }),
    }
}

/// The first conditional write of `needs` (PutObject's always) the
/// upstream carried out instead of refusing with `412`; `None` when it
/// refused them all.
pub async fn unenforced_condition(
    upstream: &UpstreamClient,
    bucket: &str,
    needs: &[Condition],
) -> Result<Option<&'static str>, CommandError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CommandError::Object("no randomness for the probe's key"))?;
    let mut probe = Probe {
        upstream,
        object: S3Request::internal(bucket, Some(&format!("{PROBE_PREFIX}{}", hex::encode(salt))), vec![]),
        versions: Vec::new(),
    };
    let result = probe.checks(needs).await;
    probe.clean_up().await;
    result
}

struct Probe<'a> {
    upstream: &'a UpstreamClient,
    object: S3Request,
    /// The versions the probe created, to delete each one.
    versions: Vec<String>,
}

impl Probe<'_> {
    async fn send(
        &mut self,
        method: Method,
        s3: &S3Request,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), CommandError> {
        let (status, headers, body) = body_of(self.upstream.send_buffered(method, s3, headers, body).await?).await?;
        if status == StatusCode::OK
            && let Some(v) = headers.get("x-amz-version-id").and_then(|v| v.to_str().ok())
            && v != "null"
        {
            self.versions.push(v.to_owned());
        }
        Ok((status, body))
    }

    /// A write that must be refused: `true` when it was carried out.
    async fn carried_out(
        &mut self,
        operation: &'static str,
        s3: &S3Request,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<bool, CommandError> {
        let (status, doc) = self.send(Method::PUT, s3, headers, body).await?;
        let code = xml::texts_of(&doc, b"Code").ok().and_then(|mut c| c.pop());
        match status {
            StatusCode::PRECONDITION_FAILED => Ok(false),
            StatusCode::OK if code.is_none() => Ok(true),
            status => Err(s3_error(operation, status, &doc)),
        }
    }

    async fn checks(&mut self, needs: &[Condition]) -> Result<Option<&'static str>, CommandError> {
        let object = self.object.clone();
        let body = Bytes::from_static(PROBE_BODY);
        let (status, doc) = self.send(Method::PUT, &object, HeaderMap::new(), body.clone()).await?;
        if status != StatusCode::OK {
            return Err(s3_error("the conditional-write probe's PUT", status, &doc));
        }
        let wrong = HeaderValue::from_static(WRONG_ETAG);
        let any = HeaderValue::from_static("*");

        let check = "PutObject with If-Match";
        if self.carried_out(check, &object, header(http::header::IF_MATCH, &wrong), body.clone()).await? {
            return Ok(Some(check));
        }
        let check = "PutObject with If-None-Match: *";
        if self.carried_out(check, &object, header(http::header::IF_NONE_MATCH, &any), body.clone()).await? {
            return Ok(Some(check));
        }
        // The forms the self-copies use (`request::seal::SelfCopier`).
        if needs.contains(&Condition::Copy) && self.copy_carried_out(&wrong).await? {
            return Ok(Some("CopyObject with If-Match"));
        }
        let check = "CompleteMultipartUpload with If-Match";
        if needs.contains(&Condition::Complete) && self.complete_carried_out(check, &wrong).await? {
            return Ok(Some(check));
        }
        Ok(None)
    }

    /// The probe copied onto itself with `If-Match: wrong`.
    async fn copy_carried_out(&mut self, wrong: &HeaderValue) -> Result<bool, CommandError> {
        let object = self.object.clone();
        let check = "CopyObject with If-Match";
        let mut copy = header(http::header::IF_MATCH, wrong);
        let bucket = object.bucket.as_deref().unwrap_or_default();
        let key = crate::upstream::forward::encode_key(object.key.as_deref().unwrap_or_default());
        copy.insert("x-amz-copy-source", HeaderValue::from_str(&format!("/{bucket}/{key}"))?);
        copy.insert("x-amz-metadata-directive", HeaderValue::from_static("REPLACE"));
        self.carried_out(check, &object, copy, Bytes::new()).await
    }

    /// A one-part upload completed with `If-Match: wrong`; aborted after.
    async fn complete_carried_out(&mut self, check: &'static str, wrong: &HeaderValue) -> Result<bool, CommandError> {
        let mut create = self.object.clone();
        create.query.push(("uploads".into(), String::new()));
        let (status, doc) = self.send(Method::POST, &create, HeaderMap::new(), Bytes::new()).await?;
        let upload_id = xml::texts_of(&doc, b"UploadId")?.pop().filter(|_| status == StatusCode::OK);
        let upload_id = upload_id.ok_or_else(|| s3_error("the probe's CreateMultipartUpload", status, &doc))?;
        let mut upload = self.object.clone();
        upload.query.push(("uploadId".into(), upload_id));
        let result = self.complete_upload(check, &upload, wrong).await;
        // Gone already when the Complete was carried out; harmless then.
        let _ = self.upstream.send_buffered(Method::DELETE, &upload, HeaderMap::new(), Bytes::new()).await;
        result
    }

    async fn complete_upload(
        &mut self,
        check: &'static str,
        upload: &S3Request,
        wrong: &HeaderValue,
    ) -> Result<bool, CommandError> {
        let mut part = upload.clone();
        part.query.push(("partNumber".into(), "1".into()));
        let resp =
            self.upstream.send_buffered(Method::PUT, &part, HeaderMap::new(), Bytes::from_static(PROBE_BODY)).await?;
        let (status, headers, doc) = body_of(resp).await?;
        let etag = headers.get(http::header::ETAG).filter(|_| status == StatusCode::OK);
        let etag = etag.ok_or_else(|| s3_error("the probe's UploadPart", status, &doc))?.to_str().unwrap_or_default();
        let complete = format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
            quick_xml::escape::escape(etag)
        );
        let (status, doc) =
            self.send(Method::POST, upload, header(http::header::IF_MATCH, wrong), Bytes::from(complete)).await?;
        let code = xml::texts_of(&doc, b"Code").ok().and_then(|mut c| c.pop());
        match status {
            StatusCode::PRECONDITION_FAILED => Ok(false),
            // A 200 Complete may carry its failure inside.
            StatusCode::OK if code.as_deref() == Some("PreconditionFailed") => Ok(false),
            StatusCode::OK if code.is_none() => Ok(true),
            status => Err(s3_error(check, status, &doc)),
        }
    }

    /// Deletes every version the probe wrote, or the key where the bucket
    /// keeps no versions. A failure is reported, never fatal: the probe
    /// object holds nothing but its constant text.
    async fn clean_up(&mut self) {
        let mut targets: Vec<S3Request> = self
            .versions
            .iter()
            .map(|v| {
                let mut version = self.object.clone();
                version.query.push(("versionId".into(), v.clone()));
                version
            })
            .collect();
        if targets.is_empty() {
            targets.push(self.object.clone());
        }
        for target in targets {
            match self.upstream.send_buffered(Method::DELETE, &target, HeaderMap::new(), Bytes::new()).await {
                Ok(resp) if resp.status().is_success() => {}
                _ => eprintln!(
                    "warning: the probe object {} could not be deleted; delete it by hand",
                    self.object.key.as_deref().unwrap_or_default()
                ),
            }
        }
    }
}

fn header(name: http::header::HeaderName, value: &HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name, value.clone());
    headers
}
