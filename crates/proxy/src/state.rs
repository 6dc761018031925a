//! The proxy's shared state: an atomically swapped [`Snapshot`] of everything loaded from disk,
//! plus process-lifetime pieces (metrics, HTTP client pool, the drain's trigger).
//!
//! Each new connection (and each HTTP request) takes the snapshot current at that moment; a
//! reload builds a complete new snapshot off to the side and swaps it in only if every part of it
//! loaded. Connections already established keep the `Arc` they hold, so a reload never drops
//! them and a bad reload never half-applies.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use trustmesh_lifecycle::drain::{Drained, Trigger, Watch};

use crate::config::ProxyConfig;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::telemetry::peer::Side;
use crate::workers::Workers;

pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// The threads that run connections, each with its own pools of app connections.
    pub workers: Workers,
    /// The configuration the listeners were bound from; listener changes need a restart.
    pub startup_config: ProxyConfig,
    /// Starts the drain at shutdown: listeners stop accepting, connections finish (each holds a
    /// watch of it, handed out by its listener's [`accept_loop`]), readiness reports 503.
    drain: Trigger,
    /// `maxConnections` shared between the listeners, each with a reserve.
    slots: crate::slots::ListenerSlots,
    /// Set by SIGHUP: the reload watcher looks at the files now.
    reload_now: tokio::sync::Notify,
}

impl Shared {
    pub fn new(snapshot: Snapshot, drain: Trigger) -> std::io::Result<Arc<Shared>> {
        let workers = Workers::start(
            snapshot.config.worker_threads(),
            snapshot.config.timeouts.connect(),
        )?;
        let startup_config = snapshot.config.clone();
        let slots = crate::slots::ListenerSlots::new(startup_config.listener_count());
        let metrics = Metrics::default();
        metrics
            .cert_expiry_unix
            .store(snapshot.own_not_after, std::sync::atomic::Ordering::Relaxed);
        metrics.set_invalid_policies(snapshot.policies.invalid_counts());
        metrics.istio.set_own(snapshot.telemetry.workload.clone());
        crate::accesslog::format::set_current(snapshot.access_log_format.clone());
        crate::accesslog::set_output(snapshot.access_log_output.clone());
        Ok(Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            workers,
            startup_config,
            drain,
            slots,
            reload_now: tokio::sync::Notify::new(),
        }))
    }

    /// The snapshot in force right now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Admits one more connection on `listener` (inbound listeners first, then outbound, in
    /// config order) unless its share of `maxConnections` is used up ([`crate::slots`]; the
    /// refusal is counted). The guard keeps it counted as active until dropped, even if its
    /// task panics.
    pub fn admit(self: &Arc<Self>, listener: usize) -> Option<ConnGuard> {
        use std::sync::atomic::Ordering;
        let max = self.current().config.max_connections;
        if !self.slots.try_take(listener, max) {
            self.metrics
                .reject(crate::metrics::RejectReason::ConnectionLimit);
            return None;
        }
        self.metrics
            .active_connections
            .fetch_add(1, Ordering::AcqRel);
        Some(ConnGuard(self.clone(), listener))
    }

    /// Asks the reload watcher to reload now, changed files or not (SIGHUP).
    pub fn request_reload(&self) {
        self.reload_now.notify_one();
    }

    /// Resolves when a reload was requested.
    pub async fn reload_requested(&self) {
        self.reload_now.notified().await
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Drains: listeners close, HTTP connections finish the request in flight and close, TCP
    /// relays and upgraded tunnels keep going until `deadline`, then everything still open is
    /// closed; `hurry` (a second signal) closes it at once.
    pub async fn drain(
        &self,
        deadline: Duration,
        hurry: impl std::future::Future<Output = ()>,
    ) -> Drained {
        self.drain.shutdown(deadline, hurry).await
    }

    pub fn install(&self, snapshot: Snapshot) {
        self.metrics
            .cert_expiry_unix
            .store(snapshot.own_not_after, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .set_invalid_policies(snapshot.policies.invalid_counts());
        self.metrics
            .istio
            .set_own(snapshot.telemetry.workload.clone());
        crate::accesslog::format::set_current(snapshot.access_log_format.clone());
        crate::accesslog::set_output(snapshot.access_log_output.clone());
        self.snapshot.store(Arc::new(snapshot));
    }
}

/// One admitted connection and its listener; frees its slot when dropped.
pub struct ConnGuard(Arc<Shared>, usize);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.slots.release(self.1);
        self.0
            .metrics
            .active_connections
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Accepts connections on `listener` until the drain starts, admitting each one against the
/// connection limit and handing it to `handle` on a worker thread (see [`crate::workers`]),
/// with a clone of `drain` that the connection holds for its whole life, so the drain waits
/// for it. Accept errors (e.g. out of file descriptors) are logged and retried after a pause
/// rather than ending the listener. Inbound and outbound listeners share this loop; only
/// `handle` differs.
pub async fn accept_loop<F, Fut>(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    slot: usize,
    direction: &'static str,
    drain: Watch,
    handle: F,
) where
    F: Fn(Arc<Shared>, tokio::net::TcpStream, std::net::SocketAddr, Watch) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // Placement by this listener's own connections (see crate::workers).
    let spread = crate::workers::Spread::new(shared.workers.len(), slot);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            // Dropping the listener closes the port, so new clients fail fast during a drain.
            _ = drain.draining() => return,
        };
        match accepted {
            Ok((stream, source)) => {
                let Some(guard) = shared.admit(slot) else {
                    drop(stream);
                    continue;
                };
                // Out of this runtime's reactor, into the worker's (see crate::workers).
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "{direction}: cannot hand a connection over");
                        continue;
                    }
                };
                let (conn_shared, handle) = (shared.clone(), handle.clone());
                let conn_drain = drain.clone();
                let (worker, live) = spread.pick();
                let job: crate::workers::Job = Box::new(move || {
                    Box::pin(async move {
                        let _guard = (guard, live);
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => handle(conn_shared, stream, source, conn_drain).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "{direction}: cannot register a connection")
                            }
                        }
                    })
                });
                if shared.workers.dispatch_to(worker, job).is_err() {
                    tracing::error!(
                        "{direction}: every worker thread has stopped; closing the connection"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "{direction} accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The labels of Istio's metrics for a connection's peer ([`crate::telemetry::peer`]): what
/// its SPIFFE ID says, and the workload the registry has under that identity when exactly
/// one has it (entries of one identity with different labels are told apart by neither, so none is used).
impl Shared {
    pub fn inbound_side(&self, snap: &Snapshot, ctx: &crate::conn::ConnCtx) -> Side {
        let peer = ctx.peer.as_ref().map(|p| &p.id);
        let known = match peer {
            Some(id) => known_by_identity(snap, id),
            // Plaintext: the workload the registry has at the source address, if only one.
            None => known_at(snap, ctx.source.ip()),
        };
        self.metrics.istio.inbound_side(
            peer,
            &snap.own_id,
            known,
            ctx.source.ip(),
            ctx.target.port(),
        )
    }

    /// An outbound connection to a peer that proved `principal` (or none, plaintext).
    ///
    /// Remembered per worker thread for the snapshot it was worked out in (each snapshot has
    /// its own mesh view and epoch): a routed request asks for it every time, and parsing the
    /// SPIFFE ID, finding the workload and interning its labels cost the client side about
    /// 0.75 µs a request (perf, 3.5 % of its CPU) for an answer that only a reload changes.
    /// Interned labels are never evicted from the store, so a remembered side names the same
    /// series a fresh one would.
    pub fn outbound_side(&self, snap: &Snapshot, principal: Option<&str>) -> Side {
        thread_local! {
            static SIDES: std::cell::RefCell<PerEpoch<Side>> =
                const { std::cell::RefCell::new(PerEpoch::new()) };
        }
        let epoch = snap.mesh_view.epoch;
        if let Some(side) = SIDES.with(|c| c.borrow().get(epoch, principal)) {
            return side;
        }
        let side = self.work_out_outbound_side(snap, principal);
        SIDES.with(|c| c.borrow_mut().put(epoch, principal, side.clone()));
        side
    }

    fn work_out_outbound_side(&self, snap: &Snapshot, principal: Option<&str>) -> Side {
        let id = principal.and_then(|p| trustmesh_identity::SpiffeId::parse(p).ok());
        let known = id.as_ref().and_then(|id| known_by_identity(snap, id));
        self.metrics
            .istio
            .outbound_side(principal, &snap.own_id, known)
    }
}

fn known_by_identity<'a>(
    snap: &'a Snapshot,
    id: &trustmesh_identity::SpiffeId,
) -> Option<crate::telemetry::peer::Known<'a>> {
    let mut found = snap.mesh_view.registry.workloads_with(id);
    let w = found.next()?;
    if found.any(|o| o.labels != w.labels) {
        return None;
    }
    Some(crate::telemetry::peer::Known {
        namespace: &w.namespace,
        service_account: &w.service_account,
        labels: &w.labels,
    })
}

fn known_at(snap: &Snapshot, ip: std::net::IpAddr) -> Option<crate::telemetry::peer::Known<'_>> {
    let mut found = snap.mesh_view.registry.workloads_at(&ip);
    let w = found.next()?;
    if found.next().is_some() {
        return None;
    }
    Some(crate::telemetry::peer::Known {
        namespace: &w.namespace,
        service_account: &w.service_account,
        labels: &w.labels,
    })
}

/// Values by peer principal, worked out under one snapshot (its mesh view's epoch): a newer
/// epoch forgets them all.
struct PerEpoch<V> {
    epoch: u64,
    entries: Vec<(Option<String>, V)>,
}

impl<V: Clone> PerEpoch<V> {
    /// Peers remembered at most; past it the list starts again (a sidecar talking to more
    /// peers than this at once works some out again, as it did before there was a list).
    const MAX: usize = 64;

    const fn new() -> Self {
        PerEpoch {
            epoch: 0,
            entries: Vec::new(),
        }
    }

    fn get(&self, epoch: u64, principal: Option<&str>) -> Option<V> {
        if self.epoch != epoch {
            return None;
        }
        self.entries
            .iter()
            .find(|(p, _)| p.as_deref() == principal)
            .map(|(_, v)| v.clone())
    }

    fn put(&mut self, epoch: u64, principal: Option<&str>, v: V) {
        if self.epoch != epoch || self.entries.len() >= Self::MAX {
            self.epoch = epoch;
            self.entries.clear();
        }
        self.entries.push((principal.map(str::to_string), v));
    }
}

#[cfg(test)]
mod tests {
    use super::PerEpoch;

    #[test]
    fn remembered_values_last_only_as_long_as_their_epoch() {
        let mut m = PerEpoch::new();
        let (a, b) = (Some("spiffe://td/ns/a/sa/a"), Some("spiffe://td/ns/b/sa/b"));
        assert_eq!(m.get(1, a), None);
        m.put(1, a, "a1");
        m.put(1, None, "plain1");
        assert_eq!(m.get(1, a), Some("a1"));
        assert_eq!(m.get(1, None), Some("plain1"));
        assert_eq!(m.get(1, b), None, "another peer is not the same one");
        // A reload: nothing worked out before it is given out again.
        assert_eq!(m.get(2, a), None);
        m.put(2, b, "b2");
        assert_eq!(m.get(2, a), None);
        assert_eq!(
            m.get(1, b),
            None,
            "an older snapshot's request gets nothing either"
        );
        assert_eq!(m.get(2, b), Some("b2"));
        // Bounded: the list starts again once full.
        for i in 0..PerEpoch::<&str>::MAX {
            m.put(2, Some(&format!("p{i}")), "p");
        }
        assert!(m.entries.len() <= PerEpoch::<&str>::MAX);
        assert_eq!(m.get(2, b), None);
    }
}
