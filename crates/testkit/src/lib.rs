//! What trustmesh's tests and benches share, written once: a test PKI in Istio's layout, free
//! ports and bounded waits, small HTTP clients and test backends, JWKS files and signed tokens,
//! child processes that are killed when a test ends, network namespaces deleted the same way,
//! wrappers around the tools we did not write (curl, openssl, Python, dig), the sidecar config
//! writer, and (feature `dns`) a test DNS upstream and client.
//!
//! A dev-dependency only (`publish = false`): nothing here is part of the product. Every wait
//! and every loop is bounded in count and in time, so a broken component fails a test instead
//! of hanging it. `tests/README.md` says which tests use which tier and why.

#[cfg(feature = "ca-server")]
pub mod ca_server;
#[cfg(feature = "dns")]
pub mod dns;
pub mod http;
pub mod jwt;
pub mod net;
pub mod netns;
pub mod pki;
pub mod process;
pub mod sidecar;
pub mod tools;
