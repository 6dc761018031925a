//! The one module that handles OS signals, for every binary.
//!
//! [`Signals::register`] installs handlers for SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2.
//! Call it inside the runtime before anything is served: the default action of each of them is
//! to kill the process, mid-request (a log rotator's SIGHUP, a stray `kill -USR1`). From then on:
//!
//! - SIGTERM (how supervisors stop a service) or SIGINT (Ctrl-C): [`Signals::shutdown`]
//!   resolves, and the process drains gracefully ([`crate::drain::Trigger::shutdown`]); a second
//!   one resolves [`Signals::again`], and the drain turns immediate.
//! - SIGHUP: with [`Hangup::Reload`] a reload request ([`Signals::reload`], as daemons reload
//!   their configuration); with [`Hangup::Ignore`] logged and ignored.
//! - SIGUSR1: [`Signals::reopen`] resolves, as Envoy reopens its access log files on SIGUSR1
//!   (what a log rotator's `postrotate` sends); logged and ignored by a process that never
//!   asked for it.
//! - SIGUSR2: logged and ignored.
//!
//! A signal that comes before anyone waits for it is remembered: a SIGTERM during startup stops
//! the process as soon as it is up, and a SIGHUP during startup reloads once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};

/// What SIGHUP means to this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// Reload the configuration now.
    Reload,
    /// This process has nothing to reload: log and ignore.
    Ignore,
}

/// The process's signals, registered; cheap to clone.
#[derive(Debug, Clone)]
pub struct Signals {
    /// SIGTERMs and SIGINTs so far, and the first one's name.
    shutdowns: watch::Receiver<(u32, &'static str)>,
    reload: Arc<Notify>,
    reopen: Arc<Reopen>,
}

/// SIGUSR1's waiters: whether anyone has asked (so the log line says what happens), and the
/// wake-up.
#[derive(Debug, Default)]
struct Reopen {
    wanted: AtomicBool,
    notify: Notify,
}

impl Signals {
    /// Installs the handlers and starts the task that answers them. Must run inside a tokio
    /// runtime with its I/O driver enabled.
    pub fn register(hangup: Hangup) -> std::io::Result<Signals> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        let (shutdowns_tx, shutdowns) = watch::channel((0, ""));
        let reload = Arc::new(Notify::new());
        let reload_tx = reload.clone();
        let reopen = Arc::new(Reopen::default());
        let reopen_tx = reopen.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = term.recv() => "SIGTERM",
                    Some(()) = int.recv() => "SIGINT",
                    Some(()) = hup.recv() => "SIGHUP",
                    Some(()) = usr1.recv() => "SIGUSR1",
                    Some(()) = usr2.recv() => "SIGUSR2",
                    // The runtime is shutting down.
                    else => return,
                };
                match name {
                    "SIGTERM" | "SIGINT" => shutdowns_tx.send_modify(|(n, first)| {
                        *n += 1;
                        match *n {
                            1 => {
                                *first = name;
                                tracing::info!(
                                    "{name} received: shutting down gracefully (send SIGTERM or \
                                     SIGINT again to stop at once)"
                                );
                            }
                            2 => tracing::warn!("{name} received again: stopping at once"),
                            _ => tracing::info!("{name} received: already stopping at once"),
                        }
                    }),
                    "SIGHUP" if hangup == Hangup::Reload => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        reload_tx.notify_one();
                    }
                    "SIGUSR1" if reopen_tx.wanted.load(Ordering::Relaxed) => {
                        tracing::info!("SIGUSR1: reopening the access log file");
                        reopen_tx.notify.notify_one();
                    }
                    _ => tracing::info!(
                        "{name} received and ignored (SIGTERM or SIGINT stops this process)"
                    ),
                }
            }
        });
        Ok(Signals {
            shutdowns,
            reload,
            reopen,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT (at once if one already came), with its name.
    pub async fn shutdown(&self) -> &'static str {
        self.shutdowns_reached(1).await
    }

    /// Resolves on the second SIGTERM or SIGINT: stop at once.
    pub async fn again(&self) {
        self.shutdowns_reached(2).await;
    }

    async fn shutdowns_reached(&self, n: u32) -> &'static str {
        let mut rx = self.shutdowns.clone();
        let reached = rx.wait_for(|(count, _)| *count >= n).await.map(|s| s.1);
        match reached {
            Ok(name) => name,
            // The runtime is going away; no signal will come any more.
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves on the next SIGHUP (one that came while nobody waited counts), only with
    /// [`Hangup::Reload`]; never otherwise.
    pub async fn reload(&self) {
        self.reload.notified().await
    }

    /// From now on a SIGUSR1 asks for log files to be reopened, and one that comes while nobody
    /// waits in [`Signals::reopen`] is kept for the next wait. Called before a process says it
    /// is ready, so a rotator that signals it at once is not ignored while the waiting task
    /// has yet to run. Before this (or the first `reopen`), SIGUSR1s are logged and ignored, as
    /// nobody was there to reopen anything.
    pub fn take_reopens(&self) {
        self.reopen.wanted.store(true, Ordering::Relaxed);
    }

    /// Resolves on the next SIGUSR1 (see [`Signals::take_reopens`]): reopen log files (a
    /// rotator moved them away).
    pub async fn reopen(&self) {
        self.take_reopens();
        self.reopen.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn send(sig: &str) {
        let pid = std::process::id().to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .expect("run kill");
        assert!(ok.success());
    }

    /// One test for every signal: handlers are process-wide, so no other test in this binary
    /// sends any.
    #[tokio::test]
    async fn signals_are_answered_and_none_kills_the_process() {
        let signals = Signals::register(Hangup::Reload).unwrap();
        const WITHIN: Duration = Duration::from_secs(5);
        use tokio::time::timeout;
        for sig in ["USR1", "USR2"] {
            send(sig);
        }
        // The SIGUSR1 above came before anyone asked: it is not kept for later. (Given time
        // to be handled first: signals reach the task asynchronously.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(timeout(Duration::from_millis(200), signals.reopen())
            .await
            .is_err());
        send("USR1");
        timeout(WITHIN, signals.reopen())
            .await
            .expect("SIGUSR1 asks for the log files to be reopened");
        // Once taken, a SIGUSR1 that comes while nobody waits is kept for the next wait.
        let fresh = Signals::register(Hangup::Reload).unwrap();
        fresh.take_reopens();
        send("USR1");
        tokio::time::sleep(Duration::from_millis(500)).await;
        timeout(Duration::from_millis(200), fresh.reopen())
            .await
            .expect("the SIGUSR1 that came before the wait is kept");
        send("HUP");
        timeout(WITHIN, signals.reload())
            .await
            .expect("SIGHUP asks for a reload");
        assert!(timeout(Duration::from_millis(100), signals.shutdown())
            .await
            .is_err());

        send("TERM");
        assert_eq!(
            timeout(WITHIN, signals.shutdown()).await.unwrap(),
            "SIGTERM"
        );
        assert!(timeout(Duration::from_millis(100), signals.again())
            .await
            .is_err());
        send("INT");
        timeout(WITHIN, signals.again())
            .await
            .expect("a second one hurries");
        // Still the first signal's name, and remembered for late callers.
        assert_eq!(signals.clone().shutdown().await, "SIGTERM");
    }
}
