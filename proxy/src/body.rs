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
    /// The [`BodyBudget`] stayed spent for longer than its wait.
    #[error("the memory for buffered request bodies is in use")]
    Busy,
}

/// Reads a body of at most `limit` bytes into one buffer.
///
/// `http_body_util::Limited` would do, but its `Into<BoxError>` bound on an
/// error that already is a `BoxError` trips rustc's higher-ranked `Send`
/// check (rust-lang/rust#102211) inside the handlers' futures.
pub async fn collect_limited(mut body: ProxyBody, limit: usize) -> Result<Bytes, CollectError> {
    // Sized once from the declared length, so a body is held once, not in
    // a buffer that doubled past it (up to twice the limit).
    let hint = http_body::Body::size_hint(&body);
    let expected = hint.exact().unwrap_or(hint.lower());
    if expected > limit as u64 {
        return Err(CollectError::TooLarge { limit });
    }
    let mut buf = bytes::BytesMut::with_capacity(expected as usize);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(CollectError::Body)?.into_data() else { continue };
        if buf.len() + data.len() > limit {
            return Err(CollectError::TooLarge { limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// A process-wide budget of bytes for request bodies held in memory, so
/// that N concurrent bodies cannot hold N times the per-body limit. A body
/// reserves what its buffer holds before the buffer grows; a body that
/// finds the budget spent waits up to `wait`, then is refused.
pub struct BodyBudget {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    total: usize,
    wait: std::time::Duration,
}

impl BodyBudget {
    /// `bytes` must be at least the largest single body, or that body
    /// could never be admitted.
    pub fn new(bytes: usize, wait: std::time::Duration) -> Self {
        let bytes = bytes.min(tokio::sync::Semaphore::MAX_PERMITS);
        Self { permits: std::sync::Arc::new(tokio::sync::Semaphore::new(bytes)), total: bytes, wait }
    }

    /// Bytes not reserved by any body now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// An empty reservation, grown with [`Reservation::grow`].
    pub fn reservation(&self) -> Reservation<'_> {
        Reservation { budget: self, held: None }
    }
}

/// Bytes of a [`BodyBudget`] held by one body; given back when dropped,
/// or when the [`Bytes`] made by [`Reservation::into_bytes`] are.
pub struct Reservation<'a> {
    budget: &'a BodyBudget,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Reservation<'_> {
    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Holds `to` bytes in all, waiting for them at most the budget's wait.
    pub async fn grow(&mut self, to: usize) -> Result<(), CollectError> {
        let more = to.saturating_sub(self.held());
        if more == 0 {
            return Ok(());
        }
        if to > self.budget.total {
            return Err(CollectError::Busy);
        }
        let more = u32::try_from(more).map_err(|_| CollectError::Busy)?;
        let acquire = self.budget.permits.clone().acquire_many_owned(more);
        let permit = match tokio::time::timeout(self.budget.wait, acquire).await {
            Ok(Ok(p)) => p,
            _ => return Err(CollectError::Busy),
        };
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }

    /// The buffer as `Bytes` that keep the reservation until the last
    /// clone of them is dropped (the buffer lives until it was sent upstream).
    pub fn into_bytes(self, buf: Vec<u8>) -> Bytes {
        match self.held {
            Some(permit) => Bytes::from_owner(Reserved { buf, _permit: permit }),
            None => Bytes::from(buf),
        }
    }
}

struct Reserved {
    buf: Vec<u8>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Reserved {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_budget_is_held_until_the_bytes_are_dropped_and_refuses_when_spent() {
        let budget = BodyBudget::new(100, Duration::from_millis(50));
        let mut a = budget.reservation();
        a.grow(60).await.unwrap();
        a.grow(80).await.unwrap();
        assert_eq!((a.held(), budget.available()), (80, 20));
        let bytes = a.into_bytes(vec![1; 80]);
        let mut b = budget.reservation();
        assert!(matches!(b.grow(30).await, Err(CollectError::Busy)), "waits, then is refused");
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(budget.available(), 20, "a clone still holds it");
        drop(clone);
        assert_eq!(budget.available(), 100);
        b.grow(30).await.unwrap();
        assert!(matches!(budget.reservation().grow(101).await, Err(CollectError::Busy)));
    }

    #[tokio::test]
    async fn collect_limited_refuses_a_declared_length_over_the_limit_before_reading() {
        let body = full(Bytes::from(vec![0u8; 11]));
        assert!(matches!(collect_limited(body, 10).await, Err(CollectError::TooLarge { limit: 10 })));
        let body = full(Bytes::from(vec![7u8; 10]));
        assert_eq!(collect_limited(body, 10).await.unwrap().len(), 10);
    }
}
