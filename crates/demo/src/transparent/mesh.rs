//! Starts the transparent mesh: the namespaces, the apps inside them, the same control planes
//! as the loopback quickstart ([`crate::control`]) running in the hub namespace on the bridge
//! address, and per workload what an Istio pod has — a node agent getting its certificate from
//! its control plane, the capture rules an init container installs (`trustmesh capture install
//! --redirect-dns`) and a sidecar whose config holds no listener, only `capture:`, its
//! certificate files and `controlPlane:`. The policies and the registry are Istio YAML in the
//! control planes' config directory; each sidecar gets the part it needs over xDS.
//!
//! Every sidecar runs as root (uid 0), which the capture leaves alone (`--proxy-uid 0`), so its
//! own connections are not sent back to itself; the apps that call (curl, a Python client) run
//! as uid 65534, so theirs are captured. The servers are the demo's backends, bound inside
//! their namespaces; they know nothing of the mesh and are reached on their namespace's
//! loopback, as an app in a pod is by its sidecar. payroll's external authorizer listens on
//! payroll's loopback, as a container beside it in its pod would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::client::{Connection, Outcome};
use crate::control::{ControlPlanes, Placement};
use crate::files::{s, write};
use crate::identities::{self, workload_dir, Roots};
use crate::netns::{Netns, Network};
use crate::policies::policies;
use crate::procs::Supervisor;
use crate::tokens::UserTokens;
use crate::transparent::registry::{self, app_port, SERVERS};
use crate::transparent::topology::{self, Topology, HUB, VIPS};
use crate::workloads::{Workload, ALL, PAYROLL};

/// Each sidecar's admin endpoint, on its namespace's loopback.
pub const ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);
/// payroll's external authorizer, on payroll's loopback.
pub const AUTHZ: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9191);
/// How long a short command (capture install) may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(15);

/// The running transparent mesh, as the tour needs it.
pub struct Mesh {
    pub dir: PathBuf,
    pub topology: Topology,
    /// The `trustmesh` binary, for the commands printed for the operator.
    pub exe: PathBuf,
    /// The control planes in the hub namespace the sidecars take their configuration from.
    pub control: ControlPlanes,
    tokens: UserTokens,
    ca_b_root: PathBuf,
}

impl Mesh {
    /// Starts everything in namespaces registered with `net`; returns when every sidecar
    /// reports ready.
    pub async fn start(
        dir: &Path,
        sup: &mut Supervisor,
        net: &mut Network,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Mesh> {
        let cas = identities::init_cas(dir, sup, progress).await?;

        progress("creating network namespaces: a bridge, one per workload, one outsider");
        let topology = topology::build(net)?;

        progress("starting the apps in their namespaces (reviews, ratings, payroll, ext_authz)");
        for w in SERVERS {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), app_port(w));
            let l = topology.node(w).ns.bind(addr).await?;
            crate::backend::serve(w.name, tokio::net::TcpListener::from_std(l)?);
        }
        let l = topology.node(&PAYROLL).ns.bind(AUTHZ).await?;
        crate::authz_server::serve(tokio::net::TcpListener::from_std(l)?);

        progress(&format!(
            "starting a control plane per trust domain in the hub namespace ({HUB}): the CA, \
             and xDS serving the policies and the registry in control/config"
        ));
        let tokens = UserTokens::new()?;
        let (policies, registry) = (policies(tokens.jwk()), registry::yaml());
        let config = [
            ("mesh-policies.yaml", policies.as_str()),
            ("registry.yaml", registry.as_str()),
        ];
        let hub = Placement::Netns {
            ns: topology.hub.clone(),
            addr: HUB,
            vip_range: VIPS,
        };
        let control = ControlPlanes::start(dir, sup, &cas, AUTHZ, &config, &hub).await?;
        let place = |w: &Workload| Some(topology.node(w).ns.clone());
        cas.start_agents(dir, sup, &control.ca_addrs(), &place, progress)
            .await?;

        progress("installing the capture (iptables, DNS too) and a sidecar in each workload");
        for w in ALL {
            let ns = &topology.node(w).ns;
            write_sidecar(dir, w, &control, &cas.roots)?;
            capture_install(sup.exe(), ns).await?;
            let config = workload_dir(dir, w).join("proxy.yaml");
            sup.spawn_in(
                Some(ns),
                &format!("proxy-{}", w.name),
                &["proxy", "--config", &s(&config)],
            )?;
        }
        for w in ALL {
            wait_ready(&topology.node(w).ns, Duration::from_secs(30), sup).await?;
        }
        progress("waiting for proxy-status: every sidecar connected and in sync");
        control
            .wait_synced(&Default::default(), &[], &[], Duration::from_secs(20))
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(Mesh {
            dir: dir.to_path_buf(),
            topology,
            exe: sup.exe().to_path_buf(),
            control,
            tokens,
            ca_b_root: cas.roots.b.clone(),
        })
    }

    /// A GET on `w`'s sidecar admin endpoint, from inside its namespace.
    pub async fn admin(&self, w: &Workload, path: &str) -> Outcome {
        admin_get(&self.topology.node(w).ns, path).await
    }

    /// An end-user JWT for `sub`, trusted or `forged`.
    pub fn user_token(&self, sub: &str, forged: bool) -> anyhow::Result<String> {
        self.tokens.token(sub, forged)
    }

    /// Federates team-a with team-b through team-a's control plane (see
    /// [`ControlPlanes::federate_team_a_with_team_b`]).
    pub fn federate_team_a_with_team_b(&self) -> anyhow::Result<()> {
        self.control.federate_team_a_with_team_b(&self.ca_b_root)
    }
}

/// `w`'s proxy config: its certificate files (the agent keeps them fresh), `capture:` instead
/// of listeners, and its control plane, which serves its policies, registry, mesh config and
/// trust bundles.
fn write_sidecar(
    dir: &Path,
    w: &Workload,
    control: &ControlPlanes,
    roots: &Roots,
) -> anyhow::Result<()> {
    let cfg = format!(
        "workload:\n  namespace: {ns}\n  serviceAccount: {sa}\n  labels:\n    app: {app}\n\
         certs:\n  key: certs/key.pem\n  certChain: certs/cert-chain.pem\n\
         {control}capture:\n  vipRange: {VIPS}\n\
         admin:\n  address: \"{ADMIN}\"\nreloadPoll: 250ms\n",
        ns = w.namespace,
        sa = w.service_account,
        app = w.name,
        control = control.sidecar_block(w.trust_domain, roots.of(w.trust_domain)),
    );
    write(&workload_dir(dir, w).join("proxy.yaml"), &cfg)
}

/// `trustmesh capture install` inside `ns`, as an init container runs it.
async fn capture_install(exe: &Path, ns: &Netns) -> anyhow::Result<()> {
    let args = [
        "capture",
        "install",
        "--proxy-uid",
        "0",
        "--redirect-dns",
        "--ipv4-only",
    ];
    let out = tokio::time::timeout(
        COMMAND_LIMIT,
        ns.command(exe).args(args).kill_on_drop(true).output(),
    )
    .await
    .with_context(|| format!("trustmesh capture install in {}: timed out", ns.name()))?
    .with_context(|| format!("running trustmesh capture install in {}", ns.name()))?;
    if !out.status.success() {
        bail!(
            "trustmesh {} in {} failed: {}",
            args.join(" "),
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A GET on the sidecar admin endpoint in `ns`.
pub async fn admin_get(ns: &Netns, path: &str) -> Outcome {
    let conn = async {
        let stream = ns.connect(ADMIN, Duration::from_secs(2)).await?;
        Connection::over(tokio::net::TcpStream::from_std(stream)?, ADMIN.to_string()).await
    };
    match conn.await {
        Ok(mut c) => c.send("GET", path, &[]).await,
        Err(e) => Outcome::NoResponse(format!("{e:#}")),
    }
}

async fn wait_ready(ns: &Netns, limit: Duration, sup: &mut Supervisor) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if admin_get(ns, "/healthz/ready").await.status() == Some(200) {
            return Ok(());
        }
        sup.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "the sidecar in {} is not ready after {limit:?} (admin {ADMIN} there)",
                ns.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
