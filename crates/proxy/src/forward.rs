//! Forwarding an authorized request to the local app: hop-by-hop headers stripped, the client's
//! identity conveyed in `x-forwarded-client-cert` (sanitized, then set), and the request re-aimed
//! at the app's socket over a pooled connection (`apppool` for HTTP/1.1, hyper's client for HTTP/2
//! and upgrades).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use trustmesh_lifecycle::drain::Watch;

use crate::conn::ConnCtx;
use crate::reqbody::AppBody;
use crate::response::{text, Body};
use crate::state::Shared;
use crate::telemetry::{Interned, Istio, Service as LabelService};

/// Connection-scoped headers that must not be forwarded (RFC 9110 §7.6.1). Typed names: removing
/// by `&str` would parse and hash the name again on every request.
static HOP_BY_HOP: [HeaderName; 7] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
];

/// Where `n` is in [`HOP_BY_HOP`]. A `match` on the name's text (names in a `HeaderMap` are
/// lower case) is a length switch and at most one comparison; comparing each header with the
/// seven names was a few hundred instructions per message.
fn hop_by_hop_index(n: &HeaderName) -> Option<usize> {
    match n.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "transfer-encoding" => Some(3),
        "te" => Some(4),
        "trailer" => Some(5),
        "upgrade" => Some(6),
        _ => None,
    }
}

pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, keep_te_trailers: bool) {
    // One pass over the few headers a message has, noting which hop-by-hop ones are present
    // (usually none, or `connection` alone), instead of seven lookups that mostly miss.
    let mut present = [false; HOP_BY_HOP.len()];
    for k in h.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let te_trailers = keep_te_trailers
        && h.get(http::header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("trailers"));
    // Headers the sender declared connection-scoped with `Connection: a, b`. The common values
    // `keep-alive` (removed below anyway) and `close` (an option, not a header) need no lookup,
    // and a message that lists only those (most do) collects nothing.
    let listed = || {
        h.get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
    };
    if present[0] && listed().next().is_some() {
        let names: Vec<HeaderName> = listed()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in names {
            h.remove(n);
        }
    }
    for (n, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            h.remove(n);
        }
    }
    // `te: trailers` is the one TE value HTTP/2 allows, and gRPC servers require it.
    if te_trailers {
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

pub static XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");

/// An inbound HTTP connection: its context plus the values every request on it repeats, rendered
/// once per connection instead of once per request (addresses and identity as text for the
/// access log and policy, the app's authority for the upstream URI, the XFCC value).
pub struct Conn {
    pub ctx: ConnCtx,
    /// As the access log records them (shared, not copied, by each request's record).
    pub source_text: Arc<str>,
    pub target_text: Arc<str>,
    pub peer_text: Option<Arc<str>>,
    /// `ctx.target` as a URI authority (cheap to clone: shared bytes).
    pub target_authority: Option<http::uri::Authority>,
    /// Our identity when `xfcc` was rendered, and the XFCC value naming the verified peer.
    xfcc_by: String,
    xfcc: Option<HeaderValue>,
    /// The connection's drain watch; an upgraded tunnel takes a clone.
    pub drain: Watch,
    /// The metric labels' destination service of the last request's host
    /// ([`Conn::service_of`]).
    last_service: std::sync::Mutex<Option<Interned<LabelService>>>,
}

impl Conn {
    pub fn new(ctx: ConnCtx, own_id: &str, drain: Watch) -> Conn {
        let target_text = ctx.target.to_string();
        Conn {
            source_text: ctx.source.to_string().into(),
            target_authority: http::uri::Authority::from_maybe_shared(bytes::Bytes::from(
                target_text.clone(),
            ))
            .ok(),
            target_text: target_text.into(),
            peer_text: ctx.peer.as_ref().map(|p| p.id.as_str().into()),
            xfcc_by: own_id.to_string(),
            xfcc: xfcc_value(own_id, &ctx),
            drain,
            ctx,
            last_service: std::sync::Mutex::new(None),
        }
    }

    /// Istio's `destination_service` labels of a request to `host`: the last request's when
    /// it named the same host (a client connection usually talks to one service), else looked
    /// up in `istio`'s tables, which hashes the host twice under their lock.
    pub fn service_of(&self, istio: &Istio, host: &str) -> Interned<LabelService> {
        let mut last = self.last_service.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = last.as_ref().filter(|s| &*s.0.host == host) {
            return s.clone();
        }
        let s = istio.service(host, host);
        *last = Some(s.clone());
        s
    }

    /// The XFCC value for a request forwarded while `own_id` is our identity (a reload could
    /// change it in the middle of a connection; then it is rendered afresh).
    pub fn xfcc(&self, own_id: &str) -> Option<HeaderValue> {
        if own_id == self.xfcc_by {
            self.xfcc.clone()
        } else {
            xfcc_value(own_id, &self.ctx)
        }
    }
}

/// Envoy's XFCC element for a verified peer: `By` (us), `Hash` (SHA-256 of the peer leaf), `URI`.
pub fn xfcc_value(own_id: &str, ctx: &ConnCtx) -> Option<HeaderValue> {
    let peer = ctx.peer.as_ref()?;
    HeaderValue::from_str(&format!(
        "By={own_id};Hash={};Subject=\"\";URI={}",
        peer.leaf_sha256, peer.id
    ))
    .ok()
}

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum ForwardError {
    /// The client's own request body broke while it was being sent on (bad chunked framing, a
    /// body shorter than its Content-Length, a reset stream): the client's fault, a 400.
    ClientBody(String),
    /// The app could not be reached or failed: a 503.
    App(String),
}

impl ForwardError {
    /// Tells the two apart by the error's causes: a client (hyper's) error "caused by the user's
    /// body" whose cause is an error of the inbound connection is the client's.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> ForwardError {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cause {
            let from_client_body = err
                .downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_user())
                && err
                    .source()
                    .is_some_and(|s| s.downcast_ref::<hyper::Error>().is_some());
            if from_client_body {
                return ForwardError::ClientBody(e.to_string());
            }
            cause = err.source();
        }
        ForwardError::App(e.to_string())
    }
}

/// Forwards an admitted request to the local app and returns the app's answer (or the proxy's,
/// when the app cannot be reached or the request cannot be sent).
pub async fn forward(
    shared: &Arc<Shared>,
    conn: &Conn,
    own_id: &str,
    mut req: Request<AppBody>,
) -> Response<Body> {
    let ctx = &conn.ctx;
    let h2 = ctx.app_protocol == crate::config::AppProtocol::Http2;
    // Upgrades only toward an HTTP/1.1 app (HTTP/2 has no Upgrade mechanism).
    let upgrade = if h2 {
        None
    } else {
        crate::upgrade::requested(&req)
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    // Requests to an HTTP/1.1 app go over our pool of app connections (`apppool`); HTTP/2 apps
    // and upgrades (a connection of their own, handed over to the tunnel) over hyper's.
    let ours = !h2 && upgrade.is_none();
    let (mut parts, body) = req.into_parts();
    if for_app(&mut parts, conn, own_id, h2, ours, upgrade.as_ref()).is_err() {
        return text(StatusCode::BAD_REQUEST, "bad request target");
    }
    let upstream = Request::from_parts(parts, body);
    let answer = if ours {
        let timeout = shared.current().config.timeouts.connect();
        crate::apppool::send(ctx.target, ctx.app_source, timeout, upstream)
            .await
            .map_err(|e| match e {
                crate::apppool::Failed::Connect(why) => ForwardError::App(why),
                crate::apppool::Failed::Send(e) => ForwardError::of(&e),
            })
    } else {
        shared
            .workers
            .app_request(h2, ctx.app_source.is_some(), upstream)
            .await
            .map_err(|e| ForwardError::of(&e))
    };
    match answer {
        Ok(resp) => from_app(shared, conn, resp, client_upgrade),
        Err(e) => failed(shared, conn, e),
    }
}

/// Rewrites the client's request into the one the app gets: hop-by-hop headers out, XFCC set
/// by us, the Host the app expects, the request target and version for the app's protocol.
fn for_app(
    parts: &mut http::request::Parts,
    conn: &Conn,
    own_id: &str,
    h2: bool,
    origin_form: bool,
    upgrade: Option<&HeaderValue>,
) -> Result<(), http::uri::InvalidUriParts> {
    // HTTP/2's :authority becomes the Host header an HTTP/1.1 app expects.
    let authority_host = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    strip_hop_by_hop(&mut parts.headers, h2);
    if let Some(p) = upgrade {
        crate::upgrade::restore(&mut parts.headers, p);
    }
    // Sanitize-and-set, as Istio's sidecar does: a client must not be able to forge its identity
    // to the app by sending its own XFCC.
    parts.headers.remove(&XFCC);
    if let Some(v) = conn.xfcc(own_id) {
        parts.headers.insert(XFCC.clone(), v);
    }
    if let Some(h) = authority_host {
        parts.headers.insert(http::header::HOST, h);
    }
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if origin_form {
        // Our own HTTP/1.1 pool: the request line carries the path only (origin form), and
        // Host names the site; a client that sent none gets the app's address, as hyper's
        // pooled client would give it.
        uri.scheme = None;
        uri.authority = None;
        if !parts.headers.contains_key(http::header::HOST) {
            if let Some(v) = conn
                .target_authority
                .as_ref()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(http::header::HOST, v);
            }
        }
    } else {
        // hyper's pooled clients connect to the URI's authority: the app's socket address.
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = conn.target_authority.clone();
    }
    parts.uri = Uri::from_parts(uri)?;
    // The app side speaks its configured protocol, whatever the client spoke to us.
    if h2 {
        parts.version = http::Version::HTTP_2;
        // The pooled client takes :authority from the URI, which must name the app's socket
        // address (it is where the client connects); the client's original authority travels
        // in x-forwarded-host instead of a Host header, which HTTP/2 does not use.
        if let Some(v) = parts.headers.remove(http::header::HOST) {
            parts.headers.insert("x-forwarded-host", v);
        }
    } else {
        parts.version = http::Version::HTTP_11;
    }
    Ok(())
}

/// The app's answer as the client gets it: hop-by-hop headers out; an accepted upgrade becomes
/// a tunnel between the two upgraded connections.
fn from_app(
    shared: &Shared,
    conn: &Conn,
    mut resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<Body> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let accepted = match (switching, client_upgrade) {
        (true, Some(client)) => {
            let app = hyper::upgrade::on(&mut resp);
            let idle = shared.current().config.timeouts.tcp_idle();
            crate::upgrade::tunnel(client, app, idle, conn.drain.clone());
            resp.headers().get(http::header::UPGRADE).cloned()
        }
        (true, None) => {
            return text(StatusCode::BAD_GATEWAY, "app switched protocols unasked");
        }
        _ => None,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    if let Some(p) = &accepted {
        crate::upgrade::restore(&mut parts.headers, p);
    }
    parts.version = DOWNSTREAM_VERSION;
    Response::from_parts(parts, Body::Relayed(body))
}

/// The version an upstream's answer is handed to hyper's server with. The upstream's own
/// version belongs to its connection: an HTTP/1.0 app's `HTTP/1.0` answer, written as is,
/// ends the client's keep-alive connection after every request (the client sidecar's pooled
/// connection included). hyper's server then writes HTTP/1.1 (HTTP/1.0 to an HTTP/1.0 client,
/// and HTTP/2 frames on an HTTP/2 connection), as Envoy answers each connection in its own
/// protocol.
pub const DOWNSTREAM_VERSION: http::Version = http::Version::HTTP_11;

/// The proxy's answer when the request could not be forwarded: the client's fault (its body
/// broke off) is a 400, the app's a 503 as Envoy answers it.
fn failed(shared: &Shared, conn: &Conn, e: ForwardError) -> Response<Body> {
    match e {
        ForwardError::ClientBody(e) => {
            shared
                .metrics
                .reject(crate::metrics::RejectReason::HttpProtocol);
            tracing::debug!(error = %e, "client's request body failed while forwarding");
            text(
                StatusCode::BAD_REQUEST,
                "bad request: the request body is malformed or incomplete",
            )
        }
        ForwardError::App(e) => {
            shared
                .metrics
                .upstream_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target = %conn.ctx.target, error = %e, "forwarding to local app failed");
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers",
            );
            r.extensions_mut().insert(AppFailed);
            r
        }
    }
}

/// Marks a response the sidecar made because the app could not be reached or failed, so the
/// outcome carries Envoy's `UF` (the access log's and Istio's metrics' `response_flags`).
#[derive(Debug, Clone, Copy)]
pub struct AppFailed;

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("host", "a"),
            ("connection", "keep-alive, X-Private"),
            ("connection", "x-other, close"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("upgrade", "websocket"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["host", "x-kept"]);
        assert_eq!(h.get("x-kept").unwrap(), "3");
    }

    #[test]
    fn te_trailers_survives_only_when_asked() {
        let mut h = map(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "gzip"), ("content-type", "x")]);
        strip_hop_by_hop(&mut h, true);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn a_connection_reuses_the_service_labels_of_its_last_host_only() {
        let addr: std::net::SocketAddr = "198.18.9.1:8080".parse().unwrap();
        let ctx = ConnCtx {
            listener: 0,
            listener_port: 15006,
            source: "198.18.9.2:40000".parse().unwrap(),
            local: addr,
            target: addr,
            app_source: None,
            peer: None,
            tls: false,
            app_protocol: Default::default(),
            sni: None,
            started: std::time::Instant::now(),
        };
        let (_trigger, drain) = trustmesh_lifecycle::drain::channel();
        let conn = Conn::new(ctx, "spiffe://td/ns/a/sa/b", drain);
        let istio = Istio::default();
        let a = conn.service_of(&istio, "a.example");
        assert_eq!(&*a.0.host, "a.example");
        // The same host again: the kept labels, even from tables that never saw it.
        assert!(Arc::ptr_eq(
            &a.0,
            &conn.service_of(&Istio::default(), "a.example").0
        ));
        // Another host: looked up, and kept in turn.
        let b = conn.service_of(&istio, "b.example");
        assert_eq!(&*b.0.host, "b.example");
        assert!(Arc::ptr_eq(
            &b.0,
            &istio.service("b.example", "b.example").0
        ));
        let a2 = conn.service_of(&istio, "a.example");
        assert!(Arc::ptr_eq(&a.0, &a2.0), "the tables' labels for a.example");
    }

    #[test]
    fn each_hop_by_hop_name_is_found_where_it_is_listed() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(n), Some(i), "{n}");
        }
        for n in [
            "host",
            "connections",
            "te2",
            "x-connection",
            "upgrade-insecure-requests",
        ] {
            assert_eq!(hop_by_hop_index(&HeaderName::from_static(n)), None, "{n}");
        }
    }

    #[test]
    fn a_connection_header_of_options_only_is_removed_alone() {
        let mut h = map(&[("connection", "keep-alive"), ("close", "x"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["close", "x-a"]);
        let mut h = map(&[
            ("connection", "Close, keep-alive"),
            ("keep-alive", "timeout=5"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_untouched() {
        let mut h = map(&[("host", "a"), ("x-a", "1"), ("x-a", "2")]);
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }
}
