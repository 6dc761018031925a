//! The compiled form of an AuthorizationPolicy: what evaluation reads.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::crd::Action;
use crate::matcher::{AnyOf, HostMatch, PathMatch, StrMatch};
use crate::problem::Location;
use crate::request_principal::RequestPrincipalField;

/// An AuthorizationPolicy ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// `namespace/name`.
    pub name: String,
    pub namespace: String,
    /// `None` (or empty) selects every workload in scope.
    pub selector: Option<Vec<(String, String)>>,
    pub action: Action,
    pub provider: Option<String>,
    pub dry_run: bool,
    /// Policies with `targetRef(s)` attach to gateways/waypoints, never to sidecars.
    pub targets_ref: bool,
    /// Where the policy was defined (for problems found across policies).
    pub location: Location,
    /// CUSTOM with an `envoyExtAuthzHttp` provider: Istio does not apply it to TCP traffic.
    pub http_provider_only: bool,
    pub rules: Vec<CompiledRule>,
    /// Set when the policy is invalid and enforced fail-closed: why, and what is done instead.
    pub fail_closed: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CompiledRule {
    pub from: Vec<CSource>,
    pub to: Vec<COperation>,
    pub when: Vec<CCondition>,
    /// Uses a field that only exists for HTTP (Istio: an ALLOW rule with one cannot match TCP
    /// traffic; for DENY the field is ignored so the rule matches on the rest).
    pub http_only: bool,
    /// An invalid ALLOW rule, dropped as Istio's builder drops it: it never matches.
    pub dropped: bool,
}

#[derive(Debug, Clone, Default)]
pub struct StrField {
    pub pos: AnyOf,
    pub neg: AnyOf,
}

impl StrField {
    pub(super) fn new(pos: &[String], neg: &[String]) -> Self {
        StrField {
            pos: AnyOf::compile(pos),
            neg: AnyOf::compile(neg),
        }
    }
    pub(super) fn with(pos: &[String], neg: &[String], f: fn(&str) -> StrMatch) -> Self {
        StrField {
            pos: AnyOf::compile_with(pos, f),
            neg: AnyOf::compile_with(neg, f),
        }
    }
    pub(super) fn set(&self) -> bool {
        !self.pos.is_empty() || !self.neg.is_empty()
    }
    #[inline]
    pub(super) fn check(&self, v: Option<&str>) -> bool {
        (self.pos.is_empty() || v.is_some_and(|v| self.pos.matches(v)))
            && (self.neg.is_empty() || !v.is_some_and(|v| self.neg.matches(v)))
    }
}

#[derive(Debug, Clone, Default)]
pub struct IpField {
    pub pos: Vec<IpNet>,
    pub neg: Vec<IpNet>,
}

impl IpField {
    pub(super) fn set(&self) -> bool {
        !self.pos.is_empty() || !self.neg.is_empty()
    }
    pub(super) fn check(&self, v: Option<IpAddr>) -> bool {
        let hit = |l: &[IpNet]| v.is_some_and(|ip| l.iter().any(|n| n.contains(&ip)));
        (self.pos.is_empty() || hit(&self.pos)) && (self.neg.is_empty() || !hit(&self.neg))
    }
}

#[derive(Debug, Clone, Default)]
pub struct CSource {
    pub principals: StrField,
    pub request_principals: RequestPrincipalField,
    pub namespaces: StrField,
    pub service_accounts: StrField,
    pub trust_domains: StrField,
    pub ip_blocks: IpField,
    pub remote_ip_blocks: IpField,
}

#[derive(Debug, Clone, Default)]
pub struct COperation {
    pub hosts: (Vec<HostMatch>, Vec<HostMatch>),
    pub ports: (Vec<u16>, Vec<u16>),
    pub methods: StrField,
    pub paths: (Vec<PathMatch>, Vec<PathMatch>),
}

/// A `when` key, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CondKey {
    Header(String),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    /// `source.serviceAccount`: `ns/sa` of the peer.
    SourceServiceAccount,
    /// `source.trustDomain`: the trust domain of the peer's identity.
    SourceTrustDomain,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaims(Vec<String>),
    DestinationIp,
    DestinationPort,
    ConnectionSni,
}

impl CondKey {
    /// Parses a condition key ("Authorization Policy Conditions" reference).
    pub fn parse(key: &str) -> Result<CondKey, String> {
        let fixed = match key {
            "source.ip" => Some(CondKey::SourceIp),
            "remote.ip" => Some(CondKey::RemoteIp),
            "source.namespace" => Some(CondKey::SourceNamespace),
            "source.principal" => Some(CondKey::SourcePrincipal),
            "source.serviceAccount" => Some(CondKey::SourceServiceAccount),
            "source.trustDomain" => Some(CondKey::SourceTrustDomain),
            "request.auth.principal" => Some(CondKey::AuthPrincipal),
            "request.auth.audiences" => Some(CondKey::AuthAudiences),
            "request.auth.presenter" => Some(CondKey::AuthPresenter),
            "destination.ip" => Some(CondKey::DestinationIp),
            "destination.port" => Some(CondKey::DestinationPort),
            "connection.sni" => Some(CondKey::ConnectionSni),
            _ => None,
        };
        if let Some(k) = fixed {
            return Ok(k);
        }
        if let Some(rest) = key.strip_prefix("request.headers[") {
            let name = rest
                .strip_suffix(']')
                .filter(|n| !n.is_empty() && !n.contains(['[', ']']));
            return name
                .map(|n| CondKey::Header(n.to_ascii_lowercase()))
                .ok_or_else(|| "expected request.headers[<header-name>]".to_string());
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims") {
            let mut names = Vec::new();
            let mut r = rest;
            while let Some(s) = r.strip_prefix('[') {
                let end = s.find(']').ok_or("unclosed `[` in claim name")?;
                if end == 0 {
                    return Err("empty claim name".into());
                }
                names.push(s[..end].to_string());
                r = &s[end + 1..];
            }
            if names.is_empty() || !r.is_empty() {
                return Err("expected request.auth.claims[<name>] or nested [<a>][<b>]".into());
            }
            return Ok(CondKey::AuthClaims(names));
        }
        Err(format!("unknown condition key {key:?}"))
    }

    /// Whether evaluating it needs the request's real headers copied into the request:
    /// pseudo-headers are built from the request line and `host` is never found.
    pub fn reads_request_headers(&self) -> bool {
        match self {
            CondKey::Header(n) => {
                n != "host" && !crate::request::SYNTHESIZED_HEADERS.contains(&n.as_str())
            }
            _ => false,
        }
    }

    pub fn http_only(&self) -> bool {
        matches!(
            self,
            CondKey::Header(_)
                | CondKey::AuthPrincipal
                | CondKey::AuthAudiences
                | CondKey::AuthPresenter
                | CondKey::AuthClaims(_)
        )
    }
}

#[derive(Debug, Clone)]
pub enum CondValues {
    Str(StrField),
    /// `request.auth.principal`: issuer and subject matched apart.
    RequestPrincipal(RequestPrincipalField),
    Ip(IpField),
    Port(Vec<u16>, Vec<u16>),
}

#[derive(Debug, Clone)]
pub struct CCondition {
    pub key: CondKey,
    pub raw_key: String,
    pub values: CondValues,
}

pub const SUPPORTED_KEYS: &str =
    "request.headers[<name>], source.ip, remote.ip, source.namespace, \
source.principal, source.serviceAccount, source.trustDomain, request.auth.principal, request.auth.audiences, request.auth.presenter, \
request.auth.claims[<name>], destination.ip, destination.port, connection.sni";
