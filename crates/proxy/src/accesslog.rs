//! One JSON line per request (HTTP) or connection (TCP) on stdout.
//!
//! Access logs go to stdout and diagnostics (tracing) to stderr so a log shipper can take the
//! access log as a clean JSON stream without filtering.
//!
//! Records are handed to a dedicated writer thread through a bounded queue: a stalled stdout (a
//! full pipe nobody reads) must never block the async workers that carry traffic. When the queue
//! is full the record is dropped and counted ([`dropped`]) rather than waited for. The writer
//! writes each line whole, so concurrent connections never interleave halves of two records.
//!
//! Under load the writer works in batches: it takes whatever has queued, writes it in one
//! system call, then pauses briefly so the next records pile up instead of waking it one by one
//! (a wake-up per request cost more CPU than the request itself). A line reaches stdout at most
//! [`BATCH_PAUSE`] after it was emitted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

use serde::Serialize;

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
}

pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// RFC 3339 in UTC, exactly as the `time` crate writes it (fraction without trailing zeros),
/// but with the date and time-of-day part formatted once per second per thread: a busy sidecar
/// stamps tens of thousands of lines a second, nearly all within the same second.
fn rfc3339(t: std::time::SystemTime) -> String {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let Ok(since) = t.duration_since(std::time::UNIX_EPOCH) else {
        return slow_rfc3339(t);
    };
    let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let text = slow_rfc3339(whole);
            // "YYYY-MM-DDTHH:MM:SSZ" → keep everything before the 'Z'.
            let Some(prefix) = text.strip_suffix('Z') else {
                return slow_rfc3339(t);
            };
            *cached = (secs, prefix.to_string());
        }
        let mut out = String::with_capacity(cached.1.len() + 11);
        out.push_str(&cached.1);
        if nanos != 0 {
            use std::fmt::Write;
            let _ = write!(out, ".{nanos:09}");
            // The fraction has a non-zero digit, so trimming stops inside it.
            let len = out.trim_end_matches('0').len();
            out.truncate(len);
        }
        out.push('Z');
        out
    })
}

fn slow_rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

const QUEUE: usize = 8192;
/// Largest batch written at once.
const BATCH_BYTES: usize = 256 * 1024;
/// Pause after each batch, bounding how late a line can be.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

static SENDER: OnceLock<Option<SyncSender<Vec<u8>>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access log records dropped because stdout could not keep up.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn sender() -> Option<&'static SyncSender<Vec<u8>>> {
    SENDER
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || {
                    let out = std::io::stdout();
                    while let Ok(mut batch) = rx.recv() {
                        while batch.len() < BATCH_BYTES {
                            match rx.try_recv() {
                                Ok(line) => batch.extend_from_slice(&line),
                                Err(_) => break,
                            }
                        }
                        let mut lock = out.lock();
                        // A closed stdout must not take the proxy down; the records are lost.
                        let _ = lock.write_all(&batch);
                        let _ = lock.flush();
                        drop(lock);
                        std::thread::sleep(BATCH_PAUSE);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

impl AccessLog {
    pub fn emit(&self) {
        let mut line = Vec::with_capacity(512);
        if serde_json::to_writer(&mut line, self).is_err() {
            return;
        }
        line.push(b'\n');
        match sender().map(|tx| tx.try_send(line)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn cached_timestamps_match_the_time_crate() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let cases = [
            base,
            base + Duration::from_nanos(1),
            base + Duration::from_millis(500),
            base + Duration::from_nanos(123_456_789),
            base + Duration::from_nanos(999_999_999),
            base + Duration::from_secs(1),
            base + Duration::from_secs(86_400 * 400) + Duration::from_micros(7),
            base, // back to an earlier second: the cache must not serve the later one
            SystemTime::now(),
        ];
        for t in cases {
            let want = time::OffsetDateTime::from(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            assert_eq!(super::rfc3339(t), want, "{t:?}");
        }
    }
}
