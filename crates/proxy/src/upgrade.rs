//! HTTP/1.1 protocol upgrades (WebSocket and the like) through the L7 path.
//!
//! The upgrade request is authorized like any other request; if the app answers
//! `101 Switching Protocols`, both sides' connections are taken over from hyper and joined by a
//! byte relay with the TCP idle timeout. A tunnel holds its connection's drain watch: it keeps
//! going through a graceful drain and is closed when the drain turns immediate. `Upgrade`/`Connection` are hop-by-hop headers, so they
//! are re-added explicitly on both legs after the generic stripping.

use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, UPGRADE};
use http::{HeaderMap, Request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use trustmesh_lifecycle::drain::Watch;

/// The protocol an HTTP/1.1 request asks to switch to, if it asks (`Upgrade: x` together with a
/// `Connection` header listing `upgrade`).
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let wants = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants.then(|| req.headers().get(UPGRADE).cloned()).flatten()
}

/// Puts the upgrade headers back after hop-by-hop stripping.
pub fn restore(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(UPGRADE, protocol.clone());
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Joins the client's and the app's upgraded connections in the background, holding `drain`.
pub fn tunnel(client: OnUpgrade, app: OnUpgrade, idle: Duration, drain: Watch) {
    tokio::spawn(async move {
        let (client, app) = match tokio::try_join!(client, app) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut app = TokioIo::new(app);
        if let Err(e) = crate::relay::relay(&mut client, &mut app, idle, drain.immediate()).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(conn: &str, upgrade: Option<&str>) -> Request<()> {
        let mut b = Request::builder().header(CONNECTION, conn);
        if let Some(u) = upgrade {
            b = b.header(UPGRADE, u);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn detects_upgrade_requests() {
        assert_eq!(
            requested(&req("keep-alive, Upgrade", Some("websocket"))).unwrap(),
            "websocket"
        );
        assert!(requested(&req("keep-alive", Some("websocket"))).is_none());
        assert!(requested(&req("upgrade", None)).is_none());
    }
}
