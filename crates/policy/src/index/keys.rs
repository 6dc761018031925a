//! Value → clauses maps for one request attribute, so a decision finds the clauses a value
//! can satisfy with a few hash lookups instead of trying each clause.
//!
//! A positive field is filed under a *superset* key — every value the field matches also
//! matches the key (a template path under its literal leading segments, a namespace glob
//! under its first literal piece) — because a positive key only has to keep every clause
//! that could match. A negative field removes clauses, so it is filed only under keys that
//! match exactly what the field matches; anything else is left to `check`.

use std::borrow::Cow;
use std::collections::HashMap as StdMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;

use super::bitset::Posting;
use crate::matcher::StrMatch;

/// A multiply-rotate hash: the keys come from the policies, not from requests (a request
/// value is only looked up, never inserted), so a keyed, flooding-resistant hash buys nothing
/// here and costs several times as much per lookup.
#[derive(Default)]
pub(super) struct KeyHash(u64);

impl KeyHash {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(23) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for KeyHash {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
    }
    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn finish(&self) -> u64 {
        // Spread the high bits down: the table takes its slot from the low bits.
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (h >> 32)
    }
}

type HashMap<K, V> = StdMap<K, V, BuildHasherDefault<KeyHash>>;

/// A string key: what a value must be, start with, end with, or that it is non-empty / there.
/// Borrowed from the rule while building; the maps own their keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StrKey<'a> {
    Exact(Cow<'a, str>),
    Prefix(Cow<'a, str>),
    Suffix(Cow<'a, str>),
    NonEmpty,
    Any,
}

impl<'a> StrKey<'a> {
    /// A key every value `m` matches also matches.
    pub(super) fn covering(m: &'a StrMatch) -> StrKey<'a> {
        match m {
            StrMatch::Exact(s) => StrKey::Exact(Cow::Borrowed(s)),
            StrMatch::Prefix(s) => StrKey::Prefix(Cow::Borrowed(s)),
            StrMatch::Suffix(s) => StrKey::Suffix(Cow::Borrowed(s)),
            StrMatch::Present => StrKey::NonEmpty,
            StrMatch::Any => StrKey::Any,
            StrMatch::Glob(parts) => match &parts[..] {
                [one] => StrKey::Exact(Cow::Borrowed(one)),
                [first, ..] if !first.is_empty() => StrKey::Prefix(Cow::Borrowed(first)),
                [.., last] if !last.is_empty() => StrKey::Suffix(Cow::Borrowed(last)),
                _ => StrKey::Any,
            },
        }
    }

    /// The key matching exactly what `m` matches, if there is one: a namespace glob with
    /// one `*` at an end is a prefix or suffix (`*` alone: any value); others have none.
    pub(super) fn exact(m: &'a StrMatch) -> Option<StrKey<'a>> {
        match m {
            StrMatch::Glob(parts) => match &parts[..] {
                [one] => Some(StrKey::Exact(Cow::Borrowed(one))),
                [a, b] if b.is_empty() => Some(StrKey::Prefix(Cow::Borrowed(a))),
                [a, b] if a.is_empty() => Some(StrKey::Suffix(Cow::Borrowed(b))),
                _ => None,
            },
            m => Some(StrKey::covering(m)),
        }
    }

    /// The same key for a value compared ignoring ASCII case (hosts): lower-cased, to be
    /// looked up with a lower-cased value.
    pub(super) fn lowercase(self) -> StrKey<'a> {
        let low = |s: Cow<'a, str>| {
            if s.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(s.to_ascii_lowercase())
            } else {
                s
            }
        };
        match self {
            StrKey::Exact(s) => StrKey::Exact(low(s)),
            StrKey::Prefix(s) => StrKey::Prefix(low(s)),
            StrKey::Suffix(s) => StrKey::Suffix(low(s)),
            k => k,
        }
    }
}

/// Adds clause `c` under `k`, allocating the key only when it is new.
fn file(map: &mut HashMap<Box<str>, Posting>, k: &str, c: u32) {
    match map.get_mut(k) {
        Some(p) => p.push(c),
        None => {
            map.insert(k.into(), Posting::One(c));
        }
    }
}

/// Clauses by string key: one hash lookup for exact keys, one per distinct prefix or suffix
/// length, and the non-empty / present lists.
#[derive(Debug, Default)]
pub(super) struct StrKeys {
    exact: HashMap<Box<str>, Posting>,
    prefix: HashMap<Box<str>, Posting>,
    prefix_lens: Vec<usize>,
    suffix: HashMap<Box<str>, Posting>,
    suffix_lens: Vec<usize>,
    non_empty: Posting,
    any: Posting,
}

fn add_len(lens: &mut Vec<usize>, n: usize) {
    if let Err(i) = lens.binary_search(&n) {
        lens.insert(i, n);
    }
}

impl StrKeys {
    pub(super) fn add(&mut self, k: &StrKey, c: u32) {
        match k {
            StrKey::Exact(s) => file(&mut self.exact, s, c),
            StrKey::Prefix(s) => {
                file(&mut self.prefix, s, c);
                add_len(&mut self.prefix_lens, s.len());
            }
            StrKey::Suffix(s) => {
                file(&mut self.suffix, s, c);
                add_len(&mut self.suffix_lens, s.len());
            }
            StrKey::NonEmpty => self.non_empty.push(c),
            StrKey::Any => self.any.push(c),
        }
    }

    pub(super) fn seal(&mut self, words: usize) {
        for p in self
            .exact
            .values_mut()
            .chain(self.prefix.values_mut())
            .chain(self.suffix.values_mut())
        {
            p.seal(words);
        }
        self.non_empty.seal(words);
        self.any.seal(words);
        self.exact.shrink_to_fit();
        self.prefix.shrink_to_fit();
        self.suffix.shrink_to_fit();
    }

    /// Calls `f` with the clauses of every key `v` matches. A prefix or suffix of `v` that
    /// does not fall on a character boundary cannot equal a key (keys are whole strings).
    pub(super) fn lookup(&self, v: &str, mut f: impl FnMut(&Posting)) {
        if let Some(p) = self.exact.get(v) {
            f(p);
        }
        for &n in &self.prefix_lens {
            if n > v.len() {
                break;
            }
            if let Some(p) = v.get(..n).and_then(|k| self.prefix.get(k)) {
                f(p);
            }
        }
        for &n in &self.suffix_lens {
            if n > v.len() {
                break;
            }
            if let Some(p) = v.get(v.len() - n..).and_then(|k| self.suffix.get(k)) {
                f(p);
            }
        }
        if !v.is_empty() {
            f(&self.non_empty);
        }
        f(&self.any);
    }

    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        let map = |m: &HashMap<Box<str>, Posting>| {
            m.capacity() * std::mem::size_of::<(Box<str>, Posting)>()
                + m.iter()
                    .map(|(k, p)| k.len() + p.heap_bytes())
                    .sum::<usize>()
        };
        map(&self.exact)
            + map(&self.prefix)
            + map(&self.suffix)
            + (self.prefix_lens.capacity() + self.suffix_lens.capacity()) * 8
            + self.non_empty.heap_bytes()
            + self.any.heap_bytes()
    }
}

/// Clauses by CIDR: one hash lookup per distinct (family, prefix length). An address of
/// one family never falls in a block of the other, as in `IpNet::contains`.
#[derive(Debug, Default)]
pub(super) struct IpKeys {
    nets: HashMap<IpNet, Posting>,
    lens: Vec<(bool, u8)>,
}

impl IpKeys {
    pub(super) fn add(&mut self, n: &IpNet, c: u32) {
        self.nets.entry(n.trunc()).or_default().push(c);
        let key = (matches!(n, IpNet::V6(_)), n.prefix_len());
        if let Err(i) = self.lens.binary_search(&key) {
            self.lens.insert(i, key);
        }
    }

    pub(super) fn seal(&mut self, words: usize) {
        for p in self.nets.values_mut() {
            p.seal(words);
        }
        self.nets.shrink_to_fit();
    }

    pub(super) fn lookup(&self, ip: IpAddr, mut f: impl FnMut(&Posting)) {
        let v6 = ip.is_ipv6();
        for &(is_v6, len) in &self.lens {
            if is_v6 != v6 {
                continue;
            }
            if let Some(p) = IpNet::new(ip, len)
                .ok()
                .and_then(|n| self.nets.get(&n.trunc()))
            {
                f(p);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.nets.capacity() * std::mem::size_of::<(IpNet, Posting)>()
            + self.nets.values().map(Posting::heap_bytes).sum::<usize>()
            + self.lens.capacity() * 2
    }
}

/// Clauses by port.
#[derive(Debug, Default)]
pub(super) struct PortKeys {
    ports: HashMap<u16, Posting>,
}

impl PortKeys {
    pub(super) fn add(&mut self, port: u16, c: u32) {
        self.ports.entry(port).or_default().push(c);
    }

    pub(super) fn seal(&mut self, words: usize) {
        for p in self.ports.values_mut() {
            p.seal(words);
        }
        self.ports.shrink_to_fit();
    }

    pub(super) fn lookup(&self, port: u16, mut f: impl FnMut(&Posting)) {
        if let Some(p) = self.ports.get(&port) {
            f(p);
        }
    }

    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.ports.capacity() * std::mem::size_of::<(u16, Posting)>()
            + self.ports.values().map(Posting::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
