//! How `maxConnections` is shared between listeners: each listener is guaranteed a reserve, so
//! one listener cannot starve another.
//!
//! Why: with one pool for every listener, slow plaintext clients on a PERMISSIVE port took all
//! `maxConnections` slots and locked out every mTLS client on a STRICT port, and the app's own
//! outbound calls. Now each of the L listeners has `maxConnections / (2 L)` slots held for it;
//! a listener may use more, up to what the others' unused reserves leave. In other words a
//! connection is admitted when, after it, every listener's count — or its reserve, if larger —
//! still sums to at most `maxConnections`. Half the pool stays shared, so one busy listener can
//! still use most of it.
//!
//! Admission runs on the acceptor thread only (every listener's accept loop shares it), so the
//! check and the increment cannot interleave; releases come from worker threads and only free
//! room.

use std::sync::atomic::{AtomicI64, Ordering};

pub struct ListenerSlots {
    active: Vec<AtomicI64>,
}

impl ListenerSlots {
    pub fn new(listeners: usize) -> ListenerSlots {
        ListenerSlots {
            active: (0..listeners.max(1)).map(|_| AtomicI64::new(0)).collect(),
        }
    }

    /// The slots held for each listener under `max`.
    pub fn reserve(&self, max: i64) -> i64 {
        max / (2 * self.active.len() as i64)
    }

    /// Takes a slot for `listener` if the rule above allows it.
    pub fn try_take(&self, listener: usize, max: i64) -> bool {
        let Some(mine) = self.active.get(listener) else {
            return false;
        };
        let reserve = self.reserve(max);
        let committed: i64 = self
            .active
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let n = a.load(Ordering::Acquire) + i64::from(i == listener);
                n.max(reserve)
            })
            .sum();
        if committed > max {
            return false;
        }
        mine.fetch_add(1, Ordering::AcqRel);
        true
    }

    pub fn release(&self, listener: usize) {
        if let Some(a) = self.active.get(listener) {
            a.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub fn active(&self, listener: usize) -> i64 {
        self.active
            .get(listener)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooded_listener_leaves_the_others_their_reserve() {
        // 3 listeners, 12 slots: 2 held for each.
        let s = ListenerSlots::new(3);
        assert_eq!(s.reserve(12), 2);
        let mut flood = 0;
        while s.try_take(0, 12) {
            flood += 1;
        }
        assert_eq!(flood, 8, "12 minus the 2 + 2 held for the others");
        for l in [1, 2] {
            assert!(
                s.try_take(l, 12) && s.try_take(l, 12),
                "listener {l}'s reserve"
            );
            assert!(
                !s.try_take(l, 12),
                "listener {l} beyond its reserve: the pool is full"
            );
        }
        // A connection closing frees a slot for whoever asks next.
        s.release(0);
        assert!(s.try_take(2, 12));
        assert_eq!(s.active(2), 3);
    }

    #[test]
    fn one_listener_may_use_every_slot() {
        let s = ListenerSlots::new(1);
        assert!((0..5).all(|_| s.try_take(0, 5)));
        assert!(!s.try_take(0, 5));
        assert!(!s.try_take(7, 5), "unknown listener");
    }
}
