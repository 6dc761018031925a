//! Who is calling the Workload API: the kernel's word for the peer of a unix socket
//! (`SO_PEERCRED`: uid, gid, pid) and the binary behind that pid, checked against the callers
//! the agent was configured to serve.
//!
//! Why: the API hands out the workload's private key. A socket anyone on the host can open
//! (0666, in a 0755 folder) gave it to every local account. SPIRE makes a shared socket safe
//! the same way, by attesting each caller; folder permissions alone depend on every operator
//! getting them right. The decision is made once per connection, when it is accepted: the
//! credentials are those of the process that connected, which cannot change for that socket.
//!
//! The binary path comes from `/proc/<pid>/exe`. A pid can be reused once its process exits, so
//! a path rule is only as strong as the caller's inability to exit and be replaced between
//! `connect` and our look-up (the same caveat as SPIRE's unix attestor without pidfds); uid and
//! gid come from the kernel with the socket and carry no such race.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One `workload_api_callers` entry: a caller matches when every field given matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerRule {
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// Absolute path of the caller's executable (`/proc/<pid>/exe`).
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl CallerRule {
    fn admits(&self, c: &Caller) -> bool {
        self.uid.is_none_or(|u| u == c.uid)
            && self.gid.is_none_or(|g| g == c.gid)
            && self
                .path
                .as_ref()
                .is_none_or(|p| c.exe.as_deref() == Some(p.as_path()))
    }

    /// Checks a configured rule; `at` names it in the error.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.uid.is_none() && self.gid.is_none() && self.path.is_none() {
            return Err(format!(
                "{at}: names no uid, gid or path, so it would admit every local process \
                 (hint: e.g. {{uid: 1000}})"
            ));
        }
        if let Some(p) = &self.path {
            if !p.is_absolute() {
                return Err(format!("{at}.path: {} must be absolute", p.display()));
            }
        }
        Ok(())
    }
}

/// The callers the Workload API serves: any rule may match. Without configuration, processes
/// running as the agent's own user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerPolicy(pub Vec<CallerRule>);

impl CallerPolicy {
    pub fn own_user() -> CallerPolicy {
        CallerPolicy(vec![CallerRule {
            uid: Some(effective_uid()),
            ..Default::default()
        }])
    }

    pub fn admits(&self, c: &Caller) -> bool {
        self.0.iter().any(|r| r.admits(c))
    }
}

/// The peer of one Workload API connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub exe: Option<PathBuf>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)?;
        if let Some(pid) = self.pid {
            write!(f, " pid {pid}")?;
        }
        if let Some(exe) = &self.exe {
            write!(f, " ({})", exe.display())?;
        }
        Ok(())
    }
}

/// What the handlers learn about their connection (a request extension).
#[derive(Debug, Clone)]
pub struct Attestation {
    /// `None` when the kernel would not say who the peer is: refused.
    pub caller: Option<Caller>,
    pub admitted: bool,
}

impl Attestation {
    pub fn of(stream: &tokio::net::UnixStream, policy: &CallerPolicy) -> Attestation {
        let caller = stream.peer_cred().ok().map(|cred| Caller {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            exe: cred
                .pid()
                .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok()),
        });
        let admitted = caller.as_ref().is_some_and(|c| policy.admits(c));
        Attestation { caller, admitted }
    }
}

/// The process's effective uid: the owner of `/proc/self` (no libc call needed).
pub fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// A connection's stream carrying its attestation, so tonic can hand it to every request.
pub struct Attested<S> {
    pub inner: S,
    pub attestation: Attestation,
}

impl<S> tonic::transport::server::Connected for Attested<S> {
    type ConnectInfo = Attestation;
    fn connect_info(&self) -> Attestation {
        self.attestation.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Attested<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Attested<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Refuses a socket path another local user could replace: its folder, or any folder above it,
/// writable by everyone (even with the sticky bit, the folder holding the socket must not be:
/// anyone could create the path before us).
pub fn check_socket_folder(socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut dir = socket.parent();
    let mut first = true;
    while let Some(d) = dir {
        if let Ok(meta) = std::fs::metadata(d) {
            let mode = meta.permissions().mode();
            let world_writable = mode & 0o002 != 0;
            let sticky = mode & 0o1000 != 0;
            if world_writable && (first || !sticky) {
                return Err(format!(
                    "{}: the Workload API socket's folder is writable by every user (mode {:o}), \
                     so another user could replace the socket; use a folder only the agent can \
                     write (hint: /run/spiffe, mode 0750)",
                    d.display(),
                    mode & 0o7777
                ));
            }
            first = false;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, exe: Option<&str>) -> Caller {
        Caller {
            uid,
            gid,
            pid: Some(42),
            exe: exe.map(PathBuf::from),
        }
    }

    #[test]
    fn rules_match_on_every_field_they_name() {
        let policy = CallerPolicy(vec![
            CallerRule {
                uid: Some(1000),
                ..Default::default()
            },
            CallerRule {
                gid: Some(2000),
                path: Some("/usr/bin/app".into()),
                ..Default::default()
            },
        ]);
        assert!(policy.admits(&caller(1000, 1, None)));
        assert!(policy.admits(&caller(5, 2000, Some("/usr/bin/app"))));
        assert!(!policy.admits(&caller(5, 2000, Some("/usr/bin/other"))));
        assert!(!policy.admits(&caller(5, 2000, None)), "path unknown");
        assert!(!policy.admits(&caller(1001, 1, Some("/usr/bin/app"))));
        assert!(!CallerPolicy(vec![]).admits(&caller(0, 0, None)));
    }

    #[test]
    fn default_admits_only_our_own_user() {
        let me = effective_uid();
        let p = CallerPolicy::own_user();
        assert!(p.admits(&caller(me, 12345, None)));
        assert!(!p.admits(&caller(me.wrapping_add(1), 0, None)));
    }

    #[test]
    fn empty_or_relative_rules_are_refused() {
        assert!(CallerRule::default().validate("x[0]").is_err());
        let rel = CallerRule {
            path: Some("bin/app".into()),
            ..Default::default()
        };
        assert!(rel.validate("x[0]").unwrap_err().contains("absolute"));
    }

    #[test]
    fn world_writable_folders_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_socket_folder(&open.join("agent.sock")).unwrap_err();
        assert!(e.contains("writable by every user"), "{e}");
        // Sticky and world-writable, directly holding the socket: refused too.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(check_socket_folder(&open.join("agent.sock")).is_err());
        // A private folder below a sticky one (like /tmp/x): fine.
        let private = open.join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(check_socket_folder(&private.join("agent.sock")), Ok(()));
        // Below a world-writable folder without the sticky bit: refused (it can be renamed).
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_socket_folder(&private.join("agent.sock")).is_err());
    }
}
