//! The result of evaluating a request, with a per-policy explanation.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::crd::{Action, MtlsMode};

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// A CUSTOM policy matched: ask `provider` (ext_authz). If it allows, continue with
    /// [`crate::PolicySet::evaluate_after_custom`]; if it denies, deny.
    Custom {
        provider: String,
        policy: String,
    },
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allow => "ALLOW",
            Verdict::Deny => "DENY",
            Verdict::Custom { .. } => "CUSTOM",
        }
    }
}

/// How one applicable policy fared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResult {
    /// `namespace/name`.
    pub name: String,
    pub action: Action,
    pub matched: bool,
    /// Index of the first matching rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// `istio.io/dry-run: "true"`: evaluated and reported, never enforced.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub reason: String,
    /// The policy is invalid and enforced fail-closed: why, and what is done instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_closed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub decision: Verdict,
    /// Effective mTLS mode for the destination port; `None` from the authz-only entry points.
    pub mtls_mode: Option<MtlsMode>,
    /// The PeerAuthentication (`ns/name`) that set the mode; `None` = the PERMISSIVE default.
    pub mtls_policy: Option<String>,
    pub reason: String,
    pub policies: Vec<PolicyResult>,
    /// The dry-run policies' shadow results (from the authz-only entry points; empty from
    /// `evaluate`, which explains dry-run policies in `policies` instead).
    pub shadow: crate::shadow::Shadow,
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        self.decision == Verdict::Allow
    }
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("decision", self.decision.as_str())?;
        if let Verdict::Custom { provider, policy } = &self.decision {
            m.serialize_entry("provider", provider)?;
            m.serialize_entry("customPolicy", policy)?;
        }
        if let Some(mode) = self.mtls_mode {
            m.serialize_entry("mtlsMode", mode.as_str())?;
        }
        if let Some(p) = &self.mtls_policy {
            m.serialize_entry("mtlsPolicy", p)?;
        }
        m.serialize_entry("reason", &self.reason)?;
        m.serialize_entry("policies", &self.policies)?;
        m.end()
    }
}
