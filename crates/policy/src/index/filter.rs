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

//! It is compiled by [`super::build`].

use super::attrs::{self, Attr};
use super::bitset::{self, Posting};
use super::keys::{IpKeys, PortKeys, StrKeys};
use crate::authz::Attrs;

/// The positive and the negative keys of one attribute.
#[derive(Debug, Default)]
pub(super) struct Pair<K> {
    pub(super) pos: K,
    pub(super) neg: K,
}

/// Keys of one attribute.
#[derive(Debug)]
pub(super) enum KeyMaps {
    Str(Box<Pair<StrKeys>>),
    Ip(Box<Pair<IpKeys>>),
    Port(Box<Pair<PortKeys>>),
}

#[derive(Debug)]
pub(super) struct AttrFilter {
    pub(super) attr: Attr,
    pub(super) http_only: bool,
    pub(super) maps: KeyMaps,
    /// Clauses that do not constrain the attribute positively; `None` when no clause does
    /// (then the positive side passes everything and is skipped).
    pub(super) unconstrained: Option<Box<[u64]>>,
    pub(super) has_neg: bool,
}

#[derive(Debug, Default)]
pub(super) struct Filter {
    pub(super) words: usize,
    /// Clause → rule number in the bucket.
    pub(super) clause_rule: Vec<u32>,
    /// Every clause (rules that can never match have none).
    pub(super) all: Box<[u64]>,
    /// Clauses of rules that cannot match a TCP connection: ALLOW rules with HTTP-only fields.
    pub(super) tcp_never: Option<Box<[u64]>>,
    /// Most constraining first.
    pub(super) attrs: Vec<AttrFilter>,
}

impl Filter {
    /// Calls `f` with the number of each rule that could match, in order, until it returns
    /// true.
    pub(super) fn candidates(&self, a: &Attrs, f: impl FnMut(u32) -> bool) {
        // Scratch bitsets on the stack for up to 4,096 clauses, sized so a small bucket does
        // not clear a large buffer.
        match self.words {
            0 => {}
            1..=4 => self.candidates_in(a, &mut [0u64; 8], f),
            5..=16 => self.candidates_in(a, &mut [0u64; 32], f),
            17..=64 => self.candidates_in(a, &mut [0u64; 128], f),
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
