//! Transparent traffic capture: the rules that steer a workload's TCP (and optionally DNS)
//! traffic through its sidecar without the application knowing, the part Istio's
//! `istio-iptables` (and istio-cni) plays for Envoy.
//!
//! The planner (`plan`) is pure: options in, an ordered list of rules out, per IP family, so
//! every rule can be checked as text without root. Everything of ours lives in our own chains
//! (`chains`); the only rules we put anywhere else are the jumps into them, which is what makes
//! `remove` exact and `show` simple. Applying goes through `iptables-restore --noflush` in one
//! transaction per table (`script`, `iptables`), so an install never leaves half a rule set.
//!
//! `original_dst` stands alone (std and libc only): the sidecar needs it to learn where a
//! redirected connection was going, and may depend on this crate just for it.

pub mod chains;
pub mod error;
pub mod family;
pub mod iptables;
pub mod ops;
pub mod options;
pub mod original_dst;
pub mod plan;
pub mod rule;
pub mod saved;
pub mod script;

pub use error::CaptureError;
pub use family::Family;
pub use options::{DnsCapture, DnsServers, Options, Ports, Ranges};
pub use original_dst::{original_dst, original_dst_fd};
pub use plan::{plan, Plan, Rule};
