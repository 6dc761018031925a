//! SPIFFE ID and trust domain parsing against the rules of the SPIFFE ID specification.

use trustmesh_identity::{IdError, SpiffeId, TrustDomain};

#[test]
fn valid_ids_round_trip() {
    let valid = [
        "spiffe://example.org",
        "spiffe://example.org/workload",
        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
        "spiffe://k8s-west.example.com/ns/staging/sa/default",
        "spiffe://example.org/9eebccd2-12bf-40a6-b262-65fe0487d453",
        "spiffe://a_b.c-d.0123456789/ABC/abc/0-9/._-",
        "spiffe://example.org/.../..a/.b",
        "spiffe://1.2.3.4/x",
    ];
    for s in valid {
        let id = SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(id.as_str(), s);
        assert_eq!(id.to_string(), s);
        let again: SpiffeId = s.parse().unwrap();
        assert_eq!(again, id);
    }
}

#[test]
fn parts_are_split_correctly() {
    let id = SpiffeId::parse("spiffe://cluster.local/ns/foo/sa/bar").unwrap();
    assert_eq!(id.trust_domain().as_str(), "cluster.local");
    assert_eq!(id.path(), "/ns/foo/sa/bar");
    assert_eq!(id.namespace(), Some("foo"));
    assert_eq!(id.service_account(), Some("bar"));
    assert_eq!(id.without_scheme(), "cluster.local/ns/foo/sa/bar");

    let root = SpiffeId::parse("spiffe://cluster.local").unwrap();
    assert_eq!(root.path(), "");
    assert_eq!(root.without_scheme(), "cluster.local");
    assert_eq!(root, TrustDomain::parse("cluster.local").unwrap().id());
}

#[test]
fn istio_accessors_only_for_exact_form() {
    for s in [
        "spiffe://td/ns/foo",
        "spiffe://td/ns/foo/sa",
        "spiffe://td/ns/foo/sa/bar/extra",
        "spiffe://td/x/ns/foo/sa/bar",
        "spiffe://td/ns/foo/sb/bar",
        "spiffe://td/NS/foo/sa/bar",
        "spiffe://td/ns/a/b/sa/c",
        "spiffe://td",
    ] {
        let id = SpiffeId::parse(s).unwrap();
        assert_eq!(id.namespace(), None, "{s}");
        assert_eq!(id.service_account(), None, "{s}");
    }
    let id = SpiffeId::parse("spiffe://td/ns/sa/sa/ns").unwrap();
    assert_eq!(id.namespace(), Some("sa"));
    assert_eq!(id.service_account(), Some("ns"));
}

#[test]
fn istio_constructor() {
    let td = TrustDomain::parse("cluster.local").unwrap();
    let id = SpiffeId::istio(&td, "default", "sleep").unwrap();
    assert_eq!(id.as_str(), "spiffe://cluster.local/ns/default/sa/sleep");
    assert_eq!(id.trust_domain(), &td);
    assert_eq!(
        SpiffeId::istio(&td, "a/b", "c"),
        Err(IdError::InvalidPathChar {
            ch: '/',
            pos: 27,
            segment: "a/b".into()
        })
    );
    assert!(matches!(
        SpiffeId::istio(&td, "a", "b/c"),
        Err(IdError::InvalidPathChar { ch: '/', .. })
    ));
    assert!(matches!(
        SpiffeId::istio(&td, "", "c"),
        Err(IdError::EmptySegment { .. })
    ));
    assert!(matches!(
        SpiffeId::istio(&td, "a b", "c"),
        Err(IdError::InvalidPathChar { ch: ' ', .. })
    ));
}

#[test]
fn from_path() {
    let td = TrustDomain::parse("example.org").unwrap();
    assert_eq!(
        SpiffeId::from_path(&td, "/a/b").unwrap().as_str(),
        "spiffe://example.org/a/b"
    );
    assert_eq!(
        SpiffeId::from_path(&td, "a/b").unwrap().as_str(),
        "spiffe://example.org/a/b"
    );
    assert_eq!(
        SpiffeId::from_path(&td, "").unwrap().as_str(),
        "spiffe://example.org"
    );
    assert!(SpiffeId::from_path(&td, "/a/").is_err());
}

fn err(s: &str) -> IdError {
    match SpiffeId::parse(s) {
        Ok(id) => panic!("{s:?} parsed as {id}, expected an error"),
        Err(e) => e,
    }
}

#[test]
fn rejects_empty_and_bad_scheme() {
    assert_eq!(err(""), IdError::Empty);
    assert!(matches!(
        err("example.org/foo"),
        IdError::MissingScheme { .. }
    ));
    assert!(matches!(
        err("spiffe:/example.org"),
        IdError::MissingScheme { .. }
    ));
    assert!(matches!(
        err("spiffe:example.org"),
        IdError::MissingScheme { .. }
    ));
    assert!(matches!(
        err("https://example.org/foo"),
        IdError::MissingScheme { .. }
    ));
    assert!(matches!(
        err("://example.org/foo"),
        IdError::MissingScheme { .. }
    ));
    match err("SPIFFE://example.org/foo") {
        IdError::SchemeNotLowercase { scheme, .. } => assert_eq!(scheme, "SPIFFE"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        err("Spiffe://example.org"),
        IdError::SchemeNotLowercase { .. }
    ));
    let msg = err("SPIFFE://x").to_string();
    assert!(msg.contains("lowercase"), "{msg}");
}

#[test]
fn rejects_missing_trust_domain() {
    assert!(matches!(
        err("spiffe://"),
        IdError::MissingTrustDomain { .. }
    ));
    assert!(matches!(
        err("spiffe:///path"),
        IdError::MissingTrustDomain { .. }
    ));
}

#[test]
fn rejects_bad_trust_domain_chars() {
    let cases = [
        ("spiffe://Example.org/a", 'E', 9, "lowercase"),
        ("spiffe://example.org:8080/a", ':', 20, "port"),
        ("spiffe://user@example.org/a", '@', 13, "userinfo"),
        ("spiffe://user:pw@example.org", ':', 13, "port"),
        ("spiffe://exa%41mple.org", '%', 12, "percent"),
        ("spiffe://example.org?x=1", '?', 20, "query"),
        ("spiffe://example.org#frag", '#', 20, "fragment"),
        ("spiffe://exa mple.org", ' ', 12, "allowed"),
        ("spiffe://exämple.org", 'ä', 11, "allowed"),
    ];
    for (input, ch, pos, hint) in cases {
        match err(input) {
            IdError::InvalidTrustDomainChar { ch: c, pos: p, .. } => {
                assert_eq!((c, p), (ch, pos), "{input}");
                let msg = err(input).to_string();
                assert!(msg.contains(hint), "{input}: {msg}");
                assert!(msg.contains(&format!("at byte {pos}")), "{input}: {msg}");
            }
            e => panic!("{input}: unexpected {e:?}"),
        }
    }
}

#[test]
fn rejects_bad_path_chars() {
    let cases = [
        ("spiffe://example.org/a%20b", '%', 22, "a%20b", "percent"),
        (
            "spiffe://example.org/path?query=1",
            '?',
            25,
            "path?query=1",
            "query",
        ),
        (
            "spiffe://example.org/path#frag",
            '#',
            25,
            "path#frag",
            "fragment",
        ),
        ("spiffe://example.org/ok/a b", ' ', 25, "a b", "allowed"),
        ("spiffe://example.org/a:b", ':', 22, "a:b", "allowed"),
        ("spiffe://example.org/a\\b", '\\', 22, "a\\b", "allowed"),
        ("spiffe://example.org/über", 'ü', 21, "über", "allowed"),
    ];
    for (input, ch, pos, segment, hint) in cases {
        match err(input) {
            IdError::InvalidPathChar {
                ch: c,
                pos: p,
                segment: s,
            } => {
                assert_eq!((c, p, s.as_str()), (ch, pos, segment), "{input}");
                let msg = err(input).to_string();
                assert!(msg.contains(hint), "{input}: {msg}");
            }
            e => panic!("{input}: unexpected {e:?}"),
        }
    }
    assert_eq!(
        err("spiffe://example.org/a%20b").to_string(),
        "invalid character '%' at byte 22 in path segment \"a%20b\" (percent-encoding is not allowed)"
    );
}

#[test]
fn rejects_bad_segments() {
    assert_eq!(
        err("spiffe://example.org/"),
        IdError::TrailingSlash { pos: 20 }
    );
    assert_eq!(
        err("spiffe://example.org/a/"),
        IdError::TrailingSlash { pos: 22 }
    );
    assert_eq!(
        err("spiffe://example.org//a"),
        IdError::EmptySegment { pos: 21 }
    );
    assert_eq!(
        err("spiffe://example.org/a//b"),
        IdError::EmptySegment { pos: 23 }
    );
    assert_eq!(
        err("spiffe://example.org/a//"),
        IdError::EmptySegment { pos: 23 }
    );
    assert_eq!(
        err("spiffe://example.org/."),
        IdError::DotSegment {
            segment: ".".into(),
            pos: 21
        }
    );
    assert_eq!(
        err("spiffe://example.org/a/../b"),
        IdError::DotSegment {
            segment: "..".into(),
            pos: 23
        }
    );
    assert!(err("spiffe://example.org/a/./b")
        .to_string()
        .contains("\".\""));
}

#[test]
fn enforces_length_limits() {
    let prefix = "spiffe://example.org/";
    let ok = format!("{prefix}{}", "a".repeat(2048 - prefix.len()));
    assert_eq!(ok.len(), 2048);
    assert!(SpiffeId::parse(&ok).is_ok());
    let long = format!("{ok}a");
    assert_eq!(err(&long), IdError::TooLong { len: 2049 });

    let td255 = "a".repeat(255);
    assert!(TrustDomain::parse(&td255).is_ok());
    assert!(SpiffeId::parse(&format!("spiffe://{td255}/x")).is_ok());
    let td256 = "a".repeat(256);
    assert_eq!(
        TrustDomain::parse(&td256),
        Err(IdError::TrustDomainTooLong { len: 256 })
    );
    assert_eq!(
        err(&format!("spiffe://{td256}/x")),
        IdError::TrustDomainTooLong { len: 256 }
    );
}

#[test]
fn trust_domain_parse() {
    for ok in ["cluster.local", "example.org", "a", "my_td-1.x"] {
        let td: TrustDomain = ok.parse().unwrap();
        assert_eq!(td.as_str(), ok);
        assert_eq!(td.to_string(), ok);
        assert_eq!(td.id().as_str(), format!("spiffe://{ok}"));
    }
    assert_eq!(TrustDomain::parse(""), Err(IdError::EmptyTrustDomain));
    assert!(matches!(
        TrustDomain::parse("spiffe://example.org"),
        Err(IdError::TrustDomainIsUri { .. })
    ));
    assert_eq!(
        TrustDomain::parse("Example.org"),
        Err(IdError::InvalidTrustDomainChar {
            ch: 'E',
            pos: 0,
            trust_domain: "Example.org".into()
        })
    );
    assert!(matches!(
        TrustDomain::parse("example.org:443"),
        Err(IdError::InvalidTrustDomainChar {
            ch: ':',
            pos: 11,
            ..
        })
    ));
    assert!(matches!(
        TrustDomain::parse("example.org/x"),
        Err(IdError::InvalidTrustDomainChar { ch: '/', .. })
    ));
}

#[test]
fn ordering_and_hashing_follow_the_uri() {
    use std::collections::{BTreeSet, HashSet};
    let a = SpiffeId::parse("spiffe://a/x").unwrap();
    let b = SpiffeId::parse("spiffe://b/a").unwrap();
    assert!(a < b);
    let set: HashSet<_> = [a.clone(), a.clone(), b.clone()].into_iter().collect();
    assert_eq!(set.len(), 2);
    let tds: BTreeSet<TrustDomain> = ["z", "a", "m"].iter().map(|s| s.parse().unwrap()).collect();
    let order: Vec<_> = tds.iter().map(|t| t.as_str()).collect();
    assert_eq!(order, ["a", "m", "z"]);
}

#[test]
fn serde_uses_the_string_form_and_validates() {
    let id = SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap();
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, "\"spiffe://td/ns/a/sa/b\"");
    assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
    let err = serde_json::from_str::<SpiffeId>("\"spiffe://td/a//b\"").unwrap_err();
    assert!(err.to_string().contains("empty path segment"), "{err}");
    let td: TrustDomain = serde_json::from_str("\"cluster.local\"").unwrap();
    assert_eq!(td.as_str(), "cluster.local");
    assert!(serde_json::from_str::<TrustDomain>("\"Cluster.local\"").is_err());
}
