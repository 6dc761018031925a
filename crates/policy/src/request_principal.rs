//! `requestPrincipals` / `notRequestPrincipals` / `request.auth.principal` values.
//!
//! Istio does not match `<iss>/<sub>` as one string: `requestPrincipalGenerator`
//! (`pilot/pkg/security/authz/model/generator.go`) splits each value at its last `/` and
//! matches the token's `iss` and `sub` claims separately, with the wildcard applied to the
//! part it sits in. So `https://example.com/*` means "issuer exactly `https://example.com`,
//! any subject" and does not match issuer `https://example.com/tenant` — a plain prefix match
//! on the joined string would.

use crate::matcher::StrMatch;

/// One compiled request-principal value.
#[derive(Debug, Clone)]
pub struct RequestPrincipalMatch {
    raw: Box<str>,
    iss: StrMatch,
    sub: StrMatch,
}

impl RequestPrincipalMatch {
    pub fn compile(v: &str) -> RequestPrincipalMatch {
        // `*` on its own side means "non-empty" (Istio's `matchAny`, the regex `.+`).
        let any = || StrMatch::Present;
        let split = v.rfind('/').map(|i| (&v[..i], &v[i + 1..]));
        let (iss, sub) = if v == "*" {
            (any(), any())
        } else if let Some(rest) = v.strip_prefix('*') {
            match split {
                Some(("*", sub)) => (any(), StrMatch::Exact(sub.into())),
                Some((iss, sub)) => (
                    StrMatch::Suffix(iss[1..].into()),
                    StrMatch::Exact(sub.into()),
                ),
                None => (any(), StrMatch::Suffix(rest.into())),
            }
        } else if let Some(rest) = v.strip_suffix('*') {
            match split {
                Some((iss, "*")) => (StrMatch::Exact(iss.into()), any()),
                Some((iss, sub)) => (
                    StrMatch::Exact(iss.into()),
                    StrMatch::Prefix(sub[..sub.len() - 1].into()),
                ),
                None => (StrMatch::Prefix(rest.into()), any()),
            }
        } else {
            match split {
                Some((iss, sub)) => (StrMatch::Exact(iss.into()), StrMatch::Exact(sub.into())),
                None => (StrMatch::Exact(v.into()), StrMatch::Exact("".into())),
            }
        };
        RequestPrincipalMatch {
            raw: v.into(),
            iss,
            sub,
        }
    }

    /// What the token's `iss` claim must match (the rule index keys on it).
    pub fn issuer(&self) -> &StrMatch {
        &self.iss
    }

    /// Both claims must be there and match.
    pub fn matches(&self, iss: Option<&str>, sub: Option<&str>) -> bool {
        iss.is_some_and(|i| self.iss.matches(i)) && sub.is_some_and(|s| self.sub.matches(s))
    }
}

impl std::fmt::Display for RequestPrincipalMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A positive and a negative list of request-principal values.
#[derive(Debug, Clone, Default)]
pub struct RequestPrincipalField {
    pub pos: Vec<RequestPrincipalMatch>,
    pub neg: Vec<RequestPrincipalMatch>,
}

impl RequestPrincipalField {
    pub fn new(pos: &[String], neg: &[String]) -> Self {
        let compile = |vs: &[String]| {
            vs.iter()
                .map(|v| RequestPrincipalMatch::compile(v))
                .collect()
        };
        RequestPrincipalField {
            pos: compile(pos),
            neg: compile(neg),
        }
    }
    pub fn set(&self) -> bool {
        !self.pos.is_empty() || !self.neg.is_empty()
    }
    pub fn pos_ok(&self, iss: Option<&str>, sub: Option<&str>) -> bool {
        self.pos.is_empty() || self.pos.iter().any(|m| m.matches(iss, sub))
    }
    pub fn check(&self, iss: Option<&str>, sub: Option<&str>) -> bool {
        self.pos_ok(iss, sub) && !self.neg.iter().any(|m| m.matches(iss, sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Istio: pilot/pkg/security/authz/model/generator.go (requestPrincipalGenerator) and
    // generator_test.go.
    #[test]
    fn split_at_the_last_slash() {
        let m = |v: &str, iss: &str, sub: &str| {
            RequestPrincipalMatch::compile(v).matches(Some(iss), Some(sub))
        };
        let cases = [
            ("*", "https://a", "x", true),
            ("*", "https://a", "", false),
            ("https://a.com/*", "https://a.com", "x", true),
            ("https://a.com/*", "https://a.com/tenant", "x", false),
            ("https://a.com/us*", "https://a.com", "user", true),
            ("https://a.com/us*", "https://a.com/us", "x", false),
            ("*/alice", "https://a.com", "alice", true),
            ("*/alice", "https://a.com", "bob", false),
            ("*.com/alice", "https://a.com", "alice", true),
            ("*.com/alice", "https://a.org", "alice", false),
            ("*alice", "https://a.com", "malice", true),
            // Istio splits at the last `/` even inside the issuer's scheme.
            ("https://a*", "https://a.com", "x", false),
            ("issuer*", "issuer-x", "x", true),
            ("https://a.com/alice", "https://a.com", "alice", true),
            ("https://a.com/alice", "https://a.com/x", "alice", false),
            ("https://a*b.com/alice", "https://a*b.com", "alice", true),
            ("https://a*b.com/alice", "https://axb.com", "alice", false),
        ];
        for (v, iss, sub, want) in cases {
            assert_eq!(m(v, iss, sub), want, "{v} vs {iss} {sub}");
        }
        assert!(!RequestPrincipalMatch::compile("*").matches(Some("https://a"), None));
    }
}
