//! The series and the interning tables behind Istio's families: the [`Facts`] a listener
//! builds, the key they hash to, and recording (one map lookup under a short lock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::labels::{
    lock, Interned, Protocol, Reporter, Security, Service, Workload, BUCKETS, UNKNOWN,
};
use super::readiness;
use crate::fastmap::FastMap;

/// Distinct label sets kept per family group (HTTP series, TCP series).
pub const MAX_SERIES: usize = 10_000;
/// Distinct workloads and services remembered for labels.
pub const MAX_INTERNED: usize = 2_000;

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
pub(super) struct Key {
    pub(super) reporter: Reporter,
    pub(super) peer: Interned<Workload>,
    pub(super) peer_principal: Interned<str>,
    pub(super) own_principal: Interned<str>,
    pub(super) service: Interned<Service>,
    pub(super) security: Security,
    pub(super) protocol: Protocol,
    pub(super) code: u16,
    pub(super) grpc: Option<u16>,
    pub(super) flags: &'static str,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Histogram {
    pub(super) counts: [u64; BUCKETS.len()],
    pub(super) sum: f64,
    pub(super) count: u64,
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
pub(super) struct HttpSeries {
    pub(super) requests: u64,
    pub(super) duration: Histogram,
    pub(super) request_bytes: Histogram,
    pub(super) response_bytes: Histogram,
}

#[derive(Debug, Clone, Default)]
pub(super) struct TcpSeries {
    pub(super) opened: u64,
    pub(super) closed: u64,
    pub(super) sent: u64,
    pub(super) received: u64,
}

/// Bounded interning tables: the same text gives the same `Arc`.
#[derive(Default)]
pub(super) struct Tables {
    pub(super) workloads: HashMap<Workload, Arc<Workload>>,
    pub(super) strings: HashMap<Arc<str>, Arc<str>>,
    /// host → name → service, so a request's `Host` is looked up as the `&str` it is.
    pub(super) services: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Service>>>,
    pub(super) service_count: usize,
    /// Metadata-exchange values already decoded.
    pub(super) metadata: HashMap<Box<[u8]>, Arc<Workload>>,
}

/// The families and the tables behind them.
pub struct Istio {
    pub(super) own: Mutex<Arc<Workload>>,
    pub(super) unknown: Interned<Workload>,
    pub(super) unknown_str: Interned<str>,
    pub(super) unknown_service: Interned<Service>,
    pub(super) tables: Mutex<Tables>,
    pub(super) http: Mutex<FastMap<Key, HttpSeries>>,
    pub(super) tcp: Mutex<FastMap<Key, TcpSeries>>,
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

    pub(super) fn cached_metadata(&self, value: &[u8]) -> Option<Interned<Workload>> {
        lock(&self.tables)
            .metadata
            .get(value)
            .map(|w| Interned(w.clone()))
    }

    pub(super) fn cache_metadata(&self, value: &[u8], w: &Interned<Workload>) {
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
        let Some(s) = series(&mut m, key) else {
            drop(m);
            return self.overflowed();
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
        let Some(s) = series(&mut m, key) else {
            drop(m);
            return self.overflowed();
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
/// The series of `key`, made if there is room for one more ([`MAX_SERIES`]); `None` when full.
fn series<S: Default>(m: &mut FastMap<Key, S>, key: Key) -> Option<&mut S> {
    let full = m.len() >= MAX_SERIES;
    match m.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(_) if full => None,
        std::collections::hash_map::Entry::Vacant(e) => Some(e.insert(S::default())),
    }
}
