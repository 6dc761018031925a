//! Matching a request against compiled rules, and the explanation of every miss.

use std::net::IpAddr;

use crate::crd::Action;
use crate::request::{self, Request};

use super::model::*;

/// Request attributes a rule needs, resolved once per request.
pub struct Attrs<'r> {
    pub req: &'r Request,
    pub principal: Option<&'r str>,
    pub namespace: Option<&'r str>,
    /// `(namespace, service account)` of the peer.
    pub service_account: Option<(&'r str, &'r str)>,
    pub trust_domain: Option<&'r str>,
    pub path: Option<&'r str>,
}

impl<'r> Attrs<'r> {
    /// `drop_peer`: evaluate as if plaintext (the peer identity is not verified, e.g. DISABLE).
    pub fn new(req: &'r Request, drop_peer: bool) -> Self {
        // The principal is taken apart once here rather than by each accessor of `Request`.
        let principal = if drop_peer {
            None
        } else {
            req.peer_principal()
        };
        let namespace = principal.and_then(request::namespace_of);
        let service_account = principal.and_then(request::service_account_of);
        let trust_domain = principal.and_then(request::trust_domain_of);
        Attrs {
            req,
            principal,
            namespace,
            service_account,
            trust_domain,
            path: req.http.as_ref().map(|h| crate::matcher::url_path(&h.path)),
        }
    }
}

/// Why a rule did not match (built only when explaining).
pub type Miss = Option<String>;

fn miss(explain: bool, f: impl FnOnce() -> String) -> Result<(), Miss> {
    Err(explain.then(f))
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "(none)".to_string(), |s| format!("{s:?}"))
}

impl CompiledPolicy {
    /// Istio generates DENY, AUDIT and CUSTOM rules "wider" on TCP: their HTTP-only fields are
    /// dropped and the rule matches on the rest. Only ALLOW rules using them are skipped.
    pub fn widens_on_tcp(&self) -> bool {
        self.action != Action::Allow
    }
}

impl CompiledRule {
    /// Whether the rule matches. On TCP (`req.http` is None) with `deny_semantics` the
    /// HTTP-only fields are ignored; without it, a rule that uses any cannot match.
    pub fn check(&self, a: &Attrs, deny_semantics: bool, explain: bool) -> Result<(), Miss> {
        if self.dropped {
            return miss(explain, || {
                "dropped: the rule is invalid, so it matches nothing (fail-closed)".into()
            });
        }
        let tcp = a.req.http.is_none();
        if tcp && self.http_only && !deny_semantics {
            return miss(explain, || {
                "uses HTTP-only fields (requestPrincipals/hosts/methods/paths/request.*) on a TCP connection: an ALLOW rule cannot match".into()
            });
        }
        let skip_http = tcp && deny_semantics;
        if !self.from.is_empty() {
            let mut first = None;
            let hit =
                self.from
                    .iter()
                    .enumerate()
                    .any(|(i, s)| match s.check(a, skip_http, explain) {
                        Ok(()) => true,
                        Err(m) => {
                            if first.is_none() {
                                first = m.map(|m| format!("from[{i}].source.{m}"));
                            }
                            false
                        }
                    });
            if !hit {
                return Err(first);
            }
        }
        if !self.to.is_empty() {
            let mut first = None;
            let hit =
                self.to
                    .iter()
                    .enumerate()
                    .any(|(i, o)| match o.check(a, skip_http, explain) {
                        Ok(()) => true,
                        Err(m) => {
                            if first.is_none() {
                                first = m.map(|m| format!("to[{i}].operation.{m}"));
                            }
                            false
                        }
                    });
            if !hit {
                return Err(first);
            }
        }
        for (i, c) in self.when.iter().enumerate() {
            if skip_http && c.key.http_only() {
                continue;
            }
            c.check(a, explain)
                .map_err(|m| m.map(|m| format!("when[{i}] {m}")))?;
        }
        Ok(())
    }
}

/// Explains a failed positive/negative field check: which list the value failed and its entries.
fn explain_field<M: std::fmt::Display>(
    names: (&str, &str),
    what: &str,
    value: &str,
    pos: &[M],
    pos_ok: bool,
    neg: &[M],
) -> String {
    let join = |l: &[M]| {
        l.iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !pos_ok {
        format!("{}: {what} {value} is not one of [{}]", names.0, join(pos))
    } else {
        format!("{}: {what} {value} is excluded by [{}]", names.1, join(neg))
    }
}

fn explain_str(names: (&str, &str), what: &str, f: &StrField, v: Option<&str>) -> String {
    let pos_ok = f.pos.is_empty() || v.is_some_and(|v| f.pos.matches(v));
    explain_field(names, what, &show(v), &f.pos.0, pos_ok, &f.neg.0)
}

fn explain_ip(names: (&str, &str), what: &str, f: &IpField, v: Option<IpAddr>) -> String {
    let pos_ok = f.pos.is_empty() || v.is_some_and(|ip| f.pos.iter().any(|n| n.contains(&ip)));
    let shown = v.map_or("(none)".to_string(), |ip| ip.to_string());
    explain_field(names, what, &shown, &f.pos, pos_ok, &f.neg)
}

impl CSource {
    fn check(&self, a: &Attrs, skip_http: bool, explain: bool) -> Result<(), Miss> {
        let peer = a.principal;
        if self.principals.set() && !self.principals.check(peer) {
            return miss(explain, || {
                explain_str(
                    ("principals", "notPrincipals"),
                    "peer principal",
                    &self.principals,
                    peer,
                )
            });
        }
        if !skip_http && self.request_principals.set() {
            let auth = a.req.auth.as_ref();
            let (iss, sub) = auth.map_or((None, None), |x| x.issuer_subject());
            if !self.request_principals.check(iss, sub) {
                return miss(explain, || {
                    let f = &self.request_principals;
                    explain_field(
                        ("requestPrincipals", "notRequestPrincipals"),
                        "request principal",
                        &show(auth.map(|x| x.principal.as_str())),
                        &f.pos,
                        f.pos_ok(iss, sub),
                        &f.neg,
                    )
                });
            }
        }
        if self.namespaces.set() && !self.namespaces.check(a.namespace) {
            return miss(explain, || {
                explain_str(
                    ("namespaces", "notNamespaces"),
                    "source namespace",
                    &self.namespaces,
                    a.namespace,
                )
            });
        }
        if self.service_accounts.set() {
            let sa = a.service_account.map(|(n, s)| format!("{n}/{s}"));
            if !self.service_accounts.check(sa.as_deref()) {
                return miss(explain, || {
                    explain_str(
                        ("serviceAccounts", "notServiceAccounts"),
                        "source service account",
                        &self.service_accounts,
                        sa.as_deref(),
                    )
                });
            }
        }
        if self.trust_domains.set() && !self.trust_domains.check(a.trust_domain) {
            return miss(explain, || {
                explain_str(
                    ("trustDomains", "notTrustDomains"),
                    "source trust domain",
                    &self.trust_domains,
                    a.trust_domain,
                )
            });
        }
        if self.ip_blocks.set() && !self.ip_blocks.check(a.req.source.ip) {
            return miss(explain, || {
                explain_ip(
                    ("ipBlocks", "notIpBlocks"),
                    "source ip",
                    &self.ip_blocks,
                    a.req.source.ip,
                )
            });
        }
        if self.remote_ip_blocks.set() && !self.remote_ip_blocks.check(a.req.source.remote_ip) {
            return miss(explain, || {
                explain_ip(
                    ("remoteIpBlocks", "notRemoteIpBlocks"),
                    "remote ip",
                    &self.remote_ip_blocks,
                    a.req.source.remote_ip,
                )
            });
        }
        Ok(())
    }
}

fn list_check<M>(pos: &[M], neg: &[M], f: impl Fn(&M) -> bool) -> bool {
    (pos.is_empty() || pos.iter().any(&f)) && !neg.iter().any(f)
}

impl COperation {
    fn check(&self, a: &Attrs, skip_http: bool, explain: bool) -> Result<(), Miss> {
        let port = a.req.destination.port;
        if !list_check(&self.ports.0, &self.ports.1, |p| *p == port) {
            return miss(explain, || {
                let pos_ok = self.ports.0.is_empty() || self.ports.0.contains(&port);
                explain_field(
                    ("ports", "notPorts"),
                    "destination port",
                    &port.to_string(),
                    &self.ports.0,
                    pos_ok,
                    &self.ports.1,
                )
            });
        }
        if skip_http {
            return Ok(());
        }
        let http = a.req.http.as_ref();
        if !(self.hosts.0.is_empty() && self.hosts.1.is_empty()) {
            let host = http.map(|h| h.host.as_str());
            let ok = match host {
                Some(h) => list_check(&self.hosts.0, &self.hosts.1, |m| m.matches(h)),
                None => self.hosts.0.is_empty(),
            };
            if !ok {
                return miss(explain, || {
                    let pos_ok = self.hosts.0.is_empty()
                        || host.is_some_and(|h| self.hosts.0.iter().any(|m| m.matches(h)));
                    explain_field(
                        ("hosts", "notHosts"),
                        "host",
                        &show(host),
                        &self.hosts.0,
                        pos_ok,
                        &self.hosts.1,
                    )
                });
            }
        }
        if self.methods.set() {
            let m = http.map(|h| h.method.as_str());
            if !self.methods.check(m) {
                return miss(explain, || {
                    explain_str(("methods", "notMethods"), "method", &self.methods, m)
                });
            }
        }
        if !(self.paths.0.is_empty() && self.paths.1.is_empty()) {
            let ok = match a.path {
                Some(p) => list_check(&self.paths.0, &self.paths.1, |m| m.matches(p)),
                None => self.paths.0.is_empty(),
            };
            if !ok {
                return miss(explain, || {
                    let pos_ok = self.paths.0.is_empty()
                        || a.path
                            .is_some_and(|p| self.paths.0.iter().any(|m| m.matches(p)));
                    explain_field(
                        ("paths", "notPaths"),
                        "path",
                        &show(a.path),
                        &self.paths.0,
                        pos_ok,
                        &self.paths.1,
                    )
                });
            }
        }
        Ok(())
    }
}

/// The string values of one request attribute, without allocating: none, one, a list of
/// strings (audiences), a JSON claim array (only its string items can match) or a
/// space-delimited claim's words.
#[derive(Clone)]
pub(crate) enum Vals<'a> {
    One(Option<&'a str>),
    Strs(std::slice::Iter<'a, String>),
    Json(std::slice::Iter<'a, serde_json::Value>),
    Words(std::str::Split<'a, char>),
}

impl<'a> Iterator for Vals<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        match self {
            Vals::One(v) => v.take(),
            Vals::Strs(it) => it.next().map(String::as_str),
            Vals::Json(it) => it.find_map(|v| v.as_str()),
            Vals::Words(it) => it.find(|w| !w.is_empty()),
        }
    }
}

/// A JSON claim as the strings it can match: a string, or each string of an array. A
/// space-delimited claim's string is its words, as Envoy's `jwt_authn` puts it in the
/// metadata Istio's RBAC rules read (split on single spaces, empty words dropped; a string
/// with no word stays as it is).
fn claim_vals(v: Option<&serde_json::Value>, space_delimited: bool) -> Vals<'_> {
    match v {
        Some(serde_json::Value::String(s))
            if space_delimited && s.split(' ').any(|w| !w.is_empty()) =>
        {
            Vals::Words(s.split(' '))
        }
        Some(serde_json::Value::String(s)) => Vals::One(Some(s)),
        Some(serde_json::Value::Array(items)) => Vals::Json(items.iter()),
        _ => Vals::One(None),
    }
}

/// The string values a `when` key reads from the request, as [`CCondition::check`] matches
/// them (shared with the rule index, so both read the same values). `source.serviceAccount`
/// is built from two parts of the peer identity: its caller formats it (here: none).
pub(crate) fn key_values<'r>(key: &CondKey, a: &Attrs<'r>) -> Vals<'r> {
    let req = a.req;
    let auth = req.auth.as_ref();
    match key {
        CondKey::Header(n) => Vals::One(req.http.as_ref().and_then(|h| h.policy_header(n))),
        CondKey::SourceNamespace => Vals::One(a.namespace),
        CondKey::SourcePrincipal => Vals::One(a.principal),
        CondKey::AuthPrincipal => Vals::One(auth.map(|x| x.principal.as_str())),
        CondKey::AuthPresenter => {
            Vals::One(auth.map(|x| x.presenter.as_str()).filter(|p| !p.is_empty()))
        }
        CondKey::AuthAudiences => match auth {
            Some(x) => Vals::Strs(x.audiences.iter()),
            None => Vals::One(None),
        },
        CondKey::AuthClaims(path) => {
            let mut cur = auth.and_then(|x| x.claims.get(&path[0]));
            for p in &path[1..] {
                cur = cur.and_then(|v| v.get(p));
            }
            // Envoy splits top-level claims only.
            let split = path.len() == 1 && auth.is_some_and(|x| x.is_space_delimited(&path[0]));
            claim_vals(cur, split)
        }
        CondKey::SourceTrustDomain => Vals::One(a.trust_domain),
        CondKey::ConnectionSni => Vals::One(req.connection.sni.as_deref()),
        CondKey::SourceServiceAccount
        | CondKey::SourceIp
        | CondKey::RemoteIp
        | CondKey::DestinationIp
        | CondKey::DestinationPort => Vals::One(None),
    }
}

impl CCondition {
    fn check(&self, a: &Attrs, explain: bool) -> Result<(), Miss> {
        let req = a.req;
        let auth = req.auth.as_ref();
        let sa_buf: Option<String>;
        let vals: Vals = match &self.key {
            CondKey::SourceServiceAccount => {
                sa_buf = a.service_account.map(|(n, s)| format!("{n}/{s}"));
                Vals::One(sa_buf.as_deref())
            }
            k => key_values(k, a),
        };
        let ok = match &self.values {
            CondValues::Str(f) => {
                (f.pos.is_empty() || vals.clone().any(|v| f.pos.matches(v)))
                    && (f.neg.is_empty() || !vals.clone().any(|v| f.neg.matches(v)))
            }
            CondValues::Ip(f) => f.check(match self.key {
                CondKey::SourceIp => req.source.ip,
                CondKey::RemoteIp => req.source.remote_ip,
                _ => req.destination.ip,
            }),
            CondValues::Port(pos, neg) => {
                let p = req.destination.port;
                list_check(pos, neg, |x| *x == p)
            }
            CondValues::RequestPrincipal(f) => {
                let (iss, sub) = auth.map_or((None, None), |x| x.issuer_subject());
                f.check(iss, sub)
            }
        };
        if ok {
            Ok(())
        } else {
            miss(explain, || {
                let got = match &self.values {
                    CondValues::Str(_) | CondValues::RequestPrincipal(_) => {
                        let all: Vec<&str> = vals.clone().collect();
                        if all.is_empty() {
                            "(none)".to_string()
                        } else {
                            format!("{all:?}")
                        }
                    }
                    CondValues::Ip(_) => format!(
                        "{:?}",
                        match self.key {
                            CondKey::SourceIp => req.source.ip,
                            CondKey::RemoteIp => req.source.remote_ip,
                            _ => req.destination.ip,
                        }
                    ),
                    CondValues::Port(..) => req.destination.port.to_string(),
                };
                {
                    let j = |l: Vec<String>| l.join(", ");
                    let (pos, neg) = match &self.values {
                        CondValues::Str(f) => (
                            j(f.pos.0.iter().map(|m| m.to_string()).collect()),
                            j(f.neg.0.iter().map(|m| m.to_string()).collect()),
                        ),
                        CondValues::Ip(f) => (
                            j(f.pos.iter().map(|m| m.to_string()).collect()),
                            j(f.neg.iter().map(|m| m.to_string()).collect()),
                        ),
                        CondValues::Port(p, n) => (
                            j(p.iter().map(|m| m.to_string()).collect()),
                            j(n.iter().map(|m| m.to_string()).collect()),
                        ),
                        CondValues::RequestPrincipal(f) => (
                            j(f.pos.iter().map(|m| m.to_string()).collect()),
                            j(f.neg.iter().map(|m| m.to_string()).collect()),
                        ),
                    };
                    let mut want = Vec::new();
                    if !pos.is_empty() {
                        want.push(format!("values [{pos}]"));
                    }
                    if !neg.is_empty() {
                        want.push(format!("notValues [{neg}]"));
                    }
                    format!("{}: got {got}, need {}", self.raw_key, want.join(" and "))
                }
            })
        }
    }
}
