//! Which DestinationRule applies to a connection: a hash index per namespace, asked in Istio's
//! order (`PushContext.destinationRule`, pilot/pkg/model/push_context.go): the client's own
//! namespace, then the service's namespace, then the root namespace; within a namespace the
//! exact host first, then the most specific wildcard (`MostSpecificHostMatch`). A rule with a
//! `workloadSelector` applies only to matching clients of its own namespace, and beats a rule
//! without one for the same host (`SidecarScope.DestinationRule`).
//!
//! A lookup costs one hash probe per namespace per label of the host, whatever the number of
//! rules; patterns such as `*foo.example.com` (a wildcard inside the first label) are rare and
//! are checked after, in a short list.

use std::collections::{BTreeMap, HashMap};

use crate::host;
use crate::rules::DestinationRule;

#[derive(Debug, Default)]
pub struct RuleIndex {
    rules: Vec<DestinationRule>,
    by_namespace: HashMap<String, Namespace>,
}

#[derive(Debug, Default)]
struct Namespace {
    /// Normalized host (exact names and `*.suffix` patterns alike) → rules.
    hosts: HashMap<String, Vec<usize>>,
    /// Patterns with a `*` inside the first label, most specific first.
    odd: Vec<(String, usize)>,
}

impl RuleIndex {
    pub fn new(rules: Vec<DestinationRule>) -> RuleIndex {
        let mut by_namespace: HashMap<String, Namespace> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            let ns = by_namespace.entry(r.namespace.clone()).or_default();
            if r.host.starts_with('*') && !r.host.starts_with("*.") && r.host != "*" {
                ns.odd.push((r.host.clone(), i));
            } else {
                ns.hosts.entry(r.host.clone()).or_default().push(i);
            }
        }
        for ns in by_namespace.values_mut() {
            ns.odd.sort_by_key(|o| std::cmp::Reverse(o.0.len()));
        }
        RuleIndex {
            rules,
            by_namespace,
        }
    }

    pub fn rules(&self) -> &[DestinationRule] {
        &self.rules
    }

    /// The rule for a client (namespace and labels) reaching `host` (normalized), a service of
    /// `service_namespace`.
    pub fn find(
        &self,
        client_namespace: &str,
        client_labels: &BTreeMap<String, String>,
        host: &str,
        service_namespace: &str,
        root_namespace: &str,
    ) -> Option<&DestinationRule> {
        let mut seen: [&str; 3] = ["", "", ""];
        for (i, ns) in [client_namespace, service_namespace, root_namespace]
            .into_iter()
            .enumerate()
        {
            if seen[..i].contains(&ns) {
                continue;
            }
            seen[i] = ns;
            let Some(index) = self.by_namespace.get(ns) else {
                continue;
            };
            let own = ns == client_namespace;
            if let Some(r) = self.in_namespace(index, host, own, client_labels) {
                return Some(r);
            }
        }
        None
    }

    fn in_namespace(
        &self,
        ns: &Namespace,
        host: &str,
        own: bool,
        labels: &BTreeMap<String, String>,
    ) -> Option<&DestinationRule> {
        let exact = std::iter::once(host.to_string());
        for key in exact.chain(host::wildcard_keys(host)) {
            // `*foo.example.com` is more specific than `*.example.com`: look at such patterns
            // before the `*.suffix` key of the same level.
            if let Some(suffix) = key.strip_prefix('*') {
                for (pattern, i) in &ns.odd {
                    if suffix.starts_with('.')
                        && pattern.ends_with(suffix)
                        && host::covers(pattern, host)
                    {
                        if let Some(found) = self.pick(&[*i], own, labels) {
                            return Some(found);
                        }
                    }
                }
            }
            if let Some(found) = ns.hosts.get(&key).and_then(|c| self.pick(c, own, labels)) {
                return Some(found);
            }
        }
        None
    }

    /// Among rules for one host: a selector rule matching the client (own namespace only),
    /// else the first rule without a selector.
    fn pick(
        &self,
        candidates: &[usize],
        own: bool,
        labels: &BTreeMap<String, String>,
    ) -> Option<&DestinationRule> {
        let rules = candidates.iter().map(|i| &self.rules[*i]);
        let selected = rules.clone().find(|r| {
            own && r
                .workload_selector
                .as_ref()
                .is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
        });
        selected.or_else(|| rules.clone().find(|r| r.workload_selector.is_none()))
    }
}
