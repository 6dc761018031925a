//! Bitset helpers and postings: lists turn into bitsets only when that is smaller, and both
//! forms add and remove the same clauses.

use super::*;

#[test]
fn ones_and_iteration() {
    for n in [0usize, 1, 63, 64, 65, 130] {
        let b = ones(n);
        assert_eq!(b.len(), words_for(n));
        assert_eq!(
            iter(&b).collect::<Vec<_>>(),
            (0..n as u32).collect::<Vec<_>>()
        );
    }
}

#[test]
fn at_most_one_bit() {
    assert!(at_most_one(&[0, 0]));
    assert!(at_most_one(&[0, 1 << 9]));
    assert!(!at_most_one(&[1, 1 << 9]));
    assert!(!at_most_one(&[0, 3]));
}

#[test]
fn postings_in_both_forms() {
    let words = words_for(200);
    let clauses = [3u32, 64, 65, 199];
    let mut short = Posting::default();
    clauses.iter().for_each(|&c| short.push(c));
    short.push(199); // again: kept once
    short.seal(words);
    assert!(matches!(short, Posting::List(ref l) if l.len() == 4));
    let mut long = Posting::default();
    (0..200).for_each(|c| long.push(c));
    long.seal(words);
    assert!(matches!(long, Posting::Bits(_)));

    let mut one = Posting::default();
    one.push(70);
    one.seal(words);
    assert!(matches!(one, Posting::One(70)));
    let mut dst = vec![0u64; words];
    one.or_into(&mut dst);
    short.or_into(&mut dst);
    one.clear_from(&mut dst);
    assert_eq!(iter(&dst).collect::<Vec<_>>(), clauses);
    let mut all = ones(200).into_vec();
    short.clear_from(&mut all);
    assert_eq!(iter(&all).count(), 196);
    assert!(!iter(&all).any(|c| clauses.contains(&c)));
    long.clear_from(&mut all);
    assert!(all.iter().all(|&w| w == 0));
    let mut dst = vec![0u64; words];
    long.or_into(&mut dst);
    assert_eq!(iter(&dst).count(), 200);
}
