//! Step 3: the body transformations, as streaming HTTP bodies. Uploads are
//! decoded, verified, sealed and framed; downloads are opened and verified.
//! Neither ever holds more than a segment or two of the object.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::aws_chunked::ChunkedDecoder;
use super::checksum::{ChecksumVerifier, VerifiedChecksum};
use super::framing::UploadFraming;
use crate::body::BoxError;
use crate::error::ProxyError;
use crate::format::{FormatError, Opener, Sealer};

/// What an upload body learned by the time it ended, for the response.
#[derive(Default)]
pub struct UploadOutcome {
    pub failure: Option<ProxyError>,
    pub verified: Vec<VerifiedChecksum>,
}

pub type SharedOutcome = Arc<Mutex<UploadOutcome>>;

/// Plaintext in from the client, framed ciphertext out to the upstream.
pub struct SealedUpload<B> {
    source: B,
    decoder: Option<ChunkedDecoder>,
    verifier: Option<ChecksumVerifier>,
    sealer: Sealer,
    framing: UploadFraming,
    wire_len: u64,
    ready: VecDeque<Bytes>,
    outcome: SharedOutcome,
    finished: bool,
}

impl<B> SealedUpload<B> {
    pub fn new(
        source: B,
        decoder: Option<ChunkedDecoder>,
        verifier: ChecksumVerifier,
        sealer: Sealer,
        framing: UploadFraming,
        wire_len: u64,
    ) -> (Self, SharedOutcome) {
        let outcome = SharedOutcome::default();
        let body = Self {
            source,
            decoder,
            verifier: Some(verifier),
            sealer,
            framing,
            wire_len,
            ready: VecDeque::new(),
            outcome: outcome.clone(),
            finished: false,
        };
        (body, outcome)
    }

    fn absorb(&mut self, data: Bytes) -> Result<(), ProxyError> {
        let mut plain = Vec::new();
        match &mut self.decoder {
            Some(d) => d.feed(data, &mut plain)?,
            None => plain.push(data),
        }
        let mut sealed = Vec::new();
        for p in &plain {
            self.verifier.as_mut().expect("verifier present until finish").update(p);
            self.sealer.update(p, &mut sealed).map_err(length_error)?;
        }
        self.frame_all(sealed);
        Ok(())
    }

    fn complete(&mut self) -> Result<(), ProxyError> {
        let trailers = match &self.decoder {
            Some(d) => {
                d.finish()?;
                d.trailers()
            }
            None => &[],
        };
        let verified = self.verifier.take().expect("finish runs once").finish(trailers)?;
        let mut sealed = Vec::new();
        self.sealer.finish(&mut sealed).map_err(length_error)?;
        self.frame_all(sealed);
        let mut tail = Vec::new();
        self.framing.finish(&mut tail);
        self.ready.extend(tail);
        self.outcome.lock().expect("outcome lock").verified = verified;
        Ok(())
    }

    fn frame_all(&mut self, sealed: Vec<BytesMut>) {
        let mut wire = Vec::with_capacity(sealed.len());
        for c in sealed {
            self.framing.frame(c, &mut wire);
        }
        self.ready.extend(wire);
    }

    fn fail(&mut self, e: ProxyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let msg = e.to_string();
        self.outcome.lock().expect("outcome lock").failure = Some(e);
        self.finished = true;
        self.ready.clear();
        // Erroring the body makes the client abort the upstream request, so the
        // upstream never sees a complete object and stores nothing.
        Poll::Ready(Some(Err(msg.into())))
    }
}

fn length_error(e: FormatError) -> ProxyError {
    match e {
        FormatError::LengthMismatch { declared, actual } => ProxyError::IncompleteBody(format!(
            "You did not provide the number of bytes specified by the Content-Length HTTP header (declared {declared}, got {actual})."
        )),
        other => ProxyError::Internal(other.to_string()),
    }
}

impl<B> Body for SealedUpload<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.source).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && let Err(e) = this.absorb(data)
                    {
                        return this.fail(e);
                    }
                }
                Some(Err(e)) => {
                    return this.fail(ProxyError::IncompleteBody(format!("The request body could not be read: {e}")));
                }
                None => {
                    if let Err(e) = this.complete() {
                        return this.fail(e);
                    }
                    this.finished = true;
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.wire_len)
    }
}

/// Reads at least `n` bytes from the start of `body` (fewer only if it ends),
/// so a stream header can be inspected before the response is shaped.
pub async fn read_prefix<B>(body: &mut B, n: usize) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    while buf.len() < n {
        match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(ProxyError::UpstreamUnreachable(e.to_string())),
            None => break,
        }
    }
    Ok(buf.freeze())
}

/// Ciphertext in from the upstream, verified plaintext out to the client.
/// Any failure ends the body with an error, so the client sees an aborted
/// transfer and never a clean end of unverified or truncated data.
pub struct OpenedDownload<B> {
    source: B,
    opener: Opener,
    plaintext_len: u64,
    ready: VecDeque<Bytes>,
    finished: bool,
}

impl<B> OpenedDownload<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    pub fn new(source: B, opener: Opener, plaintext_len: u64) -> Self {
        Self { source, opener, plaintext_len, ready: VecDeque::new(), finished: false }
    }

    /// Ciphertext already read from `source` (see [`read_prefix`]), fed first.
    pub fn with_prefix(mut self, prefix: &[u8]) -> Result<Self, ProxyError> {
        self.feed(prefix)?;
        Ok(self)
    }

    /// Reads until the first plaintext is verified (or the stream ends), so
    /// a bad object is reported with an error status before any header is sent.
    pub async fn verify_start(&mut self) -> Result<(), ProxyError> {
        std::future::poll_fn(|cx| {
            while self.ready.is_empty() && !self.finished {
                match ready!(Pin::new(&mut self.source).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.feed(&data)?;
                        }
                    }
                    Some(Err(e)) => {
                        return Poll::Ready(Err(ProxyError::UpstreamUnreachable(e.to_string())));
                    }
                    None => self.end()?,
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), ProxyError> {
        let mut out = Vec::new();
        self.opener.update(data, &mut out).map_err(ProxyError::Ciphertext)?;
        self.ready.extend(out);
        Ok(())
    }

    fn end(&mut self) -> Result<(), ProxyError> {
        let mut out = Vec::new();
        self.opener.finish(&mut out).map_err(ProxyError::Ciphertext)?;
        self.ready.extend(out);
        self.finished = true;
        Ok(())
    }
}

impl<B> Body for OpenedDownload<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            let step = match ready!(Pin::new(&mut this.source).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.feed(&data),
                    Err(_) => Ok(()),
                },
                Some(Err(e)) => Err(ProxyError::UpstreamUnreachable(e.to_string())),
                None => this.end(),
            };
            if let Err(e) = step {
                this.finished = true;
                if matches!(e, ProxyError::Ciphertext(_)) {
                    crate::metrics::metrics().integrity_failure();
                }
                tracing::error!(error = %e, "aborting a download: the stored ciphertext did not verify");
                return Poll::Ready(Some(Err(e.to_string().into())));
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.plaintext_len)
    }
}
