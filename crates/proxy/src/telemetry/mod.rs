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
pub mod peer;
pub mod readiness;
mod render;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What Istio writes for a label it cannot know.
pub const UNKNOWN: &str = "unknown";
/// Istio's canonical revision when no label names one.
pub const LATEST: &str = "latest";
/// Distinct label sets kept per family group (HTTP series, TCP series).
pub const MAX_SERIES: usize = 10_000;
/// Distinct workloads and services remembered for labels.
pub const MAX_INTERNED: usize = 2_000;

/// Envoy's default histogram buckets, which Istio's stats use for durations (ms) and sizes
/// (bytes) alike unless `sidecar.istio.io/statsHistogramBuckets` overrides them.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A workload as Istio's labels name it (`*_workload`, `*_workload_namespace`, `*_app`,
/// `*_version`, `*_canonical_service`, `*_canonical_revision`, `*_cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub app: Arc<str>,
    pub version: Arc<str>,
    pub canonical_service: Arc<str>,
    pub canonical_revision: Arc<str>,
    pub cluster: Arc<str>,
}

impl Workload {
    /// Nothing known: Istio's `unknown` everywhere, `latest` for the revision.
    pub fn unknown() -> Workload {
        let u: Arc<str> = UNKNOWN.into();
        Workload {
            name: u.clone(),
            namespace: u.clone(),
            app: u.clone(),
            version: u.clone(),
            canonical_service: u.clone(),
            canonical_revision: LATEST.into(),
            cluster: u,
        }
    }

    /// A workload from its labels, as Istio derives its names: the canonical service from
    /// `service.istio.io/canonical-name`, `app.kubernetes.io/name`, `app`, else the workload
    /// name; the canonical revision from `service.istio.io/canonical-revision`,
    /// `app.kubernetes.io/version`, `version`, else `latest`. The workload name, when none is
    /// given, is the `app` label, else the service account (see `workload.name` in the docs).
    pub fn from_labels(
        name: Option<&str>,
        namespace: &str,
        service_account: &str,
        labels: &BTreeMap<String, String>,
    ) -> Workload {
        let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).map(String::as_str);
        let name = name
            .filter(|n| !n.is_empty())
            .or(label("app"))
            .unwrap_or(service_account);
        let canonical = label("service.istio.io/canonical-name")
            .or(label("app.kubernetes.io/name"))
            .or(label("app"))
            .unwrap_or(name);
        let revision = label("service.istio.io/canonical-revision")
            .or(label("app.kubernetes.io/version"))
            .or(label("version"))
            .unwrap_or(LATEST);
        Workload {
            name: name.into(),
            namespace: or_unknown(namespace),
            app: or_unknown(label("app").unwrap_or("")),
            version: or_unknown(label("version").unwrap_or("")),
            canonical_service: canonical.into(),
            canonical_revision: revision.into(),
            cluster: UNKNOWN.into(),
        }
    }
}

fn or_unknown(s: &str) -> Arc<str> {
    if s.is_empty() {
        UNKNOWN.into()
    } else {
        s.into()
    }
}

/// The service a request was for: `destination_service` (its host) and
/// `destination_service_name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    pub host: Arc<str>,
    pub name: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reporter {
    /// The client's sidecar (outbound paths).
    Source,
    /// The server's sidecar (inbound paths).
    Destination,
}

/// `connection_security_policy`: what the destination's sidecar saw; the source reporter
/// writes `unknown`, as Istio's does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Security {
    MutualTls,
    None,
    Unknown,
}

impl Security {
    pub fn label(self) -> &'static str {
        match self {
            Security::MutualTls => "mutual_tls",
            Security::None => "none",
            Security::Unknown => UNKNOWN,
        }
    }
}

/// `request_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Grpc,
    Tcp,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

/// An interned value: equal values share one allocation, so the pointer is the identity and
/// hashing it is one word.
pub struct Interned<T: ?Sized>(pub Arc<T>);

impl<T: ?Sized> Clone for Interned<T> {
    fn clone(&self) -> Self {
        Interned(self.0.clone())
    }
}
impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for Interned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl<T: ?Sized> PartialEq for Interned<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl<T: ?Sized> Eq for Interned<T> {}
impl<T: ?Sized> Hash for Interned<T> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (Arc::as_ptr(&self.0) as *const u8 as usize).hash(h)
    }
}

/// What a request or connection is labelled with, besides its result; built by the listener.
#[derive(Debug, Clone)]
pub struct Facts {
    pub reporter: Reporter,
    /// The other side: the source on inbound paths, the destination on outbound ones.
    pub peer: Interned<Workload>,
    /// The peer's SPIFFE ID when it proved one (mTLS), else `unknown`.
    pub peer_principal: Interned<str>,
    /// Our own principal when the connection was mTLS, else `unknown`.
    pub own_principal: Interned<str>,
    pub service: Interned<Service>,
    pub security: Security,
    pub protocol: Protocol,
    /// Inbound: the app port, and who the readiness family says the source is.
    pub inbound: Option<(u16, Arc<str>)>,
    /// gRPC: `grpc-status` of the response when it came in its headers.
    pub grpc_status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Set once `istio_tcp_connections_opened_total` has counted the connection, with the
    /// response flags it was counted under.
    pub opened: Option<Option<&'static str>>,
}

/// The key of one HTTP or TCP series: everything but the reporter's own workload, which is
/// the same for the whole process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    reporter: Reporter,
    peer: Interned<Workload>,
    peer_principal: Interned<str>,
    own_principal: Interned<str>,
    service: Interned<Service>,
    security: Security,
    protocol: Protocol,
    code: u16,
    grpc: Option<u16>,
    flags: &'static str,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        // Cumulative at render time; here each value lands in its first bucket.
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Default)]
struct HttpSeries {
    requests: u64,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

#[derive(Debug, Clone, Default)]
struct TcpSeries {
    opened: u64,
    closed: u64,
    sent: u64,
    received: u64,
}

/// Bounded interning tables: the same text gives the same `Arc`.
#[derive(Default)]
struct Tables {
    workloads: HashMap<Workload, Arc<Workload>>,
    strings: HashMap<Arc<str>, Arc<str>>,
    /// host → name → service, so a request's `Host` is looked up as the `&str` it is.
    services: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Service>>>,
    service_count: usize,
    /// Metadata-exchange values already decoded.
    metadata: HashMap<Box<[u8]>, Arc<Workload>>,
}

/// The families and the tables behind them.
pub struct Istio {
    own: Mutex<Arc<Workload>>,
    unknown: Interned<Workload>,
    unknown_str: Interned<str>,
    unknown_service: Interned<Service>,
    tables: Mutex<Tables>,
    http: Mutex<HashMap<Key, HttpSeries>>,
    tcp: Mutex<HashMap<Key, TcpSeries>>,
    pub readiness: readiness::Sources,
    /// Samples dropped or labels degraded to `unknown` because a cap was reached.
    pub overflow: AtomicU64,
}

impl Default for Istio {
    fn default() -> Self {
        let unknown = Arc::new(Workload::unknown());
        let u: Arc<str> = UNKNOWN.into();
        let service = Arc::new(Service {
            host: u.clone(),
            name: u.clone(),
        });
        Istio {
            own: Mutex::new(unknown.clone()),
            unknown: Interned(unknown),
            unknown_str: Interned(u),
            unknown_service: Interned(service),
            tables: Mutex::default(),
            http: Mutex::default(),
            tcp: Mutex::default(),
            readiness: readiness::Sources::default(),
            overflow: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Istio {
    /// Sets this sidecar's own workload (at start and on each reload).
    pub fn set_own(&self, own: Workload) {
        *lock(&self.own) = Arc::new(own);
    }

    pub fn own(&self) -> Arc<Workload> {
        lock(&self.own).clone()
    }

    pub fn unknown_workload(&self) -> Interned<Workload> {
        self.unknown.clone()
    }

    pub fn unknown_str(&self) -> Interned<str> {
        self.unknown_str.clone()
    }

    pub fn unknown_service(&self) -> Interned<Service> {
        self.unknown_service.clone()
    }

    fn overflowed(&self) {
        self.overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// The shared copy of `w`; `unknown` once [`MAX_INTERNED`] workloads are known.
    pub fn workload(&self, w: Workload) -> Interned<Workload> {
        let mut t = lock(&self.tables);
        if let Some(a) = t.workloads.get(&w) {
            return Interned(a.clone());
        }
        if t.workloads.len() >= MAX_INTERNED {
            drop(t);
            self.overflowed();
            return self.unknown.clone();
        }
        let a = Arc::new(w.clone());
        t.workloads.insert(w, a.clone());
        Interned(a)
    }

    /// The shared copy of `s` (a principal); `unknown` when empty or past the cap.
    pub fn string(&self, s: &str) -> Interned<str> {
        if s.is_empty() {
            return self.unknown_str.clone();
        }
        let mut t = lock(&self.tables);
        if let Some(a) = t.strings.get(s) {
            return Interned(a.clone());
        }
        if t.strings.len() >= MAX_INTERNED {
            drop(t);
            self.overflowed();
            return self.unknown_str.clone();
        }
        let a: Arc<str> = s.into();
        t.strings.insert(a.clone(), a.clone());
        Interned(a)
    }

    /// The shared service `host` named `name`; `unknown` when `host` is empty or past the cap.
    /// Looked up by `&str` without allocating once known.
    pub fn service(&self, host: &str, name: &str) -> Interned<Service> {
        if host.is_empty() {
            return self.unknown_service.clone();
        }
        let mut t = lock(&self.tables);
        if let Some(a) = t.services.get(host).and_then(|by| by.get(name)) {
            return Interned(a.clone());
        }
        if t.service_count >= MAX_INTERNED {
            drop(t);
            self.overflowed();
            return self.unknown_service.clone();
        }
        t.service_count += 1;
        let a = Arc::new(Service {
            host: host.into(),
            name: name.into(),
        });
        t.services
            .entry(a.host.clone())
            .or_default()
            .insert(a.name.clone(), a.clone());
        Interned(a)
    }

    /// `destination_service` and `destination_service_name` of what went to Istio's cluster
    /// `cluster`: the service host of `outbound|<port>|<subset>|<host>` (a ServiceEntry's
    /// service is named by its host in Istio); the passthrough and black-hole clusters name
    /// the cluster and know no host.
    pub fn cluster_service(&self, cluster: &str) -> Interned<Service> {
        match cluster
            .strip_prefix("outbound|")
            .and_then(|c| c.splitn(3, '|').nth(2))
        {
            Some(host) => self.service(host, host),
            None => self.service(UNKNOWN, cluster),
        }
    }

    fn cached_metadata(&self, value: &[u8]) -> Option<Interned<Workload>> {
        lock(&self.tables)
            .metadata
            .get(value)
            .map(|w| Interned(w.clone()))
    }

    fn cache_metadata(&self, value: &[u8], w: &Interned<Workload>) {
        let mut t = lock(&self.tables);
        if t.metadata.len() < MAX_INTERNED {
            t.metadata.insert(value.into(), w.0.clone());
        }
    }

    fn key(f: &Facts, code: u16, flags: Option<&'static str>) -> Key {
        Key {
            reporter: f.reporter,
            peer: f.peer.clone(),
            peer_principal: f.peer_principal.clone(),
            own_principal: f.own_principal.clone(),
            service: f.service.clone(),
            security: f.security,
            protocol: f.protocol,
            code,
            grpc: f.grpc_status,
            flags: flags.unwrap_or("-"),
        }
    }

    /// One HTTP or gRPC request answered `code` (0 when nothing was answered) after
    /// `duration_ms`.
    pub fn request(&self, f: &Facts, code: u16, flags: Option<&'static str>, duration_ms: f64) {
        let key = Istio::key(f, code, flags);
        let mut m = lock(&self.http);
        let full = m.len() >= MAX_SERIES;
        let s = match m.get_mut(&key) {
            Some(s) => s,
            None if full => {
                drop(m);
                return self.overflowed();
            }
            None => m.entry(key).or_default(),
        };
        s.requests += 1;
        s.duration.observe(duration_ms);
        s.request_bytes.observe(f.request_bytes as f64);
        s.response_bytes.observe(f.response_bytes as f64);
    }

    /// A TCP connection admitted: `istio_tcp_connections_opened_total`. Its labels are fixed
    /// now, as Istio fixes them when the connection opens (the close is counted in the same
    /// series, whatever went wrong later).
    pub fn tcp_opened(&self, f: &mut Facts, flags: Option<&'static str>) {
        if f.opened.is_some() {
            return;
        }
        f.opened = Some(flags);
        self.tcp(f, flags, None);
    }

    /// A TCP connection ended: `closed` and its byte counts (`sent` towards the client,
    /// `received` from it, as Istio's downstream byte meter); `opened` first if it never was
    /// (a connection refused at once).
    pub fn tcp_closed(&self, f: &mut Facts, flags: Option<&'static str>, sent: u64, received: u64) {
        self.tcp_opened(f, flags);
        let at_open = f.opened.flatten();
        self.tcp(f, at_open, Some((sent, received)));
    }

    fn tcp(&self, f: &Facts, flags: Option<&'static str>, closed: Option<(u64, u64)>) {
        let key = Istio::key(f, 0, flags);
        let mut m = lock(&self.tcp);
        let full = m.len() >= MAX_SERIES;
        let s = match m.get_mut(&key) {
            Some(s) => s,
            None if full => {
                drop(m);
                return self.overflowed();
            }
            None => m.entry(key).or_default(),
        };
        match closed {
            None => s.opened += 1,
            Some((sent, received)) => {
                s.closed += 1;
                s.sent += sent;
                s.received += received;
            }
        }
    }
}
