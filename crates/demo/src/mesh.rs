//! The loopback quickstart's mesh: a control plane per trust domain ([`crate::control`]: the
//! CA and the sidecars' configuration), a sidecar per workload with explicit listeners (an
//! outbound port per destination, an inbound port in front of the app) and only its
//! certificate and `controlPlane:` besides, the demo backends and the external authorizer, all
//! on 127.0.0.1 in a temporary directory. Identities come from [`crate::identities`], policies
//! from [`crate::policies`].
//!
//! ```text
//!   team-a.gke.local (root A)                          team-b.eks.local (root B)
//!   control-a ── agents ── frontend, reviews,          control-b ── agent ── analytics
//!      │  xDS               ratings, payroll              │  xDS
//!      └── policies, mesh config, bundles ──────┬─────────┘
//!                                  control/config/*.yaml (Istio YAML, watched)
//!   frontend ─mTLS→ reviews | ratings | payroll        analytics ─mTLS→ reviews | ratings
//! ```
//!
//! Everything is written the way an operator would write it: Istio YAML for policies, the
//! Istio `cacerts` layout for CAs, the `trustmesh` CLI for every process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::control::{ControlPlanes, Placement};
use crate::files::{s, write};
use crate::identities::{self, workload_dir, Roots};
use crate::policies::policies;
use crate::procs::{free_port, Supervisor};
use crate::tokens::UserTokens;
use crate::workloads::{Workload, ALL, ANALYTICS, FRONTEND, PAYROLL, RATINGS, REVIEWS};

/// A running sidecar: where its listeners are.
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// Inbound (mTLS) listener in front of the app.
    pub inbound: Option<SocketAddr>,
    /// Outbound listeners by destination workload name.
    pub outbound: BTreeMap<&'static str, SocketAddr>,
    pub admin: SocketAddr,
    pub config: PathBuf,
}

/// The running mesh, as the tour needs it.
pub struct Mesh {
    pub dir: PathBuf,
    pub sidecars: BTreeMap<&'static str, Sidecar>,
    /// The control planes the sidecars take their configuration from.
    pub control: ControlPlanes,
    /// Signs end-user JWTs, trusted or forged.
    tokens: UserTokens,
    /// team-b's root, which the tour adds to reviews' trust bundle.
    ca_b_root: PathBuf,
}

impl Mesh {
    /// Starts everything; returns when every sidecar reports ready.
    pub async fn start(
        dir: &Path,
        sup: &mut Supervisor,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Mesh> {
        let cas = identities::init_cas(dir, sup, progress).await?;
        let authz = crate::authz_server::start().await?;
        let tokens = UserTokens::new()?;

        progress(
            "starting a control plane per trust domain (trustmesh control: the CA, and xDS \
             serving the Istio YAML in control/config)",
        );
        let policies = policies(tokens.jwk());
        let config = [("mesh-policies.yaml", policies.as_str())];
        let control =
            ControlPlanes::start(dir, sup, &cas, authz, &config, &Placement::Loopback).await?;
        cas.start_agents(dir, sup, &control.ca_addrs(), &|_| None, progress)
            .await?;

        progress("starting demo apps, an ext_authz server and sidecar proxies");
        let mut apps = BTreeMap::new();
        for w in ALL {
            apps.insert(w.name, crate::backend::start(w.name).await?);
        }
        let sidecars = plan_sidecars(dir)?;
        for w in ALL {
            write_sidecar(w, &sidecars, &apps, &control, &cas.roots)?;
            sup.spawn(
                &format!("proxy-{}", w.name),
                &["proxy", "--config", &s(&sidecars[w.name].config)],
            )?;
        }
        for sc in sidecars.values() {
            wait_ready(sc.admin, Duration::from_secs(30), sup).await?;
        }
        progress("waiting for proxy-status: every sidecar connected and in sync");
        control
            .wait_synced(&Default::default(), &[], &[], Duration::from_secs(20))
            .await
            .map_err(anyhow::Error::msg)?;

        Ok(Mesh {
            dir: dir.to_path_buf(),
            sidecars,
            control,
            tokens,
            ca_b_root: cas.roots.b.clone(),
        })
    }
}

/// Every sidecar's ports, chosen before any config is written: outbound listeners point at
/// other sidecars' inbound ports.
fn plan_sidecars(dir: &Path) -> anyhow::Result<BTreeMap<&'static str, Sidecar>> {
    let mut sidecars: BTreeMap<&'static str, Sidecar> = BTreeMap::new();
    for w in ALL {
        sidecars.insert(
            w.name,
            Sidecar {
                inbound: Some(format!("127.0.0.1:{}", free_port()?).parse()?),
                outbound: BTreeMap::new(),
                admin: format!("127.0.0.1:{}", free_port()?).parse()?,
                config: workload_dir(dir, w).join("proxy.yaml"),
            },
        );
    }
    let calls: [(&Workload, &[&Workload]); 2] = [
        (&FRONTEND, &[&REVIEWS, &RATINGS, &PAYROLL]),
        (&ANALYTICS, &[&REVIEWS, &RATINGS]),
    ];
    for (from, tos) in calls {
        for to in tos {
            let port = free_port()?;
            sidecars
                .get_mut(from.name)
                .expect("every workload has a sidecar")
                .outbound
                .insert(to.name, format!("127.0.0.1:{port}").parse()?);
        }
    }
    Ok(sidecars)
}

/// Writes `w`'s sidecar config: its listeners, its certificate files (the agent keeps them
/// fresh) and its control plane; policies, mesh config and trust bundles come from there.
fn write_sidecar(
    w: &Workload,
    sidecars: &BTreeMap<&'static str, Sidecar>,
    apps: &BTreeMap<&'static str, SocketAddr>,
    control: &ControlPlanes,
    roots: &Roots,
) -> anyhow::Result<()> {
    let sc = &sidecars[w.name];
    let mut cfg = format!(
        "workload:\n  namespace: {ns}\n  serviceAccount: {sa}\n  labels:\n    app: {app}\n\
         certs:\n  key: certs/key.pem\n  certChain: certs/cert-chain.pem\n\
         {control}admin:\n  address: \"{admin}\"\nreloadPoll: 250ms\n",
        ns = w.namespace,
        sa = w.service_account,
        app = w.name,
        control = control.sidecar_block(w.trust_domain, roots.of(w.trust_domain)),
        admin = sc.admin,
    );
    let inbound = sc.inbound.expect("planned for every workload");
    cfg.push_str(&format!(
        "inbound:\n  - port: {}\n    targetPort: {}\n    protocol: http\n",
        inbound.port(),
        apps[w.name].port()
    ));
    if !sc.outbound.is_empty() {
        cfg.push_str("outbound:\n");
        for (to, addr) in &sc.outbound {
            let peer = ALL.iter().find(|x| x.name == *to).expect("known workload");
            cfg.push_str(&format!(
                "  - port: {}\n    peer: \"{}\"\n    peerIdentity: \"{}\"\n    protocol: http\n",
                addr.port(),
                sidecars[to].inbound.expect("planned for every workload"),
                peer.spiffe_id()
            ));
        }
    }
    write(&sc.config, &cfg)
}

impl Mesh {
    pub fn sidecar(&self, w: &Workload) -> &Sidecar {
        &self.sidecars[w.name]
    }

    /// The outbound listener of `from`'s sidecar that leads to `to`.
    pub fn route(&self, from: &Workload, to: &Workload) -> SocketAddr {
        self.sidecars[from.name].outbound[to.name]
    }

    /// An end-user JWT for `sub`, signed by the issuer reviews trusts (or, if `forged`, by a
    /// key it does not know).
    pub fn user_token(&self, sub: &str, forged: bool) -> anyhow::Result<String> {
        self.tokens.token(sub, forged)
    }

    /// Federates team-a with team-b through team-a's control plane (see
    /// [`ControlPlanes::federate_team_a_with_team_b`]).
    pub fn federate_team_a_with_team_b(&self) -> anyhow::Result<()> {
        self.control.federate_team_a_with_team_b(&self.ca_b_root)
    }
}

async fn wait_ready(
    admin: SocketAddr,
    limit: Duration,
    sup: &mut Supervisor,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if crate::client::call(admin, "GET", "/healthz/ready", &[])
            .await
            .status()
            == Some(200)
        {
            return Ok(());
        }
        sup.check_alive()?;
        if Instant::now() > deadline {
            bail!("sidecar admin {admin} not ready after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
