use super::*;

// Istio: tests/integration/security/authz_test.go (TestAuthz_PathTemplating) and the
// Operation.paths examples in istio/api security/v1beta1/authorization_policy.proto; the
// regular expression is Envoy's source/extensions/path/uri_template_lib/uri_template_internal.cc.
#[test]
fn matching() {
    let cases = [
        ("/allow/admin/{**}", "/allow/admin/", true),
        ("/allow/admin/{**}", "/allow/admin", false),
        ("/allow/admin/{**}", "/allow/user/", false),
        ("/allow/admin/{**}", "/allow/admin/temp.txt", true),
        ("/allow/admin/{**}", "/allow/admin/foo/temp.txt", true),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/bat.txt", true),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/bat/fuzz.txt", true),
        ("/foo/{*}/bar/{**}", "/foo/bar/bat.txt", false),
        ("/foo/{*}/bar/{**}", "/foo//bar/bat.txt", false),
        ("/foo/{*}/bar/{**}", "/foo/buzz/bar/", true),
        ("/store/{**}/cart", "/store//cart", true),
        ("/store/{**}/cart", "/store/cart", false),
        ("/store/{**}/cart", "/store/foo/cart", true),
        ("/store/{**}/cart", "/store/foo/bar/cart", true),
        ("/store/{**}/cart", "/store/foo/cartx", false),
        ("/foo/{*}", "/foo/bar", true),
        ("/foo/{*}", "/foo/bar/baz", false),
        ("/foo/{*}", "/foo/", false),
        ("/foo/{**}/", "/foo//", true),
        ("/foo/{**}/", "/foo/bar/", true),
        ("/foo/{**}/", "/foo/bar", false),
        ("/{*}/foo/", "/x/foo/", true),
        ("/{*}/foo/", "/x/foo", false),
        ("/{**}", "/", true),
        // `{*}` is one or more path characters: not `*` or `=`.
        ("/a/{*}", "/a/b*c", false),
        ("/a/{*}", "/a/b=c", false),
        ("/a/{*}", "/a/%2F", true),
        ("/a/{**}", "/a/x=1", false),
    ];
    for (pat, path, want) in cases {
        assert_eq!(
            PathTemplate::compile(pat).matches(path),
            want,
            "{pat} vs {path}"
        );
    }
}

// Istio: pkg/config/security/security_test.go (TestCheckValidPathTemplate).
#[test]
fn validation() {
    for ok in [
        "/{*}/foo",
        "/{*}/foo/",
        "/foo/{**}/bar",
        "/foo/bar/{**}",
        "/foo/{*}/bar/{**}",
        "/plain/path",
        "/plain*",
        "*/suffix",
        "/a*b",
    ] {
        assert_eq!(path_error(ok), None, "{ok}");
    }
    for (bad, word) in [
        ("/foo/{**}buzz/bar", "whole segment"),
        ("/{*}/foo/{}/bar", "whole segment"),
        ("/foo/{*}/bar/*", "`*`"),
        ("/foo/{*}/bar/**/buzz", "`*`"),
        ("/foo/{buzz}/bar", "only allowed"),
        ("/{buzz}", "only allowed"),
        ("/foo/{buzz}/bar/{**}", "whole segment"),
        ("/{*}/foo/{*}.txt", "whole segment"),
        ("/{*}/foo/{temp", "whole segment"),
        ("/{*}/foo/temp}/bar", "whole segment"),
        ("/{**}/foo/temp/{*}/bar", "last operator"),
        ("/{**}/{**}", "last operator"),
        ("/{**}/foo/temp/{**}/bar", "last operator"),
        ("/{*}/foo/?abc", "characters"),
        // Envoy refuses these after Istio accepted them.
        ("foo/{*}", "start with `/`"),
        ("/a=b/{*}", "characters"),
        ("/a/{*}//", "empty segment"),
        ("/a//{*}", "empty segment"),
    ] {
        let e = path_error(bad).unwrap_or_else(|| panic!("{bad} should be invalid"));
        assert!(e.contains(word), "{bad}: {e}");
    }
    assert_eq!(
        PathTemplate::compile("/a/b/{*}/c").literal_prefix(),
        "/a/b/"
    );
    assert_eq!(PathTemplate::compile("/{**}").literal_prefix(), "/");
    assert_eq!(
        PathTemplate::compile("/a/{**}/b/").to_string(),
        "/a/{**}/b/"
    );
}
