//! The response body the Layer answers with, and the metered stream.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;
use tracing::warn;

use crate::charge::Charge;
use crate::sse::Scanner;
use crate::usage::{Usage, streamed_chars};

/// The errors a [`GovernBody`] can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A response body from a governed service: the inner service's body as
/// it came, a body the Layer wrote (an error, a buffered answer), or a
/// stream passed through chunk by chunk while its usage is read.
pub struct GovernBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Inner(Pin<Box<B>>),
    Full(Option<Bytes>),
    Metered(Box<Metered<B>>),
}

impl<B> GovernBody<B> {
    /// The inner service's body, unchanged.
    pub(crate) fn inner(body: B) -> Self {
        GovernBody {
            kind: Kind::Inner(Box::pin(body)),
        }
    }

    /// A body of `bytes`.
    pub(crate) fn full(bytes: Bytes) -> Self {
        GovernBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    /// A stream metered for `charge`.
    pub(crate) fn metered(body: B, charge: Charge, cancelled: BoxFuture) -> Self {
        GovernBody {
            kind: Kind::Metered(Box::new(Metered {
                inner: Box::pin(body),
                scanner: Scanner::default(),
                usage: None,
                streamed_chars: 0,
                charge: Some(charge),
                settling: None,
                ending: None,
                cancelled: Some(cancelled),
                done: false,
            })),
        }
    }
}

impl<B> From<Bytes> for GovernBody<B> {
    fn from(bytes: Bytes) -> Self {
        GovernBody::full(bytes)
    }
}

impl<B> fmt::Debug for GovernBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner(_) => "inner",
            Kind::Full(_) => "full",
            Kind::Metered(_) => "metered",
        };
        f.debug_struct("GovernBody").field("kind", &kind).finish()
    }
}

impl<B> Body for GovernBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Inner(body) => body.as_mut().poll_frame(cx).map_err(Into::into),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Metered(metered) => metered.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner(body) => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Metered(metered) => metered.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner(body) => body.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Metered(metered) => metered.inner.size_hint(),
        }
    }
}

/// A server-sent event stream passed through frame by frame.
///
/// Each frame is handed on as soon as the inner body yields it; the
/// `data:` events it carries are read on the way for usage and generated
/// text. At the end of the stream the usage is charged before the end is
/// passed on; if the stream fails, is cancelled ([`crate::Drain::cancel`])
/// or is dropped first (the caller hung up), what it produced is charged.
struct Metered<B> {
    inner: Pin<Box<B>>,
    scanner: Scanner,
    /// The last usage seen in an event.
    usage: Option<Usage>,
    /// Characters of generated text seen so far.
    streamed_chars: u64,
    /// The reservation, until the charge starts.
    charge: Option<Charge>,
    /// The charge under way; the stream ends when it is done.
    settling: Option<BoxFuture>,
    /// What to end with once charged: the end (`None`) or an error.
    ending: Option<BoxError>,
    cancelled: Option<BoxFuture>,
    done: bool,
}

/// Why a stream ended early, passed on to the caller as the body's error.
#[derive(Debug)]
struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the gateway is shutting down; the stream was cut off")
    }
}

impl std::error::Error for Cancelled {}

impl<B> Metered<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(settling) = self.settling.as_mut() {
                ready!(settling.as_mut().poll(cx));
                self.settling = None;
                self.done = true;
                return Poll::Ready(self.ending.take().map(Err));
            }
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(cancelled) = self.cancelled.as_mut()
                && cancelled.as_mut().poll(cx).is_ready()
            {
                self.cancelled = None;
                self.stop(Some(Box::new(Cancelled)), false);
                continue;
            }
            match ready!(self.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.read(data);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(err)) => self.stop(Some(err.into()), false),
                None => self.stop(None, true),
            }
        }
    }
}

impl<B> Metered<B> {
    fn read(&mut self, data: &[u8]) {
        let (usage, chars) = (&mut self.usage, &mut self.streamed_chars);
        self.scanner
            .feed(data, &mut |event| observe(event, usage, chars));
    }

    /// Starts the charge; the stream then ends with `ending` once it is done.
    fn stop(&mut self, ending: Option<BoxError>, complete: bool) {
        if complete {
            let (usage, chars) = (&mut self.usage, &mut self.streamed_chars);
            self.scanner
                .finish(&mut |event| observe(event, usage, chars));
        }
        self.ending = ending;
        self.settling = self.charge.take().map(|charge| {
            let tokens = self.tokens(&charge, complete);
            Box::pin(charge.settle(tokens)) as BoxFuture
        });
        if self.settling.is_none() {
            self.done = true;
        }
    }

    /// The usage reported, or else what was streamed.
    fn tokens(&self, charge: &Charge, complete: bool) -> i64 {
        if let Some(total) = self.usage.and_then(|usage| usage.total()) {
            return total;
        }
        let produced = charge.produced(self.streamed_chars);
        if complete {
            warn!(
                reservation = charge.reservation.id.0,
                api = charge.api.as_str(),
                produced,
                "the stream reported no usage; charging an estimate of what it streamed"
            );
        }
        produced
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        // The caller hung up (or the server dropped the response) before
        // the end: charge what was produced, or finish a charge under way.
        let pending = match self.charge.take() {
            Some(charge) => {
                let tokens = self.tokens(&charge, false);
                Some(Box::pin(charge.settle(tokens)) as BoxFuture)
            }
            None => self.settling.take(),
        };
        let Some(pending) = pending else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(pending)),
            Err(_) => warn!(
                "a stream was dropped outside a tokio runtime; its reservation expires by itself"
            ),
        }
    }
}

/// Reads one event's data: its usage, and the text it carries.
fn observe(data: &[u8], usage: &mut Option<Usage>, chars: &mut u64) {
    if data == b"[DONE]" {
        return;
    }
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(found) = Usage::of_event(&event) {
        *usage = Some(found);
    }
    *chars += streamed_chars(&event);
}
