//! Builds the quickstart mesh in a temporary directory: two CAs with different roots, a CA
//! server and a node agent per trust domain's workloads, a sidecar per workload, the demo
//! backends, an external authorizer, and the Istio policies that govern them.
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::procs::{free_port, Supervisor};

pub const TD_A: &str = "team-a.gke.local";
pub const TD_B: &str = "team-b.eks.local";
/// Issuer of the service-account tokens the agents present to their CA (the Kubernetes API
/// server's role in Istio).
const SA_ISSUER: &str = "https://kubernetes.demo.local";
/// Issuer of end-user tokens checked by RequestAuthentication.
pub const USER_ISSUER: &str = "https://auth.demo.local";
/// Lifetime of the reviews certificate: short, so the tour sees the agent rotate it.
pub const REVIEWS_TTL_SECS: u64 = 20;

/// One workload of the demo.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub trust_domain: &'static str,
    pub namespace: &'static str,
    pub service_account: &'static str,
}

impl Workload {
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

pub const FRONTEND: Workload = Workload {
    name: "frontend",
    trust_domain: TD_A,
    namespace: "bookinfo",
    service_account: "frontend",
};
pub const REVIEWS: Workload = Workload {
    name: "reviews",
    trust_domain: TD_A,
    namespace: "bookinfo",
    service_account: "reviews",
};
pub const RATINGS: Workload = Workload {
    name: "ratings",
    trust_domain: TD_A,
    namespace: "bookinfo",
    service_account: "ratings",
};
pub const PAYROLL: Workload = Workload {
    name: "payroll",
    trust_domain: TD_A,
    namespace: "finance",
    service_account: "payroll",
};
pub const ANALYTICS: Workload = Workload {
    name: "analytics",
    trust_domain: TD_B,
    namespace: "analytics",
    service_account: "reporter",
};

pub const ALL: [&Workload; 5] = [&FRONTEND, &REVIEWS, &RATINGS, &PAYROLL, &ANALYTICS];

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
    /// Signs end-user JWTs that RequestAuthentication accepts.
    user_key: EncodingKey,
    /// Signs JWTs with the right issuer but a key nobody trusts.
    rogue_key: EncodingKey,
    /// team-b's root, which the tour adds to reviews' trust bundle.
    ca_b_root: PathBuf,
}

/// An ES256 signing key with its public JWK.
struct SigningKey {
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

fn signing_key(kid: &str) -> anyhow::Result<SigningKey> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = kp.public_key_raw();
    // Uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
    if raw.len() != 65 || raw[0] != 4 {
        bail!("unexpected P-256 public key encoding");
    }
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    });
    let encoding = EncodingKey::from_ec_der(&kp.serialize_der());
    Ok(SigningKey { encoding, jwk })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sign(key: &EncodingKey, kid: &str, claims: &serde_json::Value) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    Ok(jsonwebtoken::encode(&header, claims, key)?)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Write-then-rename: the proxies watch these files and must never read half of one.
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

impl Mesh {
    /// Starts everything; returns when every sidecar reports ready.
    pub async fn start(
        dir: &Path,
        sup: &mut Supervisor,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Mesh> {
        progress("creating two CAs with different roots (Istio cacerts layout)");
        let ca_a = dir.join("ca").join(TD_A);
        let ca_b = dir.join("ca").join(TD_B);
        for (td, out) in [(TD_A, &ca_a), (TD_B, &ca_b)] {
            run_to_completion(sup, &["ca", "init", "--trust-domain", td, "--out", &s(out)]).await?;
        }
        let roots = Roots {
            a: ca_a.join("root-cert.pem"),
            b: ca_b.join("root-cert.pem"),
        };

        progress("starting the CA servers (Istio certificate API over TLS)");
        let sa_key = signing_key("demo-sa")?;
        let ca_addrs = start_cas(dir, sup, &sa_key, [(TD_A, &ca_a), (TD_B, &ca_b)]).await?;

        progress("starting node agents: local keys, CSRs authenticated by service-account tokens");
        start_agents(dir, sup, &sa_key, &ca_addrs, &roots).await?;

        progress("starting demo apps, an ext_authz server and sidecar proxies");
        let authz = crate::authz_server::start().await?;
        let mut apps = BTreeMap::new();
        for w in ALL {
            apps.insert(w.name, crate::backend::start(w.name).await?);
        }
        let user_key = signing_key("demo-user")?;
        write(
            &dir.join("policies/mesh-policies.yaml"),
            &policies(&user_key.jwk),
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
            user_key: user_key.encoding,
            // Same issuer and kid, a different key: what a forged token looks like.
            rogue_key: signing_key("demo-user")?.encoding,
            ca_b_root: roots.b,
        })
    }
}

/// The two trust domains' root certificates.
struct Roots {
    a: PathBuf,
    b: PathBuf,
}

impl Roots {
    fn of(&self, td: &str) -> &Path {
        if td == TD_A {
            &self.a
        } else {
            &self.b
        }
    }
}

/// One CA server per trust domain, trusting the demo's service-account token issuer; returns
/// their addresses once they accept connections.
async fn start_cas(
    dir: &Path,
    sup: &mut Supervisor,
    sa_key: &SigningKey,
    cas: [(&'static str, &PathBuf); 2],
) -> anyhow::Result<BTreeMap<&'static str, SocketAddr>> {
    let jwks_file = dir.join("sa-jwks.json");
    write(
        &jwks_file,
        &serde_json::json!({ "keys": [sa_key.jwk] }).to_string(),
    )?;
    let mut ca_addrs = BTreeMap::new();
    for (td, ca_dir) in cas {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        sup.spawn(
            &format!("ca-{td}"),
            &[
                "ca",
                "serve",
                "--ca",
                &s(ca_dir),
                "--listen",
                &addr.to_string(),
                "--jwt-issuer",
                SA_ISSUER,
                "--jwks",
                &s(&jwks_file),
            ],
        )?;
        ca_addrs.insert(td, addr);
    }
    for addr in ca_addrs.values() {
        wait_for_port(*addr, Duration::from_secs(15), sup).await?;
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
        let wdir = dir.join("workloads").join(w.name);
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
        let chain = dir
            .join("workloads")
            .join(w.name)
            .join("certs/cert-chain.pem");
        wait_for_file(&chain, Duration::from_secs(20), sup).await?;
    }
    Ok(())
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
                config: dir.join("workloads").join(w.name).join("proxy.yaml"),
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
    let wdir = dir.join("workloads").join(w.name);
    // Each sidecar's trust bundle directory starts with its own domain's root. ratings is
    // federated with team-b from the start (so policy, not TLS, decides there); analytics
    // trusts team-a so it can verify the servers it calls. reviews only learns team-b's root
    // during the tour.
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
        let key = if forged {
            &self.rogue_key
        } else {
            &self.user_key
        };
        sign(
            key,
            "demo-user",
            &serde_json::json!({
                "iss": USER_ISSUER, "sub": sub, "aud": ["bookinfo"],
                "iat": now_secs(), "exp": now_secs() + 3600, "groups": ["readers"],
            }),
        )
    }

    /// Federates reviews with team-b: adds team-b's root to its trust bundle directory and
    /// team-b.eks.local to its trust domain aliases. The sidecar picks both up on its own.
    pub fn federate_reviews_with_team_b(&self) -> anyhow::Result<()> {
        let wdir = self.dir.join("workloads").join(REVIEWS.name);
        copy(&self.ca_b_root, &wdir.join(format!("bundles/{TD_B}.pem")))?;
        let mesh = std::fs::read_to_string(wdir.join("mesh.yaml"))?;
        let mesh = mesh.replace(
            "trustDomainAliases: []",
            &format!("trustDomainAliases: [{TD_B}]"),
        );
        write(&wdir.join("mesh.yaml"), &mesh)
    }
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &text)
}

/// Mesh config in Istio's `meshConfig` shape.
fn mesh_config(trust_domain: &str, aliases: &[&str], authz: SocketAddr) -> String {
    format!(
        "trustDomain: {trust_domain}\ntrustDomainAliases: [{aliases}]\nrootNamespace: istio-system\n\
         extensionProviders:\n  - name: demo-authz\n    envoyExtAuthzGrpc:\n      service: \"{ip}\"\n\
         \x20     port: {port}\n      timeout: 2s\n      failOpen: false\n",
        aliases = aliases.join(", "),
        ip = authz.ip(),
        port = authz.port(),
    )
}

/// The demo's Istio policies, exactly as they would be applied to a cluster.
fn policies(user_jwk: &serde_json::Value) -> String {
    let jwks = serde_json::json!({ "keys": [user_jwk] }).to_string();
    format!(
        r#"# Mesh-wide: every workload requires mutual TLS.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
---
# ratings: only frontend may read ratings.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ratings-viewer
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: ratings
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["{TD_A}/ns/bookinfo/sa/frontend"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/ratings/*"]
---
# reviews: tokens from the demo issuer are validated when present...
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: reviews-jwt
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: reviews
  jwtRules:
  - issuer: "{USER_ISSUER}"
    jwks: '{jwks}'
    outputPayloadToHeader: x-jwt-payload
---
# ...and required for /api.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews-api-needs-jwt
  namespace: bookinfo
spec:
  selector:
    matchLabels:
      app: reviews
  action: ALLOW
  rules:
  - to:
    - operation:
        paths: ["/api/*"]
    from:
    - source:
        requestPrincipals: ["{USER_ISSUER}/*"]
  - to:
    - operation:
        notPaths: ["/api/*"]
---
# payroll: salaries are decided by the external authorizer...
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: payroll-ext-authz
  namespace: finance
spec:
  selector:
    matchLabels:
      app: payroll
  action: CUSTOM
  provider:
    name: demo-authz
  rules:
  - to:
    - operation:
        paths: ["/salaries/*"]
---
# ...and nobody deletes anything.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: payroll-no-delete
  namespace: finance
spec:
  selector:
    matchLabels:
      app: payroll
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["DELETE"]
"#
    )
}

/// Runs a short-lived `trustmesh` command (e.g. `ca init`) and fails with its output if it fails.
async fn run_to_completion(sup: &Supervisor, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(sup.exe())
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

async fn wait_for_port(
    addr: SocketAddr,
    limit: Duration,
    sup: &mut Supervisor,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        sup.check_alive()?;
        if Instant::now() > deadline {
            bail!("nothing listening on {addr} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_file(path: &Path, limit: Duration, sup: &mut Supervisor) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        sup.check_alive()?;
        if Instant::now() > deadline {
            bail!("{} did not appear within {limit:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
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
