//! What the DNS proxy counts, for the sidecar's metrics to render.
//!
//! Plain atomics rather than a metrics library: this crate does not know how the sidecar
//! exposes metrics, and an increment on the hot path must cost nothing. Every client message
//! lands in exactly one outcome counter besides `queries`; the others (`upstream_failures`,
//! `truncated_retries`, `mismatched`) count events inside a forwarded query.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the listeners and read by whoever renders metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages read from clients (UDP datagrams and TCP frames).
    pub queries: AtomicU64,
    /// Mesh names answered with addresses.
    pub mesh_answers: AtomicU64,
    /// Mesh names with no address of the asked family: NOERROR, no record.
    pub mesh_nodata: AtomicU64,
    /// Queries sent to the upstream resolvers.
    pub forwarded: AtomicU64,
    /// Forwarded queries that every upstream failed: answered SERVFAIL.
    pub servfail: AtomicU64,
    /// Upstream exchanges that failed or timed out (each upstream tried counts once).
    pub upstream_failures: AtomicU64,
    /// Truncated UDP answers from an upstream, asked again over TCP.
    pub truncated_retries: AtomicU64,
    /// Upstream messages ignored because their ID or question did not match what was asked.
    pub mismatched: AtomicU64,
    /// Client messages that are not a readable query: answered FORMERR, or dropped when not
    /// even the header could be read or the message is itself a response.
    pub malformed: AtomicU64,
    /// Queries with an opcode other than QUERY: answered NOTIMP.
    pub not_implemented: AtomicU64,
    /// Queries that would have been forwarded past the in-flight cap: answered SERVFAIL.
    pub refused_in_flight: AtomicU64,
    /// TCP connections closed at once because the connection cap was reached.
    pub refused_connections: AtomicU64,
    /// Forwarded queries waiting on an upstream right now (a gauge).
    pub in_flight: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterValues {
    pub queries: u64,
    pub mesh_answers: u64,
    pub mesh_nodata: u64,
    pub forwarded: u64,
    pub servfail: u64,
    pub upstream_failures: u64,
    pub truncated_retries: u64,
    pub mismatched: u64,
    pub malformed: u64,
    pub not_implemented: u64,
    pub refused_in_flight: u64,
    pub refused_connections: u64,
    pub in_flight: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterValues {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterValues {
            queries: get(&self.queries),
            mesh_answers: get(&self.mesh_answers),
            mesh_nodata: get(&self.mesh_nodata),
            forwarded: get(&self.forwarded),
            servfail: get(&self.servfail),
            upstream_failures: get(&self.upstream_failures),
            truncated_retries: get(&self.truncated_retries),
            mismatched: get(&self.mismatched),
            malformed: get(&self.malformed),
            not_implemented: get(&self.not_implemented),
            refused_in_flight: get(&self.refused_in_flight),
            refused_connections: get(&self.refused_connections),
            in_flight: get(&self.in_flight),
        }
    }
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
