//! One module per command family. Each exposes clap argument types and `run`-style functions
//! that return the process exit code, printing errors as one clear line on stderr.

pub mod admin_client;
pub mod agent;
pub mod ca;
pub mod ca_serve;
pub mod cert;
pub mod policy;
pub mod proxy;
pub mod quickstart;
pub mod tls_check;

use std::process::ExitCode;

/// Prints `error: <err>` (with its causes on the same line) and returns exit code `code`.
pub fn fail(code: u8, err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(code)
}
