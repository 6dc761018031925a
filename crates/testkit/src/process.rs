//! Child processes for tier 2: a real binary (ours or a third party's) started with its output
//! captured, killed when the test ends whether it passed or panicked, and waited for with a
//! bound. The program is a parameter: `env!("CARGO_BIN_EXE_trustmesh")` exists only in the
//! `trustmesh` package's own tests, which pass it in.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process killed on drop. Its stdout arrives line by line on `lines`; its stderr is
/// inherited (so a failing test shows its log) unless it was started with [`Proc::start_logged`].
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cmd` with stdout piped to [`Proc::lines`] and stderr as `cmd` has it (inherited
    /// unless set).
    pub fn start(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines: rx }
    }

    /// Like [`Proc::start`], but the process's log (its stderr) is also kept, for tests that
    /// assert on what it said; every line is still echoed to the test's stderr.
    pub fn start_logged(cmd: &mut Command) -> (Proc, Log) {
        let mut p = Proc::start(cmd.stderr(Stdio::piped()));
        let log = Log::default();
        let (err, kept) = (p.child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut text = kept.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        (p, log)
    }

    /// Waits (bounded) for a stdout line starting with `prefix` and returns the rest.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let mut seen = Vec::new();
        let line = self.lines_until(|l| l.starts_with(prefix), timeout, &mut seen);
        match line {
            Some(l) => l[prefix.len()..].to_string(),
            None => {
                let status = self.child.try_wait().ok().flatten();
                panic!("no {prefix:?} line within {timeout:?} (process status: {status:?})")
            }
        }
    }

    /// Collects stdout lines into `seen` until one satisfies `done` (returned, and kept in
    /// `seen` too) or `timeout` passes (`None`).
    pub fn lines_until(
        &mut self,
        mut done: impl FnMut(&str) -> bool,
        timeout: Duration,
        seen: &mut Vec<String>,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        for _ in 0..1_000_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            seen.push(line.clone());
            if done(&line) {
                return Some(line);
            }
        }
        None
    }

    /// Still running (not exited)?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends `sig` (`libc::SIGTERM`, ...).
    pub fn signal(&self, sig: libc::c_int) {
        signal(&self.child, sig);
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it is still running.
    pub fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        exited_within(&mut self.child, limit)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a [`Proc::start_logged`] process has written to stderr so far.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

/// Sends `sig` to `child` (which must be ours, and not yet reaped).
pub fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; it has not been waited for, so the pid is its.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Blocks until `child` exits or `limit` passes (for tests without a runtime of their own: it
/// runs [`exits_within`] on a small one, so it must not be called from async code).
pub fn exited_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(exits_within(child, limit))
}

/// Waits (polling every 50 ms without blocking the runtime) until `child` exits or `limit`
/// passes; its status, or `None` if it is still running.
pub async fn exits_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    for _ in 0..10_000 {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
