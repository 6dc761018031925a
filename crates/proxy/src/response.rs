//! The response body type every listener and the admin server answer with, and builders for
//! the answers the proxy makes itself (refusals, errors, admin pages); a leaf module, so
//! whoever answers imports no listener for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Response, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};

/// What a listener answers with: an upstream's body, relayed as hyper reads it, or a whole
/// body the proxy wrote itself. An enum rather than a boxed body: every proxied response is
/// the first kind, and boxing it was an allocation per request on each side.
#[derive(Debug)]
pub enum Body {
    Relayed(Incoming),
    /// The bytes, until they are sent (`None` for an empty body).
    Whole(Option<Bytes>),
}

impl Body {
    pub fn whole(bytes: Bytes) -> Body {
        Body::Whole((!bytes.is_empty()).then_some(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Relayed(b) => Pin::new(b).poll_frame(cx),
            Body::Whole(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Relayed(b) => b.is_end_stream(),
            Body::Whole(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Relayed(b) => b.size_hint(),
            Body::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::whole(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

pub fn bytes_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::whole(body));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    #[tokio::test]
    async fn a_whole_body_is_one_exactly_sized_frame_and_an_empty_one_has_ended() {
        let body = Body::whole(Bytes::from_static(b"no healthy upstream\n"));
        assert_eq!(body.size_hint().exact(), Some(20));
        assert!(!body.is_end_stream());
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"no healthy upstream\n");

        let empty = Body::whole(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());
    }
}
