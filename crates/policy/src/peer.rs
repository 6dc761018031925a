//! PeerAuthentication resolution ("PeerAuthentication" reference and "Security concepts",
//! section "Peer authentication"): the workload-selector policy beats the namespace policy,
//! which beats the mesh policy (root namespace, no selector); UNSET inherits from the next
//! level; with nothing set the mode is PERMISSIVE. Port-level modes come only from the
//! workload policy and an UNSET port inherits the workload's resolved mode. Among policies at
//! the same level the oldest wins (creationTimestamp, then name for a stable result).

use std::collections::BTreeMap;

use crate::crd::MtlsMode;
use crate::Workload;

#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// `namespace/name`.
    pub name: String,
    pub namespace: String,
    pub selector: Option<Vec<(String, String)>>,
    pub mode: MtlsMode,
    pub port_modes: BTreeMap<u32, MtlsMode>,
    pub created: Option<String>,
}

impl PeerPolicy {
    fn has_selector(&self) -> bool {
        self.selector.as_ref().is_some_and(|s| !s.is_empty())
    }
    fn order_key(&self) -> (bool, &str, &str) {
        // Policies without a timestamp sort after those with one (treated as newest). The
        // API server writes creationTimestamp as UTC RFC 3339 (`...Z`), which sorts as text.
        let ts = self.created.as_deref().unwrap_or("");
        (ts.is_empty(), ts, &self.name)
    }
}

pub fn selector_matches(
    sel: &Option<Vec<(String, String)>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match sel {
        None => true,
        Some(s) => s.iter().all(|(k, v)| labels.get(k) == Some(v)),
    }
}

fn oldest<'a>(it: impl Iterator<Item = &'a PeerPolicy>) -> Option<&'a PeerPolicy> {
    it.min_by(|a, b| a.order_key().cmp(&b.order_key()))
}

/// Effective mode for `port` on `w`, and the policy that decided it (None = the default).
pub fn resolve<'a>(
    policies: &'a [PeerPolicy],
    root_namespace: &str,
    w: &Workload,
    port: u16,
) -> (MtlsMode, Option<&'a PeerPolicy>) {
    let mesh = oldest(
        policies
            .iter()
            .filter(|p| p.namespace == root_namespace && !p.has_selector()),
    );
    let ns = if w.namespace == root_namespace {
        None
    } else {
        oldest(
            policies
                .iter()
                .filter(|p| p.namespace == w.namespace && !p.has_selector()),
        )
    };
    // Istio ignores selector policies in the root namespace (they are neither mesh-wide nor
    // workload-level), so only the workload's own namespace is searched.
    let workload = if w.namespace == root_namespace {
        None
    } else {
        oldest(policies.iter().filter(|p| {
            p.namespace == w.namespace
                && p.has_selector()
                && selector_matches(&p.selector, &w.labels)
        }))
    };
    let mut mode = MtlsMode::Permissive;
    let mut from = None;
    for p in [mesh, ns, workload].into_iter().flatten() {
        if p.mode != MtlsMode::Unset {
            mode = p.mode;
            from = Some(p);
        }
    }
    if let Some(wp) = workload {
        if let Some(pm) = wp.port_modes.get(&u32::from(port)) {
            if *pm != MtlsMode::Unset {
                return (*pm, Some(wp));
            }
        }
    }
    (mode, from)
}
