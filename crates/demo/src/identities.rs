//! Who is who: two CAs with different roots (Istio `cacerts` layout), served per trust domain
//! by `trustmesh control` ([`crate::control`], with the flags `ca serve` takes), and a node
//! agent per workload that keeps its certificate fresh — on the machine, or (transparent mode)
//! inside the workload's network namespace, as Istio's agent runs in the pod. Who trusts whom
//! is the control planes' business: they serve the trust bundles.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::files::{s, write};
use crate::netns::Netns;
use crate::procs::Supervisor;
use crate::tokens::{now_secs, sign, signing_key, SigningKey, SA_ISSUER};
use crate::workloads::{Workload, ALL, REVIEWS, REVIEWS_TTL_SECS, TD_A, TD_B};

/// The name the agents verify their CA by, whatever address they reach it on: the one
/// `trustmesh control`'s serving certificate carries by default, as istiod's does (a
/// sidecar's `controlPlane.serverName` defaults to it too).
const CA_SERVER_NAME: &str = "istiod.istio-system.svc";

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

    /// Starts an agent per workload against the CA servers at `ca_addrs`, each in the network
    /// namespace `place` gives it (`None`: this one); returns once every workload has its
    /// certificate in `<workload dir>/certs`.
    pub async fn start_agents(
        &self,
        dir: &Path,
        sup: &mut Supervisor,
        ca_addrs: &BTreeMap<&'static str, SocketAddr>,
        place: &dyn Fn(&Workload) -> Option<Netns>,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<()> {
        progress("starting node agents: local keys, CSRs authenticated by service-account tokens");
        start_agents(dir, sup, &self.sa_key, ca_addrs, &self.roots, place).await
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

/// A node agent per workload, with a service-account token the CA accepts; returns once every
/// workload has its certificate.
async fn start_agents(
    dir: &Path,
    sup: &mut Supervisor,
    sa_key: &SigningKey,
    ca_addrs: &BTreeMap<&'static str, SocketAddr>,
    roots: &Roots,
    place: &dyn Fn(&Workload) -> Option<Netns>,
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
             \x20 serverName: {CA_SERVER_NAME}\n\
             tokenFile: token.jwt\nidentity:\n  namespace: {ns}\n  serviceAccount: {sa}\n\
             outputDir: certs\nttl: {ttl}\nmaxRetryInterval: 2s\n",
            td = w.trust_domain,
            ca = ca_addrs[w.trust_domain],
            root = s(roots.of(w.trust_domain)),
            ns = w.namespace,
            sa = w.service_account,
        );
        write(&wdir.join("agent.yaml"), &agent_cfg)?;
        sup.spawn_in(
            place(w).as_ref(),
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
