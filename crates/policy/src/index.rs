//! Per-workload view of the authorization policies, built once per distinct workload and
//! cached, with a rule index so a decision does not scan every policy.
//!
//! Envoy's RBAC filter tries every policy in turn. Here each enforced rule is filed under the
//! values of one field it requires: when its single `from` entry lists principals (without a
//! bare `*`), namespaces or ipBlocks, the first of those; otherwise (only for ALLOW: other actions ignore HTTP-only fields on TCP) the path when its single `to` entry lists paths (a template is keyed by its literal
//! leading segments). A request then checks the
//! rules filed under its own principal and path (exact key, plus one lookup per distinct
//! prefix/suffix length) and the unindexed rest. A rule filed elsewhere requires a value the
//! request does not have, so the answer is the same as a full scan, in set order.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::authz::{Attrs, CompiledPolicy};
use crate::crd::Action;
use crate::matcher::{PathMatch, StrMatch};

/// (policy index in the set, rule index in the policy).
pub type RuleRef = (u32, u32);

/// Rules keyed by the exact, prefix or suffix values they require of one attribute.
#[derive(Debug, Default)]
struct KeyIndex {
    exact: HashMap<Box<str>, Vec<RuleRef>>,
    prefix: HashMap<Box<str>, Vec<RuleRef>>,
    prefix_lens: Vec<usize>,
    suffix: HashMap<Box<str>, Vec<RuleRef>>,
    suffix_lens: Vec<usize>,
}

impl KeyIndex {
    /// Files `rr` under every value, if each is an exact, prefix or suffix value (`*` and
    /// namespace globs cannot be keyed).
    fn try_add(&mut self, ms: &[StrMatch], rr: RuleRef) -> bool {
        if ms.is_empty() || !ms.iter().all(StrMatch::keyable) {
            return false;
        }
        for m in ms {
            let (map, lens, key) = match m {
                StrMatch::Exact(k) => (&mut self.exact, None, k),
                StrMatch::Prefix(k) => (&mut self.prefix, Some(&mut self.prefix_lens), k),
                StrMatch::Suffix(k) => (&mut self.suffix, Some(&mut self.suffix_lens), k),
                StrMatch::Present | StrMatch::Any | StrMatch::Glob(_) => {
                    unreachable!("filtered above")
                }
            };
            let list = map.entry(key.clone()).or_default();
            if list.last() != Some(&rr) {
                list.push(rr);
            }
            if let Some(lens) = lens {
                if let Err(i) = lens.binary_search(&key.len()) {
                    lens.insert(i, key.len());
                }
            }
        }
        true
    }

    fn candidates<'s>(&'s self, v: &str, mut f: impl FnMut(&'s [RuleRef])) {
        if let Some(l) = self.exact.get(v) {
            f(l);
        }
        for &n in &self.prefix_lens {
            match v.get(..n) {
                Some(k) => {
                    if let Some(l) = self.prefix.get(k) {
                        f(l);
                    }
                }
                None if n > v.len() => break,
                None => {}
            }
        }
        for &n in &self.suffix_lens {
            if n > v.len() {
                break;
            }
            if let Some(l) = v.get(v.len() - n..).and_then(|k| self.suffix.get(k)) {
                f(l);
            }
        }
    }
}

/// Rules keyed by the CIDRs (`ipBlocks`) they require of the peer address: one hash lookup per
/// distinct prefix length present.
#[derive(Debug, Default)]
struct IpIndex {
    nets: HashMap<IpNet, Vec<RuleRef>>,
    lens: Vec<(bool, u8)>,
}

impl IpIndex {
    fn try_add(&mut self, nets: &[IpNet], rr: RuleRef) -> bool {
        if nets.is_empty() {
            return false;
        }
        for n in nets {
            let list = self.nets.entry(n.trunc()).or_default();
            if list.last() != Some(&rr) {
                list.push(rr);
            }
            let key = (matches!(n, IpNet::V6(_)), n.prefix_len());
            if let Err(i) = self.lens.binary_search(&key) {
                self.lens.insert(i, key);
            }
        }
        true
    }

    fn candidates<'s>(&'s self, ip: IpAddr, mut f: impl FnMut(&'s [RuleRef])) {
        let v6 = ip.is_ipv6();
        for &(is_v6, len) in &self.lens {
            if is_v6 != v6 {
                continue;
            }
            if let Some(l) = IpNet::new(ip, len)
                .ok()
                .and_then(|n| self.nets.get(&n.trunc()))
            {
                f(l);
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Bucket {
    by_principal: KeyIndex,
    by_namespace: KeyIndex,
    by_ip: IpIndex,
    by_path: KeyIndex,
    rest: Vec<RuleRef>,
}

impl Bucket {
    fn add(&mut self, pi: u32, p: &CompiledPolicy) {
        let wide = p.widens_on_tcp();
        for (ri, r) in p.rules.iter().enumerate() {
            let rr = (pi, ri as u32);
            if let [src] = r.from.as_slice() {
                if self.by_principal.try_add(&src.principals.pos.0, rr)
                    || self.by_namespace.try_add(&src.namespaces.pos.0, rr)
                    || self.by_ip.try_add(&src.ip_blocks.pos, rr)
                {
                    continue;
                }
            }
            if !wide && r.to.len() == 1 {
                let ms: Vec<StrMatch> = r.to[0]
                    .paths
                    .0
                    .iter()
                    .map(PathMatch::required_prefix)
                    .collect();
                if self.by_path.try_add(&ms, rr) {
                    continue;
                }
            }
            self.rest.push(rr);
        }
    }

    /// The first (policy, rule) in set order that matches, if any.
    pub fn first_match(&self, policies: &[CompiledPolicy], a: &Attrs) -> Option<RuleRef> {
        let mut best: Option<RuleRef> = None;
        let mut try_list = |l: &[RuleRef]| {
            for &rr in l {
                if best.is_some_and(|b| b <= rr) {
                    break;
                }
                let p = &policies[rr.0 as usize];
                if p.rules[rr.1 as usize]
                    .check(a, p.widens_on_tcp(), false)
                    .is_ok()
                {
                    best = Some(rr);
                    break;
                }
            }
        };
        try_list(&self.rest);
        if let Some(p) = a.principal {
            self.by_principal.candidates(p, &mut try_list);
        }
        if let Some(n) = a.namespace {
            self.by_namespace.candidates(n, &mut try_list);
        }
        if let Some(ip) = a.req.source.ip {
            self.by_ip.candidates(ip, &mut try_list);
        }
        if let Some(p) = a.path {
            self.by_path.candidates(p, &mut try_list);
        }
        best
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
        v
    }
}
