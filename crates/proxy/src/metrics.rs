//! Counters exposed on the admin `/metrics` endpoint in Prometheus text format.
//!
//! Plain atomics rather than a metrics library: the set is small and fixed, and the hot path
//! (one increment per connection/request) must never block on a lock. Only the per-policy
//! decision table takes a mutex, and only for a map lookup.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Access log records lost (stdout stalled, or writing failed); counted by the access log.
pub static ACCESS_LOG_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Why a connection was closed before it carried any traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    /// Plaintext on a STRICT port, TLS on a DISABLE port.
    ModeMismatch,
    /// TLS handshake failed (bad cert, untrusted CA, garbage bytes that looked like TLS).
    TlsHandshake,
    /// No first byte / no completed handshake within the handshake timeout.
    HandshakeTimeout,
    /// HTTP framing error, oversized headers, header read timeout.
    HttpProtocol,
    /// L4 policy denied the connection.
    Denied,
    /// `maxConnections` reached.
    ConnectionLimit,
    /// An HBONE request that is not a CONNECT to this workload (`400`).
    HboneRefused,
}

impl RejectReason {
    fn label(self) -> &'static str {
        match self {
            RejectReason::ModeMismatch => "mtls_mode_mismatch",
            RejectReason::TlsHandshake => "tls_handshake_error",
            RejectReason::HandshakeTimeout => "handshake_timeout",
            RejectReason::HttpProtocol => "http_protocol_error",
            RejectReason::Denied => "policy_denied",
            RejectReason::ConnectionLimit => "connection_limit",
            RejectReason::HboneRefused => "hbone_refused",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub inbound_connections: AtomicU64,
    pub outbound_connections: AtomicU64,
    pub active_connections: AtomicI64,
    pub requests: AtomicU64,
    pub tls_handshake_errors: AtomicU64,
    /// Inbound mTLS handshakes that resumed a session (a ticket, no signatures or chain
    /// validation), beside all that succeeded: how much resumption between sidecars saves.
    pub tls_handshakes: AtomicU64,
    pub tls_resumed: AtomicU64,
    pub outbound_tls_errors: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// Captured outbound connections refused: an unknown destination under `REGISTRY_ONLY`.
    pub outbound_refused: AtomicU64,
    /// Captured outbound connections to an unknown destination, passed through (`ALLOW_ANY`).
    pub outbound_passthrough: AtomicU64,
    /// The DNS proxy's counters, once it runs (transparent mode).
    pub dns: std::sync::OnceLock<std::sync::Arc<trustmesh_dns::Counters>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// With `controlPlane:`: whether a stream to it is up, and the pushes applied and refused.
    pub xds_connected: AtomicI64,
    pub xds_applied: AtomicU64,
    pub xds_rejected: AtomicU64,
    /// Seconds until our certificate expires (negative once expired), set at each reload.
    pub cert_expiry_unix: AtomicI64,
    /// The peers recently served, for `/peers` and `trustmesh migrate plan`.
    pub peers: crate::peers::RecentPeers,
    rejected: Mutex<BTreeMap<RejectReason, u64>>,
    /// decision → policy → count. Nested so the per-request update looks keys up by `&str` and
    /// allocates only the first time a (decision, policy) pair is seen.
    decisions: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Istio's standard metrics and trustmesh's per-port inbound sources.
    pub istio: crate::telemetry::Istio,
    /// Envoy's RBAC filter counters (`/stats`; counted by the outcome).
    pub rbac: crate::rbacstats::RbacStats,
    /// (kind, fail-closed outcome) → invalid policy resources in the snapshot in force.
    invalid_policies: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Metrics {
    pub fn reject(&self, reason: RejectReason) {
        if reason == RejectReason::TlsHandshake || reason == RejectReason::HandshakeTimeout {
            self.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut m = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(reason).or_default() += 1;
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        let m = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&reason).copied().unwrap_or(0)
    }

    /// Records an authorization decision; `policy` is `ns.name` or empty for "no policy".
    pub fn decision(&self, decision: &str, policy: &str) {
        let mut m = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        let by_policy = match m.get_mut(decision) {
            Some(b) => b,
            None => m.entry(decision.to_string()).or_default(),
        };
        match by_policy.get_mut(policy) {
            Some(n) => *n += 1,
            None => {
                by_policy.insert(policy.to_string(), 1);
            }
        }
    }

    /// Replaces the invalid-policy gauge with the counts of the snapshot just installed.
    pub fn set_invalid_policies(&self, counts: BTreeMap<(String, &'static str), u64>) {
        *self
            .invalid_policies
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = counts;
    }

    /// The DNS proxy's families: queries by how they were answered, and its upstreams' failures.
    fn render_dns(out: &mut String, v: &trustmesh_dns::CounterValues) {
        let answered = [
            ("mesh", v.mesh_answers),
            ("mesh_nodata", v.mesh_nodata),
            ("forwarded", v.forwarded),
            ("servfail", v.servfail),
            ("malformed", v.malformed),
            ("not_implemented", v.not_implemented),
            ("refused_in_flight", v.refused_in_flight),
        ]
        .map(|(how, n)| (format!("answer=\"{how}\""), n as i64));
        family(
        out,
        "trustmesh_dns_queries_total",
        "DNS queries the sidecar's DNS proxy received, by how they were answered (mesh names from the registry, the rest forwarded).",
        "counter",
        answered,
    );
        family(
            out,
            "trustmesh_dns_upstream_failures_total",
            "Exchanges with the upstream resolvers that failed or timed out.",
            "counter",
            [(String::new(), v.upstream_failures as i64)],
        );
    }

    /// The Prometheus text exposition: each family's HELP and TYPE, then its samples.
    pub fn render(&self, now_unix: i64) -> String {
        let mut out = String::new();
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
        let plain: [(&str, &str, i64); 17] = [
            ("trustmesh_inbound_connections_total", "Inbound connections accepted.", ld(&self.inbound_connections)),
            ("trustmesh_outbound_connections_total", "Outbound connections accepted from the local app.", ld(&self.outbound_connections)),
            ("trustmesh_http_requests_total", "HTTP requests received on inbound listeners.", ld(&self.requests)),
            ("trustmesh_tls_handshake_errors_total", "Inbound TLS handshakes that failed or timed out.", ld(&self.tls_handshake_errors)),
            ("trustmesh_tls_handshakes_total", "Inbound TLS handshakes that succeeded, full or resumed.", ld(&self.tls_handshakes)),
            ("trustmesh_tls_resumed_total", "Inbound TLS handshakes that resumed an earlier session (its peer's chain checked again as of now).", ld(&self.tls_resumed)),
            ("trustmesh_outbound_tls_errors_total", "Outbound mTLS handshakes to peers that failed (including peer identity mismatch).", ld(&self.outbound_tls_errors)),
            ("trustmesh_upstream_errors_total", "Failures connecting to or talking to the local app or a peer.", ld(&self.upstream_errors)),
            ("trustmesh_outbound_registry_only_refused_total", "Captured outbound connections to a destination the registry does not know, refused because outboundTrafficPolicy is REGISTRY_ONLY.", ld(&self.outbound_refused)),
            ("trustmesh_outbound_passthrough_total", "Captured outbound connections to a destination the registry does not know, passed through as they are (outboundTrafficPolicy ALLOW_ANY).", ld(&self.outbound_passthrough)),
            ("trustmesh_config_reloads_total", "Configuration reloads applied.", ld(&self.reloads_ok)),
            ("trustmesh_config_reload_failures_total", "Configuration changes refused as invalid (last good config kept); invalid policy resources do not refuse a reload.", ld(&self.reloads_failed)),
            ("trustmesh_access_log_dropped_total", "Access log records dropped because stdout could not keep up.", ld(&ACCESS_LOG_DROPPED)),
            ("trustmesh_active_connections", "Connections currently open.", self.active_connections.load(Ordering::Relaxed)),
            ("trustmesh_xds_connected", "1 while a stream to the control plane is up (controlPlane: only).", self.xds_connected.load(Ordering::Relaxed)),
            ("trustmesh_xds_pushes_applied_total", "Pushes from the control plane applied.", ld(&self.xds_applied)),
            ("trustmesh_xds_pushes_rejected_total", "Pushes from the control plane refused (NACKed with the reason; the last good configuration kept).", ld(&self.xds_rejected)),
        ];
        for (name, help, v) in plain {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            family(&mut out, name, help, kind, [(String::new(), v)]);
        }
        let exp = self.cert_expiry_unix.load(Ordering::Relaxed);
        if exp != 0 {
            let left = [(String::new(), exp - now_unix)];
            family(
                &mut out,
                "trustmesh_cert_expiry_seconds",
                "Seconds until the workload certificate expires.",
                "gauge",
                left,
            );
        }
        if let Some(dns) = self.dns.get() {
            Self::render_dns(&mut out, &dns.snapshot());
        }
        let rejected = lock(&self.rejected)
            .iter()
            .map(|(r, v)| (format!("reason=\"{}\"", r.label()), *v as i64))
            .collect::<Vec<_>>();
        family(
            &mut out,
            "trustmesh_connections_rejected_total",
            "Connections closed before carrying traffic, by reason.",
            "counter",
            rejected,
        );
        let decisions = lock(&self.decisions)
            .iter()
            .flat_map(|(d, by)| {
                by.iter().map(move |(p, v)| {
                    (
                        format!("decision=\"{}\",policy=\"{}\"", escape(d), escape(p)),
                        *v as i64,
                    )
                })
            })
            .collect::<Vec<_>>();
        family(
            &mut out,
            "trustmesh_authz_decisions_total",
            "Authorization decisions by decision and deciding policy.",
            "counter",
            decisions,
        );
        let invalid = lock(&self.invalid_policies)
            .iter()
            .map(|((kind, outcome), v)| {
                (
                    format!("kind=\"{}\",outcome=\"{outcome}\"", escape(kind)),
                    *v as i64,
                )
            })
            .collect::<Vec<_>>();
        family(
            &mut out,
            "trustmesh_policy_invalid_resources",
            "Invalid policy resources in force, enforced fail-closed, by kind and outcome.",
            "gauge",
            invalid,
        );
        self.istio.render(&mut out);
        out
    }
}

/// A poisoned lock still holds good counts (a panic elsewhere does not corrupt a map insert).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One metric family: HELP and TYPE, then every sample (labels as `k="v",...`, or none).
fn family(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    samples: impl IntoIterator<Item = (String, i64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// Prometheus label values escape backslash, quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample follows its own family's TYPE line (the exposition format groups them; the
    /// decision samples once came after another family's header).
    #[test]
    fn samples_stay_in_their_family() {
        let m = Metrics::default();
        m.decision("deny", "ns.p");
        m.reject(RejectReason::Denied);
        m.set_invalid_policies(BTreeMap::from([(
            ("AuthorizationPolicy".to_string(), "deny_all"),
            1,
        )]));
        m.cert_expiry_unix.store(100, Ordering::Relaxed);
        let text = m.render(40);
        let mut family = "";
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, family, "{line} outside its family in:\n{text}");
                samples += 1;
            }
        }
        assert!(samples >= 14, "{text}");
        assert!(
            text.contains("trustmesh_cert_expiry_seconds 60\n"),
            "{text}"
        );
    }

    #[test]
    fn renders_counters_and_labels() {
        let m = Metrics::default();
        m.requests.fetch_add(3, Ordering::Relaxed);
        m.decision("deny", "foo.deny-\"x\"");
        m.decision("deny", "foo.deny-\"x\"");
        m.reject(RejectReason::TlsHandshake);
        m.cert_expiry_unix.store(1_000, Ordering::Relaxed);
        m.set_invalid_policies(BTreeMap::from([(
            ("AuthorizationPolicy".to_string(), "denies_all"),
            2,
        )]));
        let t = m.render(400);
        assert!(t.contains(
            "trustmesh_policy_invalid_resources{kind=\"AuthorizationPolicy\",outcome=\"denies_all\"} 2"
        ), "{t}");
        assert!(t.contains("trustmesh_http_requests_total 3"), "{t}");
        assert!(t.contains(
            "trustmesh_authz_decisions_total{decision=\"deny\",policy=\"foo.deny-\\\"x\\\"\"} 2"
        ));
        assert!(t.contains("trustmesh_tls_handshake_errors_total 1"));
        assert!(t.contains("reason=\"tls_handshake_error\"} 1"));
        assert!(t.contains("trustmesh_cert_expiry_seconds 600"));
    }
}
