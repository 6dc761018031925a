//! A trust configuration with a memory of the chains it has already verified, so a peer's chain
//! is path-validated once and not once per connection.
//!
//! Why: a sidecar meets the same few peer chains over and over. Each inbound mTLS handshake
//! validated the client's chain in the TLS verifier and then a second time to learn the peer's
//! identity, and a resumed TLS session shows a chain that no TLS verifier looks at, so it must be
//! checked by us. Path validation (parsing, webpki's path building, one ECDSA or RSA signature
//! per certificate) is, after the handshake's own signatures, the largest cost of a handshake.
//!
//! Why it is safe: a verdict is a pure function of the chain's bytes, the trust configuration,
//! the usage asked for and the time — and time enters only through the validity windows of the
//! certificates on the path. So a success is kept together with the window of the whole path
//! ([`VerifiedSvid::path_not_before`] / [`VerifiedSvid::path_not_after`]) and reused only
//! inside it; the memory belongs to one [`TrustConfig`] (a new trust configuration comes with a
//! new, empty memory), and the key is SHA-256 over every certificate of the chain, in order, and
//! the usage. Failures are not kept: each is checked again, so every refusal names its own
//! reason and a flood of bad chains cannot fill the table. Only chains that verify under our
//! roots are stored, and the table is bounded ([`MAX_VERDICTS`]; when full it starts over).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};

use crate::svid::{verify_svid_for, SvidError, Usage, VerifiedSvid};
use crate::TrustConfig;

/// Verdicts kept per trust configuration: a sidecar's distinct peers (each peer's current and
/// previous certificate) fit many times over; a node proxy serving thousands of workloads
/// rebuilds at most this many verdicts after the table starts over.
pub const MAX_VERDICTS: usize = 4096;

type Key = ([u8; 32], u8);

/// A [`TrustConfig`] and the chains it has accepted.
#[derive(Debug)]
pub struct ChainVerifier {
    trust: Arc<TrustConfig>,
    verdicts: Mutex<HashMap<Key, VerifiedSvid>>,
    max: usize,
}

impl ChainVerifier {
    pub fn new(trust: Arc<TrustConfig>) -> ChainVerifier {
        ChainVerifier::bounded(trust, MAX_VERDICTS)
    }

    /// Keeping at most `max` verdicts.
    pub fn bounded(trust: Arc<TrustConfig>, max: usize) -> ChainVerifier {
        ChainVerifier {
            trust,
            verdicts: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    pub fn trust(&self) -> &Arc<TrustConfig> {
        &self.trust
    }

    /// [`verify_svid_for`] against this trust configuration, answered from memory when the same
    /// chain was accepted for the same usage and `now` is still inside its path's window.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<VerifiedSvid, SvidError> {
        let key = key_of(chain, usage);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        if let Some(v) = self.lock().get(&key) {
            if v.path_not_before <= at && at <= v.path_not_after {
                return Ok(v.clone());
            }
        }
        let verdict = verify_svid_for(chain, &self.trust, now, usage)?;
        let mut table = self.lock();
        if table.len() >= self.max {
            table.clear();
        }
        table.insert(key, verdict.clone());
        Ok(verdict)
    }

    /// How many verdicts are kept.
    pub fn remembered(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VerifiedSvid>> {
        // A panic while holding the lock leaves a table of complete entries: keep using it.
        self.verdicts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// SHA-256 over each certificate's length and bytes (so two chains that concatenate to the same
/// bytes differ), and the usage.
fn key_of(chain: &[CertificateDer<'_>], usage: Usage) -> Key {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for c in chain {
        h.update(&(c.len() as u64).to_be_bytes());
        h.update(c.as_ref());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    let u = match usage {
        Usage::ClientAuth => 0,
        Usage::ServerAuth => 1,
        Usage::Any => 2,
    };
    (out, u)
}
