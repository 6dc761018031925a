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

pub use trustmesh_config::ConfigError;

/// `timeouts.handshake`: first byte + TLS handshake.
pub const DEFAULT_HANDSHAKE: Duration = Duration::from_secs(10);
/// `timeouts.requestHeaders`: 60 s, like nginx's `client_header_timeout`. hyper starts this
/// timer whenever it waits for a request's headers, including between requests on a kept-alive
/// connection, so it is also how long an idle keep-alive connection is held: 10 s closed
/// connections that HTTP clients' pools still considered reusable (a request sent as the
/// sidecar closes fails), while slow senders are still bounded.
pub const DEFAULT_REQUEST_HEADERS: Duration = Duration::from_secs(60);
/// `timeouts.connect`: connecting to the local app or a peer.
pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
/// `timeouts.maxHeaderBytes`: the largest request header block accepted.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// `timeouts.terminationDrain`: on SIGTERM/SIGINT, how long open connections may finish
/// (Istio's `terminationDrainDuration` default is also 5 s).
pub const DEFAULT_TERMINATION_DRAIN: Duration = Duration::from_secs(5);
/// `timeouts.tcpIdle`: Envoy's TCP proxy idle timeout default, 1 h.
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(3600);
/// `timeouts.httpIdle`: Envoy's HTTP connection idle timeout default, 1 h.
pub const DEFAULT_HTTP_IDLE: Duration = Duration::from_secs(3600);
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
    mesh: serde_yaml::Value,
    #[serde(default)]
    policy_dir: Option<PathBuf>,
    #[serde(default)]
    inbound: Vec<InboundListener>,
    #[serde(default)]
    outbound: Vec<OutboundListener>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTimeouts {
    handshake: Option<Duration>,
    handshake_ms: Option<u64>,
    request_headers: Option<Duration>,
    header_read_ms: Option<u64>,
    connect: Option<Duration>,
    connect_ms: Option<u64>,
    max_header_bytes: Option<usize>,
    termination_drain: Option<Duration>,
    drain_ms: Option<u64>,
    tcp_idle: Option<Duration>,
    tcp_idle_ms: Option<u64>,
    http_idle: Option<Duration>,
    http_idle_ms: Option<u64>,
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
    pub inbound: Vec<InboundListener>,
    pub outbound: Vec<OutboundListener>,
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

/// Time limits that bound what a misbehaving client can hold on to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// First byte + TLS handshake must complete within this.
    handshake: Duration,
    /// Request headers must arrive within this; defeats slowloris.
    request_headers: Duration,
    /// Connecting to the local app or a peer.
    connect: Duration,
    /// Largest request header block accepted (bytes).
    pub max_header_bytes: usize,
    /// On SIGTERM/SIGINT: how long open connections may finish before the process exits.
    termination_drain: Duration,
    /// TCP relays (inbound tcp listeners, outbound) end after this long with no data.
    tcp_idle: Duration,
    /// An HTTP connection with no request in flight for this long is closed, whatever else it
    /// sends (HTTP/2 PINGs keep no connection open).
    http_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: DEFAULT_HANDSHAKE,
            request_headers: DEFAULT_REQUEST_HEADERS,
            connect: DEFAULT_CONNECT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            termination_drain: DEFAULT_TERMINATION_DRAIN,
            tcp_idle: DEFAULT_TCP_IDLE,
            http_idle: DEFAULT_HTTP_IDLE,
        }
    }
}

impl Timeouts {
    pub fn handshake(&self) -> std::time::Duration {
        self.handshake.get()
    }
    pub fn header_read(&self) -> std::time::Duration {
        self.request_headers.get()
    }
    pub fn connect(&self) -> std::time::Duration {
        self.connect.get()
    }
    pub fn drain(&self) -> std::time::Duration {
        self.termination_drain.get()
    }
    pub fn tcp_idle(&self) -> std::time::Duration {
        self.tcp_idle.get()
    }
    pub fn http_idle(&self) -> std::time::Duration {
        self.http_idle.get()
    }

    /// The typed timeouts from the raw ones, taking each old `…Ms` key where the new one is
    /// absent (recorded as deprecated).
    fn convert(raw: RawTimeouts, old: &mut Deprecations) -> Result<Timeouts, ConfigError> {
        let mut pick = |new_key, new, old_key, ms, default| {
            millis(old, "timeouts", new_key, new, old_key, ms, default)
        };
        Ok(Timeouts {
            handshake: pick(
                "handshake",
                raw.handshake,
                "handshakeMs",
                raw.handshake_ms,
                DEFAULT_HANDSHAKE,
            )?,
            request_headers: pick(
                "requestHeaders",
                raw.request_headers,
                "headerReadMs",
                raw.header_read_ms,
                DEFAULT_REQUEST_HEADERS,
            )?,
            connect: pick(
                "connect",
                raw.connect,
                "connectMs",
                raw.connect_ms,
                DEFAULT_CONNECT,
            )?,
            termination_drain: pick(
                "terminationDrain",
                raw.termination_drain,
                "drainMs",
                raw.drain_ms,
                DEFAULT_TERMINATION_DRAIN,
            )?,
            tcp_idle: pick(
                "tcpIdle",
                raw.tcp_idle,
                "tcpIdleMs",
                raw.tcp_idle_ms,
                DEFAULT_TCP_IDLE,
            )?,
            http_idle: pick(
                "httpIdle",
                raw.http_idle,
                "httpIdleMs",
                raw.http_idle_ms,
                DEFAULT_HTTP_IDLE,
            )?,
            max_header_bytes: raw.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        })
    }
}

/// A duration setting that was an integer of milliseconds under its old key.
fn millis(
    old: &mut Deprecations,
    at: &str,
    new_key: &str,
    new: Option<Duration>,
    old_key: &str,
    ms: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let v = old.converted(at, new_key, new, old_key, ms, |ms| {
        let d = Duration::from_millis(ms);
        Ok((d, Some((ms.to_string(), d.spelling()))))
    })?;
    Ok(v.unwrap_or(default))
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
            inbound: raw.inbound,
            outbound: raw.outbound,
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

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |field: String, message: String| ConfigError::field(path, field, message);
        if self.workload.namespace.is_empty() {
            return Err(err("workload.namespace".into(), "must not be empty".into()));
        }
        if self.workload.service_account.is_empty() {
            return Err(err(
                "workload.serviceAccount".into(),
                "must not be empty".into(),
            ));
        }
        match &self.mesh {
            serde_yaml::Value::Mapping(_) | serde_yaml::Value::String(_) => {}
            _ => {
                return Err(err(
                    "mesh".into(),
                    "must be a mapping (inline mesh config) or a file path".into(),
                ))
            }
        }
        if self.inbound.is_empty() && self.outbound.is_empty() {
            return Err(err(
                "inbound".into(),
                "no listeners: configure at least one inbound or outbound listener".into(),
            ));
        }
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
                return Err(err(field, "port 0 is not a valid listen port".into()));
            }
            if let Some(prev) = seen.insert((addr, port), field.clone()) {
                return Err(err(
                    field,
                    format!("{addr}:{port} is already used by {prev}"),
                ));
            }
        }
        for (i, l) in self.inbound.iter().enumerate() {
            if l.target_port == 0 {
                return Err(err(
                    format!("inbound[{i}].targetPort"),
                    "must be a port number 1-65535".into(),
                ));
            }
        }
        for (i, l) in self.outbound.iter().enumerate() {
            if l.tls && l.peer_identity.is_none() && l.peer_trust_domain.is_none() {
                return Err(err(
                    format!("outbound[{i}]"),
                    "a TLS outbound listener needs peerIdentity or peerTrustDomain".into(),
                ));
            }
            if l.peer_identity.is_some() && l.peer_trust_domain.is_some() {
                return Err(err(
                    format!("outbound[{i}]"),
                    "set only one of peerIdentity and peerTrustDomain".into(),
                ));
            }
        }
        if self.max_connections < 1 {
            return Err(err("maxConnections".into(), "must be at least 1".into()));
        }
        if self.concurrency.is_some_and(|n| n > 1024) {
            return Err(err(
                "concurrency".into(),
                "at most 1024 worker threads (0 or unset: one per CPU core)".into(),
            ));
        }
        if [
            self.timeouts.handshake,
            self.timeouts.request_headers,
            self.timeouts.tcp_idle,
            self.timeouts.http_idle,
        ]
        .iter()
        .any(|d| d.is_zero())
        {
            return Err(err(
                "timeouts".into(),
                "timeouts must be greater than 0".into(),
            ));
        }
        // hyper refuses (panics on) read buffers below 8 KiB; catch it here with a clear message.
        if !(8192..=1024 * 1024).contains(&self.timeouts.max_header_bytes) {
            return Err(err(
                "timeouts.maxHeaderBytes".into(),
                "must be between 8192 and 1048576".into(),
            ));
        }
        if !RELOAD_POLL_RANGE.contains(&self.reload_poll) {
            return Err(err(
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
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
workload: { namespace: foo, serviceAccount: web, labels: { app: web } }
certs: { key: key.pem, certChain: chain.pem }
trustBundles: [ "root.pem", "b.example=/etc/b.pem" ]
mesh: { trustDomain: cluster.local }
policyDir: policies
inbound: [ { port: 15006, targetPort: 8080, protocol: http } ]
outbound: [ { port: 15001, peer: "127.0.0.1:16006", peerTrustDomain: cluster.local } ]
admin: { address: "127.0.0.1:15000" }
"#;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let c = ProxyConfig::parse(GOOD, Path::new("/cfg/p.yaml"), Path::new("/cfg"))
            .unwrap()
            .0;
        assert_eq!(c.certs.key, PathBuf::from("/cfg/key.pem"));
        assert_eq!(c.policy_dir, Some(PathBuf::from("/cfg/policies")));
        let b = c.bundle_sources();
        assert_eq!(b[0].path, PathBuf::from("/cfg/root.pem"));
        assert_eq!(b[1].trust_domain.as_deref(), Some("b.example"));
        assert_eq!(b[1].path, PathBuf::from("/etc/b.pem"));
        assert_eq!(c.inbound[0].protocol, Protocol::Http);
        assert_eq!(c.outbound[0].protocol, Protocol::Tcp);
        assert!(c.outbound[0].tls);
        assert_eq!(c.timeouts.handshake(), DEFAULT_HANDSHAKE.get());
        assert_eq!(c.reload_poll, DEFAULT_RELOAD_POLL);
    }

    #[test]
    fn unknown_field_names_the_field() {
        let bad = GOOD.replace("targetPort: 8080", "targetPort: 8080, prot: http");
        let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.yaml: inbound[0]"), "{e}");
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn bad_port_type_names_the_field() {
        let bad = GOOD.replace("port: 15006", "port: seventy");
        let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(e.contains("inbound[0].port"), "{e}");
    }

    #[test]
    fn duplicate_listener_rejected() {
        let bad = GOOD.replace("port: 15001", "port: 15006");
        let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outbound[0].port") && e.contains("already used"),
            "{e}"
        );
    }

    #[test]
    fn tls_outbound_needs_expected_peer() {
        let bad = GOOD.replace(", peerTrustDomain: cluster.local", "");
        let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outbound[0]") && e.contains("peerIdentity"),
            "{e}"
        );
    }

    #[test]
    fn concurrency_defaults_to_the_cores_and_is_bounded() {
        let parse = |extra: &str| {
            ProxyConfig::parse(
                &format!("{GOOD}{extra}"),
                Path::new("p.yaml"),
                Path::new("."),
            )
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(parse("").unwrap().0.worker_threads(), cores);
        assert_eq!(parse("concurrency: 0\n").unwrap().0.worker_threads(), cores);
        assert_eq!(parse("concurrency: 3\n").unwrap().0.worker_threads(), 3);
        let e = parse("concurrency: 5000\n").unwrap_err().to_string();
        assert!(e.contains("concurrency"), "{e}");
        let e = parse("concurrency: -1\n").unwrap_err().to_string();
        assert!(e.contains("concurrency"), "{e}");
    }

    fn parse_extra(extra: &str) -> Result<(ProxyConfig, Deprecations), String> {
        ProxyConfig::parse(
            &format!("{GOOD}{extra}"),
            Path::new("p.yaml"),
            Path::new("."),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_in_go_spelling() {
        let (c, old) = parse_extra(
            "reloadPoll: 250ms\ntimeouts: { handshake: 1.5s, requestHeaders: 1m, connect: 2s, \
             terminationDrain: 0s, tcpIdle: 1h30m, httpIdle: 90s, maxHeaderBytes: 8192 }\n",
        )
        .unwrap();
        assert!(old.is_empty(), "{:?}", old.messages());
        let ms = std::time::Duration::from_millis;
        assert_eq!(c.reload_poll.get(), ms(250));
        assert_eq!(c.timeouts.handshake(), ms(1500));
        assert_eq!(c.timeouts.header_read(), ms(60_000));
        assert_eq!(c.timeouts.connect(), ms(2000));
        assert_eq!(c.timeouts.drain(), ms(0));
        assert_eq!(c.timeouts.tcp_idle(), ms(5_400_000));
        assert_eq!(c.timeouts.http_idle(), ms(90_000));
        assert_eq!(c.timeouts.max_header_bytes, 8192);
        // The admin config dump shows them the way they are written.
        let dump = serde_json::to_value(&c).unwrap();
        assert_eq!(dump["reloadPoll"], "250ms");
        assert_eq!(dump["timeouts"]["tcpIdle"], "1h30m0s");
    }

    #[test]
    fn old_millisecond_keys_load_with_a_deprecation() {
        let (c, old) = parse_extra(
            "reloadPollMs: 250\ntimeouts: { handshakeMs: 500, headerReadMs: 60000, connectMs: 2000, \
             drainMs: 5000, tcpIdleMs: 400, httpIdleMs: 3600000 }\n",
        )
        .unwrap();
        let ms = std::time::Duration::from_millis;
        assert_eq!(c.reload_poll.get(), ms(250));
        assert_eq!(c.timeouts.handshake(), ms(500));
        assert_eq!(c.timeouts.header_read(), ms(60_000));
        assert_eq!(c.timeouts.connect(), ms(2000));
        assert_eq!(c.timeouts.drain(), ms(5000));
        assert_eq!(c.timeouts.tcp_idle(), ms(400));
        assert_eq!(c.timeouts.http_idle(), ms(3_600_000));
        let want = |old: &str, new: &str| format!("p.yaml: `{old}` is deprecated; write `{new}`");
        assert_eq!(
            old.messages(),
            [
                want("reloadPollMs: 250", "reloadPoll: 250ms"),
                want("timeouts.handshakeMs: 500", "timeouts.handshake: 500ms"),
                want(
                    "timeouts.headerReadMs: 60000",
                    "timeouts.requestHeaders: 1m"
                ),
                want("timeouts.connectMs: 2000", "timeouts.connect: 2s"),
                want("timeouts.drainMs: 5000", "timeouts.terminationDrain: 5s"),
                want("timeouts.tcpIdleMs: 400", "timeouts.tcpIdle: 400ms"),
                want("timeouts.httpIdleMs: 3600000", "timeouts.httpIdle: 1h"),
            ]
        );
    }

    #[test]
    fn both_spellings_of_a_timeout_are_an_error() {
        let e = parse_extra("timeouts: { handshake: 1s, handshakeMs: 1000 }\n").unwrap_err();
        assert_eq!(
            e,
            "p.yaml: timeouts.handshake: `handshakeMs` is the deprecated spelling of \
             `handshake`; give only `handshake`"
        );
        let e = parse_extra("reloadPoll: 1s\nreloadPollMs: 1000\n").unwrap_err();
        assert!(e.starts_with("p.yaml: reloadPoll: `reloadPollMs`"), "{e}");
    }

    #[test]
    fn bad_duration_names_file_and_field_path() {
        let e = parse_extra("timeouts: { tcpIdle: 10 }\n").unwrap_err();
        assert!(
            e.starts_with("p.yaml: timeouts.tcpIdle: invalid duration \"10\": missing unit"),
            "{e}"
        );
        let e = parse_extra("reloadPoll: -1s\n").unwrap_err();
        assert!(
            e.starts_with("p.yaml: reloadPoll: invalid duration \"-1s\""),
            "{e}"
        );
        let e = parse_extra("reloadPoll: 10ms\n").unwrap_err();
        assert_eq!(e, "p.yaml: reloadPoll: 10ms is not between 100ms and 1m0s");
        let e = parse_extra("reloadPollMs: 60001\n").unwrap_err();
        assert!(
            e.starts_with("p.yaml: reloadPoll: 1m0.001s is not between"),
            "{e}"
        );
        let e = parse_extra("timeouts: { httpIdle: 0s }\n").unwrap_err();
        assert!(e.contains("greater than 0"), "{e}");
    }

    #[test]
    fn bundle_prefix_only_without_slash() {
        let s = parse_bundle_source("/a=b/c.pem");
        assert_eq!(s.trust_domain, None);
        assert_eq!(s.path, PathBuf::from("/a=b/c.pem"));
    }
}
