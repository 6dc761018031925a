//! The CA as a Kubernetes signer: `CertificateSigningRequest`s with our signer name
//! ([`SIGNER_NAME`]) are approved only when the requester is entitled to what they ask — a
//! service account, its own SPIFFE identity and nothing else, no CA usages — and then signed
//! by the mesh CA; all others of our signer name are denied with the reason. Requests of other
//! signers are never touched.
//!
//! A request approved by somebody else is still signed only when it passes the same check:
//! approval is a Kubernetes decision, the identity in the certificate is the mesh's.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;
use trustmesh_ca_server::auth::review::parse_username;
use trustmesh_ca_server::csr;
use trustmesh_ca_server::signer::Signer;
use trustmesh_identity::{SpiffeId, TrustDomain};

/// The signer name trustmesh answers to.
pub const SIGNER_NAME: &str = "trustmesh.io/workload";
/// Usages a workload certificate may carry (Kubernetes' spelling).
const WORKLOAD_USAGES: [&str; 4] = [
    "digital signature",
    "key encipherment",
    "client auth",
    "server auth",
];
/// Our name in `managedFields`.
const FIELD_MANAGER: &str = "trustmesh-control";

/// The identity `req` may be issued, or why not.
pub fn entitled(
    trust_domain: &TrustDomain,
    req: &CertificateSigningRequest,
) -> Result<SpiffeId, String> {
    let spec = &req.spec;
    let user = spec.username.as_deref().unwrap_or("");
    let (ns, sa) = match parse_username(user) {
        Some(Ok(account)) => account,
        _ => {
            return Err(format!(
                "requested by {user:?}: only a service account obtains a workload certificate"
            ))
        }
    };
    let id = SpiffeId::istio(trust_domain, ns, sa).map_err(|e| e.to_string())?;
    let pem = String::from_utf8(spec.request.0.clone())
        .map_err(|_| "spec.request is not a PEM certificate request".to_string())?;
    let inspected = csr::inspect(&pem).map_err(|e| e.to_string())?;
    if inspected.uri_sans != [id.to_string()] {
        return Err(format!(
            "{user} may obtain {id} only, and the request asks for {}",
            if inspected.uri_sans.is_empty() {
                "no SPIFFE ID".to_string()
            } else {
                inspected.uri_sans.join(", ")
            }
        ));
    }
    if !inspected.other_sans.is_empty() {
        return Err(format!(
            "a workload certificate names its SPIFFE ID only, and the request also asks for {}",
            inspected.other_sans.join(", ")
        ));
    }
    if let Some(bad) = spec
        .usages
        .iter()
        .flatten()
        .find(|u| !WORKLOAD_USAGES.contains(&u.as_str()))
    {
        return Err(format!("usage {bad:?} is not a workload certificate's"));
    }
    Ok(id)
}

/// Where a request stands.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Nobody decided yet.
    Pending,
    Approved,
    /// Denied or failed, or already issued: nothing left to do.
    Done,
}

pub fn state(req: &CertificateSigningRequest) -> State {
    let status = req.status.as_ref();
    if status
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
    {
        return State::Done;
    }
    let has = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    if has("Denied") || has("Failed") {
        State::Done
    } else if has("Approved") {
        State::Approved
    } else {
        State::Pending
    }
}

/// Signs as [`SIGNER_NAME`] until the task is aborted. Lifetimes: `expirationSeconds` clipped
/// to `max_ttl`, else `default_ttl`.
pub fn spawn(
    client: Client,
    signer: Arc<dyn Signer>,
    trust_domain: TrustDomain,
    default_ttl: Duration,
    max_ttl: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<CertificateSigningRequest> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.signerName={SIGNER_NAME}"));
        let mut events = watcher::watcher(api.clone(), config)
            .default_backoff()
            .boxed();
        while let Some(e) = events.next().await {
            let req = match e {
                Ok(Event::Apply(r) | Event::InitApply(r)) => r,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("kubernetes: watching CertificateSigningRequests: {e}");
                    continue;
                }
            };
            if req.spec.signer_name != SIGNER_NAME {
                continue;
            }
            let ttl = req
                .spec
                .expiration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64).min(max_ttl))
                .unwrap_or(default_ttl);
            if let Err(e) = handle(&api, &req, &trust_domain, signer.clone(), ttl).await {
                tracing::warn!(csr = %req.name_any(), "kubernetes: CertificateSigningRequest: {e}");
            }
        }
    })
}

async fn handle(
    api: &Api<CertificateSigningRequest>,
    req: &CertificateSigningRequest,
    td: &TrustDomain,
    signer: Arc<dyn Signer>,
    ttl: Duration,
) -> Result<(), kube::Error> {
    let name = req.name_any();
    let state = state(req);
    if state == State::Done {
        return Ok(());
    }
    let id = match entitled(td, req) {
        Ok(id) => id,
        Err(why) => {
            tracing::info!(csr = %name, "denied CertificateSigningRequest: {why}");
            if state == State::Pending {
                let c = condition("Denied", "TrustmeshNotEntitled", &why);
                add_condition(api, req, "approval", c).await?;
            } else {
                fail(api, req, &why).await?;
            }
            return Ok(());
        }
    };
    if state == State::Pending {
        let why = format!("{id} is the requester's own identity");
        let c = condition("Approved", "TrustmeshEntitled", &why);
        add_condition(api, req, "approval", c).await?;
    }
    let pem = String::from_utf8_lossy(&req.spec.request.0).into_owned();
    let signed = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || signer.sign(&pem, &id, ttl)).await
    };
    let chain = match signed {
        Ok(Ok(chain)) => chain,
        Ok(Err(e)) => return fail(api, req, &format!("the CA refused it: {e}")).await,
        Err(e) => return fail(api, req, &format!("signing failed: {e}")).await,
    };
    let certificate: String = chain
        .iter()
        .map(trustmesh_identity::pem::cert_to_pem)
        .collect();
    let patch = serde_json::json!({
        "status": { "certificate": k8s_openapi::ByteString(certificate.into_bytes()) }
    });
    api.patch_subresource(
        "status",
        &name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(csr = %name, %id, ttl_secs = ttl.as_secs(), "signed CertificateSigningRequest");
    Ok(())
}

fn condition(kind: &str, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "type": kind, "status": "True", "reason": reason, "message": message })
}

/// Adds `c` to the request's conditions through `subresource` (`approval` for Approved and
/// Denied, `status` for Failed). The list is written whole (a merge patch replaces lists), so
/// the conditions already there are kept in it.
async fn add_condition(
    api: &Api<CertificateSigningRequest>,
    req: &CertificateSigningRequest,
    subresource: &str,
    c: serde_json::Value,
) -> Result<(), kube::Error> {
    let mut conditions: Vec<serde_json::Value> = req
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(c);
    let patch = serde_json::json!({ "status": { "conditions": conditions } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch_subresource(subresource, &req.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Marks an approved request `Failed`: the signer will not sign it.
async fn fail(
    api: &Api<CertificateSigningRequest>,
    req: &CertificateSigningRequest,
    message: &str,
) -> Result<(), kube::Error> {
    tracing::info!(csr = %req.name_any(), "not signing an approved CertificateSigningRequest: {message}");
    let c = condition("Failed", "TrustmeshRefused", message);
    add_condition(api, req, "status", c).await
}

#[cfg(test)]
mod tests;
