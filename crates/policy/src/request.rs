//! The request being authorized: the JSON shape of `trustmesh authz check --request`.
//!
//! `source.principal` absent means a plaintext peer, `http` absent means a TCP connection,
//! `auth` absent means no valid JWT was presented. `http.path` is the path policy sees, query
//! included; `paths` match it without the query, `:path` conditions read it as given.
//! `auth.spaceDelimitedClaims` lists the accepting jwtRule's extra space-delimited claims.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Request {
    pub destination: Destination,
    #[serde(default)]
    pub source: SourcePeer,
    #[serde(default)]
    pub connection: Connection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub port: u16,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourcePeer {
    /// Full SPIFFE ID of the verified peer certificate (`spiffe://td/ns/x/sa/y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Direct peer address (`source.ip`, `ipBlocks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Original client address, e.g. from X-Forwarded-For (`remote.ip`, `remoteIpBlocks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Connection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Http {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub host: String,
    /// Header names are matched case-insensitively (HTTP semantics); store them lower-case for
    /// the fastest lookup, though any case is accepted.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The pseudo-headers Envoy's RBAC filter sees that are built from the request line rather
/// than read from `headers`.
pub const SYNTHESIZED_HEADERS: [&str; 3] = [":method", ":path", ":authority"];

impl Http {
    /// A header as Istio's `request.headers[<name>]` reads it (Envoy's header map; `name` in
    /// lower case): `:method`, `:path` (with its query string, as Envoy's `:path` has it) and
    /// `:authority` come from `method`, `path` and `host`; `host` is never found, because
    /// Envoy keeps an HTTP/1 `Host` header as `:authority` (Envoy's route `HeaderMatcher`
    /// documentation says to match `:authority` instead); any other name is looked up in
    /// `headers`.
    pub fn policy_header(&self, name: &str) -> Option<&str> {
        match name {
            ":method" => Some(&self.method),
            ":path" => Some(&self.path),
            ":authority" => Some(self.host.as_str()).filter(|h| !h.is_empty()),
            "host" => None,
            _ => self.header(name),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.headers.get(name) {
            return Some(v);
        }
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The verified JWT (`request.auth.*`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Auth {
    /// `iss/sub`.
    pub principal: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub presenter: String,
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Extra top-level claims whose string value is a space-separated list (`jwtRules[].
    /// spaceDelimitedClaims` of the rule that accepted the token); `scope` and `permission`
    /// always are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

/// Claims Istio always treats as space-delimited (`buildSpaceDelimitedClaims` in
/// `pilot/pkg/security/authn/policy_applier.go`).
pub const DEFAULT_SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];

impl Auth {
    /// The token's `iss` and `sub` claims, which request principals are matched against;
    /// either missing from `claims` is taken from `principal` split at its last `/`.
    pub fn issuer_subject(&self) -> (Option<&str>, Option<&str>) {
        let claim = |k: &str| self.claims.get(k).and_then(serde_json::Value::as_str);
        let split = self.principal.rsplit_once('/');
        (
            claim("iss").or(split.map(|(i, _)| i)),
            claim("sub").or(split.map(|(_, s)| s)),
        )
    }

    /// Whether top-level claim `name` is matched value by value after splitting on spaces.
    pub fn is_space_delimited(&self, name: &str) -> bool {
        DEFAULT_SPACE_DELIMITED_CLAIMS.contains(&name)
            || self.space_delimited_claims.iter().any(|c| c == name)
    }
}

impl Request {
    /// The peer principal without the `spiffe://` prefix, the form policies are written in.
    pub fn peer_principal(&self) -> Option<&str> {
        self.source
            .principal
            .as_deref()
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p))
    }

    /// The peer's namespace, from the Istio identity form `td/ns/<ns>/sa/<sa>`.
    pub fn source_namespace(&self) -> Option<&str> {
        namespace_of(self.peer_principal()?)
    }

    /// The trust domain of the peer (`source.trustDomain`): the principal up to its first `/`.
    pub fn source_trust_domain(&self) -> Option<&str> {
        trust_domain_of(self.peer_principal()?)
    }

    /// `ns/sa` for `serviceAccounts`.
    pub fn source_service_account(&self) -> Option<(&str, &str)> {
        service_account_of(self.peer_principal()?)
    }
}

/// Where the namespace starts in a principal: just after its first `/ns/`. Found by looking
/// only where a `/` is, which costs a fraction of a general substring search's set-up; every
/// request's policy evaluation asks it (`authz::eval::Attrs`).
fn after_ns(p: &str) -> Option<usize> {
    let b = p.as_bytes();
    (0..b.len())
        .filter(|&i| b[i] == b'/')
        .find(|&i| b[i..].starts_with(b"/ns/"))
        .map(|i| i + 4)
}

/// The namespace of a principal (without `spiffe://`) of the form `td/ns/<ns>/sa/<sa>`.
pub(crate) fn namespace_of(p: &str) -> Option<&str> {
    let rest = &p[after_ns(p)?..];
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The trust domain of a principal (without `spiffe://`): up to its first `/`.
pub(crate) fn trust_domain_of(p: &str) -> Option<&str> {
    p.split_once('/').map(|(td, _)| td)
}

/// `(ns, sa)` of a principal (without `spiffe://`) of the form `td/ns/<ns>/sa/<sa>`.
pub(crate) fn service_account_of(p: &str) -> Option<(&str, &str)> {
    let mut it = p[after_ns(p)?..].split('/');
    let ns = it.next()?;
    (it.next()? == "sa").then_some(())?;
    Some((ns, it.next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A principal, then its namespace, service account and trust domain.
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Option<(&'a str, &'a str)>,
        Option<&'a str>,
    );

    #[test]
    fn principal_parts_as_the_first_ns_segment_gives_them() {
        let cases: &[Case] = &[
            ("td/ns/a/sa/b", Some("a"), Some(("a", "b")), Some("td")),
            ("td/x/ns/a/sa/b", Some("a"), Some(("a", "b")), Some("td")),
            // The first `/ns/` wins, even where a later one would make a service account.
            ("td/ns/a/ns/b/sa/c", Some("a"), None, Some("td")),
            (
                "td/nss/a/ns/b/sa/c",
                Some("b"),
                Some(("b", "c")),
                Some("td"),
            ),
            ("td/ns//sa/b", Some(""), Some(("", "b")), Some("td")),
            ("td/ns/", Some(""), None, Some("td")),
            ("td/ns/a", Some("a"), None, Some("td")),
            ("td/ns/a/sa", Some("a"), None, Some("td")),
            ("/ns/a/sa/b", Some("a"), Some(("a", "b")), Some("")),
            ("tdns/a/sa/b", None, None, Some("tdns")),
            ("td/n/s/a", None, None, Some("td")),
            ("td", None, None, None),
            ("", None, None, None),
            ("td/ñs/ns/é/sa/ü", Some("é"), Some(("é", "ü")), Some("td")),
        ];
        for (p, ns, sa, td) in cases {
            assert_eq!(namespace_of(p), *ns, "namespace of {p:?}");
            assert_eq!(service_account_of(p), *sa, "service account of {p:?}");
            assert_eq!(trust_domain_of(p), *td, "trust domain of {p:?}");
            // The same answer as a general substring search for `/ns/`.
            let by_find = p.find("/ns/").map(|i| &p[i + 4..]);
            assert_eq!(
                namespace_of(p),
                by_find.map(|r| r.split('/').next().unwrap_or(r)),
                "{p:?}"
            );
        }
    }
}
