//! Per-workload view of the authorization policies, built once per distinct workload and
//! cached, with a candidate filter per action so a decision does not check every rule.
//!
//! Envoy's RBAC filter tries every policy in turn; the answer here must be the same — the
//! first matching (policy, rule) in set order — at a cost that does not grow with the number
//! of policies. Each bucket (the enforced rules of one action, or the dry-run ones) compiles
//! its rules ([`build`]) into a [`filter::Filter`]: every rule is split into clauses (one per
//! `from` × `to` entry pair, with the `when` conditions), and for each request attribute a
//! rule constrains ([`attrs`]: principal, namespace, addresses, port, host, method, path,
//! headers, claims…) value → clause maps ([`keys`]) give the clauses a value can satisfy and
//! those a `not*` value excludes. A positive value that cannot be keyed exactly (a namespace
//! glob, a path template) is keyed by something every match also matches; a negative one is
//! used only when its key matches exactly what it matches. An absent attribute never
//! satisfies a positive field and never excludes. The surviving clauses ([`bitset`]), in set
//! order, are handed to `CompiledRule::check`, which decides, so explanations are unchanged.
//!
//! On a TCP connection the HTTP-only attributes are not used (DENY, CUSTOM and AUDIT rules
//! ignore them there) and ALLOW rules using them are dropped (they cannot match TCP), as
//! `check` does.
//!
//! Left to `check` (the clause stays a candidate): negative request principals (issuer and
//! subject together), negative path templates, namespace globs with a `*` inside, and rules
//! past the clause cap on the side that is not split.

mod attrs;
mod bitset;
mod build;
mod filter;
mod keys;

use crate::authz::{Attrs, CompiledPolicy};
use crate::crd::Action;

use filter::Filter;

/// (policy index in the set, rule index in the policy).
pub type RuleRef = (u32, u32);

/// The rules of one action (or the dry-run rules of one action) applying to a workload.
#[derive(Debug, Default)]
pub struct Bucket {
    /// In set order once built.
    rules: Vec<RuleRef>,
    /// `None` until [`Bucket::build`]; then every decision goes through it.
    filter: Option<Filter>,
}

impl Bucket {
    fn add(&mut self, pi: u32, p: &CompiledPolicy) {
        self.rules
            .extend((0..p.rules.len()).map(|ri| (pi, ri as u32)));
        self.filter = None;
    }

    /// Compiles the candidate filter once every policy is added.
    fn build(&mut self, policies: &[CompiledPolicy]) {
        self.rules.sort_unstable();
        self.rules.dedup();
        self.filter = Some(Filter::build(policies, &self.rules));
    }

    fn check(&self, policies: &[CompiledPolicy], a: &Attrs, rn: u32) -> Option<RuleRef> {
        let rr = self.rules[rn as usize];
        let p = &policies[rr.0 as usize];
        p.rules[rr.1 as usize]
            .check(a, p.widens_on_tcp(), false)
            .is_ok()
            .then_some(rr)
    }

    /// The first (policy, rule) in set order that matches, if any: what checking every rule
    /// in order would give.
    pub fn first_match(&self, policies: &[CompiledPolicy], a: &Attrs) -> Option<RuleRef> {
        let Some(f) = &self.filter else {
            // Not built (only a view under construction): check every rule.
            return (0..self.rules.len() as u32).find_map(|rn| self.check(policies, a, rn));
        };
        let mut found = None;
        f.candidates(a, |rn| {
            found = self.check(policies, a, rn);
            found.is_some()
        });
        found
    }

    /// Heap memory of the filter, for tests and measurements.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.rules.capacity() * 8 + self.filter.as_ref().map_or(0, Filter::heap_bytes)
    }
}

/// The policies that apply to one workload, split by action (enforced ones indexed).
#[derive(Debug, Default)]
pub struct WorkloadView {
    /// Every applicable policy (including dry-run), in set order.
    pub all: Vec<u32>,
    pub custom: Bucket,
    /// CUSTOM policies that also apply to TCP (gRPC ext_authz providers).
    pub custom_tcp: Bucket,
    pub deny: Bucket,
    pub allow: Bucket,
    pub audit: Bucket,
    /// Dry-run DENY and ALLOW policies: Envoy's shadow engines (`crate::shadow`).
    pub shadow_deny: Bucket,
    pub shadow_allow: Bucket,
    pub has_shadow_deny: bool,
    pub has_shadow_allow: bool,
    /// Whether any enforced ALLOW policy applies (then an unmatched request is denied).
    pub has_allow: bool,
    /// Distinct providers when CUSTOM policies with more than one provider apply: Istio then
    /// cannot configure ext_authz for the workload and denies every request.
    pub custom_conflict: Option<Vec<String>>,
    /// Whether any applicable policy has a `request.headers[...]` condition on a real header
    /// (not a pseudo-header built from the request line): only then must a caller hand
    /// request headers over for evaluation.
    pub needs_headers: bool,
}

impl WorkloadView {
    pub fn build(policies: &[CompiledPolicy], applicable: Vec<u32>) -> WorkloadView {
        let mut v = WorkloadView {
            all: applicable,
            ..Default::default()
        };
        let mut providers: Vec<String> = Vec::new();
        for &pi in &v.all {
            let p = &policies[pi as usize];
            if let (Action::Custom, Some(name)) = (p.action, &p.provider) {
                if !providers.contains(name) {
                    providers.push(name.clone());
                }
            }
        }
        if providers.len() > 1 {
            v.custom_conflict = Some(providers);
        }
        v.needs_headers = v.all.iter().any(|&pi| {
            policies[pi as usize]
                .rules
                .iter()
                .any(|r| r.when.iter().any(|c| c.key.reads_request_headers()))
        });
        for &pi in &v.all {
            let p = &policies[pi as usize];
            if p.dry_run {
                // Dry-run CUSTOM and AUDIT are not shadow-evaluated (see `crate::shadow`).
                match p.action {
                    Action::Deny => {
                        v.has_shadow_deny = true;
                        v.shadow_deny.add(pi, p)
                    }
                    Action::Allow => {
                        v.has_shadow_allow = true;
                        v.shadow_allow.add(pi, p)
                    }
                    Action::Custom | Action::Audit => {}
                }
                continue;
            }
            match p.action {
                Action::Custom => {
                    v.custom.add(pi, p);
                    if !p.http_provider_only {
                        v.custom_tcp.add(pi, p);
                    }
                }
                Action::Deny => v.deny.add(pi, p),
                Action::Allow => {
                    v.has_allow = true;
                    v.allow.add(pi, p)
                }
                Action::Audit => v.audit.add(pi, p),
            }
        }
        for b in [
            &mut v.custom,
            &mut v.custom_tcp,
            &mut v.deny,
            &mut v.allow,
            &mut v.audit,
            &mut v.shadow_deny,
            &mut v.shadow_allow,
        ] {
            b.build(policies);
        }
        v
    }
}

#[cfg(test)]
mod equivalence_tests;
#[cfg(test)]
mod tests;
