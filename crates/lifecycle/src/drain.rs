//! Draining: telling every listener, connection and task of a process to finish, and knowing
//! when they have.
//!
//! [`channel`] gives a [`Trigger`], kept by whoever decides to stop, and a [`Watch`], cloned
//! into every component and every connection. Each watch (and the [`Guard`] it turns into) is
//! one holder until it is dropped. [`Trigger::drain`] tells every holder that a drain started
//! and in which [`Mode`], then waits until the last holder is gone or the deadline passes, and
//! says how many were still open. A component therefore never reports that it finished: it
//! finishes by dropping what it holds, which also happens when it returns early or panics.
//!
//! Why counting holders rather than polling a gauge of connections: the count is exact at every
//! moment (a connection accepted in the last instant holds a clone before it is served), and the
//! trigger wakes on the last release instead of sleeping in steps.
//!
//! - [`Mode::Graceful`]: accept nothing new and finish what was accepted (a request in flight,
//!   a gRPC call); idle connections close.
//! - [`Mode::Immediate`]: stop now. A drain goes from graceful to immediate (its deadline
//!   passed, or a second signal came), never back.
//!
//! A watch cloned after the drain started sees it at once. A trigger dropped without draining
//! never drains: dropping the value that owns a server does not stop it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// How a drain asks holders to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Accept nothing new, finish what was accepted.
    Graceful,
    /// Stop now.
    Immediate,
}

/// How long holders get to let go once a drain turns immediate. They are expected to stop
/// within milliseconds (dropping a connection is all it takes); this bounds a stuck one.
pub const IMMEDIATE_GRACE: Duration = Duration::from_secs(1);

/// A new drain: the trigger and the first watch.
pub fn channel() -> (Trigger, Watch) {
    let (mode, rx) = watch::channel(None);
    let holders = Arc::new(Holders {
        count: AtomicUsize::new(1),
        released: Notify::new(),
    });
    (
        Trigger {
            mode,
            holders: holders.clone(),
        },
        Watch { mode: rx, holders },
    )
}

#[derive(Debug)]
struct Holders {
    /// Watches and guards alive. Only a live watch makes another, so once zero it stays zero.
    count: AtomicUsize,
    /// Woken when the count reaches zero.
    released: Notify,
}

/// Starts a drain and waits for it; one per drained component (or process).
#[derive(Debug)]
pub struct Trigger {
    mode: watch::Sender<Option<Mode>>,
    holders: Arc<Holders>,
}

/// What a drain ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Holders still open when the deadline passed (zero: everything finished).
    pub still_open: usize,
    /// How long the drain took.
    pub waited: Duration,
}

impl Drained {
    /// Every holder finished before the deadline.
    pub fn complete(&self) -> bool {
        self.still_open == 0
    }
}

impl Trigger {
    /// The drain's mode, once one started.
    pub fn mode(&self) -> Option<Mode> {
        *self.mode.borrow()
    }

    pub fn is_draining(&self) -> bool {
        self.mode().is_some()
    }

    /// Holders open right now.
    pub fn open(&self) -> usize {
        self.holders.count.load(Ordering::Acquire)
    }

    /// Tells every holder to finish in `mode` (a graceful drain may turn immediate, not back)
    /// without waiting.
    pub fn start(&self, mode: Mode) {
        self.mode.send_if_modified(|current| match current {
            Some(m) if *m >= mode => false,
            _ => {
                *current = Some(mode);
                true
            }
        });
    }

    /// Starts the drain in `mode`, then waits until every holder has let go or `deadline` has
    /// passed.
    pub async fn drain(&self, mode: Mode, deadline: Duration) -> Drained {
        let started = Instant::now();
        self.start(mode);
        let still_open = self.released_by(started + deadline).await;
        Drained {
            still_open,
            waited: started.elapsed(),
        }
    }

    /// Holders still open at `deadline`, or zero as soon as the last one lets go.
    async fn released_by(&self, deadline: Instant) -> usize {
        loop {
            // Registered before the count is read, so a release in between is not missed.
            let released = self.holders.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.open() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.open();
            }
        }
    }

    /// The way a process stops: a graceful drain bounded by `deadline`, then an immediate one
    /// for whatever is still open; `hurry` (a second signal) turns it immediate at once.
    pub async fn shutdown(&self, deadline: Duration, hurry: impl Future<Output = ()>) -> Drained {
        let started = Instant::now();
        tracing::info!(
            open = self.open(),
            ?deadline,
            "draining: accepting nothing new, finishing what was accepted"
        );
        let graceful = tokio::select! {
            d = self.drain(Mode::Graceful, deadline) => Some(d),
            () = hurry => None,
        };
        let drained = match graceful {
            Some(d) if d.complete() => d,
            Some(d) => {
                tracing::warn!(
                    still_open = d.still_open,
                    "drain deadline passed; stopping what is still open"
                );
                self.drain(Mode::Immediate, IMMEDIATE_GRACE).await
            }
            None => {
                tracing::warn!(still_open = self.open(), "stopping at once");
                self.drain(Mode::Immediate, IMMEDIATE_GRACE).await
            }
        };
        let drained = Drained {
            waited: started.elapsed(),
            ..drained
        };
        tracing::info!(
            still_open = drained.still_open,
            waited = ?drained.waited,
            "drained"
        );
        drained
    }
}

/// One holder: learns when a drain starts; the drain waits for it until it is dropped.
#[derive(Debug)]
pub struct Watch {
    mode: watch::Receiver<Option<Mode>>,
    holders: Arc<Holders>,
}

impl Clone for Watch {
    fn clone(&self) -> Watch {
        self.holders.count.fetch_add(1, Ordering::Relaxed);
        Watch {
            mode: self.mode.clone(),
            holders: self.holders.clone(),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.holders.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.holders.released.notify_waiters();
        }
    }
}

impl Watch {
    /// The drain's mode, once one started.
    pub fn mode(&self) -> Option<Mode> {
        *self.mode.borrow()
    }

    /// Resolves when a drain starts (at once if it already has); the guard keeps this holder
    /// open until it is dropped, when its work is finished.
    pub async fn signaled(self) -> Guard {
        self.draining().await;
        Guard { watch: self }
    }

    /// Like [`Watch::signaled`] without giving up the watch: for a loop that selects on it.
    pub async fn draining(&self) -> Mode {
        self.reached(Mode::Graceful).await
    }

    /// Resolves once the drain is immediate: stop now.
    pub async fn immediate(&self) {
        self.reached(Mode::Immediate).await;
    }

    async fn reached(&self, at_least: Mode) -> Mode {
        let mut rx = self.mode.clone();
        let reached = rx
            .wait_for(|m| m.is_some_and(|m| m >= at_least))
            .await
            .map(|m| m.unwrap_or(at_least));
        match reached {
            Ok(mode) => mode,
            // The trigger is gone without draining: nothing will ever ask this holder to stop.
            Err(_) => std::future::pending().await,
        }
    }
}

/// A holder told to drain; dropping it says its work is done.
#[derive(Debug)]
pub struct Guard {
    watch: Watch,
}

impl Guard {
    /// The drain's mode now (it may have turned immediate since the guard was handed out).
    pub fn mode(&self) -> Mode {
        self.watch.mode().unwrap_or(Mode::Graceful)
    }

    /// Resolves once the drain is immediate: stop now.
    pub async fn immediate(&self) {
        self.watch.immediate().await
    }
}

#[cfg(test)]
mod tests;
