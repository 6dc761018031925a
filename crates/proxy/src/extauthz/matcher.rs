//! The header-name lists of an `envoyExtAuthzHttp` provider (`includeRequestHeadersInCheck`,
//! `headersToUpstreamOnAllow`, `headersToDownstreamOnAllow`, `headersToDownstreamOnDeny`) as
//! Istio turns them into Envoy string matchers: case-insensitive; `x-*` a prefix match, `*-id`
//! a suffix match, anything else exact; a lone `*` is refused, as Istio's builder refuses it
//! (it would forward every header, which Istio wants spelled as a prefix or suffix).

/// One matcher; names are compared lower-cased (HTTP header names are case-insensitive and
/// `hyper` stores them lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

/// A list of header-name matchers; a name matches when any matcher does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderNames(Vec<Pattern>);

impl HeaderNames {
    /// Istio's list; `Err` names the offending entry in a sentence.
    pub fn parse(list: &[String]) -> Result<HeaderNames, String> {
        let mut out = Vec::with_capacity(list.len());
        for entry in list {
            let entry = entry.trim().to_ascii_lowercase();
            let pattern = if entry.is_empty() {
                return Err("an empty header name is not a matcher".into());
            } else if entry == "*" {
                return Err(
                    "a lone \"*\" is not supported; write a prefix (\"x-*\") or suffix (\"*-id\") match"
                        .into(),
                );
            } else if let Some(suffix) = entry.strip_prefix('*') {
                Pattern::Suffix(suffix.to_string())
            } else if let Some(prefix) = entry.strip_suffix('*') {
                Pattern::Prefix(prefix.to_string())
            } else {
                Pattern::Exact(entry)
            };
            out.push(pattern);
        }
        Ok(HeaderNames(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `name` (any case) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.0.iter().any(|p| match p {
            Pattern::Exact(e) => name == *e,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Suffix(s) => name.ends_with(s.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> HeaderNames {
        HeaderNames::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_prefix_suffix_ignore_case() {
        let n = names(&["X-User", "x-ext-*", "*-ID"]);
        assert!(n.matches("x-user"));
        assert!(n.matches("X-USER"));
        assert!(!n.matches("x-user-2"));
        assert!(n.matches("x-ext-authz"));
        assert!(n.matches("request-id"));
        assert!(!n.matches("cookie"));
        assert!(!names(&[]).matches("x-user"));
    }

    #[test]
    fn lone_wildcard_and_empty_are_refused() {
        assert!(HeaderNames::parse(&["*".into()]).is_err());
        assert!(HeaderNames::parse(&[" ".into()]).is_err());
    }
}
