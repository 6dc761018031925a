//! A sidecar's own workload as the registry describes it: found by its WorkloadEntry's name, or
//! by namespace and labels, it gives the identity (for policy, for the peer SAN others expect,
//! and for the certificate the agent asks for) and the labels policies select by. As in Istio,
//! the identity comes from the entry's `serviceAccount` and the mesh's trust domain:
//! `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::Workload;
use crate::registry::Registry;

/// How a sidecar names its workload.
#[derive(Debug, Clone, Copy)]
pub enum SelfRef<'a> {
    /// The WorkloadEntry `namespace/name`.
    Entry { namespace: &'a str, name: &'a str },
    /// The WorkloadEntries of `namespace` carrying all of `labels`.
    Labels {
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    },
}

/// Why no single workload answers a [`SelfRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifyError {
    NotFound {
        what: String,
    },
    /// Entries with different service accounts match: the identity would be a guess.
    Ambiguous {
        what: String,
        entries: Vec<String>,
    },
    /// The mesh's trust domain is not valid, so no identity can be made.
    NoTrustDomain,
}

impl fmt::Display for IdentifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentifyError::NotFound { what } => write!(f, "no WorkloadEntry {what}"),
            IdentifyError::Ambiguous { what, entries } => write!(
                f,
                "WorkloadEntries {what} have different service accounts ({}); name one entry",
                entries.join(", ")
            ),
            IdentifyError::NoTrustDomain => f.write_str(
                "the mesh config's trust domain is not valid, so no identity can be made",
            ),
        }
    }
}

impl std::error::Error for IdentifyError {}

impl Registry {
    /// The workload a sidecar runs as (see [`SelfRef`]); its `identity` is set.
    pub fn identify(&self, who: SelfRef<'_>) -> Result<&Workload, IdentifyError> {
        let found = match who {
            SelfRef::Entry { namespace, name } => {
                self.workload_entry(namespace, name)
                    .ok_or_else(|| IdentifyError::NotFound {
                        what: format!("{namespace}/{name}"),
                    })?
            }
            SelfRef::Labels { namespace, labels } => self.by_labels(namespace, labels)?,
        };
        if found.identity.is_none() {
            return Err(IdentifyError::NoTrustDomain);
        }
        Ok(found)
    }

    fn by_labels(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<&Workload, IdentifyError> {
        let what = || {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("in namespace {namespace} with labels {}", l.join(","))
        };
        let mut matching: Vec<(&String, &Workload)> = self
            .entries
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|(name, i)| (name, &self.workloads[*i as usize]))
            .filter(|(_, w)| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .collect();
        matching.sort_by(|a, b| a.0.cmp(b.0));
        let Some((_, first)) = matching.first() else {
            return Err(IdentifyError::NotFound { what: what() });
        };
        if matching
            .iter()
            .any(|(_, w)| w.service_account != first.service_account)
        {
            return Err(IdentifyError::Ambiguous {
                what: what(),
                entries: matching
                    .iter()
                    .map(|(n, w)| format!("{n}: {}", w.service_account))
                    .collect(),
            });
        }
        Ok(first)
    }
}
