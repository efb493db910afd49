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
