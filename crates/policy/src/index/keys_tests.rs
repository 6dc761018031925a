//! Keys: positive keys cover every value their field matches; exact keys match the same
//! values as the field; lookups find every key a value matches.

use super::*;
use crate::matcher::StrMatch;

fn hits(k: &StrKeys, v: &str) -> Vec<u32> {
    let mut out = Vec::new();
    k.lookup(v, |p| {
        let mut b = vec![0u64; 1];
        p.or_into(&mut b);
        out.extend(crate::index::bitset::iter(&b));
    });
    out.sort_unstable();
    out
}

#[test]
fn string_lookups() {
    let mut k = StrKeys::default();
    let keys = [
        StrKey::Exact("abc".into()),
        StrKey::Prefix("ab".into()),
        StrKey::Suffix("bc".into()),
        StrKey::NonEmpty,
        StrKey::Any,
        StrKey::Prefix("abcdef".into()),
        StrKey::Exact("é".into()),
        StrKey::Prefix("é".into()),
    ];
    for (c, key) in keys.iter().enumerate() {
        k.add(key, c as u32);
    }
    k.seal(1);
    assert_eq!(hits(&k, "abc"), [0, 1, 2, 3, 4]);
    assert_eq!(hits(&k, "xbc"), [2, 3, 4]);
    assert_eq!(hits(&k, ""), [4]);
    assert_eq!(hits(&k, "abcdefg"), [1, 3, 4, 5]);
    // Multi-byte values: a cut inside a character cannot equal a key.
    assert_eq!(hits(&k, "é"), [3, 4, 6, 7]);
    assert_eq!(hits(&k, "aé"), [3, 4]);
}

#[test]
fn covering_and_exact_keys() {
    let values = ["prod", "prod-eu", "web-prod", "", "p", "staging", "pxprod"];
    for pat in [
        "prod", "prod*", "*prod", "*", "p*d", "*o*", "pr*o*d", "**", "pro**", "**d",
    ] {
        for m in [StrMatch::compile(pat), StrMatch::compile_namespace(pat)] {
            let mut k = StrKeys::default();
            k.add(&StrKey::covering(&m), 0);
            k.seal(1);
            let exact = StrKey::exact(&m);
            let mut e = StrKeys::default();
            if let Some(x) = &exact {
                e.add(x, 0);
            }
            for v in values {
                if m.matches(v) {
                    assert_eq!(hits(&k, v), [0], "{m:?} covers {v:?}");
                }
                if exact.is_some() {
                    assert_eq!(!hits(&e, v).is_empty(), m.matches(v), "{m:?} exactly {v:?}");
                }
            }
        }
    }
    assert_eq!(StrKey::exact(&StrMatch::compile_namespace("a*b")), None);
    assert_eq!(
        StrKey::exact(&StrMatch::compile_namespace("team-*")),
        Some(StrKey::Prefix("team-".into()))
    );
}

#[test]
fn address_and_port_lookups() {
    let mut k = IpKeys::default();
    for (c, n) in ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "2001:db8::/32"]
        .iter()
        .enumerate()
    {
        k.add(&n.parse().unwrap(), c as u32);
    }
    k.seal(1);
    let got = |ip: &str| {
        let mut out = Vec::new();
        k.lookup(ip.parse().unwrap(), |p| {
            let mut b = vec![0u64; 1];
            p.or_into(&mut b);
            out.extend(crate::index::bitset::iter(&b));
        });
        out.sort_unstable();
        out
    };
    assert_eq!(got("10.1.2.3"), [0, 1, 2]);
    assert_eq!(got("10.2.0.1"), [0]);
    assert_eq!(got("2001:db8::1"), [3]);
    assert!(got("::ffff:10.1.2.3").is_empty());
    let mut p = PortKeys::default();
    p.add(9080, 0);
    p.seal(1);
    let mut n = 0;
    p.lookup(9080, |_| n += 1);
    p.lookup(9081, |_| n += 10);
    assert_eq!(n, 1);
}
