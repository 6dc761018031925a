//! Federated trust domains: each peer's SPIFFE bundle is fetched from its bundle endpoint and
//! served to workloads next to the local roots, and written to `<output_dir>/federated/<td>.pem`
//! so a sidecar that reads its trust bundles from files (`trustBundles: [<output_dir>/federated/]`)
//! follows the peer's roots too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use trustmesh_ca_server::bundle;
use trustmesh_identity::pem::certs_from_pem;

use crate::config::Federation;
use crate::state::StateTx;

/// Bounds on the peer's `spiffe_refresh_hint`: never hammer a peer, never sit on a stale bundle.
const MIN_REFRESH: Duration = Duration::from_secs(5);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_secs(5);

/// Polls one peer forever. The endpoint is authenticated with `root_cert` (the peer's initial
/// bundle, per the `https_spiffe` profile's bootstrap); once fetched, the peer's current roots
/// authenticate later fetches as well, so the peer can rotate its root.
pub async fn run(peer: Federation, output_dir: PathBuf, state: StateTx) {
    let mut anchors = match std::fs::read(&peer.root_cert)
        .map_err(|e| e.to_string())
        .and_then(|p| certs_from_pem(&p).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(trust_domain = %peer.trust_domain, "federation root {}: {e}", peer.root_cert.display());
            return;
        }
    };
    let peer = Arc::new(peer);
    loop {
        let wait = match trustmesh_ca_server::https_get::get_with_roots(&peer.endpoint, &anchors)
            .await
        {
            Ok(body) => match bundle::parse(&body) {
                Ok(b) if !b.x509_authorities.is_empty() => {
                    tracing::info!(trust_domain = %peer.trust_domain, roots = b.x509_authorities.len(), "federated bundle updated");
                    let roots = b.x509_authorities.clone();
                    let jwt = b.jwt_authorities.clone();
                    if let Err(e) = write_roots(&output_dir, &peer.trust_domain, &roots) {
                        tracing::warn!(trust_domain = %peer.trust_domain, "writing federated roots: {e}");
                    }
                    state.send_if_modified(|snap| {
                        let changed = snap.federated.get(&peer.trust_domain) != Some(&roots)
                            || snap.federated_jwt.get(&peer.trust_domain) != Some(&jwt);
                        snap.federated
                            .insert(peer.trust_domain.clone(), roots.clone());
                        snap.federated_jwt
                            .insert(peer.trust_domain.clone(), jwt.clone());
                        changed
                    });
                    let mut next = roots;
                    for a in anchors.drain(..) {
                        if !next.contains(&a) {
                            next.push(a);
                        }
                    }
                    anchors = next;
                    b.refresh_hint
                        .map(Duration::from_secs)
                        .unwrap_or(DEFAULT_REFRESH)
                        .clamp(MIN_REFRESH, MAX_REFRESH)
                }
                Ok(_) => {
                    tracing::warn!(trust_domain = %peer.trust_domain, "bundle from {} has no X.509 roots; keeping the previous one", peer.endpoint);
                    RETRY
                }
                Err(e) => {
                    tracing::warn!(trust_domain = %peer.trust_domain, "bundle from {}: {e}", peer.endpoint);
                    RETRY
                }
            },
            Err(e) => {
                tracing::warn!(trust_domain = %peer.trust_domain, "fetching bundle: {e}");
                RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Writes a peer's roots as `<dir>/federated/<td>.pem`, atomically and only when they changed
/// (a rewrite with equal content would still make file watchers reload).
fn write_roots(
    dir: &Path,
    td: &trustmesh_identity::TrustDomain,
    roots: &[rustls_pki_types::CertificateDer<'static>],
) -> std::io::Result<()> {
    let folder = dir.join("federated");
    std::fs::create_dir_all(&folder)?;
    let path = folder.join(format!("{td}.pem"));
    let pem = trustmesh_identity::pem::certs_to_pem(roots);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(pem.as_str()) {
        return Ok(());
    }
    crate::svid::write_atomic(&path, pem.as_bytes(), 0o644)
}
