//! SPIFFE identities for trustmesh: IDs and trust domains, trust bundles, and X.509-SVID
//! verification.
//!
//! Everything here is pure logic over bytes and values, so the data plane, the agent and the CLI
//! all make the same trust decisions; the only I/O lives in [`load`].

pub mod spiffe;

pub use spiffe::{IdError, SpiffeId, TrustDomain};
