//! One JSON line per request (HTTP) or connection (TCP) on stdout.
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

use serde::Serialize;

// The counter lives with the other metrics, so rendering them imports no log.
use crate::metrics::ACCESS_LOG_DROPPED as DROPPED;

use crate::clock::now_rfc3339;
use crate::conn::ConnCtx;

#[derive(Debug, Default, Serialize)]
pub struct AccessLog {
    pub time: String,
    pub direction: &'static str,
    pub protocol: &'static str,
    pub listener_port: u16,
    pub source_address: String,
    pub destination_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_principal: Option<String>,
    /// Outbound: the identity the peer proxy proved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_principal: Option<String>,
    pub tls: bool,
    /// `x-request-id` of the request (the client's, or one the proxy generated), to correlate
    /// this line with the app's logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path as the client sent it, when normalization changed it (`path` is what policy
    /// and the app saw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `allow`, `deny`, `unauthenticated`, `error`.
    pub decision: String,
    /// Deciding policy as `namespace.name`, when one decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    /// Transparent outbound: the service port as Istio names its cluster
    /// (`outbound|9080||reviews.bookinfo.svc.cluster.local`), or `PassthroughCluster` /
    /// `BlackHoleCluster` for a destination the registry does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_cluster: Option<String>,
    /// Envoy's response flags for what went wrong (`UF`, `NR`, `UAEX`, `DPE`, `DC`), set by the
    /// outcome; absent (Envoy's `-`) when nothing did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_flags: Option<&'static str>,
}

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

    /// The writer thread: collect, write, pause; park when there is nothing to do.
    fn run_writer(&self, sink: &mut dyn Sink) {
        let mut batch = Vec::with_capacity(256 * 1024);
        loop {
            if self.collect(&mut batch) {
                // A full disk or closed stdout must not take the proxy down: whole records are
                // lost and counted (see `sink`).
                let lost = lock(&WRITER).write(sink, &batch);
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

/// What the writer remembers between batches (a record cut by a failed write).
static WRITER: Mutex<Writer> = Mutex::new(Writer::new());

thread_local! {
    static BUFFER: Arc<Mutex<Vec<u8>>> = COLLECTOR.register();
}

/// Starts the writer thread on first use.
fn ensure_writer() {
    COLLECTOR.writer.get_or_init(|| {
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(|| COLLECTOR.run_writer(&mut RawStdout::new()))
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
        let lost = lock(&WRITER).write(&mut RawStdout::new(), &batch);
        DROPPED.fetch_add(lost, Ordering::Relaxed);
    }
}

/// Appends `v` as a JSON string: quoted, with `"`, `\\` and control characters escaped exactly
/// as serde_json escapes them. Most values (addresses, identities, paths) need no escaping, and
/// are then copied in one piece.
fn json_str(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    let bytes = v.as_bytes();
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b if b < 0x20 => {
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&crate::hex::hex_pair(b));
                }
                b => out.push(b),
            }
        }
    }
    out.push(b'"');
}

/// Whether any byte is a control character, `"` or `\\`: eight bytes per step, with the
/// classic "does this word have a zero byte" bit trick on the word XORed with each target.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS != 0;
    // b < 0x20 exactly: per byte, (b | 0x80) - 0x20 keeps its high bit iff (b & 0x7f) >= 0x20
    // (no borrow crosses bytes, each starts at 0x80 or more); `!w` keeps bytes below 0x80.
    let has_control = |w: u64| {
        let t = (w | HIGHS).wrapping_sub(0x2020_2020_2020_2020);
        !t & !w & HIGHS != 0
    };
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if has_control(w)
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Builds one JSON object field by field (keys are ours and need no escaping).
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        json_str(self.out, v);
    }
    fn opt_str(&mut self, k: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }
    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    fn opt_num(&mut self, k: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.num(k, v);
        }
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
    }
    fn end(self) {
        self.out.push(b'}');
    }
}

impl AccessLog {
    /// The line of an inbound TCP connection (admitted or refused), from what its listener
    /// knows about it.
    pub fn inbound_tcp(ctx: &ConnCtx) -> AccessLog {
        AccessLog {
            time: now_rfc3339(),
            direction: "inbound",
            protocol: "tcp",
            listener_port: ctx.listener_port,
            source_address: ctx.source.to_string(),
            destination_address: ctx.target.to_string(),
            source_principal: ctx.peer.as_ref().map(|p| p.id.to_string()),
            tls: ctx.tls,
            ..Default::default()
        }
    }

    /// The record as one line of JSON (without the newline), the same text serde_json writes
    /// for this struct (a test holds the two together), about five times cheaper: this runs
    /// for every request.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = JsonObject::new(out);
        o.str("time", &self.time);
        o.str("direction", self.direction);
        o.str("protocol", self.protocol);
        o.num("listener_port", u64::from(self.listener_port));
        o.str("source_address", &self.source_address);
        o.str("destination_address", &self.destination_address);
        o.opt_str("source_principal", &self.source_principal);
        o.opt_str("request_principal", &self.request_principal);
        o.opt_str("destination_principal", &self.destination_principal);
        o.bool("tls", self.tls);
        o.opt_str("request_id", &self.request_id);
        o.opt_str("method", &self.method);
        o.opt_str("path", &self.path);
        o.opt_str("original_path", &self.original_path);
        o.opt_str("authority", &self.authority);
        o.opt_num("status", self.status.map(u64::from));
        o.str("decision", &self.decision);
        o.opt_str("policy", &self.policy);
        o.opt_str("reason", &self.reason);
        o.num("duration_ms", self.duration_ms);
        o.opt_num("bytes_received", self.bytes_received);
        o.opt_num("bytes_sent", self.bytes_sent);
        o.opt_str("upstream_cluster", &self.upstream_cluster);
        if let Some(f) = self.response_flags {
            o.str("response_flags", f);
        }
        o.end();
    }

    pub fn emit(&self) {
        ensure_writer();
        let write = |b: &mut Vec<u8>| {
            self.write_json(b);
            true
        };
        // A thread being torn down has no buffer any more: write the line directly.
        if BUFFER.try_with(|buf| COLLECTOR.append(buf, write)).is_err() {
            let mut line = Vec::new();
            self.write_json(&mut line);
            line.push(b'\n');
            let lost = lock(&WRITER).write(&mut RawStdout::new(), &line);
            DROPPED.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

mod sink;

use sink::{RawStdout, Sink, Writer};

#[cfg(test)]
mod tests;
