//! The sidecar's DNS proxy: the workload's DNS traffic (port 53, redirected by capture to
//! [`DEFAULT_PORT`]) comes here; names of the mesh are answered from its service registry and
//! everything else is forwarded to the pod's own resolvers, as Istio's agent does with
//! `ISTIO_META_DNS_CAPTURE` (`pkg/dns/client`) and ztunnel does in ambient mode (`src/dns`).
//!
//! Why a proxy at all: the mesh knows addresses the cluster's DNS does not (ServiceEntry hosts,
//! other clusters' services), and answering locally spares the cluster resolver the search-list
//! walk every short name costs.
//!
//! Layout: [`names`] is the question the proxy asks the mesh (the registry implements it);
//! [`resolv`] reads the upstreams; `answer` decides mesh answers without I/O; `wire` reads and
//! fits messages (hickory-proto does the wire format); `upstream` forwards; `query` runs one
//! message through all of that for both listeners (`udp`, `tcp`); [`limits`] and [`counters`]
//! bound and count; [`server`] binds and starts, stopping with the lifecycle drain.

mod answer;
pub mod counters;
mod framing;
pub mod limits;
pub mod names;
mod query;
pub mod resolv;
pub mod server;
mod tcp;
mod udp;
mod upstream;
mod wire;

pub use answer::TTL_SECONDS;
pub use counters::{CounterValues, Counters};
pub use limits::Limits;
pub use names::{Lookup, MeshNames, StaticNames};
pub use resolv::{ResolvError, Upstreams};
pub use server::{start, start_with, Bound, StartError, DEFAULT_PORT};
