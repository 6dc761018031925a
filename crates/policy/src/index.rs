//! Per-workload view of the authorization policies, built once per distinct workload and
//! cached, with a rule index so a decision does not scan every policy.
//!
//! Envoy's RBAC filter tries every policy in turn. Here each enforced rule is filed under one
//! exact value it requires: the peer principal when its single `from` entry lists only exact
//! principals, otherwise (not for DENY, whose HTTP-only fields are ignored on TCP) the path
//! when its single `to` entry lists only exact paths. A request then checks the rules filed
//! under its own principal and path plus the unindexed rest; any rule filed elsewhere cannot
//! match it, so the answer is the same as a full scan.

use std::collections::HashMap;

use crate::authz::{Attrs, CompiledPolicy};
use crate::crd::Action;

/// (policy index in the set, rule index in the policy).
pub type RuleRef = (u32, u32);

#[derive(Debug, Default)]
pub struct Bucket {
    by_principal: HashMap<Box<str>, Vec<RuleRef>>,
    by_path: HashMap<Box<str>, Vec<RuleRef>>,
    rest: Vec<RuleRef>,
}

impl Bucket {
    fn add(&mut self, pi: u32, p: &CompiledPolicy) {
        let deny = p.action == Action::Deny;
        for (ri, r) in p.rules.iter().enumerate() {
            let rr = (pi, ri as u32);
            let principals = (r.from.len() == 1)
                .then(|| exact_all(&r.from[0].principals.pos.0, |m| m.exact()))
                .flatten();
            let paths = (!deny && r.to.len() == 1)
                .then(|| exact_all(&r.to[0].paths.0, |m| m.exact()))
                .flatten();
            if let Some(keys) = principals {
                for k in keys {
                    self.by_principal.entry(k.into()).or_default().push(rr);
                }
            } else if let Some(keys) = paths {
                for k in keys {
                    self.by_path.entry(k.into()).or_default().push(rr);
                }
            } else {
                self.rest.push(rr);
            }
        }
    }

    /// The first (policy, rule) in set order that matches, if any.
    pub fn first_match(
        &self,
        policies: &[CompiledPolicy],
        a: &Attrs,
        deny: bool,
    ) -> Option<RuleRef> {
        let mut best: Option<RuleRef> = None;
        let mut try_list = |l: &[RuleRef]| {
            for &rr in l {
                if best.is_some_and(|b| b <= rr) {
                    break;
                }
                let rule = &policies[rr.0 as usize].rules[rr.1 as usize];
                if rule.check(a, deny, false).is_ok() {
                    best = Some(rr);
                    break;
                }
            }
        };
        try_list(&self.rest);
        if let Some(p) = a.principal {
            if let Some(l) = self.by_principal.get(p) {
                try_list(l);
            }
        }
        if let Some(p) = a.path {
            if let Some(l) = self.by_path.get(p) {
                try_list(l);
            }
        }
        best
    }
}

fn exact_all<'a, M>(ms: &'a [M], f: impl Fn(&'a M) -> Option<&'a str>) -> Option<Vec<&'a str>> {
    if ms.is_empty() {
        return None;
    }
    ms.iter().map(f).collect()
}

/// The policies that apply to one workload, split by action (enforced ones indexed).
#[derive(Debug, Default)]
pub struct WorkloadView {
    /// Every applicable policy (including dry-run), in set order.
    pub all: Vec<u32>,
    pub custom: Bucket,
    pub deny: Bucket,
    pub allow: Bucket,
    pub audit: Bucket,
    /// Whether any enforced ALLOW policy applies (then an unmatched request is denied).
    pub has_allow: bool,
}

impl WorkloadView {
    pub fn build(policies: &[CompiledPolicy], applicable: Vec<u32>) -> WorkloadView {
        let mut v = WorkloadView {
            all: applicable,
            ..Default::default()
        };
        for &pi in &v.all {
            let p = &policies[pi as usize];
            if p.dry_run {
                continue;
            }
            match p.action {
                Action::Custom => v.custom.add(pi, p),
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
