//! Who a verified bearer token speaks for: what the verifier returns and its cache keeps.

/// The Kubernetes service account a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    pub issuer: String,
    /// The pod a bound token was issued for (TokenReview says it), for node authorization.
    pub pod: Option<PodRef>,
}

/// A pod by name and UID: a pod re-created under the same name is another pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}
