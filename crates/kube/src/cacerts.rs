//! The CA's keys from the cluster, as istiod keeps them: a plug-in CA in the `cacerts` Secret of
//! the root namespace (Istio's four files, or cert-manager's `tls.crt` / `tls.key` / `ca.crt`),
//! else the self-signed root istiod keeps in `istio-ca-secret`, else a new self-signed root
//! written there (so every replica, and the next start, signs with the same root).
//!
//! `cacerts` is watched: a new version (a root or intermediate rotation) is loaded and handed
//! over; one that does not load, or names another trust domain, is refused with a warning and
//! the running CA keeps signing.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use trustmesh_ca::{CertificateAuthority, InitOptions};
use trustmesh_identity::TrustDomain;

/// The plug-in CA's Secret, as Istio names it.
pub const CACERTS: &str = "cacerts";
/// Where istiod keeps its self-signed root.
pub const SELF_SIGNED: &str = "istio-ca-secret";
/// istiod's type for that Secret.
const SELF_SIGNED_TYPE: &str = "istio.io/ca-root";
/// The files a CA directory may hold (both layouts); anything else in the Secret is ignored.
const FILES: [&str; 7] = [
    "ca-cert.pem",
    "ca-key.pem",
    "cert-chain.pem",
    "root-cert.pem",
    "tls.crt",
    "tls.key",
    "ca.crt",
];

/// Which Secret the CA came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `cacerts`, with the data it was loaded from (so the watch hands over only a change).
    PlugIn(BTreeMap<String, ByteString>),
    SelfSigned,
    /// A new self-signed root, just written to `istio-ca-secret`.
    Created,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::PlugIn(_) => "the plug-in CA in Secret cacerts",
            Origin::SelfSigned => "the self-signed root in Secret istio-ca-secret",
            Origin::Created => "a new self-signed root, written to Secret istio-ca-secret",
        })
    }
}

/// Loads the CA as istiod finds it in `namespace`. `trust_domain` is the explicit one
/// (`--trust-domain`); a new self-signed root is made for it (default `cluster.local`).
pub async fn load(
    client: &Client,
    namespace: &str,
    trust_domain: Option<&TrustDomain>,
) -> anyhow::Result<(CertificateAuthority, Origin)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let get = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(name)
                .await
                .map_err(|e| anyhow::anyhow!("reading Secret {namespace}/{name}: {e}"))
        }
    };
    if let Some(s) = get(CACERTS).await? {
        let ca = from_data(s.data.as_ref(), trust_domain, false)
            .map_err(|e| anyhow::anyhow!("Secret {namespace}/{CACERTS}: {e}"))?;
        return Ok((ca, Origin::PlugIn(s.data.unwrap_or_default())));
    }
    if let Some(s) = get(SELF_SIGNED).await? {
        let ca = from_data(s.data.as_ref(), trust_domain, true)
            .map_err(|e| anyhow::anyhow!("Secret {namespace}/{SELF_SIGNED}: {e}"))?;
        return Ok((ca, Origin::SelfSigned));
    }
    let td = match trust_domain {
        Some(td) => td.clone(),
        None => TrustDomain::parse("cluster.local").expect("a valid trust domain"),
    };
    let ca = CertificateAuthority::init_root(&td, &InitOptions::default())
        .map_err(|e| anyhow::anyhow!("creating a self-signed root: {e}"))?;
    let secret = self_signed_secret(&ca, namespace)?;
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((ca, Origin::Created)),
        // Another replica wrote one first: use that one, so all sign with the same root.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let s = get(SELF_SIGNED).await?.ok_or_else(|| {
                anyhow::anyhow!("Secret {namespace}/{SELF_SIGNED} was created and is gone")
            })?;
            let ca = from_data(s.data.as_ref(), trust_domain, true)
                .map_err(|e| anyhow::anyhow!("Secret {namespace}/{SELF_SIGNED}: {e}"))?;
            Ok((ca, Origin::SelfSigned))
        }
        Err(e) => Err(anyhow::anyhow!(
            "writing Secret {namespace}/{SELF_SIGNED}: {e}"
        )),
    }
}

/// A CA from a Secret's data, read by the same loader as a `--ca` directory (the files are
/// written to a private temporary directory, read, and removed). `self_signed`: istiod's
/// `istio-ca-secret`, where `cert-chain.pem` and `root-cert.pem` may be empty (the root is
/// `ca-cert.pem`).
pub fn from_data(
    data: Option<&BTreeMap<String, ByteString>>,
    trust_domain: Option<&TrustDomain>,
    self_signed: bool,
) -> Result<CertificateAuthority, String> {
    let data = data.ok_or("the Secret has no data")?;
    let dir = tempfile::Builder::new()
        .prefix("trustmesh-ca-")
        .tempdir()
        .map_err(|e| format!("a private directory for the CA files: {e}"))?;
    let ca_cert = data.get("ca-cert.pem").map(|b| b.0.clone());
    for name in FILES {
        let mut bytes = data.get(name).map(|b| b.0.clone()).unwrap_or_default();
        if self_signed
            && matches!(name, "cert-chain.pem" | "root-cert.pem")
            && bytes.iter().all(u8::is_ascii_whitespace)
        {
            bytes = ca_cert.clone().unwrap_or_default();
        }
        if bytes.is_empty() {
            continue;
        }
        write_private(&dir.path().join(name), &bytes)?;
    }
    CertificateAuthority::load_to_serve(dir.path(), trust_domain).map_err(|e| e.to_string())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `istio-ca-secret` holding `ca`, in istiod's shape.
fn self_signed_secret(ca: &CertificateAuthority, namespace: &str) -> anyhow::Result<Secret> {
    let dir = tempfile::Builder::new().prefix("trustmesh-ca-").tempdir()?;
    ca.write(dir.path())?;
    let mut data = BTreeMap::new();
    for name in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        data.insert(
            name.to_string(),
            ByteString(std::fs::read(dir.path().join(name))?),
        );
    }
    Ok(Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SELF_SIGNED.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some(SELF_SIGNED_TYPE.into()),
        data: Some(data),
        ..Default::default()
    })
}

/// Watches `cacerts`; each version that differs from `loaded` (the data the running CA came
/// from; `None`: it did not come from `cacerts`, so its appearance is a change) and loads in
/// `trust_domain` is sent on `to`.
pub fn watch(
    client: Client,
    namespace: &str,
    trust_domain: TrustDomain,
    loaded: Option<BTreeMap<String, ByteString>>,
    to: mpsc::Sender<CertificateAuthority>,
) -> JoinHandle<()> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let ns = namespace.to_string();
    tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={CACERTS}"));
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut seen = loaded;
        while let Some(e) = events.next().await {
            let secret = match e {
                Ok(Event::Apply(s) | Event::InitApply(s)) => s,
                Ok(Event::Delete(_)) => {
                    tracing::warn!("Secret {ns}/{CACERTS} was deleted; the CA keeps signing with the keys it has");
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("kubernetes: watching Secret {ns}/{CACERTS}: {e}");
                    continue;
                }
            };
            let data = secret.data.clone().unwrap_or_default();
            if seen.as_ref() == Some(&data) {
                continue;
            }
            seen = Some(data);
            match from_data(secret.data.as_ref(), Some(&trust_domain), false) {
                Ok(ca) if ca.trust_domain() == &trust_domain => {
                    tracing::info!("Secret {ns}/{CACERTS} changed: loading the new CA");
                    if to.send(ca).await.is_err() {
                        return;
                    }
                }
                Ok(ca) => tracing::warn!(
                    "Secret {ns}/{CACERTS} changed to a CA of trust domain {}, not {trust_domain}; \
                     the CA keeps signing with the keys it has",
                    ca.trust_domain()
                ),
                Err(e) => tracing::warn!(
                    "Secret {ns}/{CACERTS} changed but cannot be used ({e}); the CA keeps signing \
                     with the keys it has"
                ),
            }
        }
    })
}
