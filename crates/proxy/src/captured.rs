//! The capture's outbound port: every TCP connection the workload opens arrives here
//! (`trustmesh capture install`), and its original destination (SO_ORIGINAL_DST) says where the
//! app meant to go. The registry decides what that is, once per connection:
//!
//! - a service port that carries HTTP: requests are routed by host to the service's endpoints
//!   ([`crate::route`]), each request on its own (to an endpoint that terminates HBONE, inside
//!   a CONNECT stream through its port 15008);
//! - any other service port, or a known workload's own address: the connection is relayed to
//!   an endpoint, mTLS to one with a sidecar (auto mTLS), plaintext to one without, the next
//!   endpoint tried when one cannot be reached; an endpoint labelled
//!   `networking.istio.io/tunnel: http` is reached through an HBONE CONNECT to its port 15008
//!   ([`crate::tunnel`]);
//! - unknown: relayed as it is to the original destination under `ALLOW_ANY`; refused under
//!   `REGISTRY_ONLY`, with a 502 and the reason when the app spoke HTTP, so it is never a bare
//!   reset on an HTTP port.
//!
//! Outbound traffic is the app's own: no policy decides it, so no decision metric; each
//! connection still gets its access-log line, with Istio's cluster name of where it went.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use trustmesh_lifecycle::drain::Watch;
use trustmesh_registry::Destination;

use crate::accesslog::AccessLog;
use crate::clock::Stamp;
use crate::mesh::{Target, BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};
use crate::outcome::{Failure, Outcome};
use crate::state::Shared;
use crate::upstream::MAX_ATTEMPTS;

/// How long a refused connection is read for an HTTP request line, to answer it in words.
const SNIFF: Duration = Duration::from_millis(200);

/// Serves the capture's outbound port until the drain starts.
pub async fn serve(shared: Arc<Shared>, slot: usize, listener: TcpListener, drain: Watch) {
    crate::state::accept_loop(
        shared,
        listener,
        slot,
        "captured outbound",
        drain,
        move |shared, stream, source, drain| async move {
            handle(&shared, stream, source, drain).await
        },
    )
    .await
}

/// What to do with one captured connection.
enum Plan {
    /// HTTP: route each request by its host (see [`crate::route`]).
    Http,
    Relay(Vec<Arc<Target>>),
    Refuse(String),
}

/// The destination before the redirect; `None` for a connection made to the port directly
/// (not redirected), which would otherwise loop back into this listener.
pub fn redirected_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let orig = trustmesh_capture::original_dst(stream).ok()?;
    let local = stream.local_addr().ok()?;
    (orig != local).then_some(orig)
}

async fn handle(shared: &Arc<Shared>, mut app: TcpStream, source: SocketAddr, drain: Watch) {
    shared
        .metrics
        .outbound_connections
        .fetch_add(1, Ordering::Relaxed);
    let _ = app.set_nodelay(true);
    let snap = shared.current();
    let listener_port = app.local_addr().map_or(0, |a| a.port());
    let log = |destination: String| AccessLog {
        time: Stamp::now(),
        direction: "outbound",
        protocol: "tcp",
        listener_port,
        source_address: source.to_string().into(),
        destination_address: destination.into(),
        decision: "allow",
        ..Default::default()
    };
    let Some(orig) = redirected_destination(&app) else {
        let outcome = Outcome::new(&shared.metrics, log(String::new()), Instant::now())
            .without_decision_metric();
        return outcome.fail(Failure::NoRoute {
            why: "a connection made to the capture port itself, not redirected to it; \
                  refused so it cannot loop"
                .into(),
        });
    };
    let view = snap.mesh_view.clone();
    let plan = match view.registry.classify(orig) {
        // Asked before any target is picked: picking one takes the load balancer's turn, and
        // the HTTP path takes its own per request.
        Destination::Service(hit) if hit.port.protocol.is_http() => Plan::Http,
        Destination::Service(hit) => {
            Plan::Relay(view.service_targets(hit.service, hit.port, Some(orig), &snap.policies.set))
        }
        // A known workload, but no service of it has this port: unknown to the mesh, as in
        // Istio (no listener for the port), so REGISTRY_ONLY refuses it.
        Destination::Workload(hit)
            if hit.serves.is_empty()
                && view.registry.outbound_mode()
                    == trustmesh_policy::OutboundMode::RegistryOnly =>
        {
            Plan::Refuse(format!(
                "outboundTrafficPolicy is REGISTRY_ONLY and no service of the workload at {} \
                 has port {}",
                orig.ip(),
                orig.port()
            ))
        }
        Destination::Workload(hit) => {
            if hit.serves.is_empty() {
                // No service has this port: Istio's passthrough, counted as such.
                shared
                    .metrics
                    .outbound_passthrough
                    .fetch_add(1, Ordering::Relaxed);
            }
            Plan::Relay(vec![Arc::new(view.workload_target(
                &hit,
                orig,
                &snap.policies.set,
            ))])
        }
        Destination::Passthrough(_) => {
            shared
                .metrics
                .outbound_passthrough
                .fetch_add(1, Ordering::Relaxed);
            Plan::Relay(vec![Arc::new(Target {
                addr: crate::mesh::TargetAddr::Socket(orig),
                addr_text: orig.to_string().into(),
                tls: crate::mesh::TargetTls::Plaintext,
                load: None,
                cluster: PASSTHROUGH_CLUSTER.into(),
                hbone: false,
                service: Default::default(),
            })])
        }
        Destination::Refused(unknown) => Plan::Refuse(format!(
            "outboundTrafficPolicy is REGISTRY_ONLY and {unknown}"
        )),
    };
    let timeouts = snap.config.timeouts.clone();
    drop(snap);
    match plan {
        Plan::Http => crate::route::serve(shared.clone(), app, source, orig, drain).await,
        Plan::Refuse(why) => {
            shared
                .metrics
                .outbound_refused
                .fetch_add(1, Ordering::Relaxed);
            let mut l = log(orig.to_string());
            l.upstream_cluster = Some(BLACKHOLE_CLUSTER.into());
            let snap = shared.current();
            let facts = crate::outbound::tcp_facts(shared, &snap, None);
            drop(snap);
            let mut outcome =
                Outcome::new(&shared.metrics, l, Instant::now()).without_decision_metric();
            outcome = outcome.with_telemetry(facts);
            if let Some(f) = outcome.telemetry() {
                f.service = shared.metrics.istio.cluster_service(BLACKHOLE_CLUSTER);
            }
            refuse_in_words(&mut app, &why).await;
            outcome.fail(Failure::NoRoute { why });
        }
        Plan::Relay(targets) => {
            let snap = shared.current();
            let mut facts = crate::outbound::tcp_facts(shared, &snap, None);
            drop(snap);
            let istio = &shared.metrics.istio;
            if let Some(t) = targets.first() {
                facts.service = t.service(istio);
            }
            let mut outcome = Outcome::new(&shared.metrics, log(orig.to_string()), Instant::now())
                .without_decision_metric()
                .with_telemetry(facts);
            let connected = connect_first(shared, &view, &targets, &timeouts, source).await;
            let (target, peer) = match connected {
                Ok(found) => found,
                Err(why) => return outcome.fail(Failure::Upstream { why }),
            };
            let principal = match &peer {
                Connected::Direct(p) => crate::upstream::verified_peer(&shared.current().chains, p),
                Connected::Tunnel(_, principal) => principal.clone(),
            };
            if let Some(f) = outcome.telemetry() {
                let snap = shared.current();
                let service = target.service(istio);
                *f = crate::outbound::tcp_facts(shared, &snap, principal.as_deref());
                f.service = service;
            }
            outcome.tcp_opened();
            // The relay counts as one request in flight on its endpoint while it lasts.
            let _load = target.load.as_ref().map(crate::mesh::Load::begin);
            outcome.log().destination_address = target.addr_text.clone();
            outcome.log().upstream_cluster = Some(target.cluster.clone());
            let (idle, stop) = (timeouts.tcp_idle(), drain.immediate());
            let relayed = match peer {
                // Plaintext both sides (a destination outside the mesh): socket to socket.
                Connected::Direct(crate::upstream::Stream::Plain(mut peer)) => {
                    crate::relay::relay_tcp(&mut app, &mut peer, idle, stop).await
                }
                Connected::Direct(mut peer) => {
                    outcome.log().tls = matches!(peer, crate::upstream::Stream::Tls(_));
                    outcome.log().destination_principal = principal.map(Into::into);
                    crate::relay::relay(&mut app, &mut peer, idle, stop).await
                }
                Connected::Tunnel(mut tunnel, _) => {
                    outcome.log().tls = true;
                    outcome.log().destination_principal = principal.map(Into::into);
                    crate::relay::relay_h2(&mut app, &mut tunnel, idle, stop).await
                }
            };
            outcome.relayed(relayed);
            outcome.finish();
        }
    }
}

/// An upstream connection: straight to the endpoint, or through its HBONE port (with the
/// identity the peer proved).
pub enum Connected {
    Direct(crate::upstream::Stream),
    Tunnel(Box<crate::tunnel::Tunnel>, Option<String>),
}

/// Connects to the first of `targets` that answers (at most [`MAX_ATTEMPTS`]); otherwise the
/// last failure, in words. Every failure is counted.
pub async fn connect_first<'t>(
    shared: &Shared,
    view: &crate::mesh::Mesh,
    targets: &'t [Arc<Target>],
    timeouts: &crate::config::Timeouts,
    client: SocketAddr,
) -> Result<(&'t Target, Connected), String> {
    let mut last = crate::upstream::NO_ENDPOINT.to_string();
    for target in targets.iter().map(|t| &**t).take(MAX_ATTEMPTS) {
        if target.hbone {
            match crate::meshconn::tunnel_to(shared, view, target, client).await {
                Ok((tunnel, principal)) => {
                    return Ok((target, Connected::Tunnel(Box::new(tunnel), principal)))
                }
                Err(why) => {
                    last = why;
                    continue;
                }
            }
        }
        let security = match view.security(&target.tls, crate::mesh::Carry::Tcp) {
            Ok(s) => s,
            Err(why) => {
                last = format!("{}: {why}", target.cluster);
                continue;
            }
        };
        let addr = match target.addr.resolve().await {
            Ok(a) => a,
            Err(why) => {
                shared
                    .metrics
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                last = why;
                continue;
            }
        };
        match crate::upstream::connect(addr, &security, timeouts.connect(), timeouts.handshake())
            .await
        {
            Ok(stream) => return Ok((target, Connected::Direct(stream))),
            Err(e) => {
                e.count(&shared.metrics);
                last = e.sentence();
            }
        }
    }
    Err(last)
}

/// Refuses a connection; when the app's first bytes are an HTTP request, it gets a 502 whose
/// body and `x-trustmesh-upstream-error` header say why (as Envoy's BlackHoleCluster answers
/// HTTP with 502).
async fn refuse_in_words(app: &mut TcpStream, why: &str) {
    let mut head = [0u8; 8];
    let n = match tokio::time::timeout(SNIFF, app.peek(&mut head)).await {
        Ok(Ok(n)) => n,
        _ => return,
    };
    if !looks_like_http(&head[..n]) {
        return;
    }
    let body = format!("{why}\n");
    let header = why.replace(['\r', '\n'], " ");
    let response = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         x-trustmesh-upstream-error: {header}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = app.write_all(response.as_bytes()).await;
    let _ = app.shutdown().await;
}

/// An HTTP/1 request line or the HTTP/2 preface.
pub fn looks_like_http(head: &[u8]) -> bool {
    const STARTS: [&[u8]; 10] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"TRACE ",
        b"CONNECT ",
        b"PRI * HTTP/2",
    ];
    !head.is_empty()
        && STARTS
            .iter()
            .any(|s| s.starts_with(head) || head.starts_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines_are_told_from_other_bytes() {
        for yes in [&b"GET / HT"[..], b"POST /a", b"PRI * HT", b"DELETE /"] {
            assert!(looks_like_http(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [&b"\x16\x03\x01\x02\x00"[..], b"SSH-2.0-", b"HELO x", b""] {
            assert!(!looks_like_http(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
