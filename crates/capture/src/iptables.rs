//! Running the distribution's `iptables-save` / `iptables-restore` (and the `ip6` pair): the
//! only I/O of the crate besides `original_dst`. Debian's default `iptables` is the nft-backed
//! one; its restore input is the same, so one code path serves both backends.
//!
//! `iptables-restore --noflush` applies a whole table at once and touches nothing it is not
//! told to; `--wait` waits for the legacy backend's lock instead of failing when another
//! program is changing rules at the same moment.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::error::CaptureError;
use crate::family::Family;

/// The iptables tools, and where to look for them.
#[derive(Clone, Debug)]
pub struct Iptables {
    search: Vec<PathBuf>,
}

/// How long iptables-restore waits for the legacy backend's lock, in seconds.
const LOCK_WAIT_SECS: u32 = 30;

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

impl Iptables {
    /// The tools found on PATH, or in /usr/sbin and /sbin (where Debian puts them, and which a
    /// non-login root shell may not have on its PATH).
    pub fn system() -> Iptables {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let search = std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .collect();
        Iptables { search }
    }

    /// The tools in these directories only.
    pub fn in_dirs(dirs: Vec<PathBuf>) -> Iptables {
        Iptables { search: dirs }
    }

    /// `iptables-save` for `family`: every table, as text.
    pub fn save(&self, family: Family) -> Result<String, CaptureError> {
        let tool = family.save_tool();
        let out = self.run(tool, &[], None)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Feeds `script` to `iptables-restore --noflush`; with `test_only`, iptables parses and
    /// checks it (`--test`) without changing anything.
    pub fn restore(
        &self,
        family: Family,
        script: &str,
        test_only: bool,
    ) -> Result<(), CaptureError> {
        let tool = family.restore_tool();
        let wait = format!("--wait={LOCK_WAIT_SECS}");
        let mut args = vec!["--noflush", wait.as_str()];
        if test_only {
            args.push("--test");
        }
        self.run(tool, &args, Some(script)).map(|_| ())
    }

    fn run(
        &self,
        tool: &'static str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<Output, CaptureError> {
        let program = self.locate(tool).ok_or(CaptureError::Missing { tool })?;
        if may_change_rules() == Some(false) {
            return Err(CaptureError::NotPermitted { tool });
        }
        let mut child = Command::new(program)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CaptureError::Run {
                tool,
                reason: e.to_string(),
            })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // A tool that exits early closes its end; its exit status then says why.
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| CaptureError::Run {
            tool,
            reason: e.to_string(),
        })?;
        if out.status.success() {
            return Ok(out);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("Permission denied") || stderr.contains("you must be root") {
            return Err(CaptureError::NotPermitted { tool });
        }
        Err(CaptureError::Failed {
            tool,
            status: out
                .status
                .code()
                .map_or_else(|| "killed by a signal".into(), |c| format!("exit code {c}")),
            message: explain(&stderr, input),
        })
    }

    fn locate(&self, tool: &str) -> Option<PathBuf> {
        self.search
            .iter()
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    }
}

/// Whether this process may change firewall rules: CAP_NET_ADMIN in its effective set (root
/// has it). `None` when that cannot be read (no /proc): then the tools will tell.
pub fn may_change_rules() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Whether the kernel has IPv6 at all (booted with `ipv6.disable=1` it has not, and
/// ip6tables cannot work).
pub fn ipv6_available() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

/// The tool's complaint on one line, with the line of our input it names (`Error occurred at
/// line: N`), so the operator sees which rule was refused.
fn explain(stderr: &str, input: Option<&str>) -> String {
    let said: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Try `"))
        .collect();
    let mut message = said.join("; ");
    let line_no = stderr
        .split("line: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok());
    if let (Some(n), Some(text)) = (line_no, input) {
        if let Some(line) = text.lines().nth(n.saturating_sub(1)) {
            message.push_str(&format!(" (input line {n}: {line})"));
        }
    }
    if message.is_empty() {
        message = "no message".into();
    }
    message
}

#[cfg(test)]
mod tests;
