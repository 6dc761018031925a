//! trustmesh's sidecar proxy: mTLS with SPIFFE identities, Istio PeerAuthentication /
//! RequestAuthentication / AuthorizationPolicy enforcement, an admin endpoint, and hot reload.
//!
//! Layout: [`config`] (the YAML file) → [`snapshot`] (everything loaded from disk, swapped
//! atomically by [`reload`]) → listeners ([`inbound`], [`outbound`]) → the L4 ([`tcp`]) or L7
//! ([`http`]) path, which first refuses malformed requests and normalizes the path
//! ([`normalize`]), then asks [`authz`] for decisions. [`jwt`] and [`extauthz`] implement
//! RequestAuthentication and the CUSTOM action; [`authn`] and [`custom`] wire them in.
//! Connections run on [`workers`], one event loop per thread. Listeners describe a connection
//! in [`conn`] (what policy, the access log and forwarding read) and answer with [`response`];
//! the modules form layers whose imports point down (docs/ARCHITECTURE.md). At shutdown every
//! listener, connection and tunnel drains with the lifecycle crate's drain ([`run::drain`]).

pub mod accesslog;
pub mod admin;
pub mod adminstats;
pub mod apppool;
pub mod authn;
pub mod authz;
pub mod captured;
pub mod clock;
pub mod config;
pub mod conn;
pub mod custom;
pub mod dialslot;
pub mod extauthz;
pub mod fastmap;
pub mod forward;
pub mod h1list;
pub mod h2io;
pub mod h2settings;
pub mod hbone;
pub mod hex;
pub mod http;
pub mod inbound;
pub mod jwt;
pub mod loglevel;
pub mod mesh;
pub mod meshconn;
pub mod metrics;
pub mod names;
pub mod normalize;
pub mod originate;
pub mod outbound;
pub mod outcome;
pub mod peers;
pub mod rbacstats;
pub mod relay;
pub mod reload;
pub mod reqbody;
pub mod response;
pub mod route;
pub mod run;
pub mod sessions;
pub mod slots;
pub mod snapshot;
pub mod splice;
pub mod state;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;
pub mod workers;
pub mod xds;

pub use config::ProxyConfig;
pub use run::{run, start, Bound};
