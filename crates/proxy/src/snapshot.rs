//! Building a [`Snapshot`]: everything the data plane needs, loaded and cross-checked from the
//! files the configuration names.
//!
//! A snapshot is all-or-nothing for what the proxy itself needs. Any file that is missing,
//! unparsable or inconsistent (a key that does not match its certificate, a certificate our own
//! trust config would reject, a missing policy directory) fails the whole build with an error
//! naming the file, and the previous snapshot keeps serving. Invalid policy *resources* do not:
//! the policy crate enforces each fail-closed and the rest applies (see `authz`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, UnixTime};
use trustmesh_identity::{ChainVerifier, SpiffeId, TrustBundleSet, TrustConfig, TrustDomain};
use trustmesh_policy::{MeshConfig, SourceText};

use crate::authz::Policies;
use crate::config::{MeshSource, ProxyConfig};
use crate::tls::{self, ExpectedPeer, OwnCert};

pub struct Snapshot {
    /// Increments with every applied reload; shown on /config_dump.
    pub generation: u64,
    pub loaded_at: String,
    pub config: ProxyConfig,
    pub mesh: MeshConfig,
    pub trust: Arc<TrustConfig>,
    /// `trust` with the memory of the peer chains it accepted (shared by this snapshot's TLS
    /// verifiers and the identity checks after each handshake).
    pub chains: Arc<ChainVerifier>,
    pub own: OwnCert,
    pub own_id: SpiffeId,
    pub own_not_before: i64,
    pub own_not_after: i64,
    pub policies: Policies,
    /// Inbound server configs: with ALPN (HTTP listeners) and without (TCP listeners).
    pub server_tls_http: Arc<rustls::ServerConfig>,
    pub server_tls_tcp: Arc<rustls::ServerConfig>,
    /// The capture's inbound port: every ALPN a mesh client may offer (see `tls::CAPTURED_ALPN`).
    pub server_tls_captured: Arc<rustls::ServerConfig>,
    /// The HBONE listener's: HTTP/2 only (`h2`), as ztunnel's.
    pub server_tls_hbone: Arc<rustls::ServerConfig>,
    /// The service registry and what transparent mode keeps beside it.
    pub mesh_view: Arc<crate::mesh::Mesh>,
    /// Per outbound listener (same index as `config.outbound`); `None` when `tls: false`.
    pub client_tls: Vec<Option<Arc<rustls::ClientConfig>>>,
    /// ext_authz clients by extension provider name.
    pub ext_authz: std::collections::BTreeMap<String, crate::extauthz::Provider>,
    /// What the policies, registry, mesh config and bundles were built from.
    pub inputs: Arc<Inputs>,
    /// This workload as Istio's metric labels name it, and our metadata-exchange headers.
    pub telemetry: Arc<OwnTelemetry>,
    /// The access log format `accessLogEncoding` / `accessLogFormat` ask for (`None`:
    /// trustmesh's JSON), parsed once here so a bad operator refuses the load.
    pub access_log_format: Option<Arc<crate::accesslog::format::Format>>,
    /// Where the access log goes (`accessLogFile`), checked writable when loaded.
    pub access_log_output: crate::accesslog::Output,
}

/// This workload for Istio's metrics: its labels, and the metadata-exchange header values
/// encoded once rather than per request.
pub struct OwnTelemetry {
    pub workload: crate::telemetry::Workload,
    pub peer_metadata: (http::HeaderValue, http::HeaderValue),
}

impl OwnTelemetry {
    pub fn of(cfg: &ProxyConfig) -> OwnTelemetry {
        let w = &cfg.workload;
        let workload = crate::telemetry::Workload::from_labels(
            w.name.as_deref(),
            &w.namespace,
            &w.service_account,
            &w.labels,
        );
        let peer_metadata = crate::telemetry::exchange::encode(&workload);
        OwnTelemetry {
            workload,
            peer_metadata,
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("loaded_at", &self.loaded_at)
            .field("own_id", &self.own_id.to_string())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read {what}", path.display()))
}

/// Loads the mesh config from its inline form or its file.
pub fn load_mesh(cfg: &ProxyConfig) -> anyhow::Result<MeshConfig> {
    match cfg.mesh_source() {
        MeshSource::File(p) => {
            let text = String::from_utf8(read(&p, "mesh config")?)
                .with_context(|| format!("{}: not UTF-8", p.display()))?;
            Ok(MeshConfig::parse(&text, &p)?)
        }
        MeshSource::Inline(v) => Ok(MeshConfig::from_value(
            v,
            Path::new("proxy config"),
            "mesh",
        )?),
    }
}

/// Merges every configured bundle source into one set.
pub fn load_bundles(cfg: &ProxyConfig) -> anyhow::Result<TrustBundleSet> {
    let mut set = TrustBundleSet::new();
    for src in cfg.bundle_sources() {
        let td = match &src.trust_domain {
            Some(t) => Some(TrustDomain::parse(t).map_err(|e| {
                anyhow!(
                    "trustBundles: {t}={}: bad trust domain: {e}",
                    src.path.display()
                )
            })?),
            None => None,
        };
        let loaded = if src.path.is_dir() {
            if td.is_some() {
                bail!(
                    "trustBundles: {}: a TD= prefix applies to a file, not a directory \
                     (a directory's roots carry their trust domain in their URI SAN)",
                    src.path.display()
                );
            }
            trustmesh_identity::load::bundle_from_dir(&src.path)
        } else {
            trustmesh_identity::load::bundle_from_pem_file(&src.path, td)
        }
        .map_err(|e| anyhow!("trustBundles: {}: {e}", src.path.display()))?;
        set.merge(loaded);
    }
    Ok(set)
}

fn load_own_cert(cfg: &ProxyConfig) -> anyhow::Result<OwnCert> {
    let chain_pem = read(&cfg.certs.cert_chain, "certificate chain")?;
    let chain = trustmesh_identity::pem::certs_from_pem(&chain_pem)
        .map_err(|e| anyhow!("{}: {e}", cfg.certs.cert_chain.display()))?;
    if chain.is_empty() {
        bail!(
            "{}: no CERTIFICATE blocks found",
            cfg.certs.cert_chain.display()
        );
    }
    let key_pem = read(&cfg.certs.key, "private key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow!("{}: no usable private key: {e}", cfg.certs.key.display()))?;
    Ok(OwnCert { chain, key })
}

/// Checks that the key belongs to the leaf certificate, so a half-written rotation (new cert,
/// old key) is refused instead of breaking every handshake.
fn check_key_matches(own: &OwnCert, cfg: &ProxyConfig) -> anyhow::Result<()> {
    let provider = tls::provider();
    let signing = provider
        .key_provider
        .load_private_key(own.key.clone_key())
        .map_err(|e| anyhow!("{}: unsupported private key: {e}", cfg.certs.key.display()))?;
    let ck = rustls::sign::CertifiedKey::new(own.chain.clone(), signing);
    ck.keys_match().map_err(|e| {
        anyhow!(
            "{} does not match the leaf of {}: {e}",
            cfg.certs.key.display(),
            cfg.certs.cert_chain.display()
        )
    })
}

fn expected_peer(cfg: &ProxyConfig, i: usize) -> anyhow::Result<Option<ExpectedPeer>> {
    let l = &cfg.outbound[i];
    if let Some(id) = &l.peer_identity {
        let id =
            SpiffeId::parse(id).map_err(|e| anyhow!("outbound[{i}].peerIdentity: {id:?}: {e}"))?;
        return Ok(Some(ExpectedPeer::Exact(id)));
    }
    if let Some(td) = &l.peer_trust_domain {
        let td = TrustDomain::parse(td)
            .map_err(|e| anyhow!("outbound[{i}].peerTrustDomain: {td:?}: {e}"))?;
        return Ok(Some(ExpectedPeer::TrustDomain(td)));
    }
    Ok(None)
}

/// How long a new snapshot may wait for remote JWKS before it is installed anyway. Short, because
/// a reload must still apply within about two seconds even when a JWKS endpoint is unreachable.
pub const JWKS_WARMUP: std::time::Duration = std::time::Duration::from_millis(800);

/// Async part of preparing a snapshot: let remote key sets load before serving with it.
pub async fn warm_up(snap: &Snapshot) {
    if !snap.policies.jwks_ready(JWKS_WARMUP).await {
        tracing::warn!(
            "some remote JWKS are not loaded yet; tokens of those issuers get 401 until they are"
        );
    }
}

/// What the policies, registry, mesh config and bundles are built from: read from the files
/// the config names, or received from the control plane.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub mesh: MeshConfig,
    pub bundles: TrustBundleSet,
    pub sources: Vec<SourceText>,
    /// Set when they came from the control plane: a reload for a changed certificate rebuilds
    /// from these instead of reading files.
    pub from_control_plane: bool,
}

/// Reads the inputs from the files `cfg` names.
pub fn read_inputs(cfg: &ProxyConfig) -> anyhow::Result<Inputs> {
    Ok(Inputs {
        mesh: load_mesh(cfg)?,
        bundles: load_bundles(cfg)?,
        sources: Policies::read_sources(cfg)?,
        from_control_plane: false,
    })
}

/// Builds a complete snapshot from `cfg`, reading every file it names; with a control plane,
/// from the last inputs it sent (`previous`) and the certificate files.
pub fn build(
    cfg: ProxyConfig,
    generation: u64,
    previous: Option<&Arc<Inputs>>,
) -> anyhow::Result<Snapshot> {
    let inputs = match previous {
        Some(p) if p.from_control_plane => p.clone(),
        _ => Arc::new(read_inputs(&cfg)?),
    };
    build_from(cfg, inputs, generation)
}

/// Builds a complete snapshot from `cfg` (listeners, certificate files) and `inputs`.
pub fn build_from(
    cfg: ProxyConfig,
    inputs: Arc<Inputs>,
    generation: u64,
) -> anyhow::Result<Snapshot> {
    let mesh = inputs.mesh.clone();
    let access_log_format = crate::accesslog::format::Format::from_mesh(&mesh)
        .map_err(|e| anyhow!("mesh.accessLogFormat: {e}"))?
        .map(Arc::new);
    let access_log_output = crate::accesslog::Output::from_mesh(&mesh);
    access_log_output
        .check()
        .map_err(|e| anyhow!("mesh.accessLogFile: {e}"))?;
    let local = TrustDomain::parse(&mesh.trust_domain)
        .map_err(|e| anyhow!("mesh.trustDomain: {:?}: {e}", mesh.trust_domain))?;
    let mut aliases = Vec::new();
    for (i, a) in mesh.trust_domain_aliases.iter().enumerate() {
        aliases.push(
            TrustDomain::parse(a)
                .map_err(|e| anyhow!("mesh.trustDomainAliases[{i}]: {a:?}: {e}"))?,
        );
    }
    let bundles = inputs.bundles.clone();
    if bundles.roots(&local).is_empty() {
        bail!(
            "trustBundles: no root for the local trust domain {local}; add the mesh root \
             (e.g. `{local}=/path/root-cert.pem`)"
        );
    }
    let trust = Arc::new(TrustConfig {
        local,
        aliases,
        bundles,
    });
    let chains = Arc::new(ChainVerifier::new(trust.clone()));

    let own = load_own_cert(&cfg)?;
    check_key_matches(&own, &cfg)?;
    let svid =
        trustmesh_identity::verify_svid(&own.chain, &trust, UnixTime::now()).map_err(|e| {
            anyhow!(
                "{}: our own certificate is not a valid SVID under the configured trust: {e}",
                cfg.certs.cert_chain.display()
            )
        })?;
    let own_id = svid.id.clone();
    if own_id.namespace() != Some(cfg.workload.namespace.as_str())
        || own_id.service_account() != Some(cfg.workload.service_account.as_str())
    {
        tracing::warn!(
            id = %own_id,
            namespace = %cfg.workload.namespace,
            service_account = %cfg.workload.service_account,
            "certificate identity does not match workload namespace/serviceAccount"
        );
    }

    let sources = &inputs.sources;
    let (mesh_view, registry_objects) =
        crate::mesh::Mesh::build(&cfg, &mesh, sources, chains.clone(), &own)?;
    let policies = Policies::load(&cfg, &mesh, sources, &registry_objects)?;
    let ext_authz = crate::extauthz::providers(&mesh)?;

    let server_tls_http = tls::server_config(&chains, &own, true)
        .map_err(|e| anyhow!("building TLS server config: {e}"))?;
    let server_tls_tcp = tls::server_config(&chains, &own, false)
        .map_err(|e| anyhow!("building TLS server config: {e}"))?;
    let server_tls_captured = tls::server_config_offering(&chains, &own, &tls::CAPTURED_ALPN)
        .map_err(|e| anyhow!("building TLS server config: {e}"))?;
    let server_tls_hbone = tls::server_config_offering(&chains, &own, &[b"h2"])
        .map_err(|e| anyhow!("building TLS server config: {e}"))?;
    let mut client_tls = Vec::new();
    for (i, l) in cfg.outbound.iter().enumerate() {
        if !l.tls {
            client_tls.push(None);
            continue;
        }
        let expected = expected_peer(&cfg, i)?
            .ok_or_else(|| anyhow!("outbound[{i}]: needs peerIdentity or peerTrustDomain"))?;
        client_tls.push(Some(tls::client_config(&chains, &own, expected).map_err(
            |e| anyhow!("outbound[{i}]: building TLS client config: {e}"),
        )?));
    }

    let telemetry = Arc::new(OwnTelemetry::of(&cfg));
    Ok(Snapshot {
        generation,
        loaded_at: crate::clock::now_rfc3339(),
        own_not_before: unix(svid.not_before),
        own_not_after: unix(svid.not_after),
        config: cfg,
        mesh,
        trust,
        chains,
        own,
        own_id,
        policies,
        server_tls_http,
        server_tls_tcp,
        server_tls_captured,
        server_tls_hbone,
        client_tls,
        mesh_view: Arc::new(mesh_view),
        ext_authz,
        inputs,
        telemetry,
        access_log_format,
        access_log_output,
    })
}

fn unix(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Files under the watched paths (directories walked recursively, bounded in depth and count so
/// a mistaken `policyDir: /` cannot stall the watcher).
pub fn watched_files(cfg: &ProxyConfig, config_file: Option<&Path>) -> Vec<PathBuf> {
    let bounds = trustmesh_config::watch::Bounds {
        max_depth: 8,
        max_files: 10_000,
    };
    let mut out = Vec::new();
    if let Some(c) = config_file {
        out.push(c.to_path_buf());
    }
    for p in cfg.watched_paths() {
        trustmesh_config::watch::walk(&p, bounds, &|_| true, &mut out);
    }
    out
}
