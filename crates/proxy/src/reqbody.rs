//! The request body the local app gets: the client's body as it streams in, or — when a CUSTOM
//! provider asked to see the body (`includeRequestBodyInCheck`) — the part buffered for the
//! check followed by the rest of the stream, so the app receives the body unchanged either way.
//!
//! Buffering follows Envoy's ext_authz filter: up to `maxRequestBytes` are held back; a body
//! longer than that is refused with 413 unless `allowPartialMessage`, in which case the check
//! sees the first `maxRequestBytes` and the request carries on with everything.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A request body on its way to the app (see the module documentation).
#[derive(Debug, Default)]
pub struct AppBody {
    /// Frames read ahead for an ext_authz check, replayed first.
    head: VecDeque<Frame<Bytes>>,
    head_len: u64,
    rest: Option<Incoming>,
}

impl From<Incoming> for AppBody {
    fn from(body: Incoming) -> AppBody {
        AppBody {
            head: VecDeque::new(),
            head_len: 0,
            rest: Some(body),
        }
    }
}

impl Body for AppBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(frame) = self.head.pop_front() {
            if let Some(data) = frame.data_ref() {
                self.head_len -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.head_len);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.head_len);
        }
        hint
    }
}

/// Why a body could not be buffered for the check.
#[derive(Debug)]
pub enum BufferError {
    /// Longer than `maxRequestBytes` while partial bodies are not allowed: Envoy's 413.
    TooLarge { max: usize },
    /// The client's body failed (reset, malformed chunking).
    Read(hyper::Error),
}

impl std::fmt::Display for BufferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BufferError::TooLarge { max } => write!(
                f,
                "the request body is longer than the {max} bytes the ext_authz provider accepts \
                 (maxRequestBytes) and allowPartialMessage is false"
            ),
            BufferError::Read(e) => write!(f, "reading the request body failed: {e}"),
        }
    }
}

/// What the check sees of a buffered body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// At most `max` bytes.
    pub bytes: Bytes,
    /// The body goes on past `bytes` (`x-envoy-auth-partial-body: true`).
    pub partial: bool,
}

/// Reads ahead up to `max` bytes of `app` (a body not read ahead yet) (see the module documentation): the body for the
/// app, unchanged, and what the check sees.
pub async fn buffer(
    mut app: AppBody,
    max: usize,
    allow_partial: bool,
) -> Result<(AppBody, Seen), BufferError> {
    let mut seen = BytesMut::new();
    let mut total = 0usize;
    loop {
        // Partial: stop once the check has all it will see. Whole: read one byte past the
        // limit to know the body is too long.
        let enough = if allow_partial {
            total >= max
        } else {
            total > max
        };
        let Some(rest) = app.rest.as_mut() else { break };
        if enough || rest.is_end_stream() {
            break;
        }
        match rest.frame().await {
            None => {
                app.rest = None;
                break;
            }
            Some(Err(e)) => return Err(BufferError::Read(e)),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                    app.head_len += data.len() as u64;
                    let room = max.saturating_sub(seen.len());
                    seen.extend_from_slice(&data[..data.len().min(room)]);
                }
                app.head.push_back(frame);
            }
        }
    }
    if total > max && !allow_partial {
        return Err(BufferError::TooLarge { max });
    }
    let ended = app.rest.as_ref().is_none_or(|r| r.is_end_stream());
    let partial = total > max || !ended;
    Ok((
        app,
        Seen {
            bytes: seen.freeze(),
            partial,
        },
    ))
}
