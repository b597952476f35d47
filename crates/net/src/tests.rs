#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::convert::Infallible;

use http_body_util::BodyExt;
use hyper::body::Bytes;

use super::*;

/// A body that sends one frame and then stalls for ever.
struct Stalled(bool);

impl Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 {
            Poll::Pending
        } else {
            self.0 = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"par")))))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_fails_at_its_deadline() {
    let body = DeadlineBody::new(Stalled(false), Duration::from_secs(30));
    let err = body.collect().await.err().unwrap();
    assert_eq!(
        err.downcast_ref::<BodyTimedOut>(),
        Some(&BodyTimedOut(Duration::from_secs(30)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_whole_body_within_the_deadline_is_read() {
    let body = DeadlineBody::new(
        http_body_util::Full::new(Bytes::from_static(b"hello")),
        Duration::from_secs(1),
    );
    assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_bound_wait_then_are_refused_and_a_freed_slot_is_reused() {
    let limits = ConnectionLimits {
        max_connections: 2,
        connection_wait: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let gate = limits.gate();
    let a = gate.admit().await.unwrap();
    let _b = gate.admit().await.unwrap();
    assert!(
        gate.admit().await.is_none(),
        "a third connection is refused"
    );
    // A slot freed while a connection waits goes to it.
    let waiting = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await.is_some() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(a);
    assert!(waiting.await.unwrap());
}
