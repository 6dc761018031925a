//! The agent's YAML configuration, read through `trustmesh_config`: camelCase keys like
//! Istio's, durations in Go's spelling (`ttl: 12h`, `maxRetryInterval: 30s`). The snake_case
//! keys and duration spellings of earlier releases (`trust_domain`, `ttl: 7d`, `ttl: 90`)
//! still load, each reported once as deprecated with the spelling that replaces it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use trustmesh_ca::KeyType;
use trustmesh_config::deprecation::path;
use trustmesh_config::load::{self, required};
use trustmesh_config::{Deprecations, LegacyDuration};
use trustmesh_identity::{SpiffeId, TrustDomain};

pub use trustmesh_config::ConfigError;

/// Key algorithm of the workload keys when the file names none: ECDSA P-256, what this agent
/// has always made. Istio's pilot-agent makes RSA 2048 unless `ECC_SIGNATURE_ALGORITHM=ECDSA`;
/// trustmesh keeps ECDSA because an RSA 2048 key costs far more to make at every rotation
/// (0.15-0.5 s measured on a shared 2-core machine, against 0.02 s for P-256; see
/// `svid::new_key`) and to sign with at every handshake, and because changing the
/// default would silently change the keys of running meshes. `keyAlgorithm: RSA` gives Istio's.
pub const DEFAULT_KEY_ALGORITHM: KeyType = KeyType::EcdsaP256;

/// Default lifetime asked of the CA; Istio's default workload certificate TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default longest wait between retries while the CA is unreachable.
pub const DEFAULT_MAX_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// Default fraction of a certificate's lifetime after which it is renewed: at half of it, as
/// Istio's agent does.
pub const DEFAULT_ROTATION_FRACTION: f64 = 0.5;

/// The file as written. Keys are camelCase; each `old_*` field is the snake_case spelling of
/// the field before it, still read and reported as deprecated (both given is an error).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    trust_domain: Option<String>,
    #[serde(rename = "trust_domain")]
    old_trust_domain: Option<String>,
    ca: RawCa,
    token_file: Option<PathBuf>,
    #[serde(rename = "token_file")]
    old_token_file: Option<PathBuf>,
    identity: RawIdentity,
    output_dir: Option<PathBuf>,
    #[serde(rename = "output_dir")]
    old_output_dir: Option<PathBuf>,
    workload_api_socket: Option<PathBuf>,
    #[serde(rename = "workload_api_socket")]
    old_workload_api_socket: Option<PathBuf>,
    /// Who may call the Workload API; absent: processes of the agent's own user.
    workload_api_callers: Option<Vec<crate::attest::CallerRule>>,
    #[serde(rename = "workload_api_callers")]
    old_workload_api_callers: Option<Vec<crate::attest::CallerRule>>,
    rotation_fraction: Option<f64>,
    #[serde(rename = "rotation_fraction")]
    old_rotation_fraction: Option<f64>,
    ttl: Option<LegacyDuration>,
    #[serde(default)]
    federation: Vec<RawFederation>,
    /// Longest wait between retries while the CA is unreachable.
    max_retry_interval: Option<LegacyDuration>,
    #[serde(rename = "max_retry_interval")]
    old_max_retry_interval: Option<LegacyDuration>,
    /// How long a stop waits for Workload API calls in flight (Istio's
    /// `terminationDrainDuration` plays this role for its proxy).
    termination_drain: Option<trustmesh_config::Duration>,
    /// `ECDSA` (P-256) or `RSA` (2048 bits): the values of Istio's `ECC_SIGNATURE_ALGORITHM`
    /// proxy setting, where RSA is what an unset one means.
    key_algorithm: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCa {
    address: String,
    root_cert: Option<PathBuf>,
    #[serde(rename = "root_cert")]
    old_root_cert: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(rename = "server_name")]
    old_server_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIdentity {
    namespace: String,
    service_account: Option<String>,
    #[serde(rename = "service_account")]
    old_service_account: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFederation {
    trust_domain: Option<String>,
    #[serde(rename = "trust_domain")]
    old_trust_domain: Option<String>,
    endpoint: String,
    /// Roots that authenticate the peer's bundle endpoint (its initial bundle).
    root_cert: Option<PathBuf>,
    #[serde(rename = "root_cert")]
    old_root_cert: Option<PathBuf>,
}

/// A validated configuration; relative paths are resolved against the config file's folder.
#[derive(Debug, Clone)]
pub struct Config {
    pub trust_domain: TrustDomain,
    pub spiffe_id: SpiffeId,
    pub ca_address: String,
    pub ca_root_cert: PathBuf,
    pub ca_server_name: String,
    pub token_file: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub workload_api_socket: Option<PathBuf>,
    pub workload_api_callers: crate::attest::CallerPolicy,
    pub rotation_fraction: f64,
    pub ttl: Duration,
    pub max_retry_interval: Duration,
    /// See [`crate::DRAIN_DEADLINE`], the default.
    pub termination_drain: Duration,
    pub federation: Vec<Federation>,
    /// Algorithm of every key the agent makes; see [`DEFAULT_KEY_ALGORITHM`].
    pub key_algorithm: KeyType,
}

#[derive(Debug, Clone)]
pub struct Federation {
    pub trust_domain: TrustDomain,
    pub endpoint: String,
    pub root_cert: PathBuf,
}

impl Config {
    /// Reads and checks `path`; old spellings are logged once, as warnings naming the new ones.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (config, deprecations) = Config::read(path)?;
        deprecations.warn();
        Ok(config)
    }

    /// Like [`Config::load`], returning the old spellings met instead of logging them.
    pub fn read(path: &Path) -> Result<(Config, Deprecations), ConfigError> {
        let text = load::read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses YAML text; `file` names it in messages, relative paths are resolved against `base`.
    pub fn parse(
        text: &str,
        file: &Path,
        base: &Path,
    ) -> Result<(Config, Deprecations), ConfigError> {
        let raw: Raw = load::from_yaml(text, file)?;
        let mut old = Deprecations::new(file);
        let config = convert(raw, file, base, &mut old)?;
        Ok((config, old))
    }
}

/// The typed config from the raw one: picks the spelling given, checks every value.
fn convert(
    raw: Raw,
    file: &Path,
    base: &Path,
    old: &mut Deprecations,
) -> Result<Config, ConfigError> {
    let bad = |field: &str, message: String| ConfigError::field(file, field, message);
    let resolve = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let trust_domain = old.renamed(
        "",
        "trustDomain",
        raw.trust_domain,
        "trust_domain",
        raw.old_trust_domain,
    )?;
    let trust_domain = required(trust_domain, file, "trustDomain")?;
    let trust_domain =
        TrustDomain::parse(&trust_domain).map_err(|e| bad("trustDomain", e.to_string()))?;
    let service_account = old.renamed(
        "identity",
        "serviceAccount",
        raw.identity.service_account,
        "service_account",
        raw.identity.old_service_account,
    )?;
    let service_account = required(service_account, file, "identity.serviceAccount")?;
    let spiffe_id = SpiffeId::istio(&trust_domain, &raw.identity.namespace, &service_account)
        .map_err(|e| bad("identity", e.to_string()))?;
    let rotation_fraction = old.renamed(
        "",
        "rotationFraction",
        raw.rotation_fraction,
        "rotation_fraction",
        raw.old_rotation_fraction,
    )?;
    let max_retry_interval = old.renamed(
        "",
        "maxRetryInterval",
        raw.max_retry_interval,
        "max_retry_interval",
        raw.old_max_retry_interval,
    )?;
    let timing = timing(rotation_fraction, raw.ttl, max_retry_interval, file, old)?;
    let ca = ca(raw.ca, file, old)?;
    let callers = old.renamed(
        "",
        "workloadApiCallers",
        raw.workload_api_callers,
        "workload_api_callers",
        raw.old_workload_api_callers,
    )?;
    let workload_api_callers = callers_policy(callers, file)?;
    let federation = federation(raw.federation, &trust_domain, file, old)?
        .into_iter()
        .map(|f| Federation {
            root_cert: resolve(&f.root_cert),
            ..f
        })
        .collect();
    let token_file = old.renamed(
        "",
        "tokenFile",
        raw.token_file,
        "token_file",
        raw.old_token_file,
    )?;
    let output_dir = old.renamed(
        "",
        "outputDir",
        raw.output_dir,
        "output_dir",
        raw.old_output_dir,
    )?;
    let output_dir = required(output_dir, file, "outputDir")?;
    let workload_api_socket = old.renamed(
        "",
        "workloadApiSocket",
        raw.workload_api_socket,
        "workload_api_socket",
        raw.old_workload_api_socket,
    )?;
    let key_algorithm = match raw.key_algorithm {
        Some(v) => parse_key_algorithm(&v).map_err(|e| bad("keyAlgorithm", e))?,
        None => DEFAULT_KEY_ALGORITHM,
    };
    Ok(Config {
        key_algorithm,
        trust_domain,
        spiffe_id,
        ca_address: ca.address,
        ca_root_cert: resolve(&ca.root_cert),
        ca_server_name: ca.server_name,
        token_file: token_file.as_ref().map(resolve),
        output_dir: resolve(&output_dir),
        workload_api_socket: workload_api_socket.as_ref().map(resolve),
        workload_api_callers,
        rotation_fraction: timing.rotation_fraction,
        ttl: timing.ttl,
        max_retry_interval: timing.max_retry_interval,
        termination_drain: raw
            .termination_drain
            .map_or(crate::DRAIN_DEADLINE, |d| d.get()),
        federation,
    })
}

/// When to renew and how long to wait between attempts.
struct Timing {
    rotation_fraction: f64,
    ttl: Duration,
    max_retry_interval: Duration,
}

fn timing(
    rotation_fraction: Option<f64>,
    ttl: Option<LegacyDuration>,
    max_retry_interval: Option<LegacyDuration>,
    file: &Path,
    old: &mut Deprecations,
) -> Result<Timing, ConfigError> {
    let bad = |field: &str, message: String| ConfigError::field(file, field, message);
    let rotation_fraction = rotation_fraction.unwrap_or(DEFAULT_ROTATION_FRACTION);
    if !(rotation_fraction > 0.0 && rotation_fraction < 1.0) {
        return Err(bad(
            "rotationFraction",
            format!(
                "{rotation_fraction} must be between 0 and 1 (exclusive): the fraction of a \
                 certificate's lifetime after which it is renewed"
            ),
        ));
    }
    let ttl = match ttl {
        Some(d) => {
            old.value("ttl", &d);
            if d.get() < Duration::from_secs(1) {
                return Err(bad(
                    "ttl",
                    format!(
                        "{:?} must be at least 1s: the CA grants whole seconds",
                        d.given
                    ),
                ));
            }
            d.get()
        }
        None => DEFAULT_TTL,
    };
    let max_retry_interval = match max_retry_interval {
        Some(d) => {
            old.value("maxRetryInterval", &d);
            if d.value.is_zero() {
                return Err(bad(
                    "maxRetryInterval",
                    format!("{:?} must be greater than zero", d.given),
                ));
            }
            d.get()
        }
        None => DEFAULT_MAX_RETRY_INTERVAL,
    };
    Ok(Timing {
        rotation_fraction,
        ttl,
        max_retry_interval,
    })
}

/// Where the CA is and how it is verified (paths still relative).
struct CaSettings {
    address: String,
    root_cert: PathBuf,
    server_name: String,
}

fn ca(raw: RawCa, file: &Path, old: &mut Deprecations) -> Result<CaSettings, ConfigError> {
    let bad = |field: &str, message: String| ConfigError::field(file, field, message);
    let server_name = old.renamed(
        "ca",
        "serverName",
        raw.server_name,
        "server_name",
        raw.old_server_name,
    )?;
    let server_name = match server_name {
        Some(n) => n,
        None => host_of(&raw.address).ok_or_else(|| {
            bad(
                "ca.address",
                format!("{:?} is not an https://host:port URL", raw.address),
            )
        })?,
    };
    if !raw.address.starts_with("https://") {
        return Err(bad(
            "ca.address",
            format!(
                "{:?} must be an https:// URL; the CA is only spoken to over TLS",
                raw.address
            ),
        ));
    }
    let root_cert = old.renamed(
        "ca",
        "rootCert",
        raw.root_cert,
        "root_cert",
        raw.old_root_cert,
    )?;
    Ok(CaSettings {
        address: raw.address,
        root_cert: required(root_cert, file, "ca.rootCert")?,
        server_name,
    })
}

/// Who may call the Workload API; absent: processes of the agent's own user.
fn callers_policy(
    rules: Option<Vec<crate::attest::CallerRule>>,
    file: &Path,
) -> Result<crate::attest::CallerPolicy, ConfigError> {
    let Some(rules) = rules else {
        return Ok(crate::attest::CallerPolicy::own_user());
    };
    for (i, r) in rules.iter().enumerate() {
        r.validate(&format!("workloadApiCallers[{i}]"))
            .map_err(|message| ConfigError::Invalid {
                file: file.to_path_buf(),
                message,
            })?;
    }
    if rules.is_empty() {
        return Err(ConfigError::field(
            file,
            "workloadApiCallers",
            "empty, so no process could use the Workload API; leave it out to admit the \
             agent's own user"
                .to_string(),
        ));
    }
    Ok(crate::attest::CallerPolicy(rules))
}

/// Federated trust domains (root paths still relative).
fn federation(
    raw: Vec<RawFederation>,
    local: &TrustDomain,
    file: &Path,
    old: &mut Deprecations,
) -> Result<Vec<Federation>, ConfigError> {
    let bad = |field: &str, message: String| ConfigError::field(file, field, message);
    let mut out = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        let at = format!("federation[{i}]");
        let td = old.renamed(
            &at,
            "trustDomain",
            f.trust_domain,
            "trust_domain",
            f.old_trust_domain,
        )?;
        let td = required(td, file, &path(&at, "trustDomain"))?;
        let td =
            TrustDomain::parse(&td).map_err(|e| bad(&path(&at, "trustDomain"), e.to_string()))?;
        if td == *local {
            return Err(bad(
                &path(&at, "trustDomain"),
                format!("{td} is the local trust domain"),
            ));
        }
        let root_cert = old.renamed(&at, "rootCert", f.root_cert, "root_cert", f.old_root_cert)?;
        out.push(Federation {
            trust_domain: td,
            endpoint: f.endpoint,
            root_cert: required(root_cert, file, &path(&at, "rootCert"))?,
        });
    }
    Ok(out)
}

/// `ECDSA` or `RSA` (Istio's spellings, any case); the error says what is accepted.
pub fn parse_key_algorithm(v: &str) -> Result<KeyType, String> {
    match v.to_ascii_uppercase().as_str() {
        "ECDSA" => Ok(KeyType::EcdsaP256),
        "RSA" => Ok(KeyType::Rsa2048),
        _ => Err(format!(
            "{v:?} is not a key algorithm: expected ECDSA (P-256, the default) or RSA (2048 bits, \
             Istio's default)"
        )),
    }
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests;
