//! The candidate filter of a bucket: from a request, the clauses that could match, as a
//! bitset, so `check` runs on a few rules instead of all of them.
//!
//! A rule is an OR of clauses — one per (`from` entry, `to` entry) pair, each with the
//! rule's `when` conditions — numbered in set order. Per attribute the filter keeps the
//! clauses that do not constrain it positively (they always pass) and value → clauses maps
//! for the positive and negative keys ([`super::keys`]). A request's candidates are the
//! clauses passing every attribute, minus those a negative key excludes. The filter only
//! ever keeps too many: every key is a superset of what its field matches, an exclusion is
//! exact, and what the filter cannot read exactly it does not use. `check` decides.

use std::collections::HashMap;

use ipnet::IpNet;

use super::attrs::{self, Attr, Constraint, Keys};
use super::bitset::{self, Posting};
use super::keys::{IpKeys, PortKeys, StrKeys};
use crate::authz::{Attrs, COperation, CSource, CompiledPolicy, CompiledRule};

/// Most (`from` × `to`) clauses one rule is split into: beyond it the rule keeps one side's
/// entries (or none) and the other side does not filter it.
const MAX_CLAUSES_PER_RULE: usize = 16;

/// Most attributes a decision looks at (those constraining the most clauses): each costs a
/// lookup and a pass over the bitset, so an attribute only a few rules use would cost more
/// than the checks it saves.
const MAX_ATTRS: usize = 24;

/// The positive and the negative keys of one attribute.
#[derive(Debug, Default)]
struct Pair<K> {
    pos: K,
    neg: K,
}

/// Keys of one attribute.
#[derive(Debug)]
enum KeyMaps {
    Str(Box<Pair<StrKeys>>),
    Ip(Box<Pair<IpKeys>>),
    Port(Box<Pair<PortKeys>>),
}

#[derive(Debug)]
struct AttrFilter {
    attr: Attr,
    http_only: bool,
    maps: KeyMaps,
    /// Clauses that do not constrain the attribute positively; `None` when no clause does
    /// (then the positive side passes everything and is skipped).
    unconstrained: Option<Box<[u64]>>,
    has_neg: bool,
    /// Clauses it constrains (to rank attributes); building only.
    weight: usize,
}

#[derive(Debug, Default)]
pub(super) struct Filter {
    words: usize,
    /// Clause → rule number in the bucket.
    clause_rule: Vec<u32>,
    /// Every clause (rules that can never match have none).
    all: Box<[u64]>,
    /// Clauses of rules that cannot match a TCP connection: ALLOW rules with HTTP-only fields.
    tcp_never: Option<Box<[u64]>>,
    attrs: Vec<AttrFilter>,
}

/// The (from, to) pairs a rule is split into; `None` leaves that side unconstrained.
fn clauses(r: &CompiledRule) -> Vec<(Option<&CSource>, Option<&COperation>)> {
    let side = |n: usize| n > 0 && n <= MAX_CLAUSES_PER_RULE;
    let (f, t) = (r.from.len().max(1), r.to.len().max(1));
    let (use_from, use_to) = if f * t <= MAX_CLAUSES_PER_RULE {
        (true, true)
    } else if side(r.from.len()) {
        (true, false)
    } else {
        (false, side(r.to.len()))
    };
    let froms: Vec<Option<&CSource>> = if use_from && !r.from.is_empty() {
        r.from.iter().map(Some).collect()
    } else {
        vec![None]
    };
    let tos: Vec<Option<&COperation>> = if use_to && !r.to.is_empty() {
        r.to.iter().map(Some).collect()
    } else {
        vec![None]
    };
    froms
        .iter()
        .flat_map(|&s| tos.iter().map(move |&o| (s, o)))
        .collect()
}

/// Building state of one attribute.
struct AttrBuild {
    attr: Attr,
    maps: KeyMaps,
    /// Clauses constrained positively, increasing.
    keyed: Vec<u32>,
    has_neg: bool,
    constrained: Vec<u32>,
}

impl AttrBuild {
    fn new(attr: Attr, keys: &Keys) -> AttrBuild {
        let maps = match keys {
            Keys::Str { .. } => KeyMaps::Str(Default::default()),
            Keys::Ip { .. } => KeyMaps::Ip(Default::default()),
            Keys::Port { .. } => KeyMaps::Port(Default::default()),
        };
        AttrBuild {
            attr,
            maps,
            keyed: Vec::new(),
            has_neg: false,
            constrained: Vec::new(),
        }
    }

    /// Files clause `c` under `keys`. A clause is filed under its first positive field on
    /// the attribute only (a second one, ANDed, would only narrow it); every exclusion counts.
    fn add(&mut self, c: u32, keys: &Keys) {
        let first = self.keyed.last() != Some(&c);
        let mut keyed = false;
        let mut neg_any = false;
        match (&mut self.maps, keys) {
            (KeyMaps::Str(m), Keys::Str { pos: p, neg: n }) => {
                if let (true, Some(p)) = (first, p) {
                    p.iter().for_each(|k| m.pos.add(k, c));
                    keyed = true;
                }
                n.iter().for_each(|k| m.neg.add(k, c));
                neg_any = !n.is_empty();
            }
            (KeyMaps::Ip(m), Keys::Ip { pos: p, neg: n }) => {
                if let (true, Some(p)) = (first, p) {
                    p.iter().for_each(|k: &IpNet| m.pos.add(k, c));
                    keyed = true;
                }
                n.iter().for_each(|k| m.neg.add(k, c));
                neg_any = !n.is_empty();
            }
            (KeyMaps::Port(m), Keys::Port { pos: p, neg: n }) => {
                if let (true, Some(p)) = (first, p) {
                    p.iter().for_each(|&k| m.pos.add(k, c));
                    keyed = true;
                }
                n.iter().for_each(|&k| m.neg.add(k, c));
                neg_any = !n.is_empty();
            }
            // One attribute always comes with one kind of keys; a mismatch is not filtered.
            _ => {}
        }
        if keyed {
            self.keyed.push(c);
        }
        self.has_neg |= neg_any;
        if (keyed || neg_any) && self.constrained.last() != Some(&c) {
            self.constrained.push(c);
        }
    }

    fn finish(mut self, n: usize) -> AttrFilter {
        let words = bitset::words_for(n);
        match &mut self.maps {
            KeyMaps::Str(m) => {
                m.pos.seal(words);
                m.neg.seal(words);
                self.has_neg &= !m.neg.is_empty();
            }
            KeyMaps::Ip(m) => {
                m.pos.seal(words);
                m.neg.seal(words);
                self.has_neg &= !m.neg.is_empty();
            }
            KeyMaps::Port(m) => {
                m.pos.seal(words);
                m.neg.seal(words);
                self.has_neg &= !m.neg.is_empty();
            }
        }
        let unconstrained = (!self.keyed.is_empty()).then(|| {
            let mut u = bitset::ones(n);
            for &c in &self.keyed {
                u[(c / 64) as usize] &= !(1u64 << (c % 64));
            }
            u
        });
        AttrFilter {
            http_only: self.attr.http_only(),
            attr: self.attr,
            maps: self.maps,
            unconstrained,
            has_neg: self.has_neg,
            weight: self.constrained.len(),
        }
    }
}

impl Filter {
    /// Compiles the rules of a bucket, (policy, rule) in set order.
    pub(super) fn build(policies: &[CompiledPolicy], rules: &[(u32, u32)]) -> Filter {
        let mut clause_rule = Vec::new();
        let mut tcp_never = Vec::new();
        let mut by_attr: HashMap<Attr, usize> = HashMap::new();
        let mut builds: Vec<AttrBuild> = Vec::new();
        let mut cons: Vec<Constraint> = Vec::new();
        for (rn, &(pi, ri)) in rules.iter().enumerate() {
            let p = &policies[pi as usize];
            let r = &p.rules[ri as usize];
            if r.dropped {
                continue; // `check` never matches it.
            }
            let never_tcp = r.http_only && !p.widens_on_tcp();
            for (from, to) in clauses(r) {
                let c = clause_rule.len() as u32;
                clause_rule.push(rn as u32);
                if never_tcp {
                    tcp_never.push(c);
                }
                cons.clear();
                attrs::constraints(from, to, &r.when, &mut cons);
                for (attr, keys) in &cons {
                    let i = *by_attr.entry(attr.clone()).or_insert_with(|| {
                        builds.push(AttrBuild::new(attr.clone(), keys));
                        builds.len() - 1
                    });
                    builds[i].add(c, keys);
                }
            }
        }
        let n = clause_rule.len();
        let mut attrs: Vec<AttrFilter> = builds.into_iter().map(|b| b.finish(n)).collect();
        attrs.retain(|a| a.unconstrained.is_some() || a.has_neg);
        attrs.sort_by_key(|a| std::cmp::Reverse(a.weight));
        attrs.truncate(MAX_ATTRS);
        let tcp_never = (!tcp_never.is_empty()).then(|| {
            let mut b = vec![0u64; bitset::words_for(n)].into_boxed_slice();
            tcp_never.iter().for_each(|&c| bitset::set(&mut b, c));
            b
        });
        Filter {
            words: bitset::words_for(n),
            all: bitset::ones(n),
            clause_rule,
            tcp_never,
            attrs,
        }
    }

    /// Calls `f` with the number of each rule that could match, in order, until it returns
    /// true.
    pub(super) fn candidates(&self, a: &Attrs, f: impl FnMut(u32) -> bool) {
        // Scratch bitsets on the stack for up to 4,096 clauses, sized so a small bucket does
        // not clear a large buffer.
        match self.words {
            0 => {}
            1..=4 => self.candidates_in(a, &mut [0u64; 8], f),
            5..=64 => self.candidates_in(a, &mut [0u64; 128], f),
            w => self.candidates_in(a, &mut vec![0u64; 2 * w], f),
        }
    }

    fn candidates_in(&self, a: &Attrs, scratch: &mut [u64], mut f: impl FnMut(u32) -> bool) {
        let (cand, pass) = scratch.split_at_mut(scratch.len() / 2);
        let (cand, pass) = (&mut cand[..self.words], &mut pass[..self.words]);
        cand.copy_from_slice(&self.all);
        let tcp = a.req.http.is_none();
        if tcp {
            if let Some(never) = &self.tcp_never {
                bitset::and_not(cand, never);
            }
        }
        for af in &self.attrs {
            // One candidate left is cheaper to check than to narrow further.
            if bitset::at_most_one(cand) {
                break;
            }
            if tcp && af.http_only {
                continue;
            }
            af.narrow(a, cand, pass);
        }
        let mut last = None;
        for c in bitset::iter(cand) {
            let rn = self.clause_rule[c as usize];
            if last == Some(rn) {
                continue;
            }
            last = Some(rn);
            if f(rn) {
                return;
            }
        }
    }

    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        let words = self.words * 8;
        self.clause_rule.capacity() * 4
            + words
            + self.tcp_never.as_ref().map_or(0, |_| words)
            + self
                .attrs
                .iter()
                .map(|a| {
                    std::mem::size_of::<AttrFilter>()
                        + a.unconstrained.as_ref().map_or(0, |_| words)
                        + match &a.maps {
                            KeyMaps::Str(m) => m.pos.heap_bytes() + m.neg.heap_bytes(),
                            KeyMaps::Ip(m) => m.pos.heap_bytes() + m.neg.heap_bytes(),
                            KeyMaps::Port(m) => m.pos.heap_bytes() + m.neg.heap_bytes(),
                        }
                })
                .sum::<usize>()
    }
}

impl AttrFilter {
    /// Removes from `cand` the clauses this attribute rules out (`pass` is scratch).
    fn narrow(&self, a: &Attrs, cand: &mut [u64], pass: &mut [u64]) {
        let positive = self.unconstrained.as_deref();
        if let Some(u) = positive {
            pass.copy_from_slice(u);
        }
        let mut hit = |pos: bool, p: &Posting| {
            if pos {
                p.or_into(pass)
            } else {
                p.clear_from(cand)
            }
        };
        match &self.maps {
            KeyMaps::Str(m) => attrs::for_each_str(&self.attr, a, |v| {
                if positive.is_some() {
                    m.pos.lookup(v, |p| hit(true, p));
                }
                if self.has_neg {
                    m.neg.lookup(v, |p| hit(false, p));
                }
            }),
            KeyMaps::Ip(m) => {
                if let Some(ip) = attrs::ip(&self.attr, a) {
                    if positive.is_some() {
                        m.pos.lookup(ip, |p| hit(true, p));
                    }
                    if self.has_neg {
                        m.neg.lookup(ip, |p| hit(false, p));
                    }
                }
            }
            KeyMaps::Port(m) => {
                let port = a.req.destination.port;
                if positive.is_some() {
                    m.pos.lookup(port, |p| hit(true, p));
                }
                if self.has_neg {
                    m.neg.lookup(port, |p| hit(false, p));
                }
            }
        }
        if positive.is_some() {
            bitset::and(cand, pass);
        }
    }
}
