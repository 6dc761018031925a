//! Who is who and who trusts whom: two CAs with different roots (Istio `cacerts` layout), served
//! per trust domain by `ca serve` (transparent mode) or by `trustmesh control` (the loopback
//! mode, [`crate::control`], with the same flags), a node agent per workload that keeps its
//! certificate fresh, and the trust bundle each transparent sidecar starts with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::files::{copy, s, write};
use crate::procs::{free_port, Supervisor};
use crate::tokens::{now_secs, sign, signing_key, SigningKey, SA_ISSUER};
use crate::workloads::{Workload, ALL, ANALYTICS, RATINGS, REVIEWS, REVIEWS_TTL_SECS, TD_A, TD_B};

/// The two trust domains' root certificates.
pub struct Roots {
    pub a: PathBuf,
    pub b: PathBuf,
}

impl Roots {
    pub fn of(&self, td: &str) -> &Path {
        if td == TD_A {
            &self.a
        } else {
            &self.b
        }
    }
}

/// A workload's directory: its agent's files, certificate, bundles, mesh and proxy config.
pub fn workload_dir(dir: &Path, w: &Workload) -> PathBuf {
    dir.join("workloads").join(w.name)
}

/// Both CAs and the demo's service-account token issuer, before any server runs.
pub struct Cas {
    pub roots: Roots,
    /// Each trust domain's CA folder (Istio `cacerts` layout).
    pub dirs: [(&'static str, PathBuf); 2],
    /// The JWKS file the CA servers verify service-account tokens with.
    pub jwks_file: PathBuf,
    sa_key: SigningKey,
}

impl Cas {
    /// The flags `ca serve` and `trustmesh control` share for trust domain `td`'s CA: its
    /// folder and the service-account token issuer it trusts.
    pub fn serve_flags(&self, td: &str) -> Vec<String> {
        let ca = self
            .dirs
            .iter()
            .find(|(d, _)| *d == td)
            .map(|(_, p)| s(p))
            .unwrap_or_default();
        vec![
            "--ca".into(),
            ca,
            "--jwt-issuer".into(),
            SA_ISSUER.into(),
            "--jwks".into(),
            s(&self.jwks_file),
        ]
    }

    /// Starts an agent per workload against the CA servers at `ca_addrs`; returns once every
    /// workload has its certificate in `<workload dir>/certs`.
    pub async fn start_agents(
        &self,
        dir: &Path,
        sup: &mut Supervisor,
        ca_addrs: &BTreeMap<&'static str, SocketAddr>,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<()> {
        progress("starting node agents: local keys, CSRs authenticated by service-account tokens");
        start_agents(dir, sup, &self.sa_key, ca_addrs, &self.roots).await
    }
}

/// Creates both CAs (`ca init`) and the service-account token issuer they will trust.
pub async fn init_cas(
    dir: &Path,
    sup: &mut Supervisor,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Cas> {
    progress("creating two CAs with different roots (Istio cacerts layout)");
    let ca_a = dir.join("ca").join(TD_A);
    let ca_b = dir.join("ca").join(TD_B);
    for (td, out) in [(TD_A, &ca_a), (TD_B, &ca_b)] {
        sup.run_to_completion(&["ca", "init", "--trust-domain", td, "--out", &s(out)])
            .await?;
    }
    let sa_key = signing_key("demo-sa")?;
    let jwks_file = dir.join("sa-jwks.json");
    write(
        &jwks_file,
        &serde_json::json!({ "keys": [sa_key.jwk] }).to_string(),
    )?;
    Ok(Cas {
        roots: Roots {
            a: ca_a.join("root-cert.pem"),
            b: ca_b.join("root-cert.pem"),
        },
        dirs: [(TD_A, ca_a), (TD_B, ca_b)],
        jwks_file,
        sa_key,
    })
}

/// Creates both CAs, starts a `ca serve` per trust domain and an agent per workload; returns
/// once every workload has its certificate in `<workload dir>/certs`.
pub async fn issue(
    dir: &Path,
    sup: &mut Supervisor,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Roots> {
    let cas = init_cas(dir, sup, progress).await?;
    progress("starting the CA servers (Istio certificate API over TLS)");
    let ca_addrs = start_cas(sup, &cas).await?;
    cas.start_agents(dir, sup, &ca_addrs, progress).await?;
    Ok(cas.roots)
}

/// One `ca serve` per trust domain; returns their addresses once they accept connections.
async fn start_cas(
    sup: &mut Supervisor,
    cas: &Cas,
) -> anyhow::Result<BTreeMap<&'static str, SocketAddr>> {
    let mut ca_addrs = BTreeMap::new();
    for (td, _) in &cas.dirs {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut args = vec!["ca".to_string(), "serve".into()];
        args.extend(cas.serve_flags(td));
        args.extend(["--listen".into(), addr.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sup.spawn(&format!("ca-{td}"), &args)?;
        ca_addrs.insert(*td, addr);
    }
    for addr in ca_addrs.values() {
        sup.wait_for_port(*addr, Duration::from_secs(15)).await?;
    }
    Ok(ca_addrs)
}

/// A node agent per workload, with a service-account token the CA accepts; returns once every
/// workload has its certificate.
async fn start_agents(
    dir: &Path,
    sup: &mut Supervisor,
    sa_key: &SigningKey,
    ca_addrs: &BTreeMap<&'static str, SocketAddr>,
    roots: &Roots,
) -> anyhow::Result<()> {
    for w in ALL {
        let token = sign(
            &sa_key.encoding,
            "demo-sa",
            &serde_json::json!({
                "iss": SA_ISSUER,
                "sub": format!("system:serviceaccount:{}:{}", w.namespace, w.service_account),
                "aud": ["istio-ca"],
                "iat": now_secs(),
                "exp": now_secs() + 24 * 3600,
            }),
        )?;
        let wdir = workload_dir(dir, w);
        write(&wdir.join("token.jwt"), &token)?;
        let ttl = if w.name == REVIEWS.name {
            format!("{REVIEWS_TTL_SECS}s")
        } else {
            "1h".into()
        };
        let agent_cfg = format!(
            "trustDomain: {td}\nca:\n  address: \"https://{ca}\"\n  rootCert: {root}\n\
             tokenFile: token.jwt\nidentity:\n  namespace: {ns}\n  serviceAccount: {sa}\n\
             outputDir: certs\nttl: {ttl}\nmaxRetryInterval: 2s\n",
            td = w.trust_domain,
            ca = ca_addrs[w.trust_domain],
            root = s(roots.of(w.trust_domain)),
            ns = w.namespace,
            sa = w.service_account,
        );
        write(&wdir.join("agent.yaml"), &agent_cfg)?;
        sup.spawn(
            &format!("agent-{}", w.name),
            &["agent", "--config", &s(&wdir.join("agent.yaml"))],
        )?;
    }
    for w in ALL {
        let chain = workload_dir(dir, w).join("certs/cert-chain.pem");
        sup.wait_for_file(&chain, Duration::from_secs(20)).await?;
    }
    Ok(())
}

/// Writes `w`'s trust bundle directory (`<workload dir>/bundles`). Each starts with its own
/// domain's root. ratings is federated with team-b from the start (so policy, not TLS, decides
/// there); analytics trusts team-a so it can verify the servers it calls. reviews only learns
/// team-b's root during the tour.
pub fn write_bundles(dir: &Path, w: &Workload, roots: &Roots) -> anyhow::Result<()> {
    let wdir = workload_dir(dir, w);
    copy(
        roots.of(w.trust_domain),
        &wdir.join(format!("bundles/{}.pem", w.trust_domain)),
    )?;
    if w.name == RATINGS.name {
        copy(&roots.b, &wdir.join(format!("bundles/{TD_B}.pem")))?;
    }
    if w.name == ANALYTICS.name {
        copy(&roots.a, &wdir.join(format!("bundles/{TD_A}.pem")))?;
    }
    Ok(())
}

/// Federates reviews with team-b: adds team-b's root to its trust bundle directory and
/// team-b.eks.local to its trust domain aliases. The sidecar picks both up on its own.
pub fn federate_reviews_with_team_b(dir: &Path, ca_b_root: &Path) -> anyhow::Result<()> {
    let wdir = workload_dir(dir, &REVIEWS);
    copy(ca_b_root, &wdir.join(format!("bundles/{TD_B}.pem")))?;
    let mesh = std::fs::read_to_string(wdir.join("mesh.yaml"))?;
    let mesh = mesh.replace(
        "trustDomainAliases: []",
        &format!("trustDomainAliases: [{TD_B}]"),
    );
    write(&wdir.join("mesh.yaml"), &mesh)
}
