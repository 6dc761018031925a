//! Precompiled value matchers. Istio's string match forms ("Authorization Policy" reference,
//! section "Value matching"): exact, prefix `abc*`, suffix `*abc`, presence `*`; paths may
//! also be URI templates with `{*}` (one segment) and `{**}` (one or more trailing segments).

use std::net::IpAddr;

use ipnet::IpNet;

/// One Istio string value, compiled once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// `*`: any non-empty value.
    Present,
}

impl StrMatch {
    pub fn compile(v: &str) -> StrMatch {
        if v == "*" {
            StrMatch::Present
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.into())
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.into())
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
        }
    }
}

impl std::fmt::Display for StrMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StrMatch::Exact(e) => write!(f, "{e}"),
            StrMatch::Prefix(p) => write!(f, "{p}*"),
            StrMatch::Suffix(s) => write!(f, "*{s}"),
            StrMatch::Present => write!(f, "*"),
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
}

impl std::fmt::Display for HostMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Lit(Box<str>),
    One,
    Many,
}

/// One `paths` entry. Matched against the request path without its query string (Envoy's
/// `url_path`, which Istio uses for `paths`).
#[derive(Debug, Clone)]
pub enum PathMatch {
    Str(StrMatch),
    Template(Vec<Seg>),
}

impl std::fmt::Display for PathMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathMatch::Str(m) => m.fmt(f),
            PathMatch::Template(segs) => {
                for s in segs {
                    match s {
                        Seg::Lit(l) => write!(f, "/{l}")?,
                        Seg::One => write!(f, "/{{*}}")?,
                        Seg::Many => write!(f, "/{{**}}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Why a path template is invalid (used by validation).
pub fn template_error(v: &str) -> Option<&'static str> {
    if !v.contains('{') {
        return None;
    }
    if !is_template(v) {
        return None;
    }
    let segs: Vec<&str> = v.split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        if s.contains('{') || s.contains('}') {
            match *s {
                "{*}" => {}
                "{**}" if i + 1 == segs.len() => {}
                "{**}" => return Some("`{**}` must be the last segment of a path template"),
                _ => return Some("a template segment must be exactly `{*}` or `{**}`"),
            }
        } else if s.contains('*') {
            return Some("`*` wildcards cannot be combined with `{*}`/`{**}` templates");
        }
    }
    if !v.starts_with('/') {
        return Some("a path template must start with `/`");
    }
    None
}

fn is_template(v: &str) -> bool {
    v.contains("{*}") || v.contains("{**}")
}

impl PathMatch {
    pub fn compile(v: &str) -> PathMatch {
        if is_template(v) {
            let segs = v
                .split('/')
                .skip(1)
                .map(|s| match s {
                    "{*}" => Seg::One,
                    "{**}" => Seg::Many,
                    l => Seg::Lit(l.into()),
                })
                .collect();
            PathMatch::Template(segs)
        } else {
            PathMatch::Str(StrMatch::compile(v))
        }
    }

    /// A string matcher every path this one matches also satisfies: itself for plain values,
    /// the literal leading segments (as a prefix) for a template. Used to index rules.
    pub fn required_prefix(&self) -> StrMatch {
        match self {
            PathMatch::Str(m) => m.clone(),
            PathMatch::Template(segs) => {
                let mut p = String::from("/");
                for s in segs {
                    match s {
                        Seg::Lit(l) => {
                            p.push_str(l);
                            p.push('/');
                        }
                        _ => break,
                    }
                }
                StrMatch::Prefix(p.into())
            }
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        let path = url_path(path);
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(segs) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let parts: Vec<&str> = rest.split('/').collect();
                let mut i = 0;
                for seg in segs {
                    match seg {
                        Seg::Lit(l) => {
                            if parts.get(i) != Some(&&**l) {
                                return false;
                            }
                        }
                        Seg::One => {
                            if parts.get(i).is_none_or(|p| p.is_empty()) {
                                return false;
                            }
                        }
                        Seg::Many => {
                            // One or more segments, to the end; the first must be non-empty.
                            return parts.get(i).is_some_and(|p| !p.is_empty());
                        }
                    }
                    i += 1;
                }
                i == parts.len()
            }
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

/// Parses a protobuf-style duration (`1.5s`, `500ms`, `1m`, `1h30m`) into seconds.
pub fn parse_duration(v: &str) -> Option<f64> {
    let mut rest = v;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let (unit, scale) = [
            ("ms", 1e-3),
            ("us", 1e-6),
            ("ns", 1e-9),
            ("h", 3600.0),
            ("m", 60.0),
            ("s", 1.0),
        ]
        .into_iter()
        .find(|(u, _)| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        total += num * scale;
    }
    Some(total)
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

    // Authorization Policy reference, "Value matching": exact, prefix, suffix, presence.
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
        ];
        for (pat, v, want) in cases {
            assert_eq!(StrMatch::compile(pat).matches(v), want, "{pat} vs {v}");
        }
    }

    // Authorization Policy reference, Operation.paths: `{*}` one segment, `{**}` one or more
    // trailing segments.
    #[test]
    fn templates() {
        let cases = [
            ("/foo/{*}", "/foo/bar", true),
            ("/foo/{*}", "/foo/bar/baz", false),
            ("/foo/{*}", "/foo/", false),
            ("/foo/{*}/baz", "/foo/x/baz", true),
            ("/foo/{**}", "/foo/bar/baz", true),
            ("/foo/{**}", "/foo/bar", true),
            ("/foo/{**}", "/foo", false),
            ("/foo/{*}", "/foo/bar?x=1", true),
        ];
        for (pat, v, want) in cases {
            assert_eq!(PathMatch::compile(pat).matches(v), want, "{pat} vs {v}");
        }
        assert_eq!(
            PathMatch::compile("/a/b/{*}/c").required_prefix(),
            StrMatch::Prefix("/a/b/".into())
        );
        assert_eq!(
            PathMatch::compile("/{**}").required_prefix(),
            StrMatch::Prefix("/".into())
        );
        assert!(template_error("/a/{**}/b").is_some());
        assert_eq!(parse_duration("1m30s"), Some(90.0));
        assert_eq!(parse_duration("500ms"), Some(0.5));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5x"), None);
        assert!(template_error("/a/{*}x").is_some());
        assert!(template_error("/a/{*}/b*").is_some());
        assert!(template_error("/a/{*}/{**}").is_none());
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
