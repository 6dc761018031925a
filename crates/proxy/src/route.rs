//! Captured outbound HTTP: the app's connection is served as HTTP (1.1 or 2), and each request
//! is routed on its own — by its host among the services at the address it was sent to, then
//! round robin over that service's endpoints — so one keep-alive connection from the app
//! spreads its requests as Envoy's HTTP connection manager does.
//!
//! To an endpoint with a sidecar the request goes over mTLS on a pooled connection
//! ([`crate::meshconn`]), HTTP/1.1 or HTTP/2 as Istio chooses for the port (by default the
//! app's HTTP/1.1 stays HTTP/1.1, see [`trustmesh_registry::UpstreamHttp`]), through the
//! endpoint's HBONE port when it terminates HBONE (an upgrade on a CONNECT stream of its own);
//! to one without, plaintext HTTP/1.1 over the worker's pool. A request that cannot be
//! delivered gets a 503 whose body and `x-trustmesh-upstream-error` header say why in Envoy's
//! words and ours, never a reset.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use trustmesh_lifecycle::drain::Watch;
use trustmesh_policy::OutboundMode;
use trustmesh_registry::{Destination, UpstreamHttp, Via};

use crate::accesslog::AccessLog;
use crate::clock::Stamp;
use crate::mesh::{Target, TargetAddr, TargetTls, BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};
use crate::outcome::{Failure, Outcome};
use crate::response::Body;
use crate::state::Shared;
use crate::upstream::{error_chain, reset_sentence, Security};

/// The header that carries the reason of a 503 the sidecar answered itself.
pub static UPSTREAM_ERROR: http::HeaderName =
    http::HeaderName::from_static("x-trustmesh-upstream-error");

/// Serves one captured app connection to an HTTP service port.
pub async fn serve(
    shared: Arc<Shared>,
    app: TcpStream,
    source: SocketAddr,
    orig: SocketAddr,
    drain: Watch,
) {
    let timeouts = shared.current().config.timeouts.clone();
    let builder = crate::http::server_builder(&timeouts);
    let listener_port = app.local_addr().map_or(0, |a| a.port());
    let svc_shared = shared.clone();
    let svc_drain = drain.clone();
    let activity = Arc::new(crate::http::Activity::default());
    let svc_activity = activity.clone();
    // The addresses as the access log writes them, formatted once for every request.
    let texts: (Arc<str>, Arc<str>) = (source.to_string().into(), orig.to_string().into());
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let drain = svc_drain.clone();
        let busy = svc_activity.begin();
        let texts = texts.clone();
        // Boxed once per request, as on the inbound side (`http::serve`): 3.6 KB.
        Box::pin(async move {
            let at = Origin {
                source,
                orig,
                listener_port,
                texts,
            };
            let resp = handle(&shared, at, req, drain).await;
            drop(busy);
            Ok::<_, Infallible>(resp)
        })
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(app), svc);
    tokio::pin!(conn);
    // As on inbound connections: the drain, or `timeouts.httpIdle` without a request in
    // flight, closes the app's connection after the request in flight.
    let idle = timeouts.http_idle();
    let result = crate::http::until_done(
        conn.as_mut(),
        |c| c.graceful_shutdown(),
        &drain,
        &activity,
        idle,
    )
    .await
    .unwrap_or(Ok(()));
    if let Err(e) = result {
        tracing::debug!(error = %e, "captured outbound HTTP connection ended with an error");
    }
}

/// Where a request came from and was sent to.
struct Origin {
    /// The app's address.
    source: SocketAddr,
    orig: SocketAddr,
    listener_port: u16,
    /// The app's address and `orig` as text.
    texts: (Arc<str>, Arc<str>),
}

async fn handle(
    shared: &Arc<Shared>,
    at: Origin,
    mut req: Request<Incoming>,
    drain: Watch,
) -> Response<Body> {
    let snap = shared.current();
    let view = snap.mesh_view.clone();
    let authority = crate::normalize::authority(&req);
    let mut outcome = Outcome::new(
        &shared.metrics,
        AccessLog {
            time: Stamp::now(),
            direction: "outbound",
            protocol: "http",
            listener_port: at.listener_port,
            source_address: at.texts.0.clone(),
            destination_address: at.texts.1.clone(),
            method: Some(crate::accesslog::method_text(req.method())),
            path: Some(
                req.uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string(),
            ),
            authority: authority.clone(),
            decision: "allow",
            ..Default::default()
        },
        Instant::now(),
    )
    .without_decision_metric();
    // Classified again for each request: the registry may have been reloaded since the
    // connection began, and a service's index is only meaningful in the registry it came from.
    let (targets, upstream_http) = match view.registry.classify(at.orig) {
        Destination::Service(hit) => {
            let host = authority.as_deref().map(host_of).unwrap_or_default();
            let named = std::iter::once((hit.service, hit.port))
                .chain(hit.others.iter().copied())
                .find(|(s, _)| host_matches(&s.host, &host));
            match (named, hit.via) {
                (Some((service, port)), _) => (
                    view.service_targets(service, port, Some(at.orig), &snap.policies.set),
                    view.upstream_http(service, port),
                ),
                // The port is claimed on every address for HTTP (Istio's `0.0.0.0:<port>`
                // listener), but no service there has this host: Istio's `allow_any` route
                // passes it through, or under REGISTRY_ONLY its BlackHoleCluster answers 502.
                (None, Via::AnyAddress) => {
                    if view.registry.outbound_mode() == OutboundMode::RegistryOnly {
                        let why = format!(
                            "outboundTrafficPolicy is REGISTRY_ONLY and no service on port {} \
                             has host {host} (at {})",
                            at.orig.port(),
                            at.orig
                        );
                        let istio = &shared.metrics.istio;
                        let facts = shared.outbound_side(&snap, None).facts(
                            istio,
                            crate::telemetry::peer::http_protocol(req.headers()),
                            istio.cluster_service(BLACKHOLE_CLUSTER),
                            None,
                        );
                        drop(snap);
                        outcome = outcome.with_telemetry(facts);
                        outcome.log().upstream_cluster = Some(BLACKHOLE_CLUSTER.into());
                        outcome.log().status = Some(502);
                        shared
                            .metrics
                            .outbound_refused
                            .fetch_add(1, Ordering::Relaxed);
                        outcome.fail(Failure::NoRoute { why: why.clone() });
                        return answer(StatusCode::BAD_GATEWAY, &why);
                    }
                    shared
                        .metrics
                        .outbound_passthrough
                        .fetch_add(1, Ordering::Relaxed);
                    let passthrough = Target {
                        addr: TargetAddr::Socket(at.orig),
                        addr_text: at.texts.1.clone(),
                        tls: TargetTls::Plaintext,
                        load: None,
                        cluster: PASSTHROUGH_CLUSTER.into(),
                        hbone: false,
                        service: Default::default(),
                    };
                    (vec![Arc::new(passthrough)], UpstreamHttp::Http1)
                }
                (None, _) => (
                    view.service_targets(hit.service, hit.port, Some(at.orig), &snap.policies.set),
                    view.upstream_http(hit.service, hit.port),
                ),
            }
        }
        // Reloaded into something that is no longer an HTTP service: this request still goes
        // where the connection was classified to go, the next connection follows the change.
        _ => (Vec::new(), UpstreamHttp::Http1),
    };
    // To a sidecar, our metadata goes with the request (Istio's exchange), so its metrics
    // name us; never to a server outside the mesh.
    if targets
        .first()
        .is_some_and(|t| matches!(t.tls, TargetTls::Mesh(_)))
    {
        crate::telemetry::exchange::add(req.headers_mut(), &snap.telemetry.peer_metadata);
    }
    let protocol = crate::telemetry::peer::http_protocol(req.headers());
    let request_bytes = crate::telemetry::peer::declared_size(req.headers());
    drop(snap);
    if let Some(t) = targets.first() {
        outcome.log().upstream_cluster = Some(t.cluster.clone());
    }
    // An upgrade (WebSocket...) goes over HTTP/1.1 end to end, HTTP/2 having no Upgrade: the
    // app's connection and the upstream's are joined once the upstream switches.
    let upgrade = crate::upgrade::requested(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    crate::forward::strip_hop_by_hop(req.headers_mut(), true);
    if let Some(p) = &upgrade {
        crate::upgrade::restore(req.headers_mut(), p);
    }
    let sent = send(
        shared,
        &view,
        &targets,
        req,
        Ask {
            authority: authority.as_deref(),
            upgrade: upgrade.is_some(),
            upstream_http,
            client: at.source,
        },
    )
    .await;
    match sent {
        Ok((target, peer, mut resp)) => {
            let metadata = crate::telemetry::exchange::take(resp.headers_mut());
            let snap = shared.current();
            let istio = &shared.metrics.istio;
            let mut facts = shared.outbound_side(&snap, peer.as_deref()).facts(
                istio,
                protocol,
                target.service(istio),
                metadata.as_ref().map(|v| v.as_bytes()),
            );
            drop(snap);
            facts.request_bytes = request_bytes;
            facts.response_bytes = crate::telemetry::peer::declared_size(resp.headers());
            facts.grpc_status = crate::telemetry::peer::grpc_status(resp.headers());
            outcome = outcome.with_telemetry(facts);
            outcome.log().destination_address = target.addr_text.clone();
            outcome.log().tls = !matches!(target.tls, TargetTls::Plaintext);
            outcome.log().destination_principal = peer;
            outcome.log().status = Some(resp.status().as_u16());
            outcome.finish();
            let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let joined = match (switched, client_upgrade) {
                (true, Some(client)) => {
                    let upstream = hyper::upgrade::on(&mut resp);
                    let idle = shared.current().config.timeouts.tcp_idle();
                    crate::upgrade::tunnel(client, upstream, idle, drain);
                    true
                }
                (true, None) => {
                    return answer(
                        StatusCode::BAD_GATEWAY,
                        "upstream switched protocols unasked",
                    )
                }
                _ => false,
            };
            let mut resp = resp.map(Body::Relayed);
            *resp.version_mut() = crate::forward::DOWNSTREAM_VERSION;
            crate::forward::strip_hop_by_hop(resp.headers_mut(), false);
            if let (true, Some(p)) = (joined, &upgrade) {
                crate::upgrade::restore(resp.headers_mut(), p);
            }
            resp
        }
        Err(why) => {
            let snap = shared.current();
            let istio = &shared.metrics.istio;
            let service = targets
                .first()
                .map_or_else(|| istio.unknown_service(), |t| t.service(istio));
            let mut facts = shared
                .outbound_side(&snap, None)
                .facts(istio, protocol, service, None);
            drop(snap);
            facts.request_bytes = request_bytes;
            outcome = outcome.with_telemetry(facts);
            outcome.log().status = Some(503);
            outcome.fail(Failure::Upstream { why: why.clone() });
            answer(StatusCode::SERVICE_UNAVAILABLE, &why)
        }
    }
}

/// What `send` needs to know of a request besides the request.
struct Ask<'a> {
    /// The host the app asked for.
    authority: Option<&'a str>,
    /// An upgrade (WebSocket...): HTTP/1.1 on a connection of its own.
    upgrade: bool,
    upstream_http: UpstreamHttp,
    /// The app's address, which an HBONE CONNECT names.
    client: SocketAddr,
}

/// Sends `req` to the first target that takes it; the identity the server proved, if mTLS.
async fn send<'t>(
    shared: &Shared,
    view: &crate::mesh::Mesh,
    targets: &'t [Arc<Target>],
    req: Request<Incoming>,
    ask: Ask<'_>,
) -> Result<(&'t Target, crate::meshconn::Proved, Response<Incoming>), String> {
    let Ask {
        authority,
        upgrade,
        upstream_http,
        client,
    } = ask;
    let timeouts = shared.current().config.timeouts.clone();
    // To a sidecar: HTTP/2 or HTTP/1.1 as the port's settings say (an upgrade is HTTP/1.1).
    let h2 = !upgrade && upstream_http.http2(req.version() == http::Version::HTTP_2);
    // The last failure, in words; written only when a target fails (not for every request).
    let mut last = None;
    // The body can be sent once: connections are made (and failures skipped) before it is.
    let mut req = Some(req);
    for target in targets
        .iter()
        .map(|t| &**t)
        .take(crate::upstream::MAX_ATTEMPTS)
    {
        let addr = match target.addr.resolve().await {
            Ok(a) => a,
            Err(why) => {
                last = Some(why);
                continue;
            }
        };
        // An HBONE endpoint's outer connection is HTTP/2 whatever the request inside it is.
        let hbone = target.hbone;
        let carry = if h2 || hbone {
            crate::mesh::Carry::Http2
        } else {
            crate::mesh::Carry::Http1
        };
        // Mesh mTLS over a pooled connection needs the client config only to open one, so it
        // is not looked up (identities cloned, hashed, a lock taken) for every request; nor is
        // it for an upgrade to an HBONE endpoint, whose stream `meshconn::tunnel_to` opens on
        // the pooled HBONE connection.
        let pooled = (!upgrade || hbone) && matches!(target.tls, TargetTls::Mesh(_));
        let security = if pooled {
            None
        } else {
            match view.security(&target.tls, carry) {
                Ok(s) => Some(s),
                Err(why) => {
                    last = Some(format!("{}: {why}", target.cluster));
                    continue;
                }
            }
        };
        let Some(mut r) = req.take() else { break };
        // In flight on this endpoint until its answer's head is back (LEAST_REQUEST).
        let _load = target.load.as_ref().map(crate::mesh::Load::begin);
        if !(pooled && h2) {
            // HTTP/1.1 (to a server without a sidecar, or to one whose port keeps it): an
            // HTTP/2 request from the app carried its host in :authority, which becomes `Host`.
            *r.version_mut() = http::Version::HTTP_11;
            if !r.headers().contains_key(http::header::HOST) {
                if let Some(v) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
                    r.headers_mut().insert(http::header::HOST, v);
                }
            }
        }
        match security {
            // An upgrade to an HBONE endpoint: a CONNECT stream of its own becomes the tunnel.
            None if upgrade => {
                let opened =
                    Box::pin(crate::meshconn::tunnel_to(shared, view, target, client)).await;
                let (tunnel, peer) = match opened {
                    Ok(t) => t,
                    Err(why) => {
                        last = Some(why);
                        req = Some(r);
                        continue;
                    }
                };
                return Box::pin(dedicated(shared, target, addr, TokioIo::new(tunnel), r))
                    .await
                    .map(|(t, _, resp)| (t, peer.map(Into::into), resp));
            }
            // A connection of its own: an upgrade (its connection becomes the tunnel) or TLS
            // the sidecar originates.
            Some(security) if upgrade || matches!(security, Security::Tls { .. }) => {
                let stream = match Box::pin(crate::upstream::connect(
                    addr,
                    &security,
                    timeouts.connect(),
                    timeouts.handshake(),
                ))
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        e.count(&shared.metrics);
                        last = Some(e.sentence());
                        req = Some(r);
                        continue;
                    }
                };
                let peer = crate::upstream::verified_peer(&shared.current().chains, &stream);
                return Box::pin(dedicated(shared, target, addr, TokioIo::new(stream), r))
                    .await
                    .map(|(t, _, resp)| (t, peer.map(Into::into), resp));
            }
            // Plaintext over the worker's pool (mesh mTLS without an upgrade is `pooled`).
            Some(_) => {
                *r.uri_mut() = absolute(addr, r.uri());
                let r = r.map(crate::reqbody::AppBody::from);
                let sent = shared.workers.app_request(false, false, r).await;
                return sent.map(|resp| (target, None, resp)).map_err(|e| {
                    shared
                        .metrics
                        .upstream_errors
                        .fetch_add(1, Ordering::Relaxed);
                    reset_sentence("connection failure", format!("{addr}: {}", error_chain(&e)))
                });
            }
            None => {}
        }
        if h2 {
            // HTTP/2 carries the host in :authority.
            let host = authority.unwrap_or_default();
            *r.uri_mut() = with_authority(host, r.uri()).unwrap_or_else(|| r.uri().clone());
            r.headers_mut().remove(http::header::HOST);
            *r.version_mut() = http::Version::HTTP_2;
        } else {
            *r.uri_mut() = origin_form(r.uri());
        }
        let security = || {
            view.security(&target.tls, carry)
                .map_err(|why| format!("{}: {why}", target.cluster))
        };
        let ids: &[String] = match &target.tls {
            TargetTls::Mesh(ids) => ids,
            _ => &[],
        };
        let peer = crate::meshconn::Peer {
            addr,
            epoch: view.epoch,
            ids,
            security: &security,
            h2,
            hbone: hbone.then_some(client),
        };
        let sent = crate::meshconn::request(shared, &peer, r).await;
        return match sent {
            Ok((resp, peer)) => Ok((target, peer, resp)),
            Err(crate::meshconn::Failed::Unsent(why, back)) => {
                last = Some(why);
                req = Some(*back);
                continue;
            }
            Err(crate::meshconn::Failed::Sent(why)) => {
                shared
                    .metrics
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                Err(why)
            }
        };
    }
    Err(last.unwrap_or_else(|| crate::upstream::NO_ENDPOINT.to_string()))
}

/// One request over a connection of its own, HTTP/1.1 (upgrades allowed): TLS the sidecar
/// originated (external services, where a connection per request is what Envoy's default
/// HTTP/1 pool converges to under low load), and upgrades, whose connection (or HBONE stream)
/// becomes the tunnel.
async fn dedicated<'t, T>(
    shared: &Shared,
    target: &'t Target,
    addr: SocketAddr,
    io: T,
    mut r: Request<Incoming>,
) -> Result<(&'t Target, Option<String>, Response<Incoming>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |what: String| {
        shared
            .metrics
            .upstream_errors
            .fetch_add(1, Ordering::Relaxed);
        reset_sentence("connection failure", format!("{addr}: {what}"))
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    // Origin form over a connection of its own; `Host` still says what the app asked for.
    *r.uri_mut() = origin_form(r.uri());
    sender
        .send_request(r)
        .await
        .map(|resp| (target, None, resp))
        .map_err(|e| failed(error_chain(&e)))
}

/// The request target a server is sent on a connection of its own: the path and query only;
/// `Host` says what the app asked for.
fn origin_form(uri: &Uri) -> Uri {
    // What an app sends a sidecar nearly always is already origin-form: shared, not parsed
    // again.
    if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
        return uri.clone();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    path.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// `http://<addr><path>`: the worker pool connects to the URI's authority; the `Host` header
/// still carries what the app sent.
fn absolute(addr: SocketAddr, uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{addr}{path}")
        .parse()
        .unwrap_or_else(|_| uri.clone())
}

fn with_authority(authority: &str, uri: &Uri) -> Option<Uri> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{authority}{path}").parse().ok()
}

/// The host of an authority, lower-cased, without its port.
fn host_of(authority: &str) -> std::borrow::Cow<'_, str> {
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    // Copied only when it has an upper-case letter to lower.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        host.to_ascii_lowercase().into()
    } else {
        host.into()
    }
}

/// Whether a request's host names `service` (its host, or a short form of a
/// `<name>.<ns>.svc.<domain>` host, as the app may have written it).
fn host_matches(service: &str, host: &str) -> bool {
    service == host
        || service
            .strip_prefix(host)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// What the app gets when its request could not be delivered (503) or was refused (502).
fn answer(status: StatusCode, why: &str) -> Response<Body> {
    let mut r = crate::response::bytes_response(status, bytes::Bytes::from(format!("{why}\n")));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    if let Ok(v) = HeaderValue::from_str(&why.replace(['\r', '\n'], " ")) {
        r.headers_mut().insert(UPSTREAM_ERROR.clone(), v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_the_service_by_full_or_short_name() {
        let svc = "reviews.bookinfo.svc.cluster.local";
        assert!(host_matches(svc, "reviews.bookinfo.svc.cluster.local"));
        assert!(host_matches(svc, "reviews.bookinfo"));
        assert!(host_matches(svc, "reviews"));
        assert!(!host_matches(svc, "reviews.other"));
        assert!(!host_matches(svc, "review"));
        assert_eq!(host_of("Reviews.Bookinfo:9080"), "reviews.bookinfo");
        assert_eq!(host_of("reviews"), "reviews");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert!(matches!(
            host_of("reviews:9080"),
            std::borrow::Cow::Borrowed("reviews")
        ));
    }

    #[test]
    fn the_upstream_gets_the_origin_form_whatever_form_the_app_used() {
        for (from, want) in [
            ("/a/b?x=1", "/a/b?x=1"),
            ("http://reviews:9080/a/b?x=1", "/a/b?x=1"),
            ("http://reviews:9080", "/"),
        ] {
            let got = origin_form(&from.parse().unwrap());
            assert_eq!(got.to_string(), want, "{from}");
            assert!(
                got.scheme().is_none() && got.authority().is_none(),
                "{from}"
            );
        }
    }
}
