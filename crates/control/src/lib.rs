//! The control plane (istiod's role for security and the registry): it holds the mesh's
//! configuration — Istio's YAML from a config source, the mesh config, the trust bundles — and
//! serves each connected sidecar, over incremental xDS on the CA's port, exactly what its
//! workload needs.
//!
//! Rooms, from the bottom:
//! - [`source`]: where configuration comes from (a watched directory today; the interface is
//!   what a Kubernetes source will implement), read into documents with the last good version
//!   of any file that stops parsing;
//! - [`world`]: pure — documents, mesh config and bundles indexed into versioned xDS resources,
//!   and the per-workload view (which policies select it, which registry entries it may reach);
//! - [`status`]: who is connected, what each ACKed or NACKed, for `proxy-status` and metrics;
//! - [`ambient`]: ztunnel's types (`istio.workload.Address`, `istio.security.Authorization`)
//!   from the same world, through `trustmesh_ambient`'s translations;
//! - [`views`]: the xDS server's questions answered from the world, callers authenticated as
//!   the CA authenticates them;
//! - [`monitor`]: the HTTP port (istiod's 15014): `/metrics`, `/debug/syncz`, `/ready`;
//! - [`run`]: start and drain.

pub mod ambient;
pub mod monitor;
pub mod run;
pub mod source;
pub mod status;
pub mod version;
pub mod views;
pub mod world;
