//! Child processes of the quickstart: every CA server, agent and proxy is a real `trustmesh`
//! process, so the demo exercises exactly what an operator would run.
//!
//! The supervisor owns every child. Dropping it kills them all, which is what makes Ctrl-C (and
//! any early error) leave nothing behind: the tour's future is cancelled, the supervisor is
//! dropped, the temporary directory is removed after it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::netns::{ip_program, Netns};

/// A running child and where its output goes.
struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Starts and owns the mesh's processes.
pub struct Supervisor {
    exe: PathBuf,
    logs: PathBuf,
    children: Vec<Running>,
}

impl Supervisor {
    /// `exe` is the `trustmesh` binary to run; logs go to `<logs>/<name>.log`.
    pub fn new(exe: PathBuf, logs: PathBuf) -> anyhow::Result<Supervisor> {
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("creating log directory {}", logs.display()))?;
        Ok(Supervisor {
            exe,
            logs,
            children: Vec::new(),
        })
    }

    /// Starts `trustmesh <args...>` as `name`, stdout and stderr appended to its log file.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.exe.clone();
        self.spawn_program(name, exe.as_os_str(), args)
    }

    /// Starts `trustmesh <args...>` as `name` inside network namespace `ns` (`ip netns exec`,
    /// which execs, so the child is `trustmesh` itself), or here with `None`.
    pub fn spawn_in(
        &mut self,
        ns: Option<&Netns>,
        name: &str,
        args: &[&str],
    ) -> anyhow::Result<()> {
        let Some(ns) = ns else {
            return self.spawn(name, args);
        };
        let exe = self.exe.to_string_lossy().into_owned();
        let mut full = vec!["netns", "exec", ns.name(), &exe];
        full.extend_from_slice(args);
        self.spawn_program(name, ip_program().as_os_str(), &full)
    }

    /// Starts `program <args...>` as `name` (e.g. `ip netns exec <ns> trustmesh proxy ...`,
    /// which execs, so the child is the proxy itself), output to its log file.
    pub fn spawn_program(
        &mut self,
        name: &str,
        program: &std::ffi::OsStr,
        args: &[&str],
    ) -> anyhow::Result<()> {
        let log = self.logs.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        // SAFETY: prctl(2) is async-signal-safe and touches only the child being started.
        // PR_SET_PDEATHSIG makes the kernel send SIGTERM to the child when the quickstart dies
        // for any reason (SIGKILL included), so no CA, agent or sidecar outlives it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Belt and braces: if the supervisor is dropped without running `shutdown`, tokio
            // still kills the child.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}: {}", program.to_string_lossy()))?;
        self.children.push(Running {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    /// Fails with the tail of the child's log if any child has exited: a dead CA or proxy would
    /// otherwise surface later as a confusing connection error.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for r in &mut self.children {
            if let Some(status) = r.child.try_wait()? {
                bail!(
                    "{} exited ({status}); last lines of {}:\n{}",
                    r.name,
                    r.log.display(),
                    tail(&r.log, 15)
                );
            }
        }
        Ok(())
    }

    /// Runs a short-lived `trustmesh` command (e.g. `ca init`) and fails with its output if it
    /// fails.
    pub async fn run_to_completion(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(&self.exe)
            .args(args)
            .output()
            .await
            .with_context(|| format!("running trustmesh {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "trustmesh {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Waits until something accepts connections on `addr`, failing early if a child died.
    pub async fn wait_for_port(
        &mut self,
        addr: std::net::SocketAddr,
        limit: Duration,
    ) -> anyhow::Result<()> {
        self.wait_for_port_in(None, addr, limit).await
    }

    /// [`Supervisor::wait_for_port`], connecting from inside `ns` when one is given.
    pub async fn wait_for_port_in(
        &mut self,
        ns: Option<&Netns>,
        addr: std::net::SocketAddr,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let up = match ns {
                None => tokio::net::TcpStream::connect(addr).await.is_ok(),
                Some(ns) => ns.connect(addr, Duration::from_secs(1)).await.is_ok(),
            };
            if up {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                let place = ns.map_or(String::new(), |n| format!(" in {}", n.name()));
                bail!("nothing listening on {addr}{place} after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `path` exists (an agent wrote its certificate), failing early if a child
    /// died.
    pub async fn wait_for_file(&mut self, path: &Path, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !path.exists() {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{} did not appear within {limit:?}", path.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The `trustmesh` binary children run.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    pub fn count(&self) -> usize {
        self.children.len()
    }

    /// Stops every child: SIGTERM first so proxies can log their shutdown, SIGKILL after a grace
    /// period.
    pub async fn shutdown(&mut self) {
        for r in &self.children {
            if let Some(pid) = r.child.id() {
                // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped), so it
                // cannot name an unrelated process.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        for r in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(3), r.child.wait())
                .await
                .is_err()
            {
                let _ = r.child.kill().await;
            }
        }
        self.children.clear();
    }
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free loopback port for a child to listen on.
///
/// The port is probed here and bound by the child a moment later, so it must not be one the
/// kernel could hand out in between: ports from `bind(0)` and outgoing connections come from the
/// ephemeral range (32768-60999 by default on Linux), so a port from there can be taken by any
/// connection in that window. Ports are taken instead from 20000-32767, starting at a point
/// derived from this process's id (two quickstarts side by side start far apart), and each
/// candidate is checked with a bind.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20000;
    const SPAN: u32 = 32767 - LOW;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() % 256) * 48,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port in {LOW}-32767")
}
