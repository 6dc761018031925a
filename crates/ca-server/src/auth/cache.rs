//! A bounded cache of successful bearer-token authentications.
//!
//! Why: an istio-agent presents the same projected service-account token on every renewal for
//! the token's whole lifetime, and checking its ES256/RS256 signature is the most expensive step
//! of an issuance (a P-256 verification costs about three signatures). Remembering "this exact
//! token already verified as this service account" turns every later presentation into a hash
//! and a map lookup — the same trade the Kubernetes API server makes in its token-authentication
//! cache.
//!
//! The security bounds, each enforced on every lookup:
//!
//! - **Only successes are stored**, keyed by the SHA-256 of the exact token string. A forged,
//!   expired or otherwise refused token is verified afresh every time, so nobody can fill the
//!   cache without holding valid tokens, and a token that differs in a single byte (a different
//!   signature included) never matches. The raw token is never kept: a memory dump of the cache
//!   yields no usable credential.
//! - **A hit never outlives the token**: an entry is served only while the wall clock is before
//!   the token's own `exp` (without the verifier's clock-skew leeway). After that the token goes
//!   back through full verification, which decides on its own whether it is still acceptable, and
//!   an already expired token is never stored again.
//! - **A hit never outlives the max age** (5 minutes by default), measured on the monotonic
//!   clock: a signing key removed from the issuer's JWKS stops being honoured within that bound
//!   even if no reload noticed the change. A reload that does notice it clears the whole cache
//!   ([`TokenCache::clear`]); a generation number keeps a verification that was already running
//!   with the old keys from storing its result after the clear.
//! - **Bounded size**: at most `max_entries` entries (see [`TokenCache::insert`] for eviction).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::account::ServiceAccount;

/// Default for how long a verified token is served from the cache (`ca serve
/// --token-cache-max-age`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// Default bound on cached tokens: one per workload, for a large cluster's worth of workloads;
/// an entry is a few hundred bytes, so the cache stays within a few megabytes.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// SHA-256 of a token string; what the cache is keyed by, instead of the token itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &str) -> TokenKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        TokenKey(key)
    }
}

/// What a verification established, as stored and returned on a hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub account: ServiceAccount,
    /// Index of the issuer that verified the token, so a hit can still trigger that issuer's
    /// periodic JWKS reload.
    pub issuer_index: usize,
    /// The token's `kid`, for the same reload check.
    pub kid: Option<String>,
}

struct Entry {
    verified: Verified,
    /// The token's `exp` (seconds since the Unix epoch).
    exp: u64,
    /// When the entry was stored; it is served until `stored + max_age`.
    stored: Instant,
}

/// The two clocks a lookup is judged by: wall-clock seconds for the token's `exp`, monotonic
/// time for the max age (so a wall-clock jump cannot stretch it).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub unix: u64,
    pub instant: Instant,
}

impl Now {
    pub fn current() -> Now {
        Now {
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            instant: Instant::now(),
        }
    }
}

struct Inner {
    entries: HashMap<TokenKey, Entry>,
    /// Bumped by every [`TokenCache::clear`]; an insert made with an older generation is
    /// dropped.
    generation: u64,
}

/// Thread-safe; every method holds the lock only for map operations (no I/O, no crypto, no
/// `.await`).
pub struct TokenCache {
    max_age: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

impl TokenCache {
    /// `None` when `max_age` or `max_entries` is zero: caching is off.
    pub fn new(max_age: Duration, max_entries: usize) -> Option<TokenCache> {
        if max_age.is_zero() || max_entries == 0 {
            return None;
        }
        Some(TokenCache {
            max_age,
            max_entries,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                generation: 0,
            }),
        })
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    fn live(&self, e: &Entry, now: Now) -> bool {
        now.unix < e.exp && now.instant.saturating_duration_since(e.stored) < self.max_age
    }

    /// The cached result for `key`, if it is still within both bounds. A stale entry is removed.
    pub fn get(&self, key: &TokenKey, now: Now) -> Option<Verified> {
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?;
        if self.live(entry, now) {
            return Some(entry.verified.clone());
        }
        inner.entries.remove(key);
        None
    }

    /// The generation to pass to [`TokenCache::insert`]; read it *before* reading the keys the
    /// token is verified with.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Stores a successful verification of a token expiring at `exp`, unless the cache was
    /// cleared since `generation` was read or the token is already expired.
    ///
    /// Eviction when full: first every stale entry is dropped; if that frees less than a quarter
    /// of the room, arbitrary entries (the map's iteration order, which follows the per-process
    /// random hash seed) go too, down to three quarters of `max_entries`. Evicting a batch keeps
    /// the full scan amortised over many inserts instead of repeating it on each; an evicted
    /// token costs one more signature check on its next use, never a wrong answer. Only holders
    /// of valid tokens can add entries, so the churn this allows is bounded by their number.
    pub fn insert(&self, key: TokenKey, verified: Verified, exp: u64, generation: u64, now: Now) {
        if now.unix >= exp {
            return;
        }
        let entry = Entry {
            verified,
            exp,
            stored: now.instant,
        };
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= self.max_entries && !inner.entries.contains_key(&key) {
            inner.entries.retain(|_, e| self.live(e, now));
            let target = self.max_entries - (self.max_entries / 4).max(1);
            let mut excess = inner.entries.len().saturating_sub(target);
            if excess > 0 {
                inner.entries.retain(|_, _| {
                    if excess == 0 {
                        return true;
                    }
                    excess -= 1;
                    false
                });
            }
        }
        inner.entries.insert(key, entry);
    }

    /// Forgets every entry, and every verification still in flight (see the generation).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.generation = inner.generation.wrapping_add(1);
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters
        // (every operation is a single map call), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(name: &str) -> Verified {
        Verified {
            account: ServiceAccount {
                namespace: "ns".into(),
                name: name.into(),
                issuer: "https://issuer.test".into(),
                pod: None,
            },
            issuer_index: 0,
            kid: None,
        }
    }

    fn at(unix: u64, instant: Instant) -> Now {
        Now { unix, instant }
    }

    #[test]
    fn key_is_the_sha256_of_the_token() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex: String = TokenKey::of("abc")
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
        assert!(TokenKey::of("abc") != TokenKey::of("abd"));
    }

    #[test]
    fn entry_lives_until_exp_or_max_age_whichever_is_first() {
        let t0 = Instant::now();
        let c = TokenCache::new(Duration::from_secs(300), 10).unwrap();
        let k = TokenKey::of("t");
        c.insert(k, verified("a"), 1_000, c.generation(), at(900, t0));
        assert_eq!(c.get(&k, at(999, t0)), Some(verified("a")));
        // exp reached on the wall clock: gone, although the max age has not passed.
        assert_eq!(c.get(&k, at(1_000, t0)), None);
        assert!(c.is_empty(), "a stale entry is removed on lookup");

        c.insert(k, verified("a"), 10_000, c.generation(), at(900, t0));
        let later = t0 + Duration::from_secs(299);
        assert!(c.get(&k, at(900, later)).is_some());
        // Max age reached on the monotonic clock, even if the wall clock went backwards.
        let too_late = t0 + Duration::from_secs(300);
        assert_eq!(c.get(&k, at(100, too_late)), None);
    }

    #[test]
    fn expired_tokens_are_not_stored() {
        let c = TokenCache::new(Duration::from_secs(300), 10).unwrap();
        c.insert(
            TokenKey::of("t"),
            verified("a"),
            1_000,
            c.generation(),
            at(1_000, Instant::now()),
        );
        assert!(c.is_empty());
    }

    #[test]
    fn zero_max_age_or_entries_disables_the_cache() {
        assert!(TokenCache::new(Duration::ZERO, 10).is_none());
        assert!(TokenCache::new(Duration::from_secs(1), 0).is_none());
    }

    #[test]
    fn size_stays_within_the_bound_and_stale_entries_go_first() {
        let t0 = Instant::now();
        let c = TokenCache::new(Duration::from_secs(300), 8).unwrap();
        // Two entries that will be expired when the cache fills up.
        for i in 0..2 {
            c.insert(
                TokenKey::of(&format!("old{i}")),
                verified("old"),
                150,
                c.generation(),
                at(100, t0),
            );
        }
        for i in 0..6 {
            c.insert(
                TokenKey::of(&format!("new{i}")),
                verified("new"),
                10_000,
                c.generation(),
                at(100, t0),
            );
        }
        assert_eq!(c.len(), 8);
        // Full: the two stale entries make room, the live ones all stay.
        let now = at(200, t0);
        c.insert(
            TokenKey::of("x"),
            verified("x"),
            10_000,
            c.generation(),
            now,
        );
        assert_eq!(c.len(), 7);
        for i in 0..6 {
            assert!(c.get(&TokenKey::of(&format!("new{i}")), now).is_some());
        }
        for i in 0..100 {
            c.insert(
                TokenKey::of(&format!("more{i}")),
                verified("m"),
                10_000,
                c.generation(),
                now,
            );
            assert!(c.len() <= 8, "{} entries after insert {i}", c.len());
        }
        assert!(c.get(&TokenKey::of("more99"), now).is_some());

        // A cache of one entry still works.
        let one = TokenCache::new(Duration::from_secs(300), 1).unwrap();
        for i in 0..3 {
            let k = TokenKey::of(&format!("t{i}"));
            one.insert(k, verified("a"), 10_000, one.generation(), now);
            assert_eq!(one.len(), 1);
            assert!(one.get(&k, now).is_some());
        }
    }

    #[test]
    fn clear_empties_and_drops_inserts_from_before_it() {
        let now = Now::current();
        let exp = now.unix + 600;
        let c = TokenCache::new(Duration::from_secs(300), 10).unwrap();
        c.insert(TokenKey::of("a"), verified("a"), exp, c.generation(), now);
        // A verification starts with the old keys...
        let in_flight = c.generation();
        // ...the key set changes meanwhile...
        c.clear();
        assert!(c.is_empty());
        // ...and its result must not land in the cache.
        c.insert(TokenKey::of("b"), verified("b"), exp, in_flight, now);
        assert!(c.is_empty());
        c.insert(TokenKey::of("b"), verified("b"), exp, c.generation(), now);
        assert_eq!(c.len(), 1);
    }
}
