//! The agent's YAML configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use trustmesh_identity::{SpiffeId, TrustDomain};

/// Default lifetime asked of the CA; Istio's default workload certificate TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    trust_domain: String,
    ca: RawCa,
    token_file: Option<PathBuf>,
    identity: RawIdentity,
    output_dir: PathBuf,
    workload_api_socket: Option<PathBuf>,
    /// Who may call the Workload API; absent: processes of the agent's own user.
    workload_api_callers: Option<Vec<crate::attest::CallerRule>>,
    #[serde(default)]
    rotation_fraction: Option<f64>,
    ttl: Option<String>,
    #[serde(default)]
    federation: Vec<RawFederation>,
    /// Longest wait between retries while the CA is unreachable.
    max_retry_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    address: String,
    root_cert: PathBuf,
    server_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    namespace: String,
    service_account: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    trust_domain: String,
    endpoint: String,
    /// Roots that authenticate the peer's bundle endpoint (its initial bundle).
    root_cert: PathBuf,
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
    pub federation: Vec<Federation>,
}

#[derive(Debug, Clone)]
pub struct Federation {
    pub trust_domain: TrustDomain,
    pub endpoint: String,
    pub root_cert: PathBuf,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let raw: Raw = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let resolve = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        let trust_domain =
            TrustDomain::parse(&raw.trust_domain).map_err(|e| format!("trust_domain: {e}"))?;
        let spiffe_id = SpiffeId::istio(
            &trust_domain,
            &raw.identity.namespace,
            &raw.identity.service_account,
        )
        .map_err(|e| format!("identity: {e}"))?;
        let rotation_fraction = raw.rotation_fraction.unwrap_or(0.5);
        if !(rotation_fraction > 0.0 && rotation_fraction < 1.0) {
            return Err(format!(
                "rotation_fraction: {rotation_fraction} must be between 0 and 1 (exclusive): \
                 the fraction of a certificate's lifetime after which it is renewed"
            ));
        }
        let parse_d = |field: &str, v: &Option<String>, default: Duration| match v {
            Some(s) => {
                trustmesh_ca_server::ttl::parse_duration(s).map_err(|e| format!("{field}: {e}"))
            }
            None => Ok(default),
        };
        let ttl = parse_d("ttl", &raw.ttl, DEFAULT_TTL)?;
        let max_retry_interval = parse_d(
            "max_retry_interval",
            &raw.max_retry_interval,
            Duration::from_secs(30),
        )?;
        let ca_server_name = match raw.ca.server_name {
            Some(n) => n,
            None => host_of(&raw.ca.address).ok_or_else(|| {
                format!(
                    "ca.address: {:?} is not an https://host:port URL",
                    raw.ca.address
                )
            })?,
        };
        if !raw.ca.address.starts_with("https://") {
            return Err(format!(
                "ca.address: {:?} must be an https:// URL; the CA is only spoken to over TLS",
                raw.ca.address
            ));
        }
        let workload_api_callers = match raw.workload_api_callers {
            None => crate::attest::CallerPolicy::own_user(),
            Some(rules) => {
                for (i, r) in rules.iter().enumerate() {
                    r.validate(&format!("workload_api_callers[{i}]"))?;
                }
                if rules.is_empty() {
                    return Err("workload_api_callers: empty, so no process could use the \
                                Workload API; leave it out to admit the agent's own user"
                        .into());
                }
                crate::attest::CallerPolicy(rules)
            }
        };
        let mut federation = Vec::new();
        for f in raw.federation {
            let td = TrustDomain::parse(&f.trust_domain).map_err(|e| format!("federation: {e}"))?;
            if td == trust_domain {
                return Err(format!("federation: {td} is the local trust domain"));
            }
            federation.push(Federation {
                trust_domain: td,
                endpoint: f.endpoint,
                root_cert: resolve(&f.root_cert),
            });
        }
        Ok(Config {
            trust_domain,
            spiffe_id,
            ca_address: raw.ca.address,
            ca_root_cert: resolve(&raw.ca.root_cert),
            ca_server_name,
            token_file: raw.token_file.as_ref().map(resolve),
            output_dir: resolve(&raw.output_dir),
            workload_api_socket: raw.workload_api_socket.as_ref().map(resolve),
            workload_api_callers,
            rotation_fraction,
            ttl,
            max_retry_interval,
            federation,
        })
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
mod tests {
    use super::*;

    const BASE: &str = "trust_domain: cluster.local\nca: {address: \"https://127.0.0.1:15012\", root_cert: root.pem}\nidentity: {namespace: default, service_account: sleep}\noutput_dir: out\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(BASE, Path::new("/etc/agent")).unwrap();
        assert_eq!(
            c.spiffe_id.as_str(),
            "spiffe://cluster.local/ns/default/sa/sleep"
        );
        assert_eq!(c.rotation_fraction, 0.5);
        assert_eq!(c.ttl, DEFAULT_TTL);
        assert_eq!(c.ca_server_name, "127.0.0.1");
        assert_eq!(c.ca_root_cert, PathBuf::from("/etc/agent/root.pem"));
        assert_eq!(c.output_dir, PathBuf::from("/etc/agent/out"));
    }

    #[test]
    fn rejects_bad_fraction_and_unknown_fields() {
        let e =
            Config::parse(&format!("{BASE}rotation_fraction: 1.5\n"), Path::new(".")).unwrap_err();
        assert!(e.contains("rotation_fraction"), "{e}");
        let e = Config::parse(&format!("{BASE}rotate: 1\n"), Path::new(".")).unwrap_err();
        assert!(e.contains("rotate"), "{e}");
    }

    #[test]
    fn workload_api_callers() {
        let c = Config::parse(BASE, Path::new(".")).unwrap();
        assert_eq!(
            c.workload_api_callers,
            crate::attest::CallerPolicy::own_user()
        );
        let c = Config::parse(
            &format!("{BASE}workload_api_callers: [{{uid: 1000}}, {{gid: 5, path: /bin/app}}]\n"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.workload_api_callers.0.len(), 2);
        assert_eq!(c.workload_api_callers.0[1].gid, Some(5));
        for bad in ["[{}]", "[]", "[{path: app}]", "[{user: 5}]"] {
            let e = Config::parse(
                &format!("{BASE}workload_api_callers: {bad}\n"),
                Path::new("."),
            )
            .unwrap_err();
            assert!(
                e.contains("workload_api_callers") || e.contains("user"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn rejects_plaintext_ca() {
        let text = BASE.replace("https://", "http://");
        let e = Config::parse(&text, Path::new(".")).unwrap_err();
        assert!(e.contains("https://"), "{e}");
    }
}
