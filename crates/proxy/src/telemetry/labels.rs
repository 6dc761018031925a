//! The vocabulary of Istio's labels: workloads (and how Istio derives their names from
//! labels), services, reporters, security and protocol values, the histogram buckets, and the
//! pointer-identity wrapper that makes interned values cheap keys. A leaf: every other part of
//! the telemetry module builds on it.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// What Istio writes for a label it cannot know.
pub const UNKNOWN: &str = "unknown";
/// Istio's canonical revision when no label names one.
pub const LATEST: &str = "latest";

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

/// A poisoned lock still holds good counts.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prometheus label values escape backslash, quote and newline.
pub(super) fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '"', '\n']) {
        return s.into();
    }
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}
