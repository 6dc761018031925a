//! The TLS sessions a server config remembers for resumption ([`crate::tls`]), in memory that
//! grows with use.
//!
//! Why not rustls's `ServerSessionMemoryCache`: it reserves room for its whole capacity when it
//! is made. For the 4,096 sessions a sidecar's server config may hold that is a 400 KB table,
//! one per server config (plaintext-detecting HTTP, TCP, captured, HBONE listeners) and again
//! on every reload, held from the first second by a sidecar that may never see a resumption.
//! Here the table grows as sessions are stored, up to the same bound, and the oldest session
//! makes room for a new one, as in rustls's cache.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

/// Up to `limit` sessions by their ID, oldest first out.
#[derive(Debug)]
pub struct ServerSessions {
    limit: usize,
    inner: Mutex<Fifo>,
}

#[derive(Debug, Default)]
struct Fifo {
    /// Session ID → (session, the insertion number that put it there).
    map: HashMap<Vec<u8>, (Vec<u8>, u64)>,
    /// IDs in the order they were stored, with their insertion numbers: an entry whose number
    /// no longer matches the map's (taken, or stored again since) is skipped when evicting.
    order: VecDeque<(Vec<u8>, u64)>,
    next: u64,
}

impl ServerSessions {
    pub fn new(limit: usize) -> ServerSessions {
        ServerSessions {
            limit,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Fifo> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl rustls::server::StoresServerSessions for ServerSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        if self.limit == 0 {
            return false;
        }
        let mut f = self.lock();
        while !f.map.contains_key(&key) && f.map.len() >= self.limit {
            let Some((old, n)) = f.order.pop_front() else {
                break;
            };
            if f.map.get(&old).is_some_and(|(_, have)| *have == n) {
                f.map.remove(&old);
            }
        }
        let n = f.next;
        f.next += 1;
        f.order.push_back((key.clone(), n));
        f.map.insert(key, (value, n));
        // Taken sessions leave their IDs behind in `order`; drop them before it outgrows the map
        // by much (amortised: at most once per `limit` stores).
        if f.order.len() > 2 * self.limit.max(8) {
            let Fifo { map, order, .. } = &mut *f;
            order.retain(|(k, n)| map.get(k).is_some_and(|(_, have)| have == n));
        }
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().map.get(key).map(|(v, _)| v.clone())
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().map.remove(key).map(|(v, _)| v)
    }

    fn can_cache(&self) -> bool {
        self.limit > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::StoresServerSessions;

    fn id(i: u32) -> Vec<u8> {
        i.to_be_bytes().to_vec()
    }

    #[test]
    fn stores_gets_and_takes_once() {
        let s = ServerSessions::new(4);
        assert!(s.can_cache());
        assert!(s.put(id(1), b"one".to_vec()));
        assert_eq!(s.get(&id(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(s.take(&id(1)).as_deref(), Some(&b"one"[..]));
        assert_eq!(s.take(&id(1)), None);
        assert!(s.is_empty());
    }

    #[test]
    fn the_oldest_session_makes_room_at_the_limit() {
        let s = ServerSessions::new(3);
        for i in 1..=5 {
            s.put(id(i), vec![i as u8]);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(&id(1)), None);
        assert_eq!(s.get(&id(2)), None);
        for i in 3..=5 {
            assert_eq!(s.get(&id(i)), Some(vec![i as u8]), "session {i}");
        }
    }

    #[test]
    fn a_session_stored_again_is_not_evicted_by_its_older_entry() {
        let s = ServerSessions::new(2);
        s.put(id(1), vec![1]);
        s.take(&id(1));
        s.put(id(2), vec![2]);
        s.put(id(1), vec![11]); // stored again: its first entry in the order is stale
        s.put(id(3), vec![3]); // evicts 2, the oldest live one, not 1
        assert_eq!(s.get(&id(2)), None);
        assert_eq!(s.get(&id(1)), Some(vec![11]));
        assert_eq!(s.get(&id(3)), Some(vec![3]));
    }

    #[test]
    fn taken_sessions_do_not_make_the_order_grow_without_bound() {
        let s = ServerSessions::new(8);
        for i in 0..10_000 {
            s.put(id(i), vec![0]);
            s.take(&id(i));
        }
        assert!(s.is_empty());
        assert!(s.lock().order.len() <= 2 * 8 + 1);
    }

    #[test]
    fn a_limit_of_zero_stores_nothing() {
        let s = ServerSessions::new(0);
        assert!(!s.can_cache());
        assert!(!s.put(id(1), vec![1]));
        assert_eq!(s.get(&id(1)), None);
    }
}
