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
use super::checksum::{ChecksumVerifier, PartDigests, VerifiedChecksum};
use super::framing::UploadFraming;
use crate::body::BoxError;
use crate::error::{BodyError, InternalError, ProxyError, UpstreamFailure};
use crate::format::{FormatError, Opener, Sealer, SegmentBuf};

/// What an upload body learned by the time it ended, for the response.
#[derive(Default)]
pub struct UploadOutcome {
    pub failure: Option<ProxyError>,
    pub verified: Vec<VerifiedChecksum>,
    /// Every digest of the plaintext, once it verified (a part's, for Complete).
    pub digests: Option<PartDigests>,
}

pub type SharedOutcome = Arc<Mutex<UploadOutcome>>;

/// One body transformation, step by step: what becomes of each input frame,
/// of the end of the input, and of a failure. `Transformed` is the single
/// poll loop that drives every step (as Tink's segment engine drives both
/// directions), so reading, ending and failing behave the same way for
/// uploads and downloads.
pub trait Step {
    /// Turns input bytes into output, appended to `out`.
    fn feed(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), ProxyError>;
    /// The input ended: anything still held is flushed, or the end is refused.
    fn end(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), ProxyError>;
    /// What a failure of the source body means for this step.
    fn source_failed(&self, error: BoxError) -> ProxyError;
    /// Records a failure; the body then ends with the returned error, which
    /// makes hyper abort the transfer rather than end it cleanly.
    fn failed(&mut self, error: ProxyError) -> BoxError;
}

/// A streaming body: `source` run through `step`.
pub struct Transformed<B, S> {
    source: B,
    step: S,
    /// The exact length of the output.
    len: u64,
    ready: VecDeque<Bytes>,
    finished: bool,
}

impl<B, S> Transformed<B, S>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    S: Step,
{
    fn with_step(source: B, step: S, len: u64) -> Self {
        Self { source, step, len, ready: VecDeque::new(), finished: false }
    }

    /// Reads the source until some output is ready or everything has ended.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        while self.ready.is_empty() && !self.finished {
            match ready!(Pin::new(&mut self.source).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.step.feed(data, &mut self.ready)?;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(self.step.source_failed(e.into()))),
                None => {
                    self.step.end(&mut self.ready)?;
                    self.finished = true;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<B, S> Body for Transformed<B, S>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    S: Step + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Err(e) = ready!(this.poll_fill(cx)) {
            this.finished = true;
            this.ready.clear();
            return Poll::Ready(Some(Err(this.step.failed(e))));
        }
        Poll::Ready(this.ready.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// Plaintext in from the client, framed ciphertext out to the upstream.
pub type SealedUpload<B> = Transformed<B, Seal>;

/// Decode, verify, seal and frame.
/// Asked once a body has arrived in full, before its last segment goes
/// upstream: whether the data key may still be used (false after a
/// rotation past its version). False ends the body with an error, so the
/// upstream stores nothing.
pub type KeyCheck = Box<dyn Fn() -> bool + Send + Sync>;

pub struct Seal {
    key_check: Option<KeyCheck>,
    decoder: Option<ChunkedDecoder>,
    verifier: Option<ChecksumVerifier>,
    sealer: Sealer,
    framing: UploadFraming,
    outcome: SharedOutcome,
}

impl<B> SealedUpload<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub fn new(
        source: B,
        decoder: Option<ChunkedDecoder>,
        verifier: ChecksumVerifier,
        sealer: Sealer,
        framing: UploadFraming,
        wire_len: u64,
        key_check: Option<KeyCheck>,
    ) -> (Self, SharedOutcome) {
        let outcome = SharedOutcome::default();
        let step = Seal { key_check, decoder, verifier: Some(verifier), sealer, framing, outcome: outcome.clone() };
        (Transformed::with_step(source, step, wire_len), outcome)
    }
}

impl Seal {
    fn frame_all(&mut self, sealed: Vec<SegmentBuf>, out: &mut VecDeque<Bytes>) {
        let mut wire = Vec::with_capacity(sealed.len());
        for c in sealed {
            self.framing.frame(c, &mut wire);
        }
        out.extend(wire);
    }
}

impl Step for Seal {
    fn feed(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), ProxyError> {
        let mut plain = Vec::new();
        match &mut self.decoder {
            Some(d) => d.feed(data, &mut plain)?,
            None => plain.push(data),
        }
        let mut sealed = Vec::new();
        for p in &plain {
            self.verifier.as_mut().expect("verifier present until the end").update(p);
            self.sealer.update(p, &mut sealed).map_err(length_error)?;
        }
        self.frame_all(sealed, out);
        Ok(())
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), ProxyError> {
        let trailers = match &self.decoder {
            Some(d) => {
                d.finish()?;
                d.trailers()
            }
            None => &[],
        };
        let (verified, digests) = self.verifier.take().expect("the end comes once").finish_with_digests(trailers)?;
        if self.key_check.as_ref().is_some_and(|still_current| !still_current()) {
            return Err(ProxyError::KeyRotatedDuringUpload);
        }
        let mut sealed = Vec::new();
        self.sealer.finish(&mut sealed).map_err(length_error)?;
        self.frame_all(sealed, out);
        let mut tail = Vec::new();
        self.framing.finish(&mut tail);
        out.extend(tail);
        let mut outcome = self.outcome.lock().expect("outcome lock");
        outcome.verified = verified;
        outcome.digests = Some(digests);
        Ok(())
    }

    fn source_failed(&self, error: BoxError) -> ProxyError {
        // A client that stopped sending gets S3's answer to that.
        if error.is::<super::idle::BodyIdle>() {
            return ProxyError::RequestTimeout;
        }
        BodyError::Read(error).into()
    }

    fn failed(&mut self, error: ProxyError) -> BoxError {
        let msg = error.to_string();
        // Erroring the body makes the client abort the upstream request, so the
        // upstream never sees a complete object and stores nothing.
        self.outcome.lock().expect("outcome lock").failure = Some(error);
        msg.into()
    }
}

fn length_error(e: FormatError) -> ProxyError {
    match e {
        FormatError::LengthMismatch { declared, actual } => BodyError::LengthMismatch { declared, actual }.into(),
        other => InternalError::Format(other).into(),
    }
}

/// Reads at least `n` bytes from the start of `body` (fewer only if it ends),
/// so a stream header can be inspected before the response is shaped.
pub async fn read_prefix<B>(body: &mut B, n: usize) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let mut buf = BytesMut::new();
    while buf.len() < n {
        match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(UpstreamFailure::Unreachable(e).into()),
            None => break,
        }
    }
    Ok(buf.freeze())
}

/// Ciphertext in from the upstream, verified plaintext out to the client.
/// Any failure ends the body with an error, so the client sees an aborted
/// transfer and never a clean end of unverified or truncated data.
pub type OpenedDownload<B> = Transformed<B, Open>;

/// Open and verify.
pub struct Open {
    opener: Opener,
}

impl<B> OpenedDownload<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub fn new(source: B, opener: Opener, plaintext_len: u64) -> Self {
        Transformed::with_step(source, Open { opener }, plaintext_len)
    }

    /// Ciphertext already read from `source` (see [`read_prefix`]), fed first.
    pub fn with_prefix(mut self, prefix: &[u8]) -> Result<Self, ProxyError> {
        self.step.feed(Bytes::copy_from_slice(prefix), &mut self.ready)?;
        Ok(self)
    }

    /// Reads until the first plaintext is verified (or the stream ends), so
    /// a bad object is reported with an error status before any header is sent.
    pub async fn verify_start(&mut self) -> Result<(), ProxyError> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

impl Step for Open {
    fn feed(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), ProxyError> {
        let mut plain = Vec::new();
        self.opener.update(&data, &mut plain).map_err(ProxyError::Ciphertext)?;
        out.extend(plain);
        Ok(())
    }

    fn end(&mut self, out: &mut VecDeque<Bytes>) -> Result<(), ProxyError> {
        let mut plain = Vec::new();
        self.opener.finish(&mut plain).map_err(ProxyError::Ciphertext)?;
        out.extend(plain);
        Ok(())
    }

    fn source_failed(&self, error: BoxError) -> ProxyError {
        UpstreamFailure::Unreachable(error).into()
    }

    fn failed(&mut self, error: ProxyError) -> BoxError {
        if matches!(error, ProxyError::Ciphertext(_)) {
            crate::metrics::metrics().integrity_failure();
        }
        tracing::error!(error = %error, "aborting a download: the stored ciphertext did not verify");
        error.to_string().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Header, ObjectLayout, SEGMENT_LEN};
    use crate::stream::framing::UploadIntegrity;
    use http_body_util::{BodyExt, StreamBody};

    const KEY: [u8; 32] = [6; 32];

    /// A source body delivering `data` in pieces of `piece` bytes, then
    /// failing if `fail` is set.
    fn source(data: &[u8], piece: usize, fail: bool) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            data.chunks(piece.max(1)).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        if fail {
            frames.push(Err(std::io::Error::other("connection reset")));
        }
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn seal(data: &[u8], piece: usize, fail: bool) -> (Result<Bytes, BoxError>, SharedOutcome) {
        let framing = UploadFraming::new(UploadIntegrity::Unsigned, data.len() as u64);
        let header = Header::new(0, data.len() as u64, [1; 32]).unwrap();
        let sealer = Sealer::new(&KEY, header).with_room(framing.room());
        let verifier = ChecksumVerifier::from_headers(&http::HeaderMap::new()).unwrap();
        let wire_len = framing.framed_len(data.len() as u64);
        let (body, outcome) =
            SealedUpload::new(source(data, piece, fail), None, verifier, sealer, framing, wire_len, None);
        let collected = block_on(body.collect());
        (collected.map(|c| c.to_bytes()), outcome)
    }

    fn open(ct: &[u8], len: u64, piece: usize) -> (Vec<u8>, Result<(), BoxError>) {
        let mut body = OpenedDownload::new(
            source(ct, piece, false),
            Opener::whole(
                std::sync::Arc::new(crate::format::DataKey::from_slice(&KEY).unwrap()),
                ObjectLayout::single(len),
            ),
            len,
        );
        let mut out = Vec::new();
        let result = block_on(async {
            while let Some(frame) = body.frame().await {
                out.extend_from_slice(&frame?.into_data().expect("data frames only"));
            }
            Ok(())
        });
        (out, result)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn seals_and_opens_whatever_the_pieces() {
        let data: Vec<u8> = (0..(3 * SEGMENT_LEN as usize + 99)).map(|i| (i % 251) as u8).collect();
        for piece in [1000, SEGMENT_LEN as usize, 3 * SEGMENT_LEN as usize + 99] {
            let (ct, outcome) = seal(&data, piece, false);
            let ct = ct.unwrap();
            assert!(outcome.lock().unwrap().failure.is_none());
            assert_eq!(ct.len() as u64, crate::format::ciphertext_len(data.len() as u64));
            for read_piece in [7, 65_552, ct.len()] {
                let (plain, result) = open(&ct, data.len() as u64, read_piece);
                result.unwrap();
                assert_eq!(plain, data, "sealed in {piece}, opened in {read_piece}");
            }
        }
    }

    #[test]
    fn a_failing_or_short_source_fails_the_upload_and_records_why() {
        let data = vec![3u8; 100_000];
        let (ct, outcome) = seal(&data, 4096, true);
        assert!(ct.is_err());
        assert_eq!(outcome.lock().unwrap().failure.as_ref().unwrap().code(), "IncompleteBody");
        // Fewer bytes than declared: the sealer refuses the end.
        let framing = UploadFraming::new(UploadIntegrity::Unsigned, 10);
        let sealer = Sealer::new(&KEY, Header::new(0, 10, [1; 32]).unwrap());
        let verifier = ChecksumVerifier::from_headers(&http::HeaderMap::new()).unwrap();
        let (body, outcome) = SealedUpload::new(source(b"short", 5, false), None, verifier, sealer, framing, 0, None);
        assert!(block_on(body.collect()).is_err());
        assert_eq!(outcome.lock().unwrap().failure.as_ref().unwrap().code(), "IncompleteBody");
    }

    #[test]
    fn a_download_never_ends_cleanly_on_damage() {
        let data = vec![9u8; 2 * SEGMENT_LEN as usize + 5];
        let (ct, _) = seal(&data, 10_000, false);
        let ct = ct.unwrap().to_vec();
        let len = data.len() as u64;
        // Cut after the first segment: its verified bytes, then an error.
        let cut = 52 + SEGMENT_LEN as usize + 16 + 100;
        let (plain, result) = open(&ct[..cut], len, 4096);
        assert!(result.is_err());
        assert_eq!(plain, data[..SEGMENT_LEN as usize]);
        // A flipped bit in the second segment: nothing of it is released
        // (arriving in one frame with it, the first segment is held back too).
        let mut flipped = ct.clone();
        flipped[52 + SEGMENT_LEN as usize + 16 + 7] ^= 1;
        for piece in [4096, 1 << 20] {
            let (plain, result) = open(&flipped, len, piece);
            assert!(result.is_err());
            assert!(plain.len() <= SEGMENT_LEN as usize && plain == data[..plain.len()], "piece {piece}");
        }
    }
}
