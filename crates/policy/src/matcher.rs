//! Precompiled value matchers. Istio's string match forms ("Authorization Policy" reference,
//! section "Value matching"): exact, prefix `abc*`, suffix `*abc`, presence `*`; paths may
//! also be URI templates (see [`crate::template`]).
//!
//! How Istio builds them (`pilot/pkg/security/authz/matcher/string.go`, `header.go`): a
//! leading `*` is tested before a trailing one, so `*abc*` is the suffix `abc*`; a `*`
//! anywhere else is a literal character (`a*b` matches only the string `a*b`); `*` alone
//! is "non-empty" (`.+`) for most fields but Envoy's `present_match` for request headers,
//! which an empty header value satisfies. Namespaces are the exception: Istio turns every
//! `*` of a namespace into `.*` (`srcNamespaceGenerator` in `model/generator.go`), so
//! there `a*b` is a glob.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::template::{is_template, PathTemplate};

/// One Istio string value, compiled once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// `*`: any non-empty value.
    Present,
    /// `*` of a request header: the header exists, whatever its value (even empty).
    Any,
    /// A namespace with `*`s: the literal pieces between them, in order (`*` may be empty).
    Glob(Box<[Box<str>]>),
}

impl StrMatch {
    pub fn compile(v: &str) -> StrMatch {
        if v == "*" {
            StrMatch::Present
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.into())
        } else {
            StrMatch::Exact(v.into())
        }
    }

    /// A `request.headers[...]` value: as [`StrMatch::compile`], but `*` only asks for
    /// presence.
    pub fn compile_header(v: &str) -> StrMatch {
        match v {
            "*" => StrMatch::Any,
            v => StrMatch::compile(v),
        }
    }

    /// A `namespaces` / `source.namespace` value: every `*` matches any run of characters.
    pub fn compile_namespace(v: &str) -> StrMatch {
        if v.contains('*') {
            StrMatch::Glob(v.split('*').map(Box::from).collect())
        } else {
            StrMatch::Exact(v.into())
        }
    }

    #[inline]
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == &**e,
            StrMatch::Prefix(p) => v.starts_with(&**p),
            StrMatch::Suffix(s) => v.ends_with(&**s),
            StrMatch::Present => !v.is_empty(),
            StrMatch::Any => true,
            StrMatch::Glob(parts) => glob_matches(parts, v),
        }
    }

    /// Case-insensitive variant, for hosts.
    fn matches_ci(&self, v: &str) -> bool {
        let (vb, n) = (v.as_bytes(), v.len());
        match self {
            StrMatch::Exact(e) => v.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => n >= p.len() && vb[..p.len()].eq_ignore_ascii_case(p.as_bytes()),
            StrMatch::Suffix(s) => {
                n >= s.len() && vb[n - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            StrMatch::Present => !v.is_empty(),
            StrMatch::Any | StrMatch::Glob(_) => self.matches(v),
        }
    }
}

/// `parts` are the pieces of a glob split at `*`: the first is a prefix, the last a suffix,
/// the ones between must occur in order without overlapping.
fn glob_matches(parts: &[Box<str>], v: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return v == &**first;
    }
    if v.len() < first.len() + last.len() || !v.starts_with(&**first) || !v.ends_with(&**last) {
        return false;
    }
    let mut rest = &v[first.len()..v.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(&**mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl std::fmt::Display for StrMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StrMatch::Exact(e) => write!(f, "{e}"),
            StrMatch::Prefix(p) => write!(f, "{p}*"),
            StrMatch::Suffix(s) => write!(f, "*{s}"),
            StrMatch::Present | StrMatch::Any => write!(f, "*"),
            StrMatch::Glob(parts) => write!(f, "{}", parts.join("*")),
        }
    }
}

/// A list of values: matches when any value matches (OR within a field).
#[derive(Debug, Clone, Default)]
pub struct AnyOf(pub Vec<StrMatch>);

impl AnyOf {
    pub fn compile<'a>(vs: impl IntoIterator<Item = &'a String>) -> AnyOf {
        AnyOf(vs.into_iter().map(|v| StrMatch::compile(v)).collect())
    }
    pub fn compile_with<'a>(
        vs: impl IntoIterator<Item = &'a String>,
        f: fn(&str) -> StrMatch,
    ) -> AnyOf {
        AnyOf(vs.into_iter().map(|v| f(v)).collect())
    }
    #[inline]
    pub fn matches(&self, v: &str) -> bool {
        self.0.iter().any(|m| m.matches(v))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `hosts`: matched case-insensitively against the whole `Host`/`:authority`, port included
/// (Istio builds an ignore-case header matcher; its security best practices advise listing
/// `host` and `host:*` both).
#[derive(Debug, Clone)]
pub struct HostMatch(StrMatch);

impl HostMatch {
    pub fn compile(v: &str) -> HostMatch {
        HostMatch(StrMatch::compile(v))
    }
    pub fn matches(&self, authority: &str) -> bool {
        self.0.matches_ci(authority)
    }

    /// The value as written; it is compared ignoring ASCII case.
    pub fn value(&self) -> &StrMatch {
        &self.0
    }
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One `paths` entry. Matched against the request path without its query string (Envoy's
/// `url_path`, which Istio uses for `paths`; its `uri_template` matcher strips it too).
#[derive(Debug, Clone)]
pub enum PathMatch {
    Str(StrMatch),
    Template(PathTemplate),
}

impl std::fmt::Display for PathMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathMatch::Str(m) => m.fmt(f),
            PathMatch::Template(t) => t.fmt(f),
        }
    }
}

impl PathMatch {
    pub fn compile(v: &str) -> PathMatch {
        if is_template(v) {
            PathMatch::Template(PathTemplate::compile(v))
        } else {
            PathMatch::Str(StrMatch::compile(v))
        }
    }

    /// A string matcher every path this one matches also satisfies: itself for plain values,
    /// the literal leading segments (as a prefix) for a template. Used to index rules.
    pub fn required_prefix(&self) -> StrMatch {
        match self {
            PathMatch::Str(m) => m.clone(),
            PathMatch::Template(t) => StrMatch::Prefix(t.literal_prefix().into()),
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        let path = url_path(path);
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(t) => t.matches(path),
        }
    }
}

/// The path without query string or fragment.
#[inline]
pub fn url_path(p: &str) -> &str {
    match p.find(['?', '#']) {
        Some(i) => &p[..i],
        None => p,
    }
}

/// Parses an `ipBlocks` entry: a CIDR or a single address (a /32 or /128).
pub fn parse_cidr(v: &str) -> Option<IpNet> {
    if let Ok(n) = v.parse::<IpNet>() {
        return Some(n);
    }
    v.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Parses a `ports` entry: Istio ports are decimal strings in 0..=65535.
pub fn parse_port(v: &str) -> Option<u16> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Authorization Policy reference, "Value matching": exact, prefix, suffix, presence; the
    // order and the literal middle `*` follow Istio's
    // pilot/pkg/security/authz/matcher/string.go (StringMatcherWithPrefix) and header.go.
    #[test]
    fn string_forms() {
        let cases = [
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc*", "abcd", true),
            ("abc*", "xabc", false),
            ("*abc", "xabc", true),
            ("*abc", "abcx", false),
            ("*", "x", true),
            ("*", "", false),
            // A leading `*` wins: `*abc*` is the suffix `abc*`.
            ("*abc*", "xabc*", true),
            ("*abc*", "xabcx", false),
            // A `*` in the middle is a literal character.
            ("a*b", "a*b", true),
            ("a*b", "axb", false),
            ("*/ns/*/sa/x", "td/ns/*/sa/x", true),
            ("*/ns/*/sa/x", "td/ns/prod/sa/x", false),
        ];
        for (pat, v, want) in cases {
            assert_eq!(StrMatch::compile(pat).matches(v), want, "{pat} vs {v}");
        }
        // Headers: `*` is Envoy's present_match, so an empty value is present.
        assert!(StrMatch::compile_header("*").matches(""));
        assert!(!StrMatch::compile_header("a*").matches(""));
    }

    // Istio: pilot/pkg/security/authz/model/generator.go, srcNamespaceGenerator: each `*` of a
    // namespace becomes `.*`.
    #[test]
    fn namespace_globs() {
        let cases = [
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxc", false),
            ("*", "", true),
            ("*-prod", "web-prod", true),
            ("team-*", "team-a", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "axcb", false),
            ("a*a", "a", false),
            ("prod", "prod", true),
            ("prod", "prod2", false),
        ];
        for (pat, v, want) in cases {
            assert_eq!(
                StrMatch::compile_namespace(pat).matches(v),
                want,
                "{pat} vs {v}"
            );
        }
        assert_eq!(StrMatch::compile_namespace("a*b*c").to_string(), "a*b*c");
    }

    #[test]
    fn paths() {
        assert!(PathMatch::compile("/foo/{*}").matches("/foo/bar?x=1"));
        assert!(PathMatch::compile("/foo/{**}").matches("/foo/?x=1"));
        assert!(PathMatch::compile("/a*b").matches("/a*b"));
        assert!(!PathMatch::compile("/a*b").matches("/axb"));
        assert_eq!(
            PathMatch::compile("/a/b/{*}/c").required_prefix(),
            StrMatch::Prefix("/a/b/".into())
        );
    }

    // Operation.hosts: "The match is case-insensitive".
    #[test]
    fn hosts() {
        assert!(HostMatch::compile("Example.COM").matches("example.com"));
        assert!(!HostMatch::compile("example.com").matches("example.com:8080"));
        assert!(HostMatch::compile("example.com:*").matches("EXAMPLE.com:8080"));
        assert!(!HostMatch::compile("example.com:80").matches("example.com:8080"));
        assert!(HostMatch::compile("*.example.com").matches("API.example.com"));
        assert!(!HostMatch::compile("example.com").matches("example.org"));
    }
}
