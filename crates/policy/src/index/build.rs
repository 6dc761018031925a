//! Compiling a bucket's rules into its [`Filter`]: split each rule into clauses, file every
//! clause under the keys of each attribute it constrains, and keep per attribute the clauses
//! that do not constrain it.
//!
//! Building runs once per workload view, over every policy applying to the workload, so it
//! borrows keys from the compiled rules and allocates only for what it keeps.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};

use super::attrs::{self, AttrRef, Field, FIXED};
use super::bitset;
use super::filter::{AttrFilter, Filter, KeyMaps};
use super::keys::KeyHash;
use crate::authz::{COperation, CSource, CompiledPolicy, CompiledRule};

/// Most (`from` × `to`) clauses one rule is split into: beyond it the rule keeps one side's
/// entries (or none) and the other side does not filter it.
const MAX_CLAUSES_PER_RULE: usize = 16;

/// Most attributes a decision looks at (those constraining the most clauses): each costs a
/// lookup and a pass over the bitset, so an attribute only a few rules use would cost more
/// than the checks it saves.
const MAX_ATTRS: usize = 24;

/// The `from` and `to` entries a rule is split over; an empty side leaves it unconstrained.
fn sides(r: &CompiledRule) -> (&[CSource], &[COperation]) {
    let fits = |n: usize| n <= MAX_CLAUSES_PER_RULE;
    let (f, t) = (r.from.len().max(1), r.to.len().max(1));
    if f * t <= MAX_CLAUSES_PER_RULE {
        (&r.from, &r.to)
    } else if fits(r.from.len()) {
        (&r.from, &[])
    } else if fits(r.to.len()) {
        (&[], &r.to)
    } else {
        (&[], &[])
    }
}

/// Building state of one attribute.
struct AttrBuild {
    filter: AttrFilter,
    /// Clauses constrained positively, increasing.
    keyed: Vec<u32>,
    /// Clauses constrained at all, to rank attributes.
    constrained: usize,
    last: Option<u32>,
}

impl AttrBuild {
    fn new(attr: AttrRef, field: &Field) -> AttrBuild {
        let maps = match field {
            Field::Ip { .. } => KeyMaps::Ip(Default::default()),
            Field::Port { .. } => KeyMaps::Port(Default::default()),
            _ => KeyMaps::Str(Default::default()),
        };
        AttrBuild {
            filter: AttrFilter {
                http_only: attr.http_only(),
                attr: attr.to_owned(),
                maps,
                unconstrained: None,
                has_neg: false,
            },
            keyed: Vec::new(),
            constrained: 0,
            last: None,
        }
    }

    /// Files clause `c` under `field`. A clause is filed under its first positive field on
    /// the attribute only (a second one, ANDed, would only narrow it); every exclusion counts.
    fn add(&mut self, c: u32, field: &Field) {
        let keyed = field.has_pos() && self.keyed.last() != Some(&c);
        let mut neg_any = false;
        match (&mut self.filter.maps, field) {
            (KeyMaps::Ip(m), Field::Ip { pos, neg }) => {
                if keyed {
                    pos.iter().for_each(|n| m.pos.add(n, c));
                }
                neg.iter().for_each(|n| m.neg.add(n, c));
                neg_any = !neg.is_empty();
            }
            (KeyMaps::Port(m), Field::Port { pos, neg }) => {
                if keyed {
                    pos.iter().for_each(|&p| m.pos.add(p, c));
                }
                neg.iter().for_each(|&p| m.neg.add(p, c));
                neg_any = !neg.is_empty();
            }
            (KeyMaps::Str(m), f) if !matches!(f, Field::Ip { .. } | Field::Port { .. }) => {
                if keyed {
                    f.pos_keys(|k| m.pos.add(&k, c));
                }
                f.neg_keys(|k| {
                    m.neg.add(&k, c);
                    neg_any = true;
                });
            }
            // One attribute always comes with one kind of field; a mismatch is not filtered.
            _ => return,
        }
        if keyed {
            self.keyed.push(c);
        }
        self.filter.has_neg |= neg_any;
        if (keyed || neg_any) && self.last != Some(c) {
            self.last = Some(c);
            self.constrained += 1;
        }
    }

    fn finish(mut self, n: usize) -> AttrFilter {
        let words = bitset::words_for(n);
        match &mut self.filter.maps {
            KeyMaps::Str(m) => {
                m.pos.seal(words);
                m.neg.seal(words);
            }
            KeyMaps::Ip(m) => {
                m.pos.seal(words);
                m.neg.seal(words);
            }
            KeyMaps::Port(m) => {
                m.pos.seal(words);
                m.neg.seal(words);
            }
        }
        self.filter.unconstrained = (!self.keyed.is_empty()).then(|| {
            let mut u = bitset::ones(n);
            for &c in &self.keyed {
                u[(c / 64) as usize] &= !(1u64 << (c % 64));
            }
            u
        });
        self.filter
    }
}

impl Filter {
    /// Compiles the rules of a bucket, (policy, rule) in set order.
    pub(super) fn build(policies: &[CompiledPolicy], rules: &[(u32, u32)]) -> Filter {
        let mut clause_rule = Vec::new();
        let mut tcp_never = Vec::new();
        // Attribute → entry of `builds`: fixed ones by number, `when` keys by hash (compared,
        // not cloned).
        let mut by_fixed = [None::<usize>; FIXED];
        let hasher = BuildHasherDefault::<KeyHash>::default();
        let mut by_cond: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut builds: Vec<AttrBuild> = Vec::new();
        for (rn, &(pi, ri)) in rules.iter().enumerate() {
            let p = &policies[pi as usize];
            let r = &p.rules[ri as usize];
            if r.dropped {
                continue; // `check` never matches it.
            }
            let never_tcp = r.http_only && !p.widens_on_tcp();
            let (froms, tos) = sides(r);
            for from in (0..froms.len().max(1)).map(|i| froms.get(i)) {
                for to in (0..tos.len().max(1)).map(|i| tos.get(i)) {
                    let c = clause_rule.len() as u32;
                    clause_rule.push(rn as u32);
                    if never_tcp {
                        tcp_never.push(c);
                    }
                    attrs::fields(from, to, &r.when, |attr, field| {
                        let found = match attr {
                            AttrRef::Fixed(f) => by_fixed[f as usize],
                            AttrRef::Cond(_) => by_cond
                                .get(&hasher.hash_one(attr))
                                .and_then(|l| {
                                    l.iter().find(|&&i| builds[i].filter.attr.as_ref() == attr)
                                })
                                .copied(),
                        };
                        let i = found.unwrap_or_else(|| {
                            let i = builds.len();
                            builds.push(AttrBuild::new(attr, &field));
                            match attr {
                                AttrRef::Fixed(f) => by_fixed[f as usize] = Some(i),
                                AttrRef::Cond(_) => {
                                    by_cond.entry(hasher.hash_one(attr)).or_default().push(i)
                                }
                            }
                            i
                        });
                        builds[i].add(c, &field);
                    });
                }
            }
        }
        let n = clause_rule.len();
        builds.sort_by_key(|b| std::cmp::Reverse(b.constrained));
        let attrs: Vec<AttrFilter> = builds
            .into_iter()
            .map(|b| b.finish(n))
            .filter(|a| a.unconstrained.is_some() || a.has_neg)
            .take(MAX_ATTRS)
            .collect();
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
}
