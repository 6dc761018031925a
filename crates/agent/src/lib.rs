//! trustmesh's node agent: keeps one workload's X.509-SVID fresh (key generated locally, CSR to
//! the CA, rotation before expiry), writes it where the proxy watches, and serves it over the
//! SPIFFE Workload API; it stops by draining ([`run`], the lifecycle crate's drain primitive).

pub mod attest;
pub mod config;
pub mod federation;
pub mod h2_authority;
pub mod jwt;
pub mod rotation;
pub mod state;
pub mod svid;
pub mod workload_api;

use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
use trustmesh_lifecycle::drain::Watch;

/// Generated from `proto/workload.proto` (no protobuf package, as in the SPIFFE spec).
pub mod pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// How long `trustmesh agent` gives Workload API calls in flight to finish once told to stop,
/// unless the config's `terminationDrain` says otherwise.
/// A `FetchJWTSVID` call may be waiting for the CA, which its client gives 5 s to connect and
/// 15 s to answer; a CA that slow at shutdown is cut rather than waited for.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the agent until `drain` starts, or a fatal error (the Workload API socket cannot be
/// served). When the drain starts, rotation and polling stop at once (nothing new is fetched or
/// written) and the Workload API drains: the socket stops accepting, unary calls in flight are
/// answered and streams end ([`workload_api::serve`]); this returns once it has.
pub async fn run(cfg: Config, drain: Watch) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let (tx, rx) = state::channel();
    let mut background: Vec<_> = cfg
        .federation
        .iter()
        .map(|peer| {
            tokio::spawn(federation::run(
                peer.clone(),
                cfg.output_dir.clone(),
                tx.clone(),
            ))
        })
        .collect();
    let mut rotation = tokio::spawn(rotation::run(cfg.clone(), tx.clone()));
    let result = match &cfg.workload_api_socket {
        Some(path) => {
            // The JWT bundle is only needed by Workload API clients.
            background.push(tokio::spawn(jwt::poll_bundle(cfg.clone(), tx)));
            let serve = workload_api::serve(path, rx, cfg.clone(), drain.clone());
            tokio::pin!(serve);
            tokio::select! {
                r = &mut serve => r,
                _ = drain.draining() => {
                    rotation.abort();
                    for b in &background {
                        b.abort();
                    }
                    serve.await
                }
            }
        }
        None => {
            drop(tx);
            tokio::select! {
                r = &mut rotation => r.map_err(|e| format!("rotation task: {e}")),
                _ = drain.draining() => Ok(()),
            }
        }
    };
    rotation.abort();
    for b in background {
        b.abort();
    }
    result
}
