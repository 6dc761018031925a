//! The L4 path: one authorization decision per connection, then a byte pipe to the local app.
//!
//! Only connection-level attributes exist here (peer identity, addresses, ports), so HTTP-only
//! policy fields are handled by the policy crate's TCP semantics (a rule that needs HTTP
//! attributes cannot match). A deny closes the connection without a byte written, as Envoy's
//! network RBAC filter does. A CUSTOM policy asks its `envoyExtAuthzGrpc` provider once per
//! connection, before connecting to the app ([`crate::custom::check_connection`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use trustmesh_lifecycle::drain::Watch;

use crate::accesslog::AccessLog;
use crate::conn::ConnCtx;
use crate::metrics::RejectReason;
use crate::outcome::{Failure, Outcome};
use crate::state::Shared;
use crate::telemetry::Protocol;

/// Decides, then relays; a relay keeps going through a graceful drain and is closed when the
/// drain turns immediate (its deadline passed), as Envoy's TCP proxy is at the end of its drain.
pub async fn serve<S>(shared: &Arc<Shared>, ctx: ConnCtx, mut stream: S, drain: Watch)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Ok(admitted) = admit(shared, &ctx).await {
        let stop = drain.immediate();
        admitted
            .relay(async |app, idle| crate::relay::relay(&mut stream, app, idle, stop).await)
            .await;
    }
}

/// [`serve`] for a plaintext connection (a PERMISSIVE or plaintext port), relayed in the
/// kernel ([`crate::splice`]).
pub async fn serve_plain(shared: &Arc<Shared>, ctx: ConnCtx, mut stream: TcpStream, drain: Watch) {
    if let Ok(admitted) = admit(shared, &ctx).await {
        let stop = drain.immediate();
        admitted
            .relay(async |app, idle| crate::relay::relay_tcp(&mut stream, app, idle, stop).await)
            .await;
    }
}

/// A connection policy allowed, with its app connection open: what is left is the relay.
pub struct Admitted<'a> {
    outcome: Outcome<'a>,
    app: TcpStream,
    idle: std::time::Duration,
}

/// Why a connection was not admitted; its outcome is already counted and logged. An HBONE
/// stream tells its peer which in the CONNECT's status (ztunnel's 401 and 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    Denied,
    AppUnreachable,
}

/// The decision for the connection, then the connection to the app: the steps before any
/// byte is relayed, which an HBONE stream takes before it answers its CONNECT.
pub async fn admit<'a>(
    shared: &'a Arc<Shared>,
    ctx: &ConnCtx,
) -> Result<Admitted<'a>, NotAdmitted> {
    let snap = shared.current();
    let mut verdict = snap.policies.check_tcp(ctx);
    if let crate::authz::Decision::Custom(provider) = &verdict.decision {
        // Envoy's network ext_authz filter: one check, before any byte is relayed.
        let provider = provider.clone();
        // Boxed: the check's future is 7 KB and rarely awaited; unboxed it sized every
        // inbound connection's task, HTTP ones included (their path shares `inbound::dispatch`).
        let check = Box::pin(crate::custom::check_connection(&snap, &provider, ctx));
        verdict = match check.await {
            Ok(admitted) => {
                // The provider admitted it: the DENY and ALLOW policies still apply.
                let mut after = snap.policies.check_tcp_after_custom(ctx);
                after.reason = format!("{admitted}; {}", after.reason);
                after.policy = after.policy.or(verdict.policy);
                after
            }
            // Envoy's network ext_authz denial: no RBAC policy matched it.
            Err(why) => crate::authz::ProxyVerdict {
                decision: crate::authz::Decision::Deny,
                reason: why,
                denied_by: None,
                ..verdict
            },
        };
    }
    let mut outcome = Outcome::new(
        &shared.metrics,
        AccessLog {
            policy: verdict.policy.clone(),
            reason: Some(verdict.reason.clone()),
            ..AccessLog::inbound_tcp(ctx)
        },
        ctx.started,
    );
    let istio = &shared.metrics.istio;
    let facts =
        shared
            .inbound_side(&snap, ctx)
            .facts(istio, Protocol::Tcp, istio.unknown_service(), None);
    outcome = outcome.with_telemetry(facts);
    outcome.record_rbac(crate::rbacstats::Scope::Tcp, &verdict);
    if !verdict.allowed() {
        shared.metrics.reject(RejectReason::Denied);
        // A TCP refusal answers nothing: the connection is closed.
        outcome.decide(verdict.label());
        outcome.finish();
        return Err(NotAdmitted::Denied);
    }
    outcome.decide(verdict.label());
    outcome.tcp_opened();
    let connect = snap.config.timeouts.connect();
    let idle = snap.config.timeouts.tcp_idle();
    drop(snap);
    let connected = tokio::time::timeout(
        connect,
        crate::upstream::tcp_connect(ctx.target, ctx.app_source),
    )
    .await;
    let app = match connected {
        Ok(Ok(s)) => s,
        failed => {
            shared
                .metrics
                .upstream_errors
                .fetch_add(1, Ordering::Relaxed);
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            outcome.fail(Failure::Upstream {
                why: format!("connecting to app {}: {why}", ctx.target),
            });
            return Err(NotAdmitted::AppUnreachable);
        }
    };
    let _ = app.set_nodelay(true);
    Ok(Admitted { outcome, app, idle })
}

impl Admitted<'_> {
    /// Relays the peer and the app with `relay`, given the app's socket and the idle limit and
    /// returning the bytes (from the peer, to the peer), which ends when both sides close, at
    /// the idle limit, or when the drain turns immediate ([`crate::relay`]); the outcome is
    /// logged with the byte counts.
    pub async fn relay(
        self,
        relay: impl AsyncFnOnce(&mut TcpStream, std::time::Duration) -> std::io::Result<(u64, u64)>,
    ) {
        let Admitted {
            outcome,
            mut app,
            idle,
        } = self;
        let relayed = relay(&mut app, idle).await;
        finish(outcome, idle, relayed);
    }
}

fn finish(
    mut outcome: Outcome<'_>,
    idle: std::time::Duration,
    relayed: std::io::Result<(u64, u64)>,
) {
    match relayed {
        Ok((rx, tx)) => {
            outcome.log().bytes_received = Some(rx);
            outcome.log().bytes_sent = Some(tx);
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            outcome.log().reason = Some(format!("closed after {idle:?} idle"));
        }
        Err(e) if crate::relay::stopped(&e) => {
            outcome.log().reason = Some(crate::relay::STOPPED.into());
        }
        Err(_) => {}
    }
    outcome.finish();
}
