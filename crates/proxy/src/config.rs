//! The proxy's YAML configuration file: what it is, how it is parsed, and how it is checked.
//!
//! Read through `trustmesh_config`, so a bad file is reported as `<file>: <field.path>: <what
//! is wrong>` — an operator should never have to guess which of forty lines is at fault. Keys
//! are camelCase; durations are Go's spelling (`reloadPoll: 1s`, `timeouts.handshake: 10s`).
//! The integer `…Ms` keys of earlier releases (`reloadPollMs`, `timeouts.handshakeMs`, ...)
//! still load, each reported once as deprecated with the key and value that replace it; giving
//! both spellings of one setting is an error. Paths inside the file are resolved relative to
//! the file's own directory, so a config directory can be moved as a unit.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trustmesh_config::load::{self, DOCUMENT};
use trustmesh_config::{Deprecations, Duration};

pub use timeouts::{
    Timeouts, DEFAULT_CONNECT, DEFAULT_HANDSHAKE, DEFAULT_HTTP_IDLE, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REQUEST_HEADERS, DEFAULT_TCP_IDLE, DEFAULT_TERMINATION_DRAIN,
};
pub use trustmesh_config::ConfigError;

mod capture;
mod control_plane;
mod hbone;
mod timeouts;

pub use capture::{
    CaptureConfig, DEFAULT_DNS_PORT, DEFAULT_HBONE_MAX_STREAMS, DEFAULT_HBONE_PORT,
    DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT,
};
pub use control_plane::{ControlPlaneConfig, DEFAULT_INITIAL_FETCH_TIMEOUT, DEFAULT_SERVER_NAME};
pub use hbone::{HboneConfig, HboneListener};

use timeouts::{millis, RawTimeouts};

/// `reloadPoll`: how often watched files are checked for changes.
pub const DEFAULT_RELOAD_POLL: Duration = Duration::from_secs(1);
/// `reloadPoll` bounds: often enough to matter, rarely enough to cost nothing.
const RELOAD_POLL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60);
/// `maxConnections`.
pub const DEFAULT_MAX_CONNECTIONS: i64 = 16_384;

/// The file as written. Each `…_ms` field is the deprecated integer spelling of the duration
/// field before it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    workload: WorkloadConfig,
    certs: CertFiles,
    #[serde(default)]
    trust_bundles: Vec<String>,
    #[serde(default)]
    mesh: serde_yaml::Value,
    #[serde(default)]
    policy_dir: Option<PathBuf>,
    #[serde(default)]
    control_plane: Option<ControlPlaneConfig>,
    #[serde(default)]
    inbound: Vec<InboundListener>,
    #[serde(default)]
    outbound: Vec<OutboundListener>,
    #[serde(default)]
    capture: Option<CaptureConfig>,
    #[serde(default)]
    hbone: Option<HboneConfig>,
    #[serde(default)]
    admin: Option<AdminConfig>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default = "default_max_connections")]
    max_connections: i64,
    reload_poll: Option<Duration>,
    reload_poll_ms: Option<u64>,
    #[serde(default)]
    concurrency: Option<usize>,
}

/// The whole configuration, checked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// The workload this sidecar fronts; selectors in policies match against it.
    pub workload: WorkloadConfig,
    /// Our own X.509-SVID.
    pub certs: CertFiles,
    /// Trust bundle sources: `path` or `trust.domain=path`; a path may be a file or directory.
    pub trust_bundles: Vec<String>,
    /// Mesh config: inline mapping, or a string naming a YAML file.
    pub mesh: serde_yaml::Value,
    /// Directory (or single file) of Istio security policies.
    pub policy_dir: Option<PathBuf>,
    /// The control plane that serves the policies, registry, mesh config and bundles instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneConfig>,
    pub inbound: Vec<InboundListener>,
    pub outbound: Vec<OutboundListener>,
    /// Transparent mode: captured connections, routed by the service registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureConfig>,
    /// Explicit mode's HBONE listener (`config/hbone.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hbone: Option<HboneConfig>,
    pub admin: Option<AdminConfig>,
    pub timeouts: Timeouts,
    /// Open connections (inbound + outbound) beyond which new ones are closed at once, so a
    /// flood cannot exhaust file descriptors and starve established traffic.
    pub max_connections: i64,
    /// How often watched files are checked for changes.
    pub reload_poll: Duration,
    /// Worker threads carrying connections (Istio's `ProxyConfig.concurrency`): unset or 0 means
    /// one per CPU core available to the process.
    pub concurrency: Option<usize>,
}

impl ProxyConfig {
    /// Listeners sharing `maxConnections`: the inbound ones, the outbound ones, then the
    /// capture's inbound and outbound ports ([`ProxyConfig::capture_slots`]), then the HBONE
    /// listener ([`ProxyConfig::hbone_slot`]).
    pub fn listener_count(&self) -> usize {
        self.inbound.len()
            + self.outbound.len()
            + if self.capture.is_some() { 2 } else { 0 }
            + usize::from(self.hbone_listener().is_some())
    }

    /// The connection-limit slots of the capture's inbound and outbound ports.
    pub fn capture_slots(&self) -> (usize, usize) {
        let base = self.inbound.len() + self.outbound.len();
        (base, base + 1)
    }

    /// The HBONE listener, in either mode (`config/hbone.rs`).
    pub fn hbone_listener(&self) -> Option<HboneListener> {
        hbone::listener(self.capture.as_ref(), self.hbone.as_ref())
    }

    /// The connection-limit slot of the HBONE listener: after every other listener.
    pub fn hbone_slot(&self) -> usize {
        self.listener_count() - 1
    }

    /// Worker threads to start: `concurrency`, or the available cores when unset or 0.
    pub fn worker_threads(&self) -> usize {
        match self.concurrency {
            Some(n) if n > 0 => n,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Istio's workload name (`WORKLOAD_NAME`: the Deployment's name in Kubernetes), for the
    /// `*_workload` labels of Istio's metrics. Unset: the `app` label, else the service
    /// account (`telemetry::Workload::from_labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub namespace: String,
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertFiles {
    /// PKCS#8 / SEC1 / PKCS#1 private key in PEM.
    pub key: PathBuf,
    /// Leaf first, then intermediates (Istio's `cert-chain.pem`).
    pub cert_chain: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Http,
}

/// Traffic arriving from other workloads for our local app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundListener {
    /// Port the proxy listens on.
    pub port: u16,
    #[serde(default = "loopback")]
    pub address: IpAddr,
    /// The local app's port. Policies (`ports`, port-level mTLS) refer to this port, as in Istio,
    /// where they name the workload's container port.
    pub target_port: u16,
    #[serde(default = "loopback")]
    pub target_address: IpAddr,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// For `protocol: http`: how to talk to the app. `http1` (default) or `http2` (cleartext
    /// HTTP/2 with prior knowledge, for gRPC apps).
    #[serde(default)]
    pub app_protocol: AppProtocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    #[default]
    Http1,
    Http2,
}

/// Traffic from our local app to a peer's proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundListener {
    pub port: u16,
    #[serde(default = "loopback")]
    pub address: IpAddr,
    /// The peer proxy's address (`host:port`, an IP address).
    pub peer: SocketAddr,
    /// Exact SPIFFE ID the peer must present.
    #[serde(default)]
    pub peer_identity: Option<String>,
    /// Alternatively: any identity of this trust domain.
    #[serde(default)]
    pub peer_trust_domain: Option<String>,
    /// Originate mTLS (default) or plain TCP (to talk to a DISABLE / non-mesh port).
    #[serde(default = "yes")]
    pub tls: bool,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    pub address: SocketAddr,
}

fn default_max_connections() -> i64 {
    DEFAULT_MAX_CONNECTIONS
}
fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_protocol() -> Protocol {
    Protocol::Tcp
}
fn yes() -> bool {
    true
}

/// One trust bundle source after splitting the optional `TD=` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSource {
    pub trust_domain: Option<String>,
    pub path: PathBuf,
}

/// Splits `td=path` into its parts. A `=` is only a prefix separator when what precedes it
/// contains no path separator, so paths with `=` in a directory name still work.
pub fn parse_bundle_source(s: &str) -> BundleSource {
    if let Some((td, path)) = s.split_once('=') {
        if !td.is_empty() && !td.contains('/') {
            return BundleSource {
                trust_domain: Some(td.to_string()),
                path: PathBuf::from(path),
            };
        }
    }
    BundleSource {
        trust_domain: None,
        path: PathBuf::from(s),
    }
}

/// Where the mesh config comes from.
#[derive(Debug, Clone)]
pub enum MeshSource {
    Inline(serde_yaml::Value),
    File(PathBuf),
}

impl ProxyConfig {
    /// Reads, parses and checks a configuration file; relative paths become relative to it.
    /// Old spellings are logged once, as warnings naming the new ones.
    pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
        let (config, deprecations) = ProxyConfig::read(path)?;
        deprecations.warn();
        Ok(config)
    }

    /// Like [`ProxyConfig::load`], returning the old spellings met instead of logging them.
    pub fn read(path: &Path) -> Result<(ProxyConfig, Deprecations), ConfigError> {
        let text = trustmesh_policy::load::read_bounded(path).map_err(|e| match e {
            trustmesh_policy::ReadError::Io { source, .. } => ConfigError::Read {
                file: path.to_path_buf(),
                source,
            },
            other => ConfigError::field(path, DOCUMENT, other.to_string()),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses YAML text; `path` is only used in messages, relative paths are resolved
    /// against `base`.
    pub fn parse(
        text: &str,
        path: &Path,
        base: &Path,
    ) -> Result<(ProxyConfig, Deprecations), ConfigError> {
        // Bounded before the YAML parser, whose cost is quadratic in bracket nesting.
        trustmesh_policy::shape::check(text)
            .map_err(|message| ConfigError::field(path, DOCUMENT, message))?;
        let raw: Raw = load::from_yaml(text, path)?;
        let mut old = Deprecations::new(path);
        let reload_poll = millis(
            &mut old,
            "",
            "reloadPoll",
            raw.reload_poll,
            "reloadPollMs",
            raw.reload_poll_ms,
            DEFAULT_RELOAD_POLL,
        )?;
        let mut cfg = ProxyConfig {
            workload: raw.workload,
            certs: raw.certs,
            trust_bundles: raw.trust_bundles,
            mesh: raw.mesh,
            policy_dir: raw.policy_dir,
            control_plane: raw.control_plane,
            inbound: raw.inbound,
            outbound: raw.outbound,
            capture: raw.capture,
            hbone: raw.hbone,
            admin: raw.admin,
            timeouts: Timeouts::convert(raw.timeouts, &mut old)?,
            max_connections: raw.max_connections,
            reload_poll,
            concurrency: raw.concurrency,
        };
        cfg.resolve_paths(base);
        cfg.check(path)?;
        Ok((cfg, old))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.certs.key = abs(&self.certs.key);
        self.certs.cert_chain = abs(&self.certs.cert_chain);
        if let Some(d) = &self.policy_dir {
            self.policy_dir = Some(abs(d));
        }
        if let Some(cp) = &mut self.control_plane {
            cp.resolve_paths(abs);
        }
        for b in &mut self.trust_bundles {
            let src = parse_bundle_source(b);
            let p = abs(&src.path);
            *b = match src.trust_domain {
                Some(td) => format!("{td}={}", p.display()),
                None => p.display().to_string(),
            };
        }
        if let serde_yaml::Value::String(s) = &self.mesh {
            self.mesh = serde_yaml::Value::String(abs(Path::new(s)).display().to_string());
        }
    }

    /// Every value checked, the first problem reported with its field path.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |(field, message): (String, String)| ConfigError::field(path, field, message);
        self.check_workload()
            .and_then(|()| self.check_sources())
            .and_then(|()| self.check_listeners())
            .and_then(|()| self.check_limits())
            .map_err(err)
    }

    fn check_workload(&self) -> Result<(), (String, String)> {
        if self.workload.namespace.is_empty() {
            return Err(("workload.namespace".into(), "must not be empty".into()));
        }
        if self.workload.service_account.is_empty() {
            return Err(("workload.serviceAccount".into(), "must not be empty".into()));
        }
        match &self.mesh {
            // From the control plane.
            serde_yaml::Value::Null if self.control_plane.is_some() => Ok(()),
            // Read here, with the rest of the file, so a bad inline field is reported as
            // `mesh.<field>` of this file rather than when the snapshot is built.
            v @ serde_yaml::Value::Mapping(_) => {
                trustmesh_policy::MeshConfig::from_value(v.clone(), Path::new(""), "mesh")
                    .map(drop)
                    .map_err(|e| match e {
                        ConfigError::Field { field, message, .. } => (field, message),
                        other => ("mesh".into(), other.to_string()),
                    })
            }
            serde_yaml::Value::String(_) => Ok(()),
            _ => Err((
                "mesh".into(),
                "must be a mapping (inline mesh config) or a file path".into(),
            )),
        }
    }

    /// Configuration comes from files or from a control plane, never from both: two sources of
    /// policy would leave an operator guessing which one a decision came from.
    fn check_sources(&self) -> Result<(), (String, String)> {
        let Some(cp) = &self.control_plane else {
            return Ok(());
        };
        cp.check()?;
        if self.policy_dir.is_some() {
            return Err((
                "policyDir".into(),
                "policies come from the control plane when controlPlane is set; remove policyDir"
                    .into(),
            ));
        }
        if !self.mesh.is_null() {
            return Err((
                "mesh".into(),
                "the mesh config comes from the control plane when controlPlane is set; remove mesh"
                    .into(),
            ));
        }
        Ok(())
    }

    /// At least one listener, each on its own usable port; TLS outbound listeners know whom
    /// to expect.
    fn check_listeners(&self) -> Result<(), (String, String)> {
        if self.inbound.is_empty() && self.outbound.is_empty() && self.capture.is_none() {
            return Err((
                "inbound".into(),
                "no listeners: configure at least one inbound or outbound listener, or capture"
                    .into(),
            ));
        }
        if let Some(c) = &self.capture {
            c.check()?;
        }
        hbone::check(
            self.capture.as_ref(),
            self.hbone.as_ref(),
            self.inbound
                .iter()
                .map(|l| (l.address, l.port))
                .chain(self.outbound.iter().map(|l| (l.address, l.port))),
            !self.inbound.is_empty(),
        )?;
        let mut seen = BTreeMap::new();
        let listeners = self
            .inbound
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("inbound[{i}].port"), l.address, l.port))
            .chain(
                self.outbound
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (format!("outbound[{i}].port"), l.address, l.port)),
            );
        for (field, addr, port) in listeners {
            if port == 0 {
                return Err((field, "port 0 is not a valid listen port".into()));
            }
            if let Some(prev) = seen.insert((addr, port), field.clone()) {
                return Err((field, format!("{addr}:{port} is already used by {prev}")));
            }
        }
        for (i, l) in self.inbound.iter().enumerate() {
            if l.target_port == 0 {
                return Err((
                    format!("inbound[{i}].targetPort"),
                    "must be a port number 1-65535".into(),
                ));
            }
        }
        for (i, l) in self.outbound.iter().enumerate() {
            if l.tls && l.peer_identity.is_none() && l.peer_trust_domain.is_none() {
                return Err((
                    format!("outbound[{i}]"),
                    "a TLS outbound listener needs peerIdentity or peerTrustDomain".into(),
                ));
            }
            if l.peer_identity.is_some() && l.peer_trust_domain.is_some() {
                return Err((
                    format!("outbound[{i}]"),
                    "set only one of peerIdentity and peerTrustDomain".into(),
                ));
            }
        }
        Ok(())
    }

    /// Capacity, timeouts and the reload interval within what the runtime can honour.
    fn check_limits(&self) -> Result<(), (String, String)> {
        if self.max_connections < 1 {
            return Err(("maxConnections".into(), "must be at least 1".into()));
        }
        if self.concurrency.is_some_and(|n| n > 1024) {
            return Err((
                "concurrency".into(),
                "at most 1024 worker threads (0 or unset: one per CPU core)".into(),
            ));
        }
        let t = &self.timeouts;
        if [t.handshake(), t.header_read(), t.tcp_idle(), t.http_idle()]
            .iter()
            .any(|d| d.is_zero())
        {
            return Err(("timeouts".into(), "timeouts must be greater than 0".into()));
        }
        // hyper refuses (panics on) read buffers below 8 KiB; catch it here with a clear message.
        if !(8192..=1024 * 1024).contains(&self.timeouts.max_header_bytes) {
            return Err((
                "timeouts.maxHeaderBytes".into(),
                "must be between 8192 and 1048576".into(),
            ));
        }
        if !RELOAD_POLL_RANGE.contains(&self.reload_poll) {
            return Err((
                "reloadPoll".into(),
                format!(
                    "{} is not between {} and {}",
                    self.reload_poll,
                    RELOAD_POLL_RANGE.start(),
                    RELOAD_POLL_RANGE.end()
                ),
            ));
        }
        Ok(())
    }

    pub fn mesh_source(&self) -> MeshSource {
        match &self.mesh {
            serde_yaml::Value::String(s) => MeshSource::File(PathBuf::from(s)),
            v => MeshSource::Inline(v.clone()),
        }
    }

    pub fn bundle_sources(&self) -> Vec<BundleSource> {
        self.trust_bundles
            .iter()
            .map(|s| parse_bundle_source(s))
            .collect()
    }

    /// Every file or directory whose change should trigger a reload.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.certs.key.clone(), self.certs.cert_chain.clone()];
        v.extend(self.bundle_sources().into_iter().map(|b| b.path));
        if let Some(d) = &self.policy_dir {
            v.push(d.clone());
        }
        if let MeshSource::File(p) = self.mesh_source() {
            v.push(p);
        }
        if let Some(t) = self.control_plane.as_ref().and_then(|c| c.token.clone()) {
            v.push(t);
        }
        v
    }
}

#[cfg(test)]
mod tests;
