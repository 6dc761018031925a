//! Bearer tokens checked by somebody else: the Kubernetes TokenReview API, as istiod checks
//! them. The CA only defines what it asks; the cluster edge (`trustmesh-kube`) answers, so this
//! crate never talks to an API server.

use std::future::Future;
use std::pin::Pin;

pub use super::account::{parse_username, PodRef, ServiceAccount};

/// What a review answers: the service account the token speaks for, or why it does not.
pub type Review<'a> = Pin<Box<dyn Future<Output = Result<ServiceAccount, String>> + Send + 'a>>;

/// Asks an authority whether a token is valid now (not only well signed): a token of a deleted
/// service account, or one bound to a deleted pod, is refused.
pub trait TokenReviewer: Send + Sync + 'static {
    fn review<'a>(&'a self, token: &'a str) -> Review<'a>;
}
