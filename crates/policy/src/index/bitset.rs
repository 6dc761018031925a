//! Sets of clause numbers for the candidate filter: one bit per clause, in set order.
//!
//! A decision ANDs a handful of these, so they are plain `u64` words. What a single key
//! selects (the rules naming one principal, one path prefix…) is usually a few clauses, so a
//! key keeps a sorted list of clause numbers and becomes a bitset only when the list would
//! be larger than the bitset — then OR-ing it is also cheaper word by word than bit by bit.

/// Words needed for `n` bits.
pub(super) fn words_for(n: usize) -> usize {
    n.div_ceil(64)
}

/// A bitset with the first `n` bits set.
pub(super) fn ones(n: usize) -> Box<[u64]> {
    let mut w = vec![u64::MAX; words_for(n)];
    if n % 64 != 0 {
        if let Some(last) = w.last_mut() {
            *last = (1u64 << (n % 64)) - 1;
        }
    }
    w.into()
}

pub(super) fn set(bits: &mut [u64], i: u32) {
    bits[(i / 64) as usize] |= 1u64 << (i % 64);
}

pub(super) fn and(dst: &mut [u64], src: &[u64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d &= s;
    }
}

pub(super) fn and_not(dst: &mut [u64], src: &[u64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d &= !s;
    }
}

/// Whether at most one bit is set.
pub(super) fn at_most_one(bits: &[u64]) -> bool {
    let mut seen = false;
    for &w in bits {
        if w != 0 {
            if seen || w & (w - 1) != 0 {
                return false;
            }
            seen = true;
        }
    }
    true
}

/// The set bits in increasing order.
pub(super) fn iter(bits: &[u64]) -> impl Iterator<Item = u32> + '_ {
    bits.iter().enumerate().flat_map(|(i, &w)| {
        let mut w = w;
        std::iter::from_fn(move || {
            if w == 0 {
                return None;
            }
            let b = w.trailing_zeros();
            w &= w - 1;
            Some(i as u32 * 64 + b)
        })
    })
}

/// The clauses one key selects.
#[derive(Debug, Clone)]
pub(super) enum Posting {
    /// Increasing clause numbers.
    List(Vec<u32>),
    /// The common case, a key of one clause, without an allocation.
    One(u32),
    Bits(Box<[u64]>),
}

impl Default for Posting {
    fn default() -> Self {
        Posting::List(Vec::new())
    }
}

impl Posting {
    /// Adds clause `c`; clauses are added in increasing order while building.
    pub(super) fn push(&mut self, c: u32) {
        match self {
            Posting::List(l) if l.is_empty() => *self = Posting::One(c),
            Posting::List(l) => {
                if l.last() != Some(&c) {
                    debug_assert!(l.last().is_none_or(|&x| x < c));
                    l.push(c);
                }
            }
            Posting::One(x) if *x == c => {}
            Posting::One(x) => *self = Posting::List(vec![*x, c]),
            Posting::Bits(b) => set(b, c),
        }
    }

    /// Done building: a bitset of `words` words when that is smaller than the list.
    pub(super) fn seal(&mut self, words: usize) {
        if let Posting::List(l) = self {
            if l.len() * 4 > words * 8 {
                let mut b = vec![0u64; words].into_boxed_slice();
                for &c in l.iter() {
                    set(&mut b, c);
                }
                *self = Posting::Bits(b);
            } else {
                l.shrink_to_fit();
            }
        }
    }

    pub(super) fn or_into(&self, dst: &mut [u64]) {
        match self {
            Posting::List(l) => {
                for &c in l {
                    set(dst, c);
                }
            }
            Posting::One(c) => set(dst, *c),
            Posting::Bits(b) => {
                for (d, s) in dst.iter_mut().zip(b.iter()) {
                    *d |= s;
                }
            }
        }
    }

    pub(super) fn clear_from(&self, dst: &mut [u64]) {
        match self {
            Posting::List(l) => {
                for &c in l {
                    dst[(c / 64) as usize] &= !(1u64 << (c % 64));
                }
            }
            Posting::One(c) => dst[(c / 64) as usize] &= !(1u64 << (c % 64)),
            Posting::Bits(b) => and_not(dst, b),
        }
    }

    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            Posting::List(l) => l.capacity() * 4,
            Posting::One(_) => 0,
            Posting::Bits(b) => b.len() * 8,
        }
    }
}

#[cfg(test)]
#[path = "bitset_tests.rs"]
mod tests;
