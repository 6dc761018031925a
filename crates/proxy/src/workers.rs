//! Thread-per-core connection workers.
//!
//! Every accepted connection is handed, round-robin, to one of `concurrency` worker threads, each
//! running its own single-threaded tokio runtime, and stays there for its whole life: its socket,
//! its TLS session, its HTTP codec, the tasks hyper spawns for it and the pooled connections to
//! the local app it uses are all driven by that one thread.
//!
//! Why not one work-stealing runtime: a proxied request wakes several tasks in a chain (client
//! connection → app connection → back), and on a multi-threaded scheduler each wake-up may
//! notify an idle worker on another core, which costs a futex call, a context switch and cold
//! caches. On a loaded sidecar those hand-offs cost more CPU than the request's own work. Keeping
//! a connection on one thread is how Envoy and nginx run (one event loop per worker), and it lets
//! several workers still use every core.
//!
//! The price is that a connection cannot move to an idle core: a worker with a few very busy
//! connections is not helped by its neighbours. So placement is per listener: a connection goes
//! to the worker with the fewest live connections from the same listener ([`Spread`]), ties
//! taken in turn. One count over every listener (plain round-robin) let the few long-lived
//! connections that carry a listener's whole load land together: the HBONE port's two
//! connections from a client sidecar, every request multiplexed on them, were both placed on
//! worker 0 whenever an odd number of other connections (a probe, a metrics scrape) came in
//! between, and the server sidecar then ran on one core while the other idled (seen in the
//! benchmark's per-thread CPU; the first requests of a burst of new app connections queued
//! behind each other on that one thread).
//!
//! The acceptor (the runtime that called [`Workers::start`]) only accepts and dispatches; a socket
//! is taken out of the acceptor's reactor and registered with the worker's, so its readiness
//! events are delivered on the worker's own thread.
//!
//! At shutdown a job moves with the drain watch its listener gave it (`state::accept_loop`), and
//! holds it until the connection ends, so the drain waits for the connections on every worker
//! thread alike; each connection path reacts to the drain itself (see `run`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::reqbody::AppBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

/// A connection's work, built on the worker thread from its (re-registered) socket.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The HTTP clients a worker uses toward local apps. Each worker has its own pool, so a pooled
/// app connection is only ever used by the thread whose reactor drives it.
#[derive(Clone)]
pub struct AppClients {
    /// HTTP/1.1 with keep-alive.
    pub http1: Client<HttpConnector, AppBody>,
    /// Cleartext HTTP/2 with prior knowledge, for `appProtocol: http2` apps.
    pub http2: Client<HttpConnector, AppBody>,
    /// The same two, connecting from 127.0.0.6 (captured connections to the workload's own
    /// address, see `ConnCtx::app_source`).
    pub passthrough_http1: Client<HttpConnector, AppBody>,
    pub passthrough_http2: Client<HttpConnector, AppBody>,
}

impl AppClients {
    pub fn new(connect_timeout: std::time::Duration) -> AppClients {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let idle = std::time::Duration::from_secs(30);
        let mut passthrough = connector.clone();
        passthrough.set_local_address(Some(crate::upstream::INBOUND_PASSTHROUGH_SOURCE.into()));
        let h1 = |c: HttpConnector| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(idle)
                .build(c)
        };
        let h2 = |c: HttpConnector| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(idle)
                .http2_only(true)
                .build(c)
        };
        AppClients {
            http1: h1(connector.clone()),
            http2: h2(connector),
            passthrough_http1: h1(passthrough.clone()),
            passthrough_http2: h2(passthrough),
        }
    }
}

/// One listener's live connections on each worker, and where its next connection goes.
pub struct Spread {
    live: Arc<[AtomicUsize]>,
    /// Where the search for the least busy worker starts: moves on with every pick, so ties
    /// are taken in turn.
    turn: AtomicUsize,
}

/// A connection counted on its worker by [`Spread`] until this is dropped (its job ends).
pub struct Live {
    live: Arc<[AtomicUsize]>,
    worker: usize,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.live[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spread {
    /// For `workers` workers; `first` is where the first tie goes (a listener's index, so
    /// the first connections of different listeners do not all go to worker 0).
    pub fn new(workers: usize, first: usize) -> Spread {
        let n = workers.max(1);
        Spread {
            live: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            turn: AtomicUsize::new(first % n),
        }
    }

    /// The worker with the fewest live connections of this listener, and the count of the
    /// new one, to hold for its whole life.
    pub fn pick(&self) -> (usize, Live) {
        let n = self.live.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        let worker = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&w| self.live[w].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.live[worker].fetch_add(1, Ordering::Relaxed);
        let live = Live {
            live: self.live.clone(),
            worker,
        };
        (worker, live)
    }
}

thread_local! {
    /// The clients of the worker running on this thread (unset on other threads).
    static WORKER_CLIENTS: std::cell::OnceCell<AppClients> = const { std::cell::OnceCell::new() };
}

/// Worker threads and the queues that feed them.
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    /// Used from threads that are not workers (an embedding runtime, tests calling handlers
    /// directly).
    fallback: AppClients,
}

impl Workers {
    /// Starts `n` (at least one) worker threads. They run until this value is dropped and the
    /// connections they hold have finished: dropping the queues stops new work, and each worker
    /// then drains the connections already on it before its thread ends.
    pub fn start(n: usize, connect_timeout: std::time::Duration) -> std::io::Result<Workers> {
        let n = n.max(1);
        let mut queues = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::unbounded_channel::<Job>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("proxy-worker-{i}"))
                .spawn(move || {
                    WORKER_CLIENTS.with(|c| {
                        let _ = c.set(AppClients::new(connect_timeout));
                    });
                    runtime.block_on(run_worker(rx));
                })?;
            queues.push(tx);
        }
        Ok(Workers {
            queues,
            fallback: AppClients::new(connect_timeout),
        })
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Hands `job` to worker `w` (see [`Spread::pick`]), or to the next one alive if that
    /// worker's thread is gone (it panicked). Returns the job back if every worker has stopped.
    pub fn dispatch_to(&self, w: usize, job: Job) -> Result<(), Job> {
        let n = self.queues.len();
        let mut job = job;
        for k in 0..n {
            match self.queues[(w + k) % n].send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(j)) => job = j,
            }
        }
        Err(job)
    }

    /// Sends `req` to a local app over the calling thread's pool (its worker's own, or the
    /// shared fallback off the workers), HTTP/2 with prior knowledge when `h2`, from 127.0.0.6
    /// when `passthrough` (see `ConnCtx::app_source`).
    pub fn app_request(
        &self,
        h2: bool,
        passthrough: bool,
        req: http::Request<AppBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        let pick = |c: &AppClients| match (h2, passthrough) {
            (true, false) => c.http2.request(req),
            (false, false) => c.http1.request(req),
            (true, true) => c.passthrough_http2.request(req),
            (false, true) => c.passthrough_http1.request(req),
        };
        WORKER_CLIENTS.with(|c| match c.get() {
            Some(own) => pick(own),
            None => pick(&self.fallback),
        })
    }
}

/// How far ahead the worker's anchor timer stays while it holds connections (see `run_worker`).
const ANCHOR: std::time::Duration = std::time::Duration::from_secs(1);

/// A worker's loop: start each connection as a local task; once the queue closes, wait for the
/// connections still running, then return (ending the thread).
///
/// While it holds connections the worker keeps one timer pending at most [`ANCHOR`] ahead.
/// Why: tokio's timer wakes its driver (an eventfd write, a system call) whenever a timer is
/// set while the driver last went to sleep with no timer pending, or with a later one. HTTP/1
/// sets one per request (hyper's header read timeout, started each time a keep-alive
/// connection waits for its next request), and in between requests a busy worker often had
/// none pending: half the requests of a captured outbound connection cost an eventfd write
/// (perf: `Sleep::poll` → `reregister` → `IoHandle::unpark`). With the anchor pending, the
/// driver always sleeps with a timer at most a second away, so the usual timeouts (seconds to
/// an hour) are later and set without a wake-up. A worker without connections keeps no anchor,
/// so an idle sidecar is not woken every second.
async fn run_worker(mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut tasks = tokio::task::JoinSet::new();
    let anchor = tokio::time::sleep(ANCHOR);
    tokio::pin!(anchor);
    loop {
        tokio::select! {
            job = rx.recv() => match job {
                Some(job) => {
                    tasks.spawn(job());
                }
                None => break,
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = &mut anchor, if !tasks.is_empty() => {
                anchor.as_mut().reset(tokio::time::Instant::now() + ANCHOR);
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn job(seen: Arc<Mutex<Vec<String>>>) -> Job {
        Box::new(move || {
            Box::pin(async move {
                let name = std::thread::current().name().unwrap_or("?").to_string();
                seen.lock().unwrap().push(name);
            })
        })
    }

    #[test]
    fn a_listeners_connections_go_to_its_least_busy_worker_ties_in_turn() {
        let spread = Spread::new(3, 0);
        let (a, live_a) = spread.pick();
        let (b, _live_b) = spread.pick();
        let (c, _live_c) = spread.pick();
        assert_eq!((a, b, c), (0, 1, 2));
        // The connection on worker 0 ends: the next goes there, whoever's turn it is.
        drop(live_a);
        let (d, _live_d) = spread.pick();
        assert_eq!(d, 0);
        // All even again: the turn goes on from where it was (the fifth pick starts at 1).
        let (e, _live_e) = spread.pick();
        assert_eq!(e, 1);
        // Another listener starts its turns elsewhere, and counts its own connections only.
        let other = Spread::new(3, 1);
        assert_eq!(other.pick().0, 1);
        assert_eq!(Spread::new(2, 5).pick().0, 1);
    }

    #[test]
    fn a_listeners_two_connections_take_both_workers_whatever_comes_in_between() {
        // The HBONE port's two long-lived connections, with a metrics scrape on another
        // listener accepted between them: one count over both listeners put both on worker 0.
        let (hbone, admin) = (Spread::new(2, 0), Spread::new(2, 1));
        let (first, _a) = hbone.pick();
        let (_, _scrape) = admin.pick();
        let (second, _b) = hbone.pick();
        assert_ne!(first, second);
    }

    #[test]
    fn jobs_go_to_the_worker_they_are_handed_to() {
        let workers = Workers::start(3, std::time::Duration::from_secs(1)).unwrap();
        assert_eq!(workers.len(), 3);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let spread = Spread::new(3, 0);
        let mut held = Vec::new();
        for _ in 0..9 {
            let (w, live) = spread.pick();
            held.push(live);
            assert!(workers.dispatch_to(w, job(seen.clone())).is_ok());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.lock().unwrap().len() < 9 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut names = seen.lock().unwrap().clone();
        names.sort();
        let want: Vec<String> = (0..3)
            .flat_map(|i| std::iter::repeat_n(format!("proxy-worker-{i}"), 3))
            .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn a_worker_finishes_its_connections_after_the_queue_closes() {
        let workers = Workers::start(1, std::time::Duration::from_secs(1)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let _ = tx.send(());
            })
        });
        assert!(workers.dispatch_to(0, job).is_ok());
        drop(workers);
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok(),
            "the in-flight connection was cut when the workers were dropped"
        );
    }

    /// Write system calls made so far by the calling thread.
    fn thread_write_calls() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    }

    async fn wait_for_a_byte(s: &tokio::net::UnixStream) {
        let mut buf = [0u8; 64];
        s.readable().await.unwrap();
        // Read until empty, so the next wait really sleeps.
        while s.try_read(&mut buf).is_ok_and(|n| n > 0) {}
    }

    /// What a keep-alive HTTP/1 connection does between requests: its worker sleeps in epoll
    /// until the next request arrives, then hyper sets a header read timeout (60 s by default)
    /// and drops it once the head is in. Setting it must not cost a system call (the driver's
    /// eventfd wake-up) each time.
    #[test]
    fn setting_a_timeout_after_the_worker_slept_makes_no_system_call() {
        use std::io::Write;
        const ROUNDS: u64 = 30;
        let workers = Workers::start(1, std::time::Duration::from_secs(1)).unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let s = tokio::net::UnixStream::from_std(ours).unwrap();
                wait_for_a_byte(&s).await;
                let before = thread_write_calls();
                for _ in 0..ROUNDS {
                    wait_for_a_byte(&s).await;
                    // The default header read timeout.
                    let mut timeout =
                        Box::pin(tokio::time::sleep(std::time::Duration::from_secs(60)));
                    // Polled once, as hyper does while the head is incomplete: registered.
                    std::future::poll_fn(|cx| {
                        let _ = timeout.as_mut().poll(cx);
                        std::task::Poll::Ready(())
                    })
                    .await;
                }
                let _ = tx.send(thread_write_calls() - before);
            })
        });
        assert!(workers.dispatch_to(0, job).is_ok());
        for _ in 0..=ROUNDS {
            std::thread::sleep(std::time::Duration::from_millis(3));
            theirs.write_all(b"x").unwrap();
        }
        let writes = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the job finished");
        assert!(
            writes < ROUNDS / 5,
            "{writes} write calls on the worker thread for {ROUNDS} timeouts set"
        );
    }

    #[test]
    fn worker_threads_use_their_own_app_clients() {
        let workers = Workers::start(1, std::time::Duration::from_secs(1)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let own = WORKER_CLIENTS.with(|c| c.get().is_some());
                let _ = tx.send(own);
            })
        });
        assert!(workers.dispatch_to(0, job).is_ok());
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).ok(),
            Some(true)
        );
        // This test thread is not a worker.
        assert!(WORKER_CLIENTS.with(|c| c.get().is_none()));
    }
}
