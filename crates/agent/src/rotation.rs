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

/// How long to wait after the CA refused for a reason that retrying cannot fix (our request or
/// identity is not acceptable to it): long enough that a fleet with a bad config does not load
/// the CA, short enough that a fixed CA policy is picked up without a restart.
pub const PERMANENT_RETRY: Duration = Duration::from_secs(300);

/// A failed attempt to obtain a certificate.
#[derive(Debug)]
pub struct FetchError {
    pub message: String,
    /// The CA will keep refusing until its policy or our configuration changes.
    pub permanent: bool,
}

impl FetchError {
    fn transient(message: String) -> FetchError {
        FetchError {
            message,
            permanent: false,
        }
    }

    /// The CA's answer: unreachable, overloaded or failing is worth retrying soon; a request it
    /// judged invalid (a TTL above its maximum, a malformed CSR) or an identity it does not
    /// grant is not.
    fn from_status(s: &tonic::Status) -> FetchError {
        use tonic::Code;
        let permanent = matches!(
            s.code(),
            Code::InvalidArgument
                | Code::PermissionDenied
                | Code::FailedPrecondition
                | Code::Unimplemented
                | Code::OutOfRange
        );
        FetchError {
            message: format!("CA refused ({}): {}", grpc_name(s.code()), s.message()),
            permanent,
        }
    }
}

/// A gRPC status code as the gRPC spec names it (`PERMISSION_DENIED`), not Rust's Debug.
fn grpc_name(c: tonic::Code) -> String {
    let debug = format!("{c:?}");
    let mut out = String::new();
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The wait before the next attempt after `attempt` failures in a row.
///
/// Transient failures back off exponentially up to `max` (`max_retry_interval`); while a
/// certificate is still valid, also at most a quarter of its remaining lifetime, so renewal is
/// retried in time. Without a valid certificate the full `max` applies: a fleet whose
/// certificates all expired during a CA outage must not hammer the CA when it returns.
/// Permanent refusals wait [`PERMANENT_RETRY`] (or `max`, if longer), jittered.
pub fn retry_delay(
    attempt: u32,
    permanent: bool,
    remaining: Option<Duration>,
    max: Duration,
) -> Duration {
    if permanent {
        let slow = PERMANENT_RETRY.max(max);
        return slow.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
    }
    let cap = match remaining.filter(|r| !r.is_zero()) {
        Some(r) => max.min((r / 4).max(Duration::from_secs(1))),
        None => max,
    };
    backoff(attempt, cap)
}

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
pub async fn fetch(cfg: &Config, current: Option<&Svid>) -> Result<Svid, FetchError> {
    let endpoint = ca_endpoint(cfg).map_err(FetchError::transient)?;
    let creds = credentials(cfg, current).map_err(FetchError::transient)?;
    let algorithm = cfg.key_algorithm;
    let key = tokio::task::spawn_blocking(move || svid::new_key(algorithm))
        .await
        .map_err(|e| FetchError::transient(format!("key generation stopped: {e}")))?
        .map_err(FetchError::transient)?;
    let csr = svid::csr_pem(&key, &cfg.spiffe_id).map_err(FetchError::transient)?;
    let chain = create_certificate(&endpoint, &creds, csr, cfg.ttl)
        .await
        .map_err(|s| FetchError::from_status(&s))?;
    // A chain that does not verify as our identity is the CA's misconfiguration: asking again
    // soon would get the same answer.
    svid::from_ca_response(&chain, &key, &cfg.spiffe_id).map_err(|message| FetchError {
        message,
        permanent: true,
    })
}

/// Runs forever: publishes each new SVID and writes it to the output folder.
pub async fn run(cfg: Arc<Config>, state: StateTx) {
    let mut current: Option<Arc<Svid>> =
        svid::load_existing(&cfg.output_dir, &cfg.spiffe_id, cfg.key_algorithm)
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
                let remaining = current
                    .as_ref()
                    .and_then(|s| s.not_after.duration_since(now).ok());
                let delay = retry_delay(attempt, e.permanent, remaining, cfg.max_retry_interval);
                attempt = attempt.saturating_add(1);
                // Go's spelling, as in the config (`1m30s`): the remaining validity to the second, the
                // (jittered) delay to the millisecond.
                let remaining = trustmesh_config::format_go(Duration::from_secs(
                    remaining.unwrap_or_default().as_secs(),
                ));
                let retry_in =
                    trustmesh_config::format_go(Duration::from_millis(delay.as_millis() as u64));
                match &current {
                    _ if e.permanent => tracing::error!(
                        "the CA refused the certificate request and will keep refusing it until \
                         its policy or this agent's configuration changes (attempt {attempt}): \
                         {e}; retrying in {retry_in}"
                    ),
                    Some(s) if !s.is_expired(now) => tracing::warn!(
                        "renewal failed (attempt {attempt}): {e}; still serving serial {} for {}; retrying in {retry_in}",
                        s.serial_hex, remaining
                    ),
                    Some(_) => tracing::error!("renewal failed (attempt {attempt}): {e}; the certificate has EXPIRED; retrying in {retry_in}"),
                    None => tracing::warn!("obtaining a certificate failed (attempt {attempt}): {e}; retrying in {retry_in}"),
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
    fn a_refusal_names_the_grpc_code_as_grpc_does() {
        let e = FetchError::from_status(&tonic::Status::permission_denied("wrong namespace"));
        assert_eq!(
            e.to_string(),
            "CA refused (PERMISSION_DENIED): wrong namespace"
        );
        assert!(e.permanent);
    }

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

    #[test]
    fn without_a_valid_certificate_the_full_cap_applies() {
        let max = Duration::from_secs(30);
        // Issue #11: with no (or an expired) certificate the wait never exceeded ~1 s.
        for remaining in [None, Some(Duration::ZERO)] {
            let d = retry_delay(12, false, remaining, max);
            assert!(
                d >= Duration::from_secs(24) && d <= max,
                "{remaining:?}: {d:?}"
            );
        }
        // A certificate expiring in 8 s: retries within a quarter of that (at least 1 s).
        let d = retry_delay(12, false, Some(Duration::from_secs(8)), max);
        assert!(d <= Duration::from_secs(2), "{d:?}");
        let d = retry_delay(12, false, Some(Duration::from_millis(100)), max);
        assert!(d <= Duration::from_secs(1), "{d:?}");
        // Plenty of lifetime left: max_retry_interval.
        let d = retry_delay(12, false, Some(Duration::from_secs(3600)), max);
        assert!(d >= Duration::from_secs(24) && d <= max, "{d:?}");
    }

    #[test]
    fn permanent_refusals_are_retried_slowly() {
        for remaining in [None, Some(Duration::from_secs(8))] {
            let d = retry_delay(0, true, remaining, Duration::from_secs(30));
            assert!(d >= PERMANENT_RETRY.mul_f64(0.8), "{d:?}");
            assert!(d <= PERMANENT_RETRY.mul_f64(1.2), "{d:?}");
        }
        // A configured cap above the permanent wait wins.
        let d = retry_delay(0, true, None, Duration::from_secs(900));
        assert!(d >= Duration::from_secs(720), "{d:?}");
        let kinds = [
            (tonic::Code::InvalidArgument, true),
            (tonic::Code::PermissionDenied, true),
            (tonic::Code::Unavailable, false),
            (tonic::Code::DeadlineExceeded, false),
            (tonic::Code::Unauthenticated, false),
            (tonic::Code::ResourceExhausted, false),
        ];
        for (code, permanent) in kinds {
            let e = FetchError::from_status(&tonic::Status::new(code, "x"));
            assert_eq!(e.permanent, permanent, "{code:?}");
        }
    }
}
