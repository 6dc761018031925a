//! Who arrives on each inbound port, and how: `trustmesh_inbound_sources_total{port,
//! connection_security_policy, source}` beside Istio's families. Istio's metrics have no port
//! label, and PeerAuthentication is set per port, so an operator moving a port from PERMISSIVE
//! to STRICT needs to know which sources still reach *that port* in plaintext
//! (`trustmesh mtls-readiness` reads this family).
//!
//! `source` is the peer's SPIFFE ID under mTLS; in plaintext the workload the registry has at
//! the source address (`workload <name>.<namespace>`, when exactly one), else `address <ip>`
//! (no port: each connection has its own). The metadata exchange is not used here: it is per
//! request and a plaintext client can claim anything in it. Bounded like the rest: past [`MAX_SOURCES`] the sample is counted
//! as overflow instead.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::labels::{escape, lock, Security, Workload};
use crate::fastmap::FastMap;

/// Distinct (port, security, source) triples kept.
pub const MAX_SOURCES: usize = 2_000;

/// (app port, security, source).
type Seen = (u16, Security, Arc<str>);

#[derive(Default)]
pub struct Sources {
    seen: Mutex<FastMap<Seen, u64>>,
    pub overflow: AtomicU64,
}

impl Sources {
    /// One request or connection on `port`.
    pub fn record(&self, port: u16, security: Security, source: &Arc<str>) {
        let mut m = lock(&self.seen);
        let key = (port, security, source.clone());
        if let Some(n) = m.get_mut(&key) {
            *n += 1;
        } else if m.len() >= MAX_SOURCES {
            drop(m);
            self.overflow.fetch_add(1, Ordering::Relaxed);
        } else {
            m.insert(key, 1);
        }
    }

    pub(super) fn render(&self, out: &mut String, own: &Workload) {
        let mut rows: Vec<_> = lock(&self.seen)
            .iter()
            .map(|((p, s, src), n)| (*p, *s, src.clone(), *n))
            .collect();
        rows.sort();
        let _ = writeln!(
            out,
            "# HELP trustmesh_inbound_sources_total Inbound requests and connections by the app port they reached, whether they were mTLS, and their source (SPIFFE ID, else workload, else address).\n# TYPE trustmesh_inbound_sources_total counter"
        );
        for (port, security, source, n) in rows {
            let _ = writeln!(
                out,
                "trustmesh_inbound_sources_total{{destination_workload=\"{}\",destination_workload_namespace=\"{}\",port=\"{port}\",connection_security_policy=\"{}\",source=\"{}\"}} {n}",
                escape(&own.name),
                escape(&own.namespace),
                security.label(),
                escape(&source)
            );
        }
    }
}
