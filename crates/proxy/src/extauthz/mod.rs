//! Istio's CUSTOM authorization action: asking an external authorizer over Envoy's
//! `envoy.service.auth.v3.Authorization/Check` gRPC API.
//!
//! - [`ExtAuthzClient`] talks to one `envoyExtAuthzGrpc` provider (lazy channel, timeout,
//!   `failOpen`, `statusOnError`); [`clients`] builds one per provider of the mesh config.
//! - [`CheckInput`] is what the proxy knows about a request; it becomes an Envoy-shaped
//!   `CheckRequest` so existing authorizers work unchanged.
//! - [`ExtAuthzOutcome`] is the decision, with the header changes to apply on allow.

mod client;
pub mod proto;
mod providers;
mod request;
mod response;

pub use client::{parse_status_on_error, ExtAuthzClient, ExtAuthzError, DEFAULT_STATUS_ON_ERROR};
pub use providers::clients;
pub use request::{BodySettings, CheckInput};
pub use response::{apply_mutations, ExtAuthzOutcome, HeaderAction, HeaderMutation};
