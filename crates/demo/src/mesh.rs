//! The loopback quickstart's mesh: a sidecar per workload with explicit listeners (an
//! outbound port per destination, an inbound port in front of the app), the demo backends and
//! the external authorizer, all on 127.0.0.1 in a temporary directory. Identities come from
//! [`crate::identities`], policies from [`crate::policies`].
//!
//! ```text
//!   team-a.gke.local (root A)                          team-b.eks.local (root B)
//!   ca-a serve ── agents ── frontend, reviews,         ca-b serve ── agent ── analytics
//!                           ratings, payroll
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

use crate::files::{s, write};
use crate::identities::{self, workload_dir, Roots};
use crate::policies::{mesh_config, policies};
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
        let roots = identities::issue(dir, sup, progress).await?;

        progress("starting demo apps, an ext_authz server and sidecar proxies");
        let authz = crate::authz_server::start().await?;
        let mut apps = BTreeMap::new();
        for w in ALL {
            apps.insert(w.name, crate::backend::start(w.name).await?);
        }
        let tokens = UserTokens::new()?;
        write(
            &dir.join("policies/mesh-policies.yaml"),
            &policies(tokens.jwk()),
        )?;
        let sidecars = plan_sidecars(dir)?;
        for w in ALL {
            write_sidecar(dir, w, &sidecars, &apps, authz, &roots)?;
            sup.spawn(
                &format!("proxy-{}", w.name),
                &["proxy", "--config", &s(&sidecars[w.name].config)],
            )?;
        }
        for sc in sidecars.values() {
            wait_ready(sc.admin, Duration::from_secs(20), sup).await?;
        }

        Ok(Mesh {
            dir: dir.to_path_buf(),
            sidecars,
            tokens,
            ca_b_root: roots.b,
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

/// Writes `w`'s sidecar files: trust bundles, mesh config and proxy config.
fn write_sidecar(
    dir: &Path,
    w: &Workload,
    sidecars: &BTreeMap<&'static str, Sidecar>,
    apps: &BTreeMap<&'static str, SocketAddr>,
    authz: SocketAddr,
    roots: &Roots,
) -> anyhow::Result<()> {
    let wdir = workload_dir(dir, w);
    identities::write_bundles(dir, w, roots)?;
    write(
        &wdir.join("mesh.yaml"),
        &mesh_config(w.trust_domain, &[], authz),
    )?;
    let sc = &sidecars[w.name];
    let mut cfg = format!(
        "workload:\n  namespace: {ns}\n  serviceAccount: {sa}\n  labels:\n    app: {app}\n\
         certs:\n  key: certs/key.pem\n  certChain: certs/cert-chain.pem\n\
         trustBundles:\n  - bundles\nmesh: mesh.yaml\npolicyDir: {policies}\n\
         admin:\n  address: \"{admin}\"\nreloadPoll: 250ms\n",
        ns = w.namespace,
        sa = w.service_account,
        app = w.name,
        policies = s(&dir.join("policies")),
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

    /// Federates reviews with team-b: adds team-b's root to its trust bundle directory and
    /// team-b.eks.local to its trust domain aliases. The sidecar picks both up on its own.
    pub fn federate_reviews_with_team_b(&self) -> anyhow::Result<()> {
        identities::federate_reviews_with_team_b(&self.dir, &self.ca_b_root)
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
