//! One module per command family. Each exposes clap argument types and `run`-style functions
//! that return the process exit code, printing errors as one clear line on stderr.

pub mod admin_client;
pub mod agent;
pub mod ca;
pub mod ca_serve;
pub mod capture;
pub mod cert;
pub mod control;
pub mod control_kube;
pub mod flags;
pub mod migrate;
pub mod mtls_readiness;
pub mod output;
pub mod pages;
pub mod policy;
pub mod proxy;
pub mod quickstart;
pub mod sidecar;
pub mod tls_check;

use std::process::ExitCode;

use trustmesh_lifecycle::signals::{Hangup, Signals};

/// Prints `error: <err>` (with its causes on the same line) and returns exit code `code`.
pub fn fail(code: u8, err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(code)
}

/// Diagnostics for the long-running commands (proxy, agent, CA server): to stderr, filtered by
/// `RUST_LOG` (default `info`), coloured only for a person at a terminal, never into log files.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// [`init_logging`] with a filter that can be replaced while the process runs: the handle
/// and the filter in force (`RUST_LOG`, or `info`). The proxy's admin `/logging` uses it.
pub fn init_reloadable_logging() -> Option<(
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
    String,
)> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| tracing_subscriber::EnvFilter::try_new(d).is_ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&base)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()
        .map(|()| (handle, base))
}

/// Raises the soft limit on open files to the hard limit, as servers that hold many
/// connections must (Go's runtime does the same at start): a soft limit of 1024 let a few
/// hundred idle connections starve a CA server of descriptors. Logged, never fatal.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let from = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::debug!("open file limit raised from {from} to {}", lim.rlim_max);
        } else {
            tracing::warn!("could not raise the open file limit above {from}");
        }
    }
}

/// The multi-threaded runtime the long-running commands run on; a failure to start it is
/// printed and returned as exit code 1.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| fail(1, format!("starting runtime: {e}")))
}

/// The process's signals ([`trustmesh_lifecycle::signals`]): call inside the runtime, before
/// anything is served, so no signal finds its default action (which kills the process).
pub fn register_signals(hangup: Hangup) -> Result<Signals, ExitCode> {
    Signals::register(hangup).map_err(|e| fail(1, format!("cannot handle signals: {e}")))
}
