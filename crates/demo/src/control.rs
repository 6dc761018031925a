//! The quickstart's control planes: one `trustmesh control` per trust domain (each
//! is its domain's CA too, with the same flags `ca serve` takes), so a sidecar's configuration
//! comes from where an Istio sidecar's does, not from files beside it. Both watch one config
//! directory of Istio YAML (the mesh's policies, as a cluster would hold them); each has its
//! own mesh config file (its trust domain, aliases, the ext_authz provider) and federation
//! roots: team-b's control plane serves team-a's root from the start (analytics calls team-a
//! servers); team-a's is given the path where team-b's root will be (`--trust-bundle`), which
//! stays empty until the tour federates — until then it reports the missing file as a config
//! problem, as it would for an operator.
//!
//! A change takes effect when the control planes say so: [`ControlPlanes::wait_synced`] asks
//! `trustmesh proxy-status` (the operator's tool) until every sidecar has taken the new
//! version, bounded in time, instead of sleeping for a guessed reload interval.
//!
//! The same two control planes serve both quickstarts; [`Placement`] says where they run: on
//! the machine's loopback, or (`--transparent`) inside the hub namespace, on the bridge
//! address every workload's namespace reaches, where `proxy-status` runs too.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::files::{copy, s, write};
use crate::identities::Cas;
use crate::netns::Netns;
use crate::policies::mesh_config;
use crate::procs::{free_port, Supervisor};
use crate::workloads::{Workload, ALL, TD_A, TD_B};

/// One running `trustmesh control`.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// Its name in `proxy-status` (`control-<trust domain>`).
    pub name: String,
    /// The CA and xDS port (istiod's 15012).
    pub grpc: SocketAddr,
    /// /metrics, /debug/syncz, /ready (istiod's 15014).
    pub monitoring: SocketAddr,
    /// Its `--mesh` file.
    pub mesh_file: PathBuf,
}

/// Where the control planes run.
pub enum Placement {
    /// On the machine's loopback, on free ports (the loopback quickstart).
    Loopback,
    /// Inside network namespace `ns` (the transparent quickstart's hub): the CA and xDS port on
    /// `addr`, the bridge address every workload reaches, monitoring on the namespace's
    /// loopback; `vip_range` is where ServiceEntries without addresses get their VIPs.
    Netns {
        ns: Netns,
        addr: Ipv4Addr,
        vip_range: &'static str,
    },
}

impl Placement {
    /// The gRPC and monitoring addresses of the `i`th control plane.
    fn addresses(&self, i: u16) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Ok(match self {
            Placement::Loopback => (
                SocketAddr::new(loopback, free_port()?),
                SocketAddr::new(loopback, free_port()?),
            ),
            // A namespace of the run's own: istiod's ports, a thousand apart per plane.
            Placement::Netns { addr, .. } => (
                SocketAddr::new(IpAddr::V4(*addr), 15012 + 1000 * i),
                SocketAddr::new(loopback, 15014 + 1000 * i),
            ),
        })
    }

    fn netns(&self) -> Option<&Netns> {
        match self {
            Placement::Loopback => None,
            Placement::Netns { ns, .. } => Some(ns),
        }
    }
}

/// The control planes of both trust domains and the config directory they watch.
pub struct ControlPlanes {
    pub config_dir: PathBuf,
    pub planes: BTreeMap<&'static str, ControlPlane>,
    /// The namespace they run in (and `proxy-status` with them), if not the machine's.
    ns: Option<Netns>,
    /// Where team-a's control plane reads team-b's root from (`--trust-bundle`).
    federation_file: PathBuf,
    authz: SocketAddr,
    exe: PathBuf,
}

/// What `proxy-status --json` said at one moment: each control plane's version by name.
pub type Versions = BTreeMap<String, String>;

impl ControlPlanes {
    /// Starts a control plane per trust domain on `cas`' folders, where `at` says; returns
    /// once both accept connections. `config` (file name, Istio YAML) is written into the
    /// shared config directory first.
    pub async fn start(
        dir: &Path,
        sup: &mut Supervisor,
        cas: &Cas,
        authz: SocketAddr,
        config: &[(&str, &str)],
        at: &Placement,
    ) -> anyhow::Result<ControlPlanes> {
        let root = dir.join("control");
        let config_dir = root.join("config");
        for (file, yaml) in config {
            write(&config_dir.join(file), yaml)?;
        }
        let federation_file = root.join(TD_A).join(format!("federation/{TD_B}.pem"));
        let mut planes = BTreeMap::new();
        for (i, (td, _)) in (0..).zip(&cas.dirs) {
            let mesh_file = root.join(td).join("mesh.yaml");
            write(&mesh_file, &mesh_config(td, &[], authz))?;
            let (grpc, monitoring) = at.addresses(i)?;
            let plane = ControlPlane {
                name: format!("control-{td}"),
                grpc,
                monitoring,
                mesh_file: mesh_file.clone(),
            };
            let bundle = if *td == TD_A {
                format!("{TD_B}={}", s(&federation_file))
            } else {
                format!("{TD_A}={}", s(&cas.roots.a))
            };
            let mut args = vec!["control".to_string()];
            args.extend(cas.serve_flags(td));
            args.extend([
                "--listen".into(),
                plane.grpc.to_string(),
                "--monitoring-listen".into(),
                plane.monitoring.to_string(),
                "--config-dir".into(),
                s(&config_dir),
                "--mesh".into(),
                s(&mesh_file),
                "--trust-bundle".into(),
                bundle,
                "--name".into(),
                plane.name.clone(),
            ]);
            if let Placement::Netns { vip_range, .. } = at {
                args.extend(["--vip-range".into(), vip_range.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sup.spawn_in(at.netns(), &plane.name, &args)?;
            planes.insert(*td, plane);
        }
        for p in planes.values() {
            for addr in [p.grpc, p.monitoring] {
                sup.wait_for_port_in(at.netns(), addr, Duration::from_secs(15))
                    .await?;
            }
        }
        Ok(ControlPlanes {
            config_dir,
            planes,
            ns: at.netns().cloned(),
            federation_file,
            authz,
            exe: sup.exe().to_path_buf(),
        })
    }

    /// The gRPC (CA) address of each trust domain's control plane, for the agents.
    pub fn ca_addrs(&self) -> BTreeMap<&'static str, SocketAddr> {
        self.planes.iter().map(|(td, p)| (*td, p.grpc)).collect()
    }

    /// The `controlPlane:` block of a sidecar in trust domain `td`, verifying the control
    /// plane's serving certificate with `root`.
    pub fn sidecar_block(&self, td: &str, root: &Path) -> String {
        format!(
            "controlPlane:\n  address: \"{}\"\n  rootCert: {}\n  initialFetchTimeout: 20s\n",
            self.planes[td].grpc,
            s(root)
        )
    }

    /// Writes `yaml` as `<config dir>/<file>` (write-then-rename: never half a file).
    pub fn write_config(&self, file: &str, yaml: &str) -> anyhow::Result<()> {
        write(&self.config_dir.join(file), yaml)
    }

    /// Removes `<config dir>/<file>`.
    pub fn remove_config(&self, file: &str) -> anyhow::Result<()> {
        let p = self.config_dir.join(file);
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))
    }

    /// Federates team-a with team-b: team-b's root goes where team-a's control plane reads
    /// federation roots, and team-b.eks.local into its mesh config's trust domain aliases.
    /// Every team-a sidecar receives both from the control plane.
    pub fn federate_team_a_with_team_b(&self, ca_b_root: &Path) -> anyhow::Result<()> {
        copy(ca_b_root, &self.federation_file)?;
        write(
            &self.planes[TD_A].mesh_file,
            &mesh_config(TD_A, &[TD_B], self.authz),
        )
    }

    /// `trustmesh proxy-status` over both control planes (in their namespace, if they run in
    /// one): (exit code, stdout, stderr).
    pub async fn proxy_status(&self, json: bool) -> anyhow::Result<(Option<i32>, String, String)> {
        let mut cmd = match &self.ns {
            Some(ns) => ns.command(&self.exe),
            None => tokio::process::Command::new(&self.exe),
        };
        cmd.arg("proxy-status").kill_on_drop(true);
        if json {
            cmd.args(["-o", "json"]);
        }
        for p in self.planes.values() {
            cmd.arg("--control").arg(p.monitoring.to_string());
        }
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
            .await
            .context("proxy-status took over 10 s")?
            .context("running trustmesh proxy-status")?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The `proxy-status` command line an operator types for this mesh (inside the control
    /// planes' namespace, with the binary's full path, if they run in one).
    pub fn proxy_status_command(&self) -> String {
        let controls: Vec<String> = self
            .planes
            .values()
            .map(|p| format!("--control {}", p.monitoring))
            .collect();
        let program = match &self.ns {
            Some(ns) => format!("ip netns exec {} {}", ns.name(), self.exe.display()),
            None => "trustmesh".to_string(),
        };
        format!("{program} proxy-status {}", controls.join(" "))
    }

    /// Each control plane's current version, by name (empty when none answers).
    pub async fn versions(&self) -> Versions {
        match self.proxy_status(true).await {
            Ok((_, out, _)) => sync_state(&out).map(|s| s.versions).unwrap_or_default(),
            Err(_) => Versions::new(),
        }
    }

    /// Waits (at most `limit`) until `proxy-status` shows every workload's sidecar connected
    /// and in sync, every control plane in `changed` on a version other than in `before`, and
    /// each sidecar in `touched` having ACKed its control plane's current version. Returns how
    /// long that took, or what was last seen.
    pub async fn wait_synced(
        &self,
        before: &Versions,
        changed: &[&str],
        touched: &[&Workload],
        limit: Duration,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        let mut last = String::from("no answer from proxy-status");
        while started.elapsed() < limit {
            match self.proxy_status(true).await {
                Ok((_, out, _)) => match sync_state(&out) {
                    Some(state) => match state.missing(before, changed, touched) {
                        None => return Ok(started.elapsed()),
                        Some(why) => last = why,
                    },
                    None => last = format!("unreadable proxy-status output: {out}"),
                },
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("not in sync after {limit:?}: {last}"))
    }
}

/// What one `proxy-status --json` said.
struct SyncState {
    versions: Versions,
    /// By SPIFFE ID: (control plane name, in sync, ACKed version).
    proxies: BTreeMap<String, (String, bool, String)>,
}

fn sync_state(json: &str) -> Option<SyncState> {
    let docs: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut state = SyncState {
        versions: Versions::new(),
        proxies: BTreeMap::new(),
    };
    for d in docs.as_array()? {
        let cp = d["controlPlane"].as_str()?.to_string();
        state
            .versions
            .insert(cp.clone(), d["version"].as_str()?.to_string());
        for p in d["proxies"].as_array()? {
            state.proxies.insert(
                p["identity"].as_str()?.to_string(),
                (
                    cp.clone(),
                    p["inSync"].as_bool()?,
                    p["ackedVersion"].as_str()?.to_string(),
                ),
            );
        }
    }
    Some(state)
}

impl SyncState {
    /// Why this is not yet the state waited for; `None` when it is.
    fn missing(
        &self,
        before: &Versions,
        changed: &[&str],
        touched: &[&Workload],
    ) -> Option<String> {
        for td in changed {
            let name = format!("control-{td}");
            if self.versions.get(&name) == before.get(&name) {
                return Some(format!("{name} still serves the version before the change"));
            }
        }
        for w in ALL {
            let id = w.spiffe_id();
            let Some((cp, in_sync, acked)) = self.proxies.get(&id) else {
                return Some(format!("{} not connected", w.name));
            };
            if !in_sync {
                return Some(format!("{} not in sync", w.name));
            }
            let current = self.versions.get(cp).map(String::as_str).unwrap_or("");
            if touched.iter().any(|t| t.name == w.name) && acked != current {
                return Some(format!("{} ACKed {acked}, {cp} serves {current}", w.name));
            }
        }
        None
    }
}
