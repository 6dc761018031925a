//! Obtaining and renewing the SVID: renew after a fraction of its lifetime, and when the CA
//! cannot be reached retry with jittered exponential backoff while the current, still valid
//! SVID keeps being served.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use trustmesh_ca_server::client::{create_certificate, CaEndpoint, Credentials};

use crate::config::Config;
use crate::state::StateTx;
use crate::svid::{self, Svid};

const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Next wait of an exponential backoff with ±20% jitter, so a fleet of agents that lost the CA
/// at the same moment does not reconnect in lockstep.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = FIRST_RETRY.saturating_mul(1u32 << attempt.min(16)).min(max);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    base.mul_f64(jitter).min(max)
}

/// The rotation fraction moved by up to ±1 % of the lifetime (as istio-agent's grace-period
/// jitter), so agents that received certificates together do not all renew in the same second.
fn jittered(fraction: f64) -> f64 {
    (fraction + rand::thread_rng().gen_range(-0.01..0.01)).clamp(0.01, 0.99)
}

/// Where the CA is and how to verify it.
pub fn ca_endpoint(cfg: &Config) -> Result<CaEndpoint, String> {
    let root_pem = std::fs::read(&cfg.ca_root_cert)
        .map_err(|e| format!("reading CA root {}: {e}", cfg.ca_root_cert.display()))?;
    Ok(CaEndpoint {
        address: cfg.ca_address.clone(),
        root_pem,
        server_name: cfg.ca_server_name.clone(),
    })
}

/// The credentials for a CA call: the token (re-read on every call: the kubelet rotates
/// projected tokens in place) and, while valid, the current SVID as client certificate.
pub fn credentials(cfg: &Config, current: Option<&Svid>) -> Result<Credentials, String> {
    let bearer_token = match &cfg.token_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) => None,
            Err(e) if current.is_some() => {
                tracing::warn!(
                    "token file {}: {e}; using the current certificate",
                    p.display()
                );
                None
            }
            Err(e) => return Err(format!("reading token file {}: {e}", p.display())),
        },
        None => None,
    };
    let now = SystemTime::now();
    let client_cert = current.filter(|s| !s.is_expired(now)).map(|s| {
        let chain = trustmesh_identity::pem::certs_to_pem(&s.chain);
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", s.key_der.clone()));
        (chain, key)
    });
    if bearer_token.is_none() && client_cert.is_none() {
        return Err("no credentials: no token file configured/readable and no valid certificate to renew with".into());
    }
    Ok(Credentials {
        bearer_token,
        client_cert,
    })
}

/// Asks the CA for a new SVID with a fresh key.
pub async fn fetch(cfg: &Config, current: Option<&Svid>) -> Result<Svid, String> {
    let endpoint = ca_endpoint(cfg)?;
    let creds = credentials(cfg, current)?;
    let key = svid::new_key()?;
    let csr = svid::csr_pem(&key, &cfg.spiffe_id)?;
    let chain = create_certificate(&endpoint, &creds, csr, cfg.ttl)
        .await
        .map_err(|s| format!("CA refused ({:?}): {}", s.code(), s.message()))?;
    svid::from_ca_response(&chain, &key, &cfg.spiffe_id)
}

/// Runs forever: publishes each new SVID and writes it to the output folder.
pub async fn run(cfg: Arc<Config>, state: StateTx) {
    let mut current: Option<Arc<Svid>> = svid::load_existing(&cfg.output_dir, &cfg.spiffe_id)
        .filter(|s| !s.is_expired(SystemTime::now()))
        .map(Arc::new);
    if let Some(s) = &current {
        tracing::info!(serial = %s.serial_hex, "serving the still-valid certificate found in {}", cfg.output_dir.display());
        state.send_modify(|snap| snap.svid = Some(s.clone()));
    }
    let mut attempt = 0u32;
    loop {
        let wait = match &current {
            Some(s) => s
                .refresh_at(jittered(cfg.rotation_fraction))
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
            None => Duration::ZERO,
        };
        tokio::time::sleep(wait).await;
        match fetch(&cfg, current.as_deref()).await {
            Ok(new) => {
                attempt = 0;
                if let Err(e) = svid::write_files(&cfg.output_dir, &new) {
                    tracing::error!(
                        "writing certificate files to {}: {e}",
                        cfg.output_dir.display()
                    );
                }
                tracing::info!(id = %new.id, serial = %new.serial_hex, "obtained certificate");
                let new = Arc::new(new);
                state.send_modify(|snap| snap.svid = Some(new.clone()));
                current = Some(new);
            }
            Err(e) => {
                let now = SystemTime::now();
                // Retry sooner than the usual cap when the current certificate is close to expiry.
                let remaining = current
                    .as_ref()
                    .and_then(|s| s.not_after.duration_since(now).ok())
                    .unwrap_or_default();
                let cap = cfg
                    .max_retry_interval
                    .min((remaining / 4).max(Duration::from_secs(1)));
                let delay = backoff(attempt, cap);
                attempt = attempt.saturating_add(1);
                match &current {
                    Some(s) if !s.is_expired(now) => tracing::warn!(
                        "renewal failed (attempt {attempt}): {e}; still serving serial {} for {:?}; retrying in {delay:?}",
                        s.serial_hex, remaining
                    ),
                    Some(_) => tracing::error!("renewal failed (attempt {attempt}): {e}; the certificate has EXPIRED; retrying in {delay:?}"),
                    None => tracing::warn!("obtaining a certificate failed (attempt {attempt}): {e}; retrying in {delay:?}"),
                }
                // The loop then retries at once: the refresh time has already passed.
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff(attempt, max);
            assert!(d <= max, "{attempt}: {d:?}");
            let base = FIRST_RETRY.saturating_mul(1 << attempt.min(16)).min(max);
            assert!(
                d >= base.mul_f64(0.8) - Duration::from_millis(1),
                "{attempt}: {d:?}"
            );
        }
        assert!(backoff(0, max) < Duration::from_secs(1));
        assert!(backoff(10, max) >= Duration::from_secs(24));
    }
}
