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

/// The namespace and name in a Kubernetes service account's user name or token subject,
/// `system:serviceaccount:<ns>:<sa>`: `None` for another kind of name, `Some(Err)` for a
/// service-account name that is malformed.
pub fn parse_username(user: &str) -> Option<Result<(&str, &str), String>> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    Some(match rest.split_once(':') {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains(':') => Ok((ns, sa)),
        _ => Err(format!("malformed service account name {user:?}")),
    })
}

/// A pod by name and UID: a pod re-created under the same name is another pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}
