//! `trustmesh control --kube`: the wiring of the cluster into the control plane (the work is in
//! `trustmesh-kube`): the CA from `cacerts` / `istio-ca-secret` when no `--ca` is given, the
//! cluster as a second configuration source, TokenReview, node authorization, the roots
//! ConfigMaps, and following a `cacerts` rotation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use trustmesh_ca::{CertificateAuthority, TtlPolicy};
use trustmesh_ca_server::ca_signer::CaSigner;
use trustmesh_control::run::{self, Options, Running};
use trustmesh_control::source::Merged;
use trustmesh_kube::cacerts::{self, Origin};
use trustmesh_kube::events::Reporter;
use trustmesh_kube::external::ExternalSigner;
use trustmesh_kube::node::{KubeNodeAuthorizer, NodeAccount};
use trustmesh_kube::review::KubeTokenReviewer;
use trustmesh_kube::source::KubeSource;

use super::ca_serve::{self, Prepared};

/// How often the control plane's problems are looked at for new Events.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reading a Kubernetes cluster, as istiod does.
#[derive(clap::Args)]
pub struct KubeArgs {
    /// Read the cluster: Istio's resources, the `istio` ConfigMap's mesh config and the registry
    /// (Services, EndpointSlices, Pods); check bearer tokens with TokenReview; keep
    /// `istio-ca-root-cert` in every namespace; without --ca, sign with the `cacerts` Secret
    /// (watched) or istiod's self-signed `istio-ca-secret` (made when missing). Connects
    /// in-cluster, or as kubectl would.
    #[arg(long)]
    pub kube: bool,
    /// The kubeconfig to connect with (implies --kube).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the mesh ConfigMap (`istio`) and the CA's Secrets, as istiod's own.
    #[arg(long, value_name = "NS", default_value = "istio-system")]
    pub root_namespace: String,
    /// How long a token the API server accepted is accepted again without asking (0s: always
    /// ask); a deleted service account's token is refused at most this long after.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub token_review_cache: trustmesh_config::Duration,
    /// A node proxy's service account (istiod's CA_TRUSTED_NODE_ACCOUNTS), as NS/SA: with a
    /// token bound to its pod it may obtain the certificate of any identity with a pod on its
    /// own node (ztunnel's shared mode); repeatable. Default: none.
    #[arg(long = "trusted-node-account", value_name = "NS/SA")]
    pub trusted_node_accounts: Vec<NodeAccount>,
    /// Act as the Kubernetes signer `trustmesh.io/workload`: CertificateSigningRequests of a
    /// service account for its own SPIFFE identity are approved and signed by the mesh CA,
    /// all others of that signer denied with the reason.
    #[arg(long)]
    pub sign_csrs: bool,
    /// Ask this Kubernetes signer for workload certificates (istiod's RA mode, e.g. cert-manager
    /// through istio-csr): the CA authenticates the caller and decides its identity, then
    /// creates a CertificateSigningRequest for that signer and hands out the answer once it
    /// names that identity and chains to --external-signer-roots. Needs those roots.
    #[arg(long, value_name = "SIGNER_NAME", requires = "external_signer_roots")]
    pub external_signer: Option<String>,
    /// The external signer's roots (PEM): the bundle workloads are given.
    #[arg(long, value_name = "FILE", requires = "external_signer")]
    pub external_signer_roots: Option<PathBuf>,
}

impl KubeArgs {
    pub fn enabled(&self) -> bool {
        self.kube || self.kubeconfig.is_some()
    }
}

/// A connected cluster, and what the control plane runs against it.
pub struct Cluster {
    client: trustmesh_kube::Client,
    /// New CAs from a `cacerts` rotation (only when the CA came from the cluster).
    rotations: Option<mpsc::Receiver<CertificateAuthority>>,
    roots: Option<watch::Sender<String>>,
    /// Problems with cluster objects become Events on them.
    events: Option<Reporter>,
    tasks: Vec<JoinHandle<()>>,
}

pub async fn connect(a: &KubeArgs) -> Result<Cluster, ExitCode> {
    match trustmesh_kube::client::connect(a.kubeconfig.as_deref()).await {
        Ok(client) => Ok(Cluster {
            client,
            rotations: None,
            roots: None,
            events: None,
            tasks: Vec::new(),
        }),
        Err(e) => Err(super::fail(1, format!("{e:#}"))),
    }
}

impl Cluster {
    /// The CA from the cluster's Secrets, and the watch on `cacerts` for its rotations.
    pub async fn load_ca(
        &mut self,
        ca_args: &ca_serve::Args,
        kube: &KubeArgs,
    ) -> Result<Prepared, ExitCode> {
        let ns = &kube.root_namespace;
        let (ca, origin) =
            match cacerts::load(&self.client, ns, ca_args.trust_domain.as_ref()).await {
                Ok(found) => found,
                Err(e) => return Err(super::fail(1, format!("loading the CA: {e:#}"))),
            };
        tracing::info!(
            "signing with {origin} in namespace {ns} (trust domain {})",
            ca.trust_domain()
        );
        let (tx, rx) = mpsc::channel(4);
        let loaded = match origin {
            Origin::PlugIn(data) => Some(data),
            Origin::SelfSigned | Origin::Created => None,
        };
        self.tasks.push(cacerts::watch(
            self.client.clone(),
            ns,
            ca.trust_domain().clone(),
            loaded,
            tx,
        ));
        self.rotations = Some(rx);
        ca_serve::prepare_with(ca_args, ca, true)
    }

    /// Adds the cluster to what the control plane starts with, once every kind has been listed.
    pub async fn attach(
        &mut self,
        kube: &KubeArgs,
        ca_opts: &mut trustmesh_ca_server::server::Options,
        opts: &mut Options,
        signer: &dyn trustmesh_ca_server::signer::Signer,
    ) {
        let domain = opts.registry.domain_suffix.clone();
        let source = KubeSource::start(self.client.clone(), &domain, &kube.root_namespace);
        source.synced().await;
        self.events = Some(Reporter::new(self.client.clone(), source.store()));
        if !kube.trusted_node_accounts.is_empty() {
            ca_opts.node_authorizer = Some(Arc::new(KubeNodeAuthorizer::new(
                source.store(),
                kube.trusted_node_accounts.clone(),
            )));
        }
        // Files (a mesh file, --trust-bundle) still count; the cluster's mesh ConfigMap comes
        // second, so --mesh overrides it.
        let files = std::mem::replace(&mut opts.source, Box::new(Merged(Vec::new())));
        opts.source = Box::new(Merged(vec![files, Box::new(source)]));
        ca_opts.reviewer = Some(Arc::new(KubeTokenReviewer::new(
            self.client.clone(),
            ca_opts.audiences.clone(),
            kube.token_review_cache.get(),
        )));
        let (roots, rx) = watch::channel(run::roots_pem(signer));
        self.tasks
            .push(trustmesh_kube::roots::spawn(self.client.clone(), rx));
        self.roots = Some(roots);
    }

    /// The signer workload certificates come from with `--external-signer`, if given.
    pub fn external_signer(
        &self,
        kube: &KubeArgs,
    ) -> Result<Option<Arc<dyn trustmesh_ca_server::signer::Signer>>, ExitCode> {
        let (Some(name), Some(roots)) = (&kube.external_signer, &kube.external_signer_roots) else {
            return Ok(None);
        };
        let pem = std::fs::read(roots).map_err(|e| {
            super::fail(
                2,
                format!("--external-signer-roots {}: {e}", roots.display()),
            )
        })?;
        let roots_der = trustmesh_identity::pem::certs_from_pem(&pem).map_err(|e| {
            super::fail(
                2,
                format!("--external-signer-roots {}: {e}", roots.display()),
            )
        })?;
        let signer = ExternalSigner::new(self.client.clone(), name.clone(), roots_der)
            .map_err(|e| super::fail(2, format!("--external-signer-roots: {e}")))?;
        tracing::info!("workload certificates are asked of the Kubernetes signer {name}");
        Ok(Some(Arc::new(signer)))
    }

    /// Signs the cluster's CertificateSigningRequests of our signer name with `signer`.
    pub fn sign_csrs(
        &mut self,
        ca_args: &ca_serve::Args,
        signer: Arc<dyn trustmesh_ca_server::signer::Signer>,
        trust_domain: trustmesh_identity::TrustDomain,
    ) {
        let max_ttl = ca_args.max_ttl.get();
        self.tasks.push(trustmesh_kube::csr::spawn(
            self.client.clone(),
            signer,
            trust_domain,
            ca_args.default_ttl.get().min(max_ttl),
            max_ttl,
        ));
    }

    /// Records the control plane's problems with cluster objects as Events on them.
    pub async fn report(&mut self, problems: &[String]) {
        if let Some(r) = &mut self.events {
            r.report(problems).await;
        }
    }

    /// Waits for the next `cacerts` rotation (forever when the CA is not the cluster's).
    pub async fn next_rotation(&mut self) -> CertificateAuthority {
        match self.rotations.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(ca) => ca,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Signs with `ca` from now on: the CA port, every sidecar's bundle and the roots
    /// ConfigMaps follow.
    pub async fn rotate(
        &self,
        mut ca: CertificateAuthority,
        ca_args: &ca_serve::Args,
        signer: &CaSigner,
        running: &Running,
    ) {
        let max_ttl = ca_args.max_ttl.get();
        let policy = TtlPolicy {
            default_ttl: ca_args.default_ttl.get().min(max_ttl),
            max_ttl,
        };
        if let Err(e) = ca.set_ttl_policy(policy) {
            tracing::error!("the rotated CA cannot be used: {e}; signing with the keys it has");
            return;
        }
        signer.replace(ca);
        // The roots ConfigMaps follow from the rebuilt world ([`Cluster::follow_roots`]).
        if let Err(e) = running.reload_roots().await {
            tracing::error!("following the rotated CA's roots: {e}");
        }
    }

    /// Publishes the roots `world` serves: the CA's own first, then every federated trust
    /// domain's (`--trust-bundle`), as workloads that verify peers of both need them.
    pub fn follow_roots(&self, world: &trustmesh_control::world::World) {
        let Some(tx) = &self.roots else {
            return;
        };
        let mut pem = world
            .roots
            .get(&world.trust_domain)
            .cloned()
            .unwrap_or_default();
        for (td, p) in &world.roots {
            if td != &world.trust_domain {
                if !pem.is_empty() && !pem.ends_with('\n') {
                    pem.push('\n');
                }
                pem.push_str(p);
            }
        }
        tx.send_if_modified(|current| {
            let changed = *current != pem;
            if changed {
                *current = pem;
            }
            changed
        });
    }

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}
