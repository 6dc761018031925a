//! One pooled, multiplexed connection to a peer, made by one request at a time: the HBONE
//! pool's (`tunnel`) and `meshconn`'s HTTP/2 pool use it.
//!
//! Why: without a lock held while the connection is made, every request that found the pool
//! cold made its own handshake to the same peer (the benchmark's 100 new app connections made
//! 25). With the lock alone, requests that waited while the handshake failed each tried again
//! in turn, so a peer that was down cost a burst one connect timeout per waiting request. A
//! request that waited while a dial failed now gives up with that failure; it saw the peer
//! fail just now, and the caller may try another endpoint.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// The connection (`T`) and the failure (`E`) of the last dial that failed.
pub struct DialSlot<T, E> {
    state: tokio::sync::Mutex<State<T, E>>,
    /// Dials that failed; a request notes it before it waits ([`DialSlot::failures`]).
    failures: AtomicU64,
}

struct State<T, E> {
    conn: Option<T>,
    failure: Option<E>,
}

impl<T, E> Default for DialSlot<T, E> {
    fn default() -> Self {
        DialSlot {
            state: tokio::sync::Mutex::new(State {
                conn: None,
                failure: None,
            }),
            failures: AtomicU64::new(0),
        }
    }
}

impl<T: Clone, E: Clone> DialSlot<T, E> {
    /// How many dials have failed; read it when a request begins and give it to
    /// [`DialSlot::get_or_dial`].
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The pooled connection, if there is one and `usable` says so (not closed).
    pub async fn pooled(&self, usable: impl Fn(&T) -> bool) -> Option<T> {
        self.state
            .lock()
            .await
            .conn
            .as_ref()
            .filter(|c| usable(c))
            .cloned()
    }

    /// The pooled connection if `usable`; else, when a dial failed since the request began
    /// (`failures` is what [`DialSlot::failures`] said then), that failure; else a new
    /// connection from `dial`, made while the others wait, and kept for them.
    pub async fn get_or_dial<F, Fut>(
        &self,
        failures: u64,
        usable: impl Fn(&T) -> bool,
        dial: F,
    ) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut state = self.state.lock().await;
        if let Some(c) = state.conn.as_ref().filter(|c| usable(c)) {
            return Ok(c.clone());
        }
        if self.failures() != failures {
            if let Some(e) = &state.failure {
                return Err(e.clone());
            }
        }
        state.conn = None;
        match dial().await {
            Ok(fresh) => {
                state.conn = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => {
                state.failure = Some(e.clone());
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    /// `n` requests at once on a cold slot whose dial takes a moment and ends with `outcome`;
    /// what each got and how many dials were made.
    async fn at_once(
        n: usize,
        outcome: Result<u32, &'static str>,
    ) -> (Vec<Result<u32, &'static str>>, usize) {
        let slot = Arc::new(DialSlot::<u32, &'static str>::default());
        let dials = Arc::new(AtomicUsize::new(0));
        let mut all = Vec::new();
        for _ in 0..n {
            let (slot, dials) = (slot.clone(), dials.clone());
            all.push(tokio::spawn(async move {
                let failures = slot.failures();
                slot.get_or_dial(
                    failures,
                    |_| true,
                    || async {
                        dials.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        outcome
                    },
                )
                .await
            }));
        }
        let mut got = Vec::new();
        for a in all {
            got.push(a.await.unwrap());
        }
        (got, dials.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn requests_on_a_cold_slot_share_one_dial() {
        let (got, dials) = at_once(16, Ok(7)).await;
        assert_eq!(dials, 1);
        assert!(got.iter().all(|g| *g == Ok(7)), "{got:?}");
    }

    #[tokio::test]
    async fn requests_that_waited_for_a_failed_dial_share_its_failure() {
        let (got, dials) = at_once(16, Err("refused")).await;
        assert_eq!(dials, 1);
        assert!(got.iter().all(|g| *g == Err("refused")), "{got:?}");
    }

    #[tokio::test]
    async fn a_request_after_a_failure_dials_again_and_an_unusable_connection_is_replaced() {
        let slot = DialSlot::<u32, &'static str>::default();
        let before = slot.failures();
        assert_eq!(
            slot.get_or_dial(before, |_| true, || async { Err("down") })
                .await,
            Err("down")
        );
        // A new request (it read the count after the failure) tries again.
        let now = slot.failures();
        assert_eq!(
            slot.get_or_dial(now, |_| true, || async { Ok(1) }).await,
            Ok(1)
        );
        assert_eq!(slot.pooled(|_| true).await, Some(1));
        // The pooled one is closed: a new one replaces it.
        assert_eq!(slot.pooled(|c| *c != 1).await, None);
        assert_eq!(
            slot.get_or_dial(now, |c| *c != 1, || async { Ok(2) }).await,
            Ok(2)
        );
        assert_eq!(slot.pooled(|_| true).await, Some(2));
    }
}
