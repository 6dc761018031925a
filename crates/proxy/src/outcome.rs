//! One outcome per request and per connection: its access-log line and its decision metric are
//! written exactly once, whichever way the handler leaves (ztunnel's connection result with a
//! `Drop` is the model).
//!
//! A handler opens an [`Outcome`] as soon as it knows who is talking, fills the log fields as
//! they become known, counts the decision when policy made it ([`Outcome::decide`]), and ends
//! with [`Outcome::fail`] or [`Outcome::finish`]. A handler that is dropped before that (the
//! client went away mid-request, the proxy is shutting down) still writes its line, marked
//! `aborted` when no decision had been made. A [`Failure`] gives the decision label, the HTTP
//! status where there is one, and the sentence a person reads in the log.

use std::borrow::Cow;
use std::time::Instant;

use http::StatusCode;

use crate::accesslog::AccessLog;
use crate::authz::ProxyVerdict;
use crate::metrics::Metrics;
use crate::rbacstats::{Engine, Scope};
use crate::telemetry::{Facts, Protocol, Reporter};

/// Why a request or connection did not get (all the way) through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Refused before any policy ran: a malformed request, a bad `Host`, a path normalization
    /// refuses. `label` names the rule, `why` says it in words.
    BadRequest {
        status: StatusCode,
        label: &'static str,
        why: String,
    },
    /// A token was present and failed RequestAuthentication.
    Unauthenticated { status: StatusCode, why: String },
    /// AuthorizationPolicy refused (a DENY matched, or ALLOW policies apply and none matched);
    /// the log's `reason` already says which.
    Denied,
    /// The CUSTOM (ext_authz) provider refused.
    DeniedByProvider { provider: String, why: String },
    /// The app or the peer could not be reached, or failed (Envoy's `UF`).
    Upstream { why: String },
    /// No service or route for the destination: a `REGISTRY_ONLY` refusal, a connection that
    /// was not redirected (Envoy's `NR`).
    NoRoute { why: String },
}

/// Envoy's response flags (`%RESPONSE_FLAGS%`, the `response_flags` label of Istio's metrics),
/// for the failures whose meaning they share.
pub mod flags {
    /// Upstream connection failure.
    pub const UPSTREAM_FAILURE: &str = "UF";
    /// No route configured (or no matching filter chain for a connection).
    pub const NO_ROUTE: &str = "NR";
    /// Unauthorized by the external authorization service.
    pub const EXT_AUTHZ_DENIED: &str = "UAEX";
    /// The downstream request had an HTTP protocol error.
    pub const DOWNSTREAM_PROTOCOL_ERROR: &str = "DPE";
    /// The downstream connection ended before the answer.
    pub const DOWNSTREAM_TERMINATED: &str = "DC";
}

impl Failure {
    /// The access log's `decision` and the decision metric's label.
    pub fn decision(&self) -> &'static str {
        match self {
            Failure::BadRequest { .. } => "bad_request",
            Failure::Unauthenticated { .. } => "unauthenticated",
            Failure::Denied | Failure::DeniedByProvider { .. } => "deny",
            Failure::Upstream { .. } | Failure::NoRoute { .. } => "error",
        }
    }

    /// Envoy's response flag for it; `None` where Envoy sets none (an RBAC or JWT denial shows
    /// `-` and says why in the response code details).
    pub fn response_flags(&self) -> Option<&'static str> {
        match self {
            Failure::BadRequest { .. } => Some(flags::DOWNSTREAM_PROTOCOL_ERROR),
            Failure::Unauthenticated { .. } | Failure::Denied => None,
            Failure::DeniedByProvider { .. } => Some(flags::EXT_AUTHZ_DENIED),
            Failure::Upstream { .. } => Some(flags::UPSTREAM_FAILURE),
            Failure::NoRoute { .. } => Some(flags::NO_ROUTE),
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` where Envoy's words fit (an RBAC denial's are set
    /// with the rule by [`Outcome::record_rbac`]).
    pub fn details(&self) -> Option<Cow<'static, str>> {
        match self {
            Failure::DeniedByProvider { .. } => Some("ext_authz_denied".into()),
            Failure::Unauthenticated { .. } => Some("jwt_authn_access_denied".into()),
            Failure::NoRoute { .. } => Some("route_not_found".into()),
            Failure::BadRequest { .. } | Failure::Denied | Failure::Upstream { .. } => None,
        }
    }

    /// The status the client is answered with, for failures the proxy answers itself.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Failure::BadRequest { status, .. } | Failure::Unauthenticated { status, .. } => {
                Some(*status)
            }
            Failure::Denied | Failure::DeniedByProvider { .. } => Some(StatusCode::FORBIDDEN),
            Failure::Upstream { .. } | Failure::NoRoute { .. } => None,
        }
    }

    /// What happened, for a person; `None` where policy's own reason is more precise.
    pub fn sentence(&self) -> Option<String> {
        match self {
            Failure::BadRequest { label, why, .. } => Some(format!("{label}: {why}")),
            Failure::Unauthenticated { why, .. } => Some(why.clone()),
            Failure::Denied => None,
            Failure::DeniedByProvider { why, .. } => Some(why.clone()),
            Failure::Upstream { why } | Failure::NoRoute { why } => Some(why.clone()),
        }
    }
}

/// The record of one request or connection; see the module documentation.
pub struct Outcome<'a> {
    metrics: &'a Metrics,
    log: AccessLog,
    started: Instant,
    /// Whether the decision metric has been counted.
    counted: bool,
    written: bool,
    /// The labels of Istio's metrics for it, recorded with the line.
    /// (Inline, not boxed: no allocation per request.)
    telemetry: Option<Facts>,
}

impl<'a> Outcome<'a> {
    pub fn new(metrics: &'a Metrics, log: AccessLog, started: Instant) -> Self {
        Outcome {
            metrics,
            log,
            started,
            counted: false,
            written: false,
            telemetry: None,
        }
    }

    /// Records Istio's metrics for it too, with these labels (see [`crate::telemetry`]).
    pub fn with_telemetry(mut self, facts: Facts) -> Self {
        self.telemetry = Some(facts);
        self
    }

    /// Its telemetry labels, to fill in what becomes known later (the peer, sizes).
    pub fn telemetry(&mut self) -> Option<&mut Facts> {
        self.telemetry.as_mut()
    }

    /// A TCP connection was admitted: counts `istio_tcp_connections_opened_total` now rather
    /// than when it ends.
    pub fn tcp_opened(&mut self) {
        if let Some(f) = self.telemetry.as_mut() {
            self.metrics.istio.tcp_opened(f, None);
        }
    }

    /// For traffic no policy decides (the app's own outbound connections): the line is
    /// written, no decision is counted.
    pub fn without_decision_metric(mut self) -> Self {
        self.counted = true;
        self
    }

    /// The line being built, to fill in fields as they become known.
    pub fn log(&mut self) -> &mut AccessLog {
        &mut self.log
    }

    /// Policy decided: counts the decision metric now (a long TCP connection is counted when
    /// it is admitted, not when it ends). Only the first call counts.
    pub fn decide(&mut self, decision: &'static str) {
        self.log.decision = decision;
        if !self.counted {
            self.counted = true;
            self.metrics
                .decision(decision, self.log.policy.as_deref().unwrap_or(""));
        }
    }

    /// Records what the RBAC filters would: Envoy's RBAC counters for `scope`, the shadow
    /// results and the AUDIT mark in the line, and on a denial Envoy's details naming the
    /// rule (`crate::rbacstats`). Call once per policy check (a CUSTOM verdict counts nothing:
    /// the check after the provider does).
    pub fn record_rbac(&mut self, scope: Scope, v: &ProxyVerdict) {
        let stats = &self.metrics.rbac;
        match v.decision {
            crate::authz::Decision::Allow => stats.enforced(scope, true),
            crate::authz::Decision::Deny => {
                stats.enforced(scope, false);
                let details = format!(
                    "rbac_access_denied_matched_policy[{}]",
                    v.denied_by.as_deref().unwrap_or("none")
                );
                // Envoy's network filter says it in the connection's termination details.
                match scope {
                    Scope::Http(_) => self.log.response_code_details = Some(details.into()),
                    Scope::Tcp => self.log.connection_termination_details = Some(details),
                }
            }
            crate::authz::Decision::Custom(_) => {}
        }
        if let Some(r) = &v.shadow.deny {
            stats.shadow(scope, Engine::Deny, r.allowed);
            self.log.istio_dry_run_deny_shadow_engine_result = Some(r.result());
            self.log.istio_dry_run_deny_shadow_effective_policy_id = r.effective_policy_id.clone();
        }
        if let Some(r) = &v.shadow.allow {
            stats.shadow(scope, Engine::Allow, r.allowed);
            self.log.istio_dry_run_allow_shadow_engine_result = Some(r.result());
            self.log.istio_dry_run_allow_shadow_effective_policy_id = r.effective_policy_id.clone();
        }
        if v.audit_policy.is_some() {
            self.log.access_log_hint = true;
            self.log.audit_policy = v.audit_policy.clone();
        }
    }

    /// Ends with `failure`: decides (if policy had not), states the reason, writes the line.
    /// A TCP relay's byte counts (towards the upstream is `bytes_sent`), or, when the drain
    /// closed it, why.
    pub fn relayed(&mut self, relayed: std::io::Result<(u64, u64)>) {
        match relayed {
            Ok((tx, rx)) => {
                self.log.bytes_sent = Some(tx);
                self.log.bytes_received = Some(rx);
            }
            Err(e) if crate::relay::stopped(&e) => {
                self.log.reason = Some(crate::relay::STOPPED.into());
            }
            Err(_) => {}
        }
    }

    pub fn fail(mut self, failure: Failure) {
        if let Some(why) = failure.sentence() {
            self.log.reason = Some(why);
        }
        self.log.response_flags = self.log.response_flags.or(failure.response_flags());
        if self.log.response_code_details.is_none() {
            self.log.response_code_details = failure.details();
        }
        // A status the caller set (a CUSTOM provider's own denial status) stands.
        if let (None, Some(status)) = (self.log.status, failure.status()) {
            self.log.status = Some(status.as_u16());
        }
        // An error after the decision (the app failed an allowed request) keeps the decision
        // counted, and the line says what went wrong.
        if self.counted {
            self.log.decision = failure.decision();
        } else {
            self.decide(failure.decision());
        }
        self.write();
    }

    /// Ends normally: the request was answered (its `status` set by the caller) or the
    /// connection closed.
    pub fn finish(mut self) {
        if self.log.status.is_some() && self.log.response_code_details.is_none() {
            self.log.response_code_details = Some("via_upstream".into());
        }
        self.write();
    }

    fn write(&mut self) {
        if self.written {
            return;
        }
        self.written = true;
        if self.log.decision.is_empty() {
            self.log.decision = "aborted";
            if self.log.reason.is_none() {
                self.log.reason = Some(
                    "ended before a decision: the client went away or the proxy shut down".into(),
                );
            }
            self.log.response_flags = self
                .log
                .response_flags
                .or(Some(flags::DOWNSTREAM_TERMINATED));
        }
        let elapsed = self.started.elapsed();
        self.log.duration_ms = elapsed.as_millis() as u64;
        if let Some(mut facts) = self.telemetry.take() {
            record(self.metrics, &mut facts, &self.log, elapsed);
        }
        self.remember_peer();
        std::mem::take(&mut self.log).emit();
    }
}

impl Outcome<'_> {
    /// An inbound request or connection policy let through: its peer is one a mesh change
    /// must keep serving (`crate::peers`).
    fn remember_peer(&self) {
        let l = &self.log;
        if l.direction != "inbound" || !(l.decision == "allow" || l.decision == "error") {
            return;
        }
        let Some(port) = l
            .destination_address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
        else {
            return;
        };
        let http = match (&l.method, &l.path) {
            (Some(m), Some(p)) => {
                Some((m.as_ref(), p.as_str(), l.authority.as_deref().unwrap_or("")))
            }
            _ => None,
        };
        let now = crate::clock::unix_now();
        self.metrics
            .peers
            .record(l.source_principal.as_deref(), port, http, now);
    }
}

/// Istio's metrics (and the inbound sources) for one ended request or connection.
fn record(metrics: &Metrics, f: &mut Facts, log: &AccessLog, elapsed: std::time::Duration) {
    let istio = &metrics.istio;
    if let Some((port, source)) = &f.inbound {
        istio.readiness.record(*port, f.security, source);
    }
    if f.protocol == Protocol::Tcp {
        let (out, inn) = (log.bytes_sent.unwrap_or(0), log.bytes_received.unwrap_or(0));
        // `bytes_sent` is towards the upstream: the client on inbound paths, the peer on
        // outbound ones. Istio counts from the client's side (its downstream byte meter).
        let (sent, received) = match f.reporter {
            Reporter::Destination => (out, inn),
            Reporter::Source => (inn, out),
        };
        istio.tcp_closed(f, log.response_flags, sent, received);
    } else {
        let ms = elapsed.as_secs_f64() * 1000.0;
        istio.request(f, log.status.unwrap_or(0), log.response_flags, ms);
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.written && !self.log.decision.is_empty() && self.log.status.is_none() {
            // Decided, then dropped before an answer: say so rather than leave the line
            // looking like a complete request.
            self.log.reason = Some(format!(
                "{}; the client went away before the answer",
                self.log.reason.as_deref().unwrap_or("decided")
            ));
            self.log.response_flags = Some(flags::DOWNSTREAM_TERMINATED);
        }
        self.write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_a_label_and_a_status_or_sentence() {
        let all = [
            Failure::BadRequest {
                status: StatusCode::BAD_REQUEST,
                label: "path",
                why: "a NUL byte".into(),
            },
            Failure::Unauthenticated {
                status: StatusCode::UNAUTHORIZED,
                why: "Jwt is expired".into(),
            },
            Failure::Denied,
            Failure::DeniedByProvider {
                provider: "opa".into(),
                why: "CUSTOM provider opa denied the request with 403".into(),
            },
            Failure::Upstream {
                why: "connecting to app 127.0.0.1:1: refused".into(),
            },
        ];
        for f in &all {
            assert!(!f.decision().is_empty());
            assert!(f.status().is_some() || f.sentence().is_some(), "{f:?}");
            if let Some(s) = f.sentence() {
                assert!(!s.contains("{ "), "no Debug text for people: {s}");
            }
        }
        assert_eq!(Failure::Denied.status(), Some(StatusCode::FORBIDDEN));
        // Envoy sets no flag for an RBAC or JWT denial; it names the rest.
        let flags: Vec<_> = all.iter().map(Failure::response_flags).collect();
        assert_eq!(flags, [Some("DPE"), None, None, Some("UAEX"), Some("UF")]);
        let no_route = Failure::NoRoute {
            why: "REGISTRY_ONLY".into(),
        };
        assert_eq!(no_route.response_flags(), Some("NR"));
    }

    #[test]
    fn the_decision_is_counted_once_whatever_follows() {
        let m = Metrics::default();
        let mut o = Outcome::new(&m, AccessLog::default(), Instant::now());
        o.decide("allow");
        o.decide("allow");
        o.fail(Failure::Upstream {
            why: "app refused".into(),
        });
        let text = m.render(0);
        assert!(
            text.contains("trustmesh_authz_decisions_total{decision=\"allow\",policy=\"\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("decision=\"error\""), "{text}");

        // A refusal before any decision counts its own label, once.
        let o = Outcome::new(&m, AccessLog::default(), Instant::now());
        o.fail(Failure::Denied);
        let text = m.render(0);
        assert!(
            text.contains("trustmesh_authz_decisions_total{decision=\"deny\",policy=\"\"} 1\n"),
            "{text}"
        );
        // Dropped with no ending and no decision: nothing more is counted.
        drop(Outcome::new(&m, AccessLog::default(), Instant::now()));
        assert_eq!(m.render(0), text);
    }
}
