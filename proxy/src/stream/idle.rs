//! An idle limit for a streamed request body: a client that stops sending
//! mid-body would otherwise hold its connection, and the upstream request
//! it feeds, for ever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

/// The error a body ends with when its source sent nothing for too long.
/// `transform` recognises it to answer `400 RequestTimeout`, as S3 does.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyIdle(pub Duration);

/// `source`, failing with [`BodyIdle`] once it has sent no frame for `limit`.
/// Ending with an error (rather than cleanly) makes the upstream request
/// abort, so the upstream never sees a complete object and stores nothing.
pub struct IdleLimited<B> {
    source: B,
    limit: Duration,
    /// Allocated once per body; re-armed on every frame.
    timer: Pin<Box<Sleep>>,
}

impl<B> IdleLimited<B> {
    pub fn new(source: B, limit: Duration) -> Self {
        Self { source, limit, timer: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl<B> Body for IdleLimited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.source).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = Instant::now() + this.limit;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyIdle(this.limit).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.source.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.source.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_and_a_steady_one_does_not() {
        let (tx, rx) = futures_channel_body();
        let mut body = IdleLimited::new(rx, Duration::from_secs(2));
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
            // Then stalls without ending.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let mut got = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("ended cleanly"),
            }
        };
        assert_eq!(got, 5, "frames 1.5 s apart are within a 2 s limit");
        assert!(err.downcast_ref::<BodyIdle>().is_some(), "{err}");
        feeder.abort();
    }

    fn futures_channel_body()
    -> (tokio::sync::mpsc::Sender<Bytes>, impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
        });
        (tx, http_body_util::StreamBody::new(Box::pin(stream)))
    }
}
