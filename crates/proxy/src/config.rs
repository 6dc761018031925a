//! The proxy's YAML configuration file: what it is, how it is parsed, and how it is checked.
//!
//! Parsing goes through `serde_path_to_error` so a bad file is reported as
//! `<file>: <field.path>: <what is wrong>` — an operator should never have to guess which of
//! forty lines is at fault. Paths inside the file are resolved relative to the file's own
//! directory, so a config directory can be moved as a unit.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors loading the configuration file. Each names the file and, where possible, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// The workload this sidecar fronts; selectors in policies match against it.
    pub workload: WorkloadConfig,
    /// Our own X.509-SVID.
    pub certs: CertFiles,
    /// Trust bundle sources: `path` or `trust.domain=path`; a path may be a file or directory.
    #[serde(default)]
    pub trust_bundles: Vec<String>,
    /// Mesh config: inline mapping, or a string naming a YAML file.
    pub mesh: serde_yaml::Value,
    /// Directory (or single file) of Istio security policies.
    #[serde(default)]
    pub policy_dir: Option<PathBuf>,
    #[serde(default)]
    pub inbound: Vec<InboundListener>,
    #[serde(default)]
    pub outbound: Vec<OutboundListener>,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Open connections (inbound + outbound) beyond which new ones are closed at once, so a
    /// flood cannot exhaust file descriptors and starve established traffic.
    #[serde(default = "default_max_connections")]
    pub max_connections: i64,
    /// How often watched files are checked for changes, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub reload_poll_ms: u64,
    /// Worker threads carrying connections (Istio's `ProxyConfig.concurrency`): unset or 0 means
    /// one per CPU core available to the process.
    #[serde(default)]
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

fn default_poll_ms() -> u64 {
    1000
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// First byte + TLS handshake must complete within this (ms).
    #[serde(default = "default_handshake_ms")]
    pub handshake_ms: u64,
    /// Request headers must arrive within this (ms); defeats slowloris.
    #[serde(default = "default_header_ms")]
    pub header_read_ms: u64,
    /// Connecting to the local app or a peer (ms).
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// Largest request header block accepted (bytes).
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// On SIGTERM/SIGINT: how long open connections may finish before the process exits (ms).
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// TCP relays (inbound tcp listeners, outbound) end after this long with no data (ms).
    #[serde(default = "default_tcp_idle_ms")]
    pub tcp_idle_ms: u64,
    /// An HTTP connection with no request in flight for this long is closed (ms), whatever
    /// else it sends (HTTP/2 PINGs keep no connection open). Envoy's default idle timeout: 1 h.
    #[serde(default = "default_http_idle_ms")]
    pub http_idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake_ms: default_handshake_ms(),
            header_read_ms: default_header_ms(),
            connect_ms: default_connect_ms(),
            max_header_bytes: default_max_header(),
            drain_ms: default_drain_ms(),
            tcp_idle_ms: default_tcp_idle_ms(),
            http_idle_ms: default_http_idle_ms(),
        }
    }
}

impl Timeouts {
    pub fn handshake(&self) -> Duration {
        Duration::from_millis(self.handshake_ms)
    }
    pub fn header_read(&self) -> Duration {
        Duration::from_millis(self.header_read_ms)
    }
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn tcp_idle(&self) -> Duration {
        Duration::from_millis(self.tcp_idle_ms)
    }
    pub fn http_idle(&self) -> Duration {
        Duration::from_millis(self.http_idle_ms)
    }
}

fn default_http_idle_ms() -> u64 {
    3_600_000
}

fn default_handshake_ms() -> u64 {
    10_000
}
/// 60 s, like nginx's `client_header_timeout`. hyper starts this timer whenever it waits for a
/// request's headers, including between requests on a kept-alive connection, so it is also how
/// long an idle keep-alive connection is held: 10 s closed connections that HTTP clients' pools
/// still considered reusable (a request sent as the sidecar closes fails), while slow senders
/// are still bounded.
fn default_header_ms() -> u64 {
    60_000
}
fn default_connect_ms() -> u64 {
    5_000
}
fn default_tcp_idle_ms() -> u64 {
    3_600_000
}
fn default_max_connections() -> i64 {
    16_384
}
fn default_drain_ms() -> u64 {
    5_000
}
fn default_max_header() -> usize {
    64 * 1024
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
    pub fn load(path: &Path) -> Result<ProxyConfig, ConfigError> {
        let text = trustmesh_policy::load::read_bounded(path).map_err(|e| match e {
            trustmesh_policy::ReadError::Io { source, .. } => ConfigError::Read {
                path: path.to_path_buf(),
                source,
            },
            other => ConfigError::Field {
                path: path.to_path_buf(),
                field: "(document)".into(),
                message: other.to_string(),
            },
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses YAML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<ProxyConfig, ConfigError> {
        // Bounded before the YAML parser, whose cost is quadratic in bracket nesting.
        trustmesh_policy::shape::check(text).map_err(|message| ConfigError::Field {
            path: path.to_path_buf(),
            field: "(document)".into(),
            message,
        })?;
        let de = serde_yaml::Deserializer::from_str(text);
        let mut cfg: ProxyConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::Field {
                path: path.to_path_buf(),
                field: if field == "." {
                    "(document)".into()
                } else {
                    field
                },
                message: e.into_inner().to_string(),
            }
        })?;
        cfg.resolve_paths(base);
        cfg.check(path)?;
        Ok(cfg)
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
        let err = |field: String, message: String| ConfigError::Field {
            path: path.to_path_buf(),
            field,
            message,
        };
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
        if self.timeouts.handshake_ms == 0
            || self.timeouts.header_read_ms == 0
            || self.timeouts.tcp_idle_ms == 0
            || self.timeouts.http_idle_ms == 0
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
        if !(100..=60_000).contains(&self.reload_poll_ms) {
            return Err(err(
                "reloadPollMs".into(),
                "must be between 100 and 60000".into(),
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
        let c = ProxyConfig::parse(GOOD, Path::new("/cfg/p.yaml"), Path::new("/cfg")).unwrap();
        assert_eq!(c.certs.key, PathBuf::from("/cfg/key.pem"));
        assert_eq!(c.policy_dir, Some(PathBuf::from("/cfg/policies")));
        let b = c.bundle_sources();
        assert_eq!(b[0].path, PathBuf::from("/cfg/root.pem"));
        assert_eq!(b[1].trust_domain.as_deref(), Some("b.example"));
        assert_eq!(b[1].path, PathBuf::from("/etc/b.pem"));
        assert_eq!(c.inbound[0].protocol, Protocol::Http);
        assert_eq!(c.outbound[0].protocol, Protocol::Tcp);
        assert!(c.outbound[0].tls);
        assert_eq!(c.timeouts.handshake(), Duration::from_secs(10));
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
        assert_eq!(parse("").unwrap().worker_threads(), cores);
        assert_eq!(parse("concurrency: 0\n").unwrap().worker_threads(), cores);
        assert_eq!(parse("concurrency: 3\n").unwrap().worker_threads(), 3);
        let e = parse("concurrency: 5000\n").unwrap_err().to_string();
        assert!(e.contains("concurrency"), "{e}");
        let e = parse("concurrency: -1\n").unwrap_err().to_string();
        assert!(e.contains("concurrency"), "{e}");
    }

    #[test]
    fn bundle_prefix_only_without_slash() {
        let s = parse_bundle_source("/a=b/c.pem");
        assert_eq!(s.trust_domain, None);
        assert_eq!(s.path, PathBuf::from("/a=b/c.pem"));
    }
}
