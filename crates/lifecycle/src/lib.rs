//! How every trustmesh process starts serving and stops: one drain primitive ([`drain`]) and
//! the one place OS signals are handled ([`signals`]).
//!
//! The proxy, the CA server and the node agent (and later the control plane) all stop the same
//! way: the first SIGTERM or SIGINT starts a graceful drain (listeners close, work already
//! accepted finishes), bounded by a deadline of each component's own; at the deadline, or on a
//! second signal, the drain turns immediate and whatever is still open stops now. This crate
//! sits below every other one and knows nothing about them.

pub mod drain;
pub mod signals;
