//! Istio's standard metrics, so an Istio user's dashboards and alerts work on trustmesh
//! sidecars unchanged: `istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes` (HTTP and gRPC) and the four
//! `istio_tcp_*` counters, with the label set Istio's stats filter (istio/proxy
//! `istio_stats`) writes, rendered after trustmesh's own families on `/metrics`.
//!
//! Recorded in one place: the [`crate::outcome::Outcome`] of a request or connection carries
//! its [`Facts`] and records them when its line is written (a TCP connection's
//! `opened` when it is admitted). `reporter` is `destination` on the inbound paths and
//! `source` on the outbound ones, as in Istio.
//!
//! Cost per request: the listener builds [`Facts`] from values interned once per connection
//! (workloads, services: `Arc`s compared and hashed by pointer), so recording is one hash of
//! a small key and one map lookup under a short lock, with no label string built; label text
//! is only written when `/metrics` is scraped.
//!
//! Bounds: label values come partly from what peers send (the `Host` header, metadata
//! exchange), so every table is capped ([`MAX_SERIES`], [`MAX_INTERNED`]); beyond the cap a
//! value becomes `unknown` or the sample is dropped, and `trustmesh_istio_metrics_overflow_total`
//! counts it. Memory cannot grow without bound however many hosts an attacker invents.
//!
//! [`readiness`] keeps trustmesh's own per-port family of inbound sources by security, which
//! `trustmesh mtls-readiness` reads (Istio's metrics have no port label).

pub mod exchange;
pub mod labels;
pub mod peer;
pub mod readiness;
mod render;
pub mod store;
#[cfg(test)]
mod tests;

pub use labels::{
    Interned, Protocol, Reporter, Security, Service, Workload, BUCKETS, LATEST, UNKNOWN,
};
pub use store::{Facts, Istio, MAX_INTERNED, MAX_SERIES};
