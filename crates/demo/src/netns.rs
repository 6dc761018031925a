//! Network namespaces for `quickstart --transparent`: each workload gets a network stack of its
//! own, as a pod does, so `trustmesh capture` can rewrite its firewall without touching the
//! machine's, and the apps in it can be unmodified programs that call services by name.
//!
//! A [`Network`] makes the run's namespaces and deletes them all when it is dropped, with the
//! `/etc/netns/<name>` directories that give them a resolver (`ip netns exec` mounts
//! `/etc/netns/<name>/resolv.conf` over `/etc/resolv.conf`); deleting a namespace deletes the
//! veth ends inside it. The quickstart owns its network outside the tour and drops it after its
//! child processes are stopped, on every way out: the tour ending, an error, Ctrl-C; [`Netns`]
//! is only a handle, free to copy into the tour. (A SIGKILL leaves them behind, as it
//! leaves any process no chance to clean up; `ip netns list` shows them, named `tmq-*-<pid>`.)
//!
//! Our own sockets can live in a namespace too: [`Netns::bind`] and [`Netns::connect`] make the
//! socket on a fresh thread that has entered the namespace (`setns` changes only the calling
//! thread's namespace, and a socket keeps the namespace it was made in, whichever thread uses it
//! later). That is how the demo's backends listen inside the workloads' namespaces and how the
//! tour reaches each sidecar's admin port on the namespace's loopback.

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

/// Where a system tool is: on PATH, or in the sbin directories root's PATH has but a user's
/// (or `sudo`'s) may not, where Debian puts `ip` and `iptables`.
pub fn find_program(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The `ip` program (iproute2) every namespace operation runs.
pub fn ip_program() -> PathBuf {
    static IP: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    IP.get_or_init(|| find_program("ip").unwrap_or_else(|| PathBuf::from("ip")))
        .clone()
}

/// A handle on a network namespace of the run; the [`Network`] that made it deletes it.
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <name> <args>`; its stdout, or an error with its stderr.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new(ip_program())
            .args(["-n", &self.name])
            .args(args))
    }

    /// `ip netns exec <name> <program>`: a command to finish and run inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(ip_program());
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// A listening socket on `addr` inside the namespace.
    pub async fn bind(&self, addr: SocketAddr) -> anyhow::Result<TcpListener> {
        let l = self
            .inside(move || {
                let l = TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .await;
        l.with_context(|| format!("listening on {addr} in network namespace {}", self.name))
    }

    /// A connection to `addr` made from inside the namespace (not captured: we are root).
    pub async fn connect(&self, addr: SocketAddr, limit: Duration) -> anyhow::Result<TcpStream> {
        let s = self
            .inside(move || {
                let s = TcpStream::connect_timeout(&addr, limit)?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .await;
        s.with_context(|| format!("connecting to {addr} in network namespace {}", self.name))
    }

    /// Runs `f` on a new thread that has entered the namespace; the runtime is not blocked.
    async fn inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        // Where `ip netns add` mounts it (iproute2's NETNS_RUN_DIR).
        let path = format!("/var/run/netns/{}", self.name);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                let entered = std::fs::File::open(&path).and_then(|file| {
                    // SAFETY: setns(2) on a namespace file we hold open; it affects this
                    // thread only, which ends when `f` returns.
                    match unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    }
                });
                let _ = tx.send(entered.and_then(|()| f()));
            })?;
        rx.await
            .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
    }
}

/// A veth pair: `dev` in `a` with `addr` (CIDR), `peer` in `b` with no address; both up.
pub fn veth(a: &Netns, dev: &str, addr: &str, b: &Netns, peer: &str) -> anyhow::Result<()> {
    run(Command::new(ip_program())
        .args(["link", "add", dev, "netns", a.name()])
        .args(["type", "veth", "peer", "name", peer, "netns", b.name()]))?;
    a.ip(&["addr", "add", addr, "dev", dev])?;
    a.ip(&["link", "set", dev, "up"])?;
    b.ip(&["link", "set", peer, "up"])?;
    Ok(())
}

/// Every namespace of one run (and its `/etc/netns` directory), deleted together, newest first,
/// when the network is dropped.
#[derive(Default)]
pub struct Network {
    names: Vec<String>,
}

impl Network {
    /// `ip netns add <name>`, `lo` up, and `nameserver` as the resolver of the programs run in
    /// it with `ip netns exec`.
    pub fn create(&mut self, name: &str, nameserver: Option<&str>) -> anyhow::Result<Netns> {
        run(Command::new(ip_program()).args(["netns", "add", name]))?;
        self.names.push(name.to_string());
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        if let Some(server) = nameserver {
            let etc = etc_dir(name);
            std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
            let file = etc.join("resolv.conf");
            std::fs::write(&file, format!("nameserver {server}\n"))
                .with_context(|| format!("writing {}", file.display()))?;
        }
        Ok(ns)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Deletes every namespace now (what dropping does).
    pub fn remove_all(&mut self) {
        while let Some(name) = self.names.pop() {
            let _ = Command::new(ip_program())
                .args(["netns", "del", &name])
                .output();
            let etc = etc_dir(&name);
            if etc.exists() {
                let _ = std::fs::remove_dir_all(etc);
            }
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// `/etc/netns/<name>`: files `ip netns exec` mounts over `/etc/<file>`.
fn etc_dir(name: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(name)
}

/// Runs a command to completion: its stdout, or an error naming it with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().with_context(|| format!("running {line}"))?;
    if !out.status.success() {
        bail!(
            "{line} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
