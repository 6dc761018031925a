//! The L7 path: hyper serves HTTP/1.1 and HTTP/2 on the inbound stream, each request is
//! authenticated and authorized, then handed to [`crate::forward`] for the local app.
//!
//! Policy is looked up from the *current* snapshot for every request, so a policy change applies
//! to long-lived keep-alive connections too, while the peer identity stays the one proven in this
//! connection's handshake.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use trustmesh_lifecycle::drain::Watch;

use crate::accesslog::AccessLog;
use crate::authz::{Decision, HttpAttrs};
use crate::clock::Stamp;
use crate::conn::ConnCtx;
use crate::forward::Conn;
use crate::metrics::RejectReason;
use crate::normalize::authority;
use crate::outcome::{Failure, Outcome};
use crate::response::{bytes_response, text, Body};
use crate::state::Shared;
use crate::telemetry::exchange;
use crate::telemetry::peer::{self, Side};

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Serves one inbound connection until the client closes it, it misbehaves or the drain closes
/// it: a graceful drain lets the request in flight finish, an immediate one closes it now.
pub async fn serve<S>(shared: Arc<Shared>, ctx: ConnCtx, stream: S, drain: Watch)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snap = shared.current();
    let timeouts = snap.config.timeouts.clone();
    // The peer's labels for Istio's metrics, once for every request of the connection.
    let side = Arc::new(shared.inbound_side(&snap, &ctx));
    let ctx = Arc::new(Conn::new(ctx, snap.own_id.as_str(), drain.clone()));
    drop(snap);
    let builder = server_builder(&timeouts);
    let svc_shared = shared.clone();
    let activity = Arc::new(Activity::default());
    let svc_activity = activity.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let ctx = ctx.clone();
        let side = side.clone();
        let busy = svc_activity.begin();
        // Boxed, once per request: a request's future holds its whole state (the outcome
        // record, the request, the app call) and measured 10.9 KB unboxed. hyper moves the
        // service future into a task per HTTP/2 stream and in and out of its slots, and those
        // copies were the largest single user-space cost of the server side in a profile
        // (memmove, 12 %). A pointer moves instead; the rarely taken branches (ext_authz,
        // connecting to the app) are boxed where they are awaited, so the box is 5.2 KB.
        Box::pin(async move {
            let resp = handle(&shared, &ctx, &side, req).await;
            drop(busy);
            Ok::<_, Infallible>(resp)
        })
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let idle = timeouts.http_idle();
    let result = until_done(
        conn.as_mut(),
        |c| c.graceful_shutdown(),
        &drain,
        &activity,
        idle,
    )
    .await
    .unwrap_or(Ok(()));
    if let Err(e) = result {
        // A client that simply went away mid-request is not misbehaving; parse errors, oversized
        // heads, header timeouts and HTTP/2 protocol errors are.
        let benign = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled() || h.is_closed());
        if !benign {
            shared.metrics.reject(RejectReason::HttpProtocol);
        }
        tracing::debug!(error = %e, "inbound HTTP connection ended with an error");
    }
}

/// Serves `conn` until it ends; or, once the drain starts or no request has been in flight
/// for `idle`, tells it to finish (`finish`: HTTP/1.1 `Connection: close` after the request in
/// flight, HTTP/2 GOAWAY) instead of holding it, and serves what is in flight until the drain
/// turns immediate, when it is cut (`None`). One loop for every HTTP connection the sidecar
/// serves: inbound, captured outbound (`route`) and HBONE.
pub(crate) async fn until_done<F: std::future::Future>(
    mut conn: std::pin::Pin<&mut F>,
    finish: impl FnOnce(std::pin::Pin<&mut F>),
    drain: &Watch,
    activity: &Activity,
    idle: std::time::Duration,
) -> Option<F::Output> {
    tokio::select! {
        r = conn.as_mut() => return Some(r),
        _ = drain.draining() => {}
        _ = activity.idle_for(idle) => {
            tracing::debug!("closing an HTTP connection idle for {idle:?}");
        }
    }
    finish(conn.as_mut());
    tokio::select! {
        r = conn.as_mut() => Some(r),
        () = drain.immediate() => None,
    }
}

/// The HTTP server every listener serves a connection with (HTTP/1.1 or HTTP/2, detected):
/// header read timeout and size bounds from the config, HTTP/2 stream cap and keep-alive.
pub fn server_builder(timeouts: &crate::config::Timeouts) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read())
        .max_buf_size(timeouts.max_header_bytes);
    crate::h2settings::auto_server(&mut builder.http2())
        .timer(TokioTimer::new())
        .max_header_list_size(timeouts.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    builder
}

/// Requests in flight on one connection and when the last one ended: HTTP/2 keeps a
/// connection open as long as PINGs are answered, so idleness is measured in requests.
#[derive(Default)]
pub(crate) struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds since `EPOCH` when a request last ended.
    last_end_ms: std::sync::atomic::AtomicU64,
}

/// A request being handled; marks the end when dropped (also if the client goes away).
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .last_end_ms
            .store(ms_since_epoch(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn ms_since_epoch() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Activity {
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    pub(crate) async fn idle_for(&self, idle: std::time::Duration) {
        let idle_ms = idle.as_millis() as u64;
        let mut since = ms_since_epoch();
        self.last_end_ms.store(since, Ordering::Relaxed);
        loop {
            let wake = since + idle_ms;
            let now = ms_since_epoch();
            if now < wake {
                tokio::time::sleep(std::time::Duration::from_millis(wake - now)).await;
            }
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: look again one idle period from now.
                since = ms_since_epoch();
                continue;
            }
            let last = self.last_end_ms.load(Ordering::Relaxed);
            if last + idle_ms <= ms_since_epoch() {
                return;
            }
            since = last;
        }
    }
}

fn request_log(conn: &Conn, req: &Request<Incoming>) -> AccessLog {
    let mut log = AccessLog {
        time: Stamp::now(),
        direction: "inbound",
        protocol: "http",
        listener_port: conn.ctx.listener_port,
        source_address: conn.source_text.clone(),
        destination_address: conn.target_text.clone(),
        source_principal: conn.peer_text.clone(),
        tls: conn.ctx.tls,
        method: Some(crate::accesslog::method_text(req.method())),
        path: Some(
            req.uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
        ),
        authority: authority(req),
        ..Default::default()
    };
    // What a configured access log format reads beyond the record (nothing by default).
    log.capture_connection(&conn.ctx);
    log.capture_request(req.version(), req.headers());
    log
}

/// Keeps a client's `x-request-id` (as Envoy does by default) or adds a random UUIDv4 one.
fn ensure_request_id(headers: &mut http::HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        return Some(v.to_string());
    }
    let mut b = request_id_bytes().to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant

    // 8-4-4-4-12 lower-case hex, written in place.
    let mut id = [0u8; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id[at] = b'-';
            at += 1;
        }
        id[at..at + 2].copy_from_slice(&crate::hex::hex_pair(*byte));
        at += 2;
    }
    let value = HeaderValue::from_bytes(&id).ok()?;
    let text = value.to_str().ok()?.to_string();
    headers.insert(X_REQUEST_ID.clone(), value);
    Some(text)
}

/// 128 random-looking bits for a request id without a system call per request: each worker
/// thread seeds a SplitMix64 generator once from the OS. Request ids must be unique and
/// unpredictable enough not to collide across proxies, not secret: nothing is authorized by them.
fn request_id_bytes() -> u128 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
            u64::from_le_bytes(seed)
        });
    }
    fn next(state: &Cell<u64>) -> u64 {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    STATE.with(|s| (u128::from(next(s)) << 64) | u128::from(next(s)))
}

fn attrs_of<'a, B>(
    req: &'a Request<B>,
    host: &'a str,
    auth: Option<&'a crate::jwt::AuthInfo>,
) -> HttpAttrs<'a> {
    HttpAttrs {
        method: req.method().as_str(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        host,
        headers: req.headers(),
        auth,
    }
}

fn rbac_denied() -> Response<Body> {
    text(StatusCode::FORBIDDEN, "RBAC: access denied")
}

/// A plain-text answer the proxy makes itself.
fn plain(status: StatusCode, body: String) -> Response<Body> {
    let mut r = bytes_response(status, Bytes::from(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

/// One request: authenticate (JWT), authorize (CUSTOM → DENY → ALLOW), forward. Its outcome
/// (access-log line, decision metric) is recorded once whichever way it leaves.
async fn handle(
    shared: &Arc<Shared>,
    conn: &Conn,
    side: &Side,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    shared.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let snap = shared.current();
    let request_id = ensure_request_id(req.headers_mut());
    // The client sidecar's metadata: for the metric labels only, never seen by the app.
    let peer_metadata = exchange::take(req.headers_mut());
    // Normalized before anything reads the path: authentication, policy, the log and the app
    // all see the same request.
    let normalized = crate::normalize::apply(&mut req, snap.mesh.path_normalization.normalization);
    let log = request_log(conn, &req);
    let istio = &shared.metrics.istio;
    let host = log.authority.as_deref().unwrap_or("");
    let mut facts = side.facts(
        istio,
        peer::http_protocol(req.headers()),
        conn.service_of(istio, host),
        peer_metadata.as_ref().map(|v| v.as_bytes()),
    );
    facts.request_bytes = peer::declared_size(req.headers());
    let mut outcome = Outcome::new(&shared.metrics, log, started).with_telemetry(facts);
    outcome.log().request_id = request_id;
    match normalized {
        Ok(original) => outcome.log().original_path = original,
        Err(refusal) => {
            let r = plain(refusal.status(), format!("bad request: {refusal}\n"));
            outcome.fail(Failure::BadRequest {
                status: refusal.status(),
                label: refusal.label(),
                why: refusal.to_string(),
            });
            return r;
        }
    }
    let host = outcome.log().authority.clone().unwrap_or_default();

    let auth = match snap.policies.authenticate(req.headers(), req.uri()) {
        Ok(a) => a,
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let r = plain(status, e.http_body());
            outcome.fail(Failure::Unauthenticated {
                status,
                why: e.to_string(),
            });
            return r;
        }
    };
    outcome.log().request_principal = auth.as_ref().map(|a| a.principal.clone());
    // From here on the body may be read ahead for a CUSTOM provider before it reaches the app.
    let mut req = req.map(crate::reqbody::AppBody::from);

    // Headers a CUSTOM authorizer asked to add to the client's response on allow.
    let response_headers =
        match authorize(&snap, conn, &mut req, &host, auth.as_ref(), &mut outcome).await {
            Ok(headers) => headers,
            Err((failure, response)) => {
                outcome.fail(failure);
                return response;
            }
        };
    outcome.decide("allow");

    snap.policies
        .prepare_upstream(auth.as_ref(), req.headers_mut());
    let mut resp = crate::forward::forward(shared, conn, snap.own_id.as_str(), req).await;
    crate::extauthz::apply_mutations(&response_headers, resp.headers_mut());
    outcome.log().status = Some(resp.status().as_u16());
    outcome.log().capture_response(resp.headers());
    if resp
        .extensions()
        .get::<crate::forward::AppFailed>()
        .is_some()
    {
        outcome.log().response_flags = Some(crate::outcome::flags::UPSTREAM_FAILURE);
    }
    if let Some(f) = outcome.telemetry() {
        f.response_bytes = peer::declared_size(resp.headers());
        f.grpc_status = peer::grpc_status(resp.headers());
    }
    // Metadata is answered only to a peer that sent its own (Istio's exchange), so a client
    // outside the mesh learns nothing about the workload.
    if peer_metadata.is_some() {
        exchange::add(resp.headers_mut(), &snap.telemetry.peer_metadata);
    }
    outcome.finish();
    resp
}

/// CUSTOM → DENY → ALLOW for one request. On allow, the response headers a CUSTOM provider
/// asked for (its request headers are already applied to `req`); on refusal, the response to
/// send with the failure to record.
async fn authorize(
    snap: &crate::snapshot::Snapshot,
    conn: &Conn,
    req: &mut Request<crate::reqbody::AppBody>,
    host: &str,
    auth: Option<&crate::jwt::AuthInfo>,
    outcome: &mut Outcome<'_>,
) -> Result<Vec<crate::extauthz::HeaderMutation>, (Failure, Response<Body>)> {
    let ctx = &conn.ctx;
    let peer = conn.peer_text.as_deref();
    let verdict = snap
        .policies
        .check_http(ctx, peer, &attrs_of(req, host, auth));
    let scope = crate::rbacstats::Scope::Http(ctx.target.port());
    outcome.record_rbac(scope, &verdict);
    outcome.log().policy = verdict.policy;
    outcome.log().reason = Some(verdict.reason);
    let provider = match &verdict.decision {
        Decision::Allow => return Ok(Vec::new()),
        Decision::Deny => {
            return Err((Failure::Denied, rbac_denied()));
        }
        Decision::Custom(provider) => provider,
    };
    // Boxed: the ext_authz call's future is large and only CUSTOM policies need it (see
    // `serve` on future sizes).
    let (allowed, failed_open) =
        match Box::pin(crate::custom::check(snap, provider, ctx, req)).await {
            crate::custom::Outcome::Deny { response, why } => {
                outcome.log().status = Some(response.status().as_u16());
                let failure = Failure::DeniedByProvider {
                    provider: provider.clone(),
                    why,
                };
                return Err((failure, response));
            }
            crate::custom::Outcome::Allow {
                allowed,
                failed_open,
            } => (allowed, failed_open),
        };
    allowed.apply_to_request(req.headers_mut());
    let response_headers = match allowed {
        crate::extauthz::ExtAuthzOutcome::Allow {
            response_headers_to_add,
            ..
        } => response_headers_to_add,
        _ => Vec::new(),
    };
    // CUSTOM allowed: the DENY and ALLOW policies still apply.
    let after = snap
        .policies
        .check_http_after_custom(ctx, peer, &attrs_of(req, host, auth));
    let allowed = after.allowed();
    outcome.record_rbac(scope, &after);
    outcome.log().reason = Some(match failed_open {
        Some(why) => format!("{why}; {}", after.reason),
        None => format!(
            "CUSTOM provider {provider} allowed the request; {}",
            after.reason
        ),
    });
    if after.policy.is_some() {
        outcome.log().policy = after.policy;
    }
    if !allowed {
        return Err((Failure::Denied, rbac_denied()));
    }
    Ok(response_headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let mut h = http::HeaderMap::new();
            let id = ensure_request_id(&mut h).unwrap();
            assert_eq!(h.get("x-request-id").unwrap(), id.as_str());
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(parts[2].starts_with('4'), "version 4: {id}");
            assert!(
                matches!(&parts[3][..1], "8" | "9" | "a" | "b"),
                "variant: {id}"
            );
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
            assert!(seen.insert(id), "duplicate request id");
        }
        // A client's own id is kept.
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        assert_eq!(ensure_request_id(&mut h).as_deref(), Some("abc"));
    }

    #[test]
    fn hex_matches_format() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xfe, 0xff];
        let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(crate::hex::hex(&bytes), want);
    }
}
