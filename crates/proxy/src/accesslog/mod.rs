//! One JSON line per request (HTTP) or connection (TCP) on stdout, or where
//! `meshConfig.accessLogFile` says ([`output`]; an empty value turns the log off).
//!
//! Access logs go to stdout and diagnostics (tracing) to stderr so a log shipper can take the
//! access log as a clean JSON stream without filtering.
//!
//! How a line gets there: each thread that logs appends whole lines to a buffer of its own, and
//! one writer thread collects every buffer and writes what it took in one system call. A
//! request costs one uncontended lock and a serialization into memory that is reused: no
//! allocation, no queue hand-off, no wake-up of another thread. (A queue with a record per
//! request cost more CPU than the request's own proxying; perf showed the logging path as the
//! largest piece of the sidecar's user time.)
//!
//! Bounds: under traffic the writer collects every [`BATCH_PAUSE`], so a line reaches stdout
//! within about that long. When every buffer is empty the writer parks and the first new line
//! wakes it, so an idle sidecar spends no CPU on logging. A stalled stdout (a full pipe nobody
//! reads) only stalls the writer thread, never the workers that carry traffic: once a thread's
//! buffer holds [`MAX_PENDING`] bytes, further lines are dropped and counted ([`dropped`]).
//! Lines are appended whole, so two connections never interleave halves of records. [`flush`]
//! writes everything still buffered; shutdown calls it so the last lines are not lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

// The counter lives with the other metrics, so rendering them imports no log.
use crate::metrics::ACCESS_LOG_DROPPED as DROPPED;

use crate::clock::Stamp;
use crate::conn::ConnCtx;

#[cfg(test)]
use record::needs_escape;
pub use record::{method_text, AccessLog};

/// Bytes a thread may have waiting before its new lines are dropped (stdout stalled).
const MAX_PENDING: usize = 4 * 1024 * 1024;
/// How often the writer collects under traffic, bounding how late a line can be.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Access log records dropped because stdout could not keep up.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Per-thread buffers and the state the writer shares with the threads that log.
struct Collector {
    buffers: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    /// Set by the writer before it parks; the first line appended after that wakes it.
    idle: AtomicBool,
    writer: OnceLock<std::thread::Thread>,
}

impl Collector {
    const fn new() -> Collector {
        Collector {
            buffers: Mutex::new(Vec::new()),
            idle: AtomicBool::new(false),
            writer: OnceLock::new(),
        }
    }

    fn register(&self) -> Arc<Mutex<Vec<u8>>> {
        let b = Arc::new(Mutex::new(Vec::with_capacity(64 * 1024)));
        lock(&self.buffers).push(b.clone());
        b
    }

    /// Appends one record (serialized by `write`, then a newline) to `buf`, unless it is full.
    fn append(&self, buf: &Mutex<Vec<u8>>, write: impl FnOnce(&mut Vec<u8>) -> bool) {
        {
            let mut b = lock(buf);
            if b.len() >= MAX_PENDING {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let len = b.len();
            if !write(&mut b) {
                b.truncate(len);
                return;
            }
            b.push(b'\n');
        }
        if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
            if let Some(w) = self.writer.get() {
                w.unpark();
            }
        }
    }

    /// Moves everything buffered into `out` (buffers keep their capacity); forgets buffers of
    /// threads that have ended once they are empty. Returns whether anything was taken.
    fn collect(&self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        let mut buffers = lock(&self.buffers);
        buffers.retain(|b| {
            {
                let mut b = lock(b);
                out.extend_from_slice(&b);
                b.clear();
            }
            // Only the registry holds it: its thread is gone and nothing can append any more.
            Arc::strong_count(b) > 1
        });
        out.len() > before
    }

    /// The writer thread: collect, write (`write` says how many records were lost), pause;
    /// park when there is nothing to do.
    fn run_writer(&self, mut write: impl FnMut(&[u8]) -> u64) {
        let mut batch = Vec::with_capacity(256 * 1024);
        loop {
            if self.collect(&mut batch) {
                // A full disk or closed stdout must not take the proxy down: whole records are
                // lost and counted (see `sink`).
                let lost = write(&batch);
                DROPPED.fetch_add(lost, Ordering::Relaxed);
                batch.clear();
                std::thread::sleep(BATCH_PAUSE);
                continue;
            }
            self.idle.store(true, Ordering::SeqCst);
            // A line appended before `idle` was set did not wake us: look once more.
            if self.collect(&mut batch) {
                self.idle.store(false, Ordering::SeqCst);
                continue;
            }
            std::thread::park();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static COLLECTOR: Collector = Collector::new();

/// What the writer remembers between batches: where it writes, and a record cut by a failed
/// write.
static WRITER: Mutex<Destination> = Mutex::new(Destination::new());

/// The output the current snapshot asks for; the writer follows it at its next batch.
static OUTPUT: Mutex<Output> = Mutex::new(Output::Stdout);
/// Whether that output is `Off`: read by every request, so an atomic rather than the lock.
static OFF: AtomicBool = AtomicBool::new(false);

/// Makes `o` the access log's output (the snapshot's `meshConfig.accessLogFile`).
pub fn set_output(o: Output) {
    OFF.store(o == Output::Off, Ordering::Relaxed);
    *lock(&OUTPUT) = o;
}

/// Set by [`reopen`]; the writer closes its file before it writes again.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Closes the access log file so that the next line opens the path again (SIGUSR1, after a log
/// rotator moved the file away; without it lines keep going to the moved file). Never blocks:
/// while the writer is busy writing, it closes the file before its next batch.
pub fn reopen() {
    REOPEN.store(true, Ordering::SeqCst);
    if let Ok(mut dest) = WRITER.try_lock() {
        let lost = dest.take_reopen();
        DROPPED.fetch_add(lost, Ordering::Relaxed);
    }
}

/// The output being written and its open file, if a file.
struct Destination {
    writer: Writer,
    output: Output,
    file: Option<AppendFile>,
}

impl Destination {
    const fn new() -> Destination {
        Destination {
            writer: Writer::new(),
            output: Output::Stdout,
            file: None,
        }
    }

    /// Closes the file if [`reopen`] asked for it; returns 1 if a cut record was left behind in
    /// it (it cannot be finished in the new file).
    fn take_reopen(&mut self) -> u64 {
        if !REOPEN.swap(false, Ordering::SeqCst) || self.file.take().is_none() {
            return 0;
        }
        self.writer.abandon()
    }

    /// Writes `batch` where the current output says; returns how many records were lost.
    fn write(&mut self, batch: &[u8]) -> u64 {
        let want = lock(&OUTPUT).clone();
        let mut lost = self.take_reopen();
        if want != self.output {
            // A record cut on the old output cannot be finished on the new one.
            lost += self.writer.abandon();
            self.output = want;
            self.file = None;
        }
        lost + match &self.output {
            // Lines buffered just before the log was turned off.
            Output::Off => 0,
            Output::Stdout => self.writer.write(&mut RawStdout::new(), batch),
            Output::File(path) => {
                let file = match &mut self.file {
                    Some(f) => f,
                    None => match output::open(path) {
                        Ok(f) => self.file.insert(f),
                        Err(e) => return lost + self.writer.unwritable(&e, batch),
                    },
                };
                self.writer.write(file, batch)
            }
        }
    }
}

thread_local! {
    static BUFFER: Arc<Mutex<Vec<u8>>> = COLLECTOR.register();
}

/// Starts the writer thread on first use.
fn ensure_writer() {
    COLLECTOR.writer.get_or_init(|| {
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(|| COLLECTOR.run_writer(|batch| lock(&WRITER).write(batch)))
            .map(|h| h.thread().clone())
            // Without a writer thread lines still buffer (bounded) and `flush` writes them.
            .unwrap_or_else(|_| std::thread::current())
    });
}

/// Writes every buffered line to stdout now (at shutdown, so the last records are not lost).
pub fn flush() {
    let mut batch = Vec::new();
    if COLLECTOR.collect(&mut batch) {
        // The writer thread holds this while it writes, so the two never interleave records.
        let lost = lock(&WRITER).write(&batch);
        DROPPED.fetch_add(lost, Ordering::Relaxed);
    }
}

impl AccessLog {
    /// The line of an inbound TCP connection (admitted or refused), from what its listener
    /// knows about it.
    pub fn inbound_tcp(ctx: &ConnCtx) -> AccessLog {
        let mut log = AccessLog {
            time: Stamp::now(),
            direction: "inbound",
            protocol: "tcp",
            listener_port: ctx.listener_port,
            source_address: ctx.source.to_string().into(),
            destination_address: ctx.target.to_string().into(),
            source_principal: ctx.peer.as_ref().map(|p| p.id.as_str().into()),
            tls: ctx.tls,
            ..Default::default()
        };
        log.capture_connection(ctx);
        log
    }

    /// Appends the line (in the configured format) to this thread's buffer for the writer.
    pub fn emit(&self) {
        if OFF.load(Ordering::Relaxed) {
            return;
        }
        ensure_writer();
        let write = |b: &mut Vec<u8>| {
            self.write_line(b);
            true
        };
        // A thread being torn down has no buffer any more: write the line directly.
        if BUFFER.try_with(|buf| COLLECTOR.append(buf, write)).is_err() {
            let mut line = Vec::new();
            self.write_line(&mut line);
            line.push(b'\n');
            let lost = lock(&WRITER).write(&line);
            DROPPED.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

pub mod format;
pub mod output;
mod record;
mod sink;

use output::AppendFile;
pub use output::Output;
use sink::{RawStdout, Writer};

#[cfg(test)]
mod tests;
