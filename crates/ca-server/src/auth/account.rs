//! Who a verified bearer token speaks for: what the verifier returns and its cache keeps.

/// The Kubernetes service account a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
    pub issuer: String,
}
