//! Istio's CUSTOM action: asking an external authorizer, over Envoy's
//! `envoy.service.auth.v3.Authorization/Check` gRPC API (`envoyExtAuthzGrpc`) or Envoy's
//! ext_authz HTTP service protocol (`envoyExtAuthzHttp`).
//!
//! - [`ExtAuthzClient`] talks to one gRPC provider (lazy channel, timeout, `failOpen`,
//!   `statusOnError`), for HTTP requests and, as Envoy's network filter, for TCP connections.
//! - [`HttpExtAuthzClient`] talks to one HTTP provider (`http`).
//! - [`providers`] builds a [`Provider`] per ext_authz provider of the mesh config; `validate`,
//!   `proxy --check` and the running proxy all use it.
//! - [`CheckInput`] is what the proxy knows about a request; it becomes an Envoy-shaped
//!   `CheckRequest` (or HTTP check request) so existing authorizers work unchanged.
//! - [`ExtAuthzOutcome`] is the decision, with the header changes to apply on allow.

mod client;
mod http;
mod matcher;
pub mod proto;
mod providers;
mod request;
mod response;

pub use client::{parse_status_on_error, ExtAuthzClient, ExtAuthzError, DEFAULT_STATUS_ON_ERROR};
pub use http::{HttpExtAuthzClient, HttpSettings};
pub use matcher::HeaderNames;
pub use providers::{providers, Provider};
pub use request::{BodySettings, CheckInput, ConnInput};
pub use response::{apply_mutations, ExtAuthzOutcome, HeaderAction, HeaderMutation};
