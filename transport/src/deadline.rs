//! A read deadline for request bodies (issue 12, "Hygiene"): a client that sends its
//! headers and then trickles or stalls its body would otherwise hold a connection, a
//! connection permit and a handler for as long as it likes. hyper bounds the header read
//! (`ServeOptions::header_read_timeout`); this bounds the body, as a whole, from the moment
//! its headers were read: the body fails after the deadline, the handler's extractor fails
//! with it, and the serve loop answers 408 with a problem document and closes the
//! connection (RFC 9110 §15.5.9).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use crate::problem::{Problem, REQUEST_TIMEOUT};

/// A request body that fails once `deadline` has passed.
pub(crate) struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl DeadlineBody {
    /// Wraps `inner`; `timed_out` is set when the deadline cut it off.
    pub(crate) fn new(inner: Body, within: Duration, timed_out: Arc<AtomicBool>) -> Self {
        Self { inner, deadline: Box::pin(tokio::time::sleep(within)), timed_out }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct TimedOut;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(axum::Error::new(TimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the client gets when its body was cut off: 408, and the connection closes (what is
/// left of the body would otherwise be read as the next request).
pub(crate) fn timed_out(within: Duration) -> Response {
    let mut response =
        Problem::new(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT, "Request body timeout")
            .with_detail(format!(
                "the request body did not arrive within {} ms",
                within.as_millis()
            ))
            .into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
