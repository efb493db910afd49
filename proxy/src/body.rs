//! The one body type every response and upstream request uses.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Why [`collect_limited`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// `http_body_util::Limited`'s words, which this replaces.
    #[error("length limit exceeded")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Body(BoxError),
}

/// Reads a body of at most `limit` bytes into one buffer.
///
/// `http_body_util::Limited` would do, but its `Into<BoxError>` bound on an
/// error that already is a `BoxError` trips rustc's higher-ranked `Send`
/// check (rust-lang/rust#102211) inside the handlers' futures.
pub async fn collect_limited(mut body: ProxyBody, limit: usize) -> Result<Bytes, CollectError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(CollectError::Body)?.into_data() else { continue };
        if buf.len() + data.len() > limit {
            return Err(CollectError::TooLarge { limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// A request body that hands back what a handler left unread: when it is
/// dropped before its end, the rest goes to its [`Leftover`]. The request
/// path then reads a small remainder before it answers an error, as it
/// does for requests refused before any handler ran (`request::handle`).
pub struct Reclaimable<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    inner: Option<B>,
    ended: bool,
    leftover: Leftover,
}

/// What a [`Reclaimable`] body left unread, once it is dropped.
#[derive(Clone, Default)]
pub struct Leftover(std::sync::Arc<std::sync::Mutex<Option<ProxyBody>>>);

impl Leftover {
    pub fn take(&self) -> Option<ProxyBody> {
        self.0.lock().expect("leftover lock").take()
    }
}

impl<B> Reclaimable<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub fn new(inner: B) -> (Self, Leftover) {
        let leftover = Leftover::default();
        (Self { inner: Some(inner), ended: false, leftover: leftover.clone() }, leftover)
    }
}

impl<B> http_body::Body for Reclaimable<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return std::task::Poll::Ready(None) };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_default()
    }
}

impl<B> Drop for Reclaimable<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take().filter(|_| !self.ended) {
            // Boxed only here, on the path that gives a body back.
            *self.leftover.0.lock().expect("leftover lock") = Some(boxed(inner));
        }
    }
}
