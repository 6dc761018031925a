//! trustmesh's node agent: keeps one workload's X.509-SVID fresh (key generated locally, CSR to
//! the CA, rotation before expiry), writes it where the proxy watches, and serves it over the
//! SPIFFE Workload API.

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

pub use config::Config;

/// Generated from `proto/workload.proto` (no protobuf package, as in the SPIFFE spec).
pub mod pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// Runs the agent until a fatal error (the Workload API socket cannot be served).
pub async fn run(cfg: Config) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let (tx, rx) = state::channel();
    for peer in cfg.federation.clone() {
        tokio::spawn(federation::run(peer, cfg.output_dir.clone(), tx.clone()));
    }
    let rotation = tokio::spawn(rotation::run(cfg.clone(), tx.clone()));
    match &cfg.workload_api_socket {
        Some(path) => {
            // The JWT bundle is only needed by Workload API clients.
            let jwt_bundle = tokio::spawn(jwt::poll_bundle(cfg.clone(), tx));
            let result = workload_api::serve(path, rx, cfg.clone()).await;
            rotation.abort();
            jwt_bundle.abort();
            result
        }
        None => {
            drop(tx);
            rotation.await.map_err(|e| format!("rotation task: {e}"))
        }
    }
}
