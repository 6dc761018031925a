//! Network namespaces for tier-2 tests that need a network of their own: firewall rules that
//! must not touch the machine running the tests, addresses the host does not have. Each
//! namespace is named for the test run (`tm-<tag>-<pid>-<n>`) and deleted when its guard drops,
//! pass or panic; deleting a namespace also deletes the veth ends inside it.
//!
//! Our own sockets can live in a namespace too: [`Netns::run`] calls a closure on a fresh
//! thread that has entered the namespace (`setns` changes only the calling thread's network
//! namespace), and a socket keeps the namespace it was created in whichever thread uses it.
//! Everything here needs root, as in CI; [`usable`] says whether the machine allows it.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::net::wait_for;
use crate::tools::run_ok;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with its loopback up.
    pub fn create(tag: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tm-{tag}-{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name> <program>`: a command to finish and run inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `ip -n <name> <args>`, asserting success; its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `f` on a new thread inside this namespace and returns what it returns (sockets
    /// it made stay in the namespace).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        // Where `ip netns add` mounts it (iproute2's NETNS_RUN_DIR).
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns(2) on a namespace file we hold open; it affects this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|_| panic!("a thread in network namespace {} panicked", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair between `a` and `b`, up, with `a_addrs` on `a`'s end and `b_addrs` on `b`'s
/// (CIDR form). IPv6 duplicate address detection is turned off on both ends, and their
/// link-local addresses waited for, so IPv6 works at once. Returns the two ends' names.
pub fn veth(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) -> (String, String) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}{n}", std::process::id() % 1_000_000);
    let (ea, eb) = (format!("tm{id}a"), format!("tm{id}b"));
    run_ok(
        Command::new("ip")
            .args(["link", "add", &ea, "netns", a.name()])
            .args(["type", "veth", "peer", "name", &eb, "netns", b.name()]),
    );
    for (ns, dev, addrs) in [(a, &ea, a_addrs), (b, &eb, b_addrs)] {
        let _ = ns
            .command("sysctl")
            .args(["-q", "-w", &format!("net.ipv6.conf.{dev}.accept_dad=0")])
            .status();
        for addr in addrs {
            ns.ip(&["addr", "add", addr, "dev", dev]);
        }
        ns.ip(&["link", "set", dev, "up"]);
    }
    for (ns, dev) in [(a, &ea), (b, &eb)] {
        wait_for(
            &format!("{dev}'s IPv6 link-local address"),
            Duration::from_secs(10),
            || link_local(ns, dev),
        );
    }
    (ea, eb)
}

/// The usable (not tentative) IPv6 link-local address of `dev` in `ns`, if it has one.
pub fn link_local(ns: &Netns, dev: &str) -> Option<String> {
    let out = ns.ip(&["-6", "addr", "show", "dev", dev, "scope", "link"]);
    if out.contains("tentative") {
        return None;
    }
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)?;
    Some(word.split('/').next()?.to_string())
}

/// Whether this machine lets a test make namespaces (root) and has `tools`. When it does not,
/// prints a loud SKIP naming `what` and the reason, except under CI (`CI` set), where the
/// tests run as root with every tool installed, so the absence is a failure.
pub fn usable(what: &str, tools: &[&str]) -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("it needs root (network namespaces and firewall rules)".to_string())
    } else {
        ["ip"]
            .iter()
            .chain(tools)
            .find(|t| !on_path(t))
            .map(|t| format!("{t} is not installed"))
    };
    match reason {
        None => true,
        Some(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {what} cannot run: {reason}"
            );
            eprintln!("SKIP {what}: {reason}");
            false
        }
    }
}

/// `tool` on PATH or in the sbin directories (where Debian puts `ip` and `iptables`).
fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .any(|d| d.join(tool).is_file())
}
