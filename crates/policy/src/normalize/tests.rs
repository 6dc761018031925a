//! Istio's own path-normalization conformance cases (`tests/integration/security/
//! normalization_test.go` in istio/istio), per mode, plus the corner cases of the canonicalizer.

use super::*;

use Normalization::{Base, DecodeAndMergeSlashes as Decode, MergeSlashes as Merge, None as NoNorm};

fn norm(target: &str, mode: Normalization) -> String {
    match path_and_query(target, mode) {
        Ok(p) => p.into_owned(),
        Err(r) => format!("{} {r}", r.status()),
    }
}

/// Exactly Envoy's normalization, without our refusal of ambiguous encoded slashes.
fn envoy(target: &str, mode: Normalization) -> String {
    match normalize_target(target, mode, false) {
        Ok(p) => p.into_owned(),
        Err(r) => format!("{} {r}", r.status()),
    }
}

/// (input, NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES), from Istio's test.
const ISTIO_CASES: &[(&str, [&str; 4])] = &[
    ("/", ["/", "/", "/", "/"]),
    ("/app#foo", ["/app", "/app", "/app", "/app"]),
    ("/app/", ["/app/", "/app/", "/app/", "/app/"]),
    (
        "/app/../admin",
        ["/app/../admin", "/admin", "/admin", "/admin"],
    ),
    ("/app", ["/app", "/app", "/app", "/app"]),
    ("/app//", ["/app//", "/app//", "/app/", "/app/"]),
    ("/app/%2f", ["/app/%2f", "/app/%2f", "/app/%2f", "/app/"]),
    ("/app%2f/", ["/app%2f/", "/app%2f/", "/app%2f/", "/app/"]),
    (
        "/xyz%30..//abc",
        [
            "/xyz%30..//abc",
            "/xyz0..//abc",
            "/xyz0../abc",
            "/xyz0../abc",
        ],
    ),
    (
        "/app/%2E./admin",
        ["/app/%2E./admin", "/admin", "/admin", "/admin"],
    ),
    (
        r"/app\admin",
        [r"/app\admin", "/app/admin", "/app/admin", "/app/admin"],
    ),
    (
        r"/app/\/\/\admin",
        [
            r"/app/\/\/\admin",
            "/app//////admin",
            "/app/admin",
            "/app/admin",
        ],
    ),
    (
        r"/%2Fapp%5cadmin%5Cabc",
        [
            r"/%2Fapp%5cadmin%5Cabc",
            r"/%2Fapp%5cadmin%5Cabc",
            r"/%2Fapp%5cadmin%5Cabc",
            "/app/admin/abc",
        ],
    ),
    (
        r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
        [
            r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
            r"/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
            r"/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
            "/app/admin/abc",
        ],
    ),
    (
        "/app//../admin",
        ["/app//../admin", "/app/admin", "/app/admin", "/app/admin"],
    ),
    (
        "/app//../../admin",
        ["/app//../../admin", "/admin", "/admin", "/admin"],
    ),
];

#[test]
fn istio_conformance_cases() {
    for (input, want) in ISTIO_CASES {
        for (mode, want) in Normalization::ALL.iter().zip(want) {
            assert_eq!(envoy(input, *mode), *want, "{input} in {}", mode.as_str());
            // Ours agrees, except where Istio's case is the encoded-slash traversal it documents
            // as BASE's weakness: we refuse that one.
            let ours = norm(input, *mode);
            if input.contains("%2e%2e%2f") && matches!(mode, Base | Merge) {
                assert_eq!(ours, format!("400 {}", Rejection::AmbiguousEncodedSlash));
            } else {
                assert_eq!(ours, *want, "ours: {input} in {}", mode.as_str());
            }
        }
    }
}

#[test]
fn encoded_slashes_next_to_dot_segments_are_refused_unless_decoded() {
    let refused = [
        "/public/..%2Fadmin/x",
        "/public/..%2fadmin",
        "/public%2F..%2Fadmin",
        "/%2e%2e%2fadmin",
        "/a/%2E%2E%5Cadmin",
        "/a/.%2fb",
        "/a%2F%2e%2e",
        r"/a\..%5cadmin",
    ];
    for input in refused {
        for mode in [Base, Merge] {
            assert_eq!(
                path_and_query(input, mode),
                Err(Rejection::AmbiguousEncodedSlash),
                "{input} in {}",
                mode.as_str()
            );
        }
        assert!(path_and_query(input, Decode).is_ok(), "{input}");
        assert_eq!(norm(input, NoNorm), input);
    }
    // Encoded slashes inside names pass, unchanged.
    for input in [
        "/repos/group%2Fproject/tree",
        "/a%2F%2Fb",
        "/a%5Cb/c.txt",
        "/a/b%2F.c",
    ] {
        assert_eq!(norm(input, Base), input);
    }
    assert_eq!(norm("/public/..%2Fadmin/x", Decode), "/admin/x");
}

// Istio's "NotNormalized" group (DECODE_AND_MERGE_SLASHES): none of these is a dot segment or a
// slash once Envoy is done, so they reach the app unchanged.
#[test]
fn istio_not_normalized_cases() {
    let same = [
        "/0x2e0x2e/admin",
        "/0x2e0x2e0x2fadmin",
        "/%25c0%25ae%25c1%259cadmin",
        "/%252e%252e/admin",
        "/%252e%252e%252fadmin",
        "/%c1%9cadmin",
        "/%c0%ae%c0%ae/admin",
        "/%c0%afadmin",
        "/.../admin",
        "/..../admin",
        "/..;/admin",
        "/;/admin",
        "/admin;a=b/xyz",
        "/admin,a=b/xyz",
        "/ADMIN",
    ];
    for input in same {
        assert_eq!(norm(input, Decode), input);
    }
    assert_eq!(norm("/%c0%2e%c0%2e/admin", Decode), "/%c0.%c0./admin");
    assert_eq!(norm("/%c0%2fadmin", Decode), "/%c0/admin");
}

/// Istio's "PercentEncoded" group: `/admin%XX` for every byte but NUL, in
/// DECODE_AND_MERGE_SLASHES. Unreserved characters, `/` and `\` (then a slash) are decoded;
/// everything else stays exactly as written.
#[test]
fn istio_percent_encoded_cases() {
    for i in 1..=0xffu8 {
        let input = format!("/admin%{i:02x}");
        let decoded = i.is_ascii_alphanumeric() || b"-._~".contains(&i);
        let want = if decoded {
            format!("/admin{}", i as char)
        } else if i == b'/' || i == b'\\' {
            "/admin/".to_string()
        } else {
            input.clone()
        };
        assert_eq!(norm(&input, Decode), want, "byte {i:#04x}");
    }
    // Istio's "Invalid" group.
    assert_eq!(
        path_and_query("/admin%00", Decode),
        Err(Rejection::EncodedNul)
    );
}

#[test]
fn nul_and_bad_targets_are_refused_in_every_mode() {
    for mode in Normalization::ALL {
        assert_eq!(path_and_query("/a%00b", mode), Err(Rejection::EncodedNul));
        assert_eq!(
            path_and_query("/a b", mode),
            Err(Rejection::InvalidCharacter(b' '))
        );
        assert_eq!(
            path_and_query("/a\tb", mode),
            Err(Rejection::InvalidCharacter(b'\t'))
        );
        assert_eq!(
            path_and_query("/a\x7f", mode),
            Err(Rejection::InvalidCharacter(0x7f))
        );
        assert_eq!(
            path_and_query("admin", mode),
            Err(Rejection::NotAbsolutePath)
        );
        assert_eq!(path_and_query("", mode), Err(Rejection::NotAbsolutePath));
        assert_eq!(
            path_and_query("?a=1", mode),
            Err(Rejection::NotAbsolutePath)
        );
        // %00 in the query is the app's business, as in Envoy.
        assert_eq!(norm("/a?x=%00", mode), "/a?x=%00");
    }
}

#[test]
fn query_is_kept_as_is() {
    assert_eq!(norm("/a/../b?x=/../y&z=%2e", Base), "/b?x=/../y&z=%2e");
    assert_eq!(norm("/a//b?x=//", Merge), "/a/b?x=//");
    assert_eq!(norm("/a%2fb?x=%2f", Decode), "/a/b?x=%2f");
    assert_eq!(norm("/a/./b?q#frag", Base), "/a/b?q");
}

#[test]
fn unchanged_paths_borrow() {
    for p in [
        "/",
        "/api/v1/items/7",
        "/static/app.js?v=3",
        "/a/.hidden",
        "/a%2Fb",
    ] {
        assert!(
            matches!(path_and_query(p, Base), Ok(Cow::Borrowed(_))),
            "{p}"
        );
    }
    assert!(matches!(
        path_and_query("/a//b", Base),
        Ok(Cow::Borrowed(_))
    ));
    assert!(matches!(path_and_query("/a//b", Merge), Ok(Cow::Owned(_))));
}

#[test]
fn dot_segments() {
    let cases = [
        ("/.", "/"),
        ("/..", "/"),
        ("/../../..", "/"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/./b", "/a/b"),
        ("/a/%2e/b", "/a/b"),
        ("/a/%2E%2e/b", "/b"),
        ("/a/.%2e/b", "/b"),
        ("/a/..%2fb", "/a/..%2fb"),
        ("/a/.b", "/a/.b"),
        ("/a/b.", "/a/b."),
        ("/a/..b", "/a/..b"),
        (r"/a\..\b", "/b"),
        ("/a%2e/b", "/a./b"),
    ];
    for (input, want) in cases {
        assert_eq!(envoy(input, Base), want, "{input}");
    }
}

#[test]
fn raw_characters_that_must_be_escaped() {
    assert_eq!(
        norm("/a\"b<c>d^e`f{g|h}i", Base),
        "/a%22b%3Cc%3Ed%5Ee%60f%7Bg%7Ch%7Di"
    );
    assert_eq!(norm("/caf\u{e9}", Base), "/caf%C3%A9");
    // Sub-delimiters and `:@[]` pass.
    assert_eq!(norm("/a!$&'()*+,;=:@[]", Base), "/a!$&'()*+,;=:@[]");
    // Escapes that are not decoded keep their case.
    assert_eq!(norm("/a%2fb%2Fc%20d%3a", Base), "/a%2fb%2Fc%20d%3a");
    assert_eq!(norm("/%41%62%7e%5F", Base), "/Ab~_");
}

#[test]
fn stray_percent_signs() {
    // Not an escape: passed through.
    assert_eq!(norm("/100%", Base), "/100%");
    assert_eq!(norm("/a%zz", Base), "/a%zz");
    assert_eq!(norm("/a%4", Base), "/a%4");
    // A stray `%` that decoding would turn into an escape is itself escaped, so that nobody
    // decoding after us reads a different path (`%%34%31` must not become `%41` -> `A`).
    assert_eq!(norm("/%%34%31", Base), "/%2541");
    assert_eq!(norm("/%%341", Base), "/%2541");
    assert_eq!(norm("/%4%31", Base), "/%2541");
    assert_eq!(norm("/%%30%30", Base), "/%2500");
    assert_eq!(norm("/%%zz", Base), "/%%zz");
}

#[test]
fn merge_slashes_keeps_leading_and_trailing_slash() {
    assert_eq!(norm("//a///b//", Merge), "/a/b/");
    assert_eq!(norm("//", Merge), "/");
    assert_eq!(norm("/a//b", NoNorm), "/a//b");
}

#[test]
fn methods() {
    for ok in [
        "GET",
        "POST",
        "M-SEARCH",
        "PROPFIND",
        "VERSION-CONTROL",
        "PATCH",
    ] {
        assert_eq!(check_method(ok), Ok(()), "{ok}");
    }
    for bad in ["get", "Get", "", "GE T", "GET\r", "G(ET"] {
        assert_eq!(check_method(bad), Err(Rejection::InvalidMethod), "{bad:?}");
    }
    assert_eq!(
        request("CONNECT", "example.com:443", Base),
        Err(Rejection::Connect)
    );
    assert_eq!(Rejection::Connect.status(), 405);
    assert_eq!(request("OPTIONS", "*", Base).as_deref(), Ok("*"));
    assert_eq!(request("GET", "*", Base), Err(Rejection::NotAbsolutePath));
    assert_eq!(request("get", "/", Base), Err(Rejection::InvalidMethod));
}

#[test]
fn mesh_config_names() {
    for (text, want) in [
        ("NONE", NoNorm),
        ("BASE", Base),
        ("DEFAULT", Base),
        ("MERGE_SLASHES", Merge),
        ("DECODE_AND_MERGE_SLASHES", Decode),
    ] {
        let p: PathNormalization = serde_yaml::from_str(&format!("normalization: {text}")).unwrap();
        assert_eq!(p.normalization, want);
    }
    assert!(serde_yaml::from_str::<PathNormalization>("normalization: SOMETIMES").is_err());
    assert_eq!(PathNormalization::default().normalization, Base);
}
