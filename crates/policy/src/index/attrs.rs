//! The request attributes the candidate filter keys on: which field or `when` key of a rule
//! constrains which attribute, with which keys, and the request's values for each.
//!
//! Both sides must read exactly what `CompiledRule::check` reads, or the filter could drop a
//! match: the values of `when` keys come from the same function `check` uses
//! ([`crate::authz::key_values`]); the others are the `Attrs` fields `check` reads. A field
//! the filter cannot read the same way is simply not used (the clause stays a candidate).

use std::net::IpAddr;

use ipnet::IpNet;

use super::keys::StrKey;
use crate::authz::{key_values, Attrs, CCondition, COperation, CSource, CondKey, CondValues};
use crate::authz::{IpField, StrField};
use crate::matcher::{PathMatch, StrMatch};
use crate::request_principal::RequestPrincipalField;

/// One request attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Attr {
    /// `principals`, `source.principal`.
    Principal,
    /// `namespaces`, `source.namespace`.
    Namespace,
    /// `serviceAccounts`, `source.serviceAccount`: `ns/sa`.
    ServiceAccount,
    /// `trustDomains`, `source.trustDomain`.
    TrustDomain,
    /// `ipBlocks`, `source.ip`.
    SourceIp,
    /// `remoteIpBlocks`, `remote.ip`.
    RemoteIp,
    /// `destination.ip`.
    DestinationIp,
    /// `ports`, `destination.port`.
    Port,
    /// `hosts`, compared ignoring ASCII case: keys and value are lower-cased.
    Host,
    Method,
    /// `paths`, matched without the query string.
    Path,
    /// The token's `iss` claim: `requestPrincipals` and `request.auth.principal` match it
    /// apart from `sub`, so a positive value is filed under its issuer part.
    Issuer,
    /// Any other `when` key read as strings: headers, claims, audiences, presenter, SNI.
    Cond(CondKey),
}

impl Attr {
    /// HTTP-only: DENY, CUSTOM and AUDIT rules ignore it on TCP (and an ALLOW rule using it
    /// cannot match there), so on TCP the filter does not use it.
    pub(super) fn http_only(&self) -> bool {
        match self {
            Attr::Host | Attr::Method | Attr::Path | Attr::Issuer => true,
            Attr::Cond(k) => k.http_only(),
            _ => false,
        }
    }

    /// The attribute a `when` key reads, if the filter can read it the same way.
    fn of_condition(c: &CCondition) -> Option<Attr> {
        let a = match (&c.key, &c.values) {
            (CondKey::SourceIp, CondValues::Ip(_)) => Attr::SourceIp,
            (CondKey::RemoteIp, CondValues::Ip(_)) => Attr::RemoteIp,
            (CondKey::DestinationIp, CondValues::Ip(_)) => Attr::DestinationIp,
            (_, CondValues::Ip(_)) => return None,
            (CondKey::DestinationPort, CondValues::Port(..)) => Attr::Port,
            (_, CondValues::Port(..)) => return None,
            (CondKey::AuthPrincipal, CondValues::RequestPrincipal(_)) => Attr::Issuer,
            (_, CondValues::RequestPrincipal(_)) => return None,
            (CondKey::SourcePrincipal, _) => Attr::Principal,
            (CondKey::SourceNamespace, _) => Attr::Namespace,
            (CondKey::SourceServiceAccount, _) => Attr::ServiceAccount,
            (CondKey::SourceTrustDomain, _) => Attr::TrustDomain,
            (
                CondKey::Header(_)
                | CondKey::AuthAudiences
                | CondKey::AuthPresenter
                | CondKey::AuthClaims(_)
                | CondKey::ConnectionSni,
                _,
            ) => Attr::Cond(c.key.clone()),
            _ => return None,
        };
        // `check` skips a condition on TCP exactly when its key is HTTP-only.
        (a.http_only() == c.key.http_only()).then_some(a)
    }
}

/// Keys of one field: the request value must match one of `pos` (when `pos` is `Some`),
/// and a value matching one of `neg` excludes the clause.
#[derive(Debug, Clone)]
pub(super) enum Keys {
    Str {
        pos: Option<Vec<StrKey>>,
        neg: Vec<StrKey>,
    },
    Ip {
        pos: Option<Vec<IpNet>>,
        neg: Vec<IpNet>,
    },
    Port {
        pos: Option<Vec<u16>>,
        neg: Vec<u16>,
    },
}

/// One field of a clause: the attribute it constrains and its keys.
pub(super) type Constraint = (Attr, Keys);

fn some_if<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn str_keys(ms: &[StrMatch], neg: &[StrMatch], lower: bool) -> Keys {
    let fix = |k: StrKey| if lower { k.lowercase() } else { k };
    Keys::Str {
        pos: some_if(ms.iter().map(|m| fix(StrKey::covering(m))).collect()),
        neg: neg.iter().filter_map(StrKey::exact).map(fix).collect(),
    }
}

fn str_field(out: &mut Vec<Constraint>, attr: Attr, f: &StrField) {
    if !(f.pos.is_empty() && f.neg.is_empty()) {
        out.push((attr, str_keys(&f.pos.0, &f.neg.0, false)));
    }
}

fn ip_field(out: &mut Vec<Constraint>, attr: Attr, f: &IpField) {
    if !(f.pos.is_empty() && f.neg.is_empty()) {
        out.push((
            attr,
            Keys::Ip {
                pos: some_if(f.pos.clone()),
                neg: f.neg.clone(),
            },
        ));
    }
}

fn ports(out: &mut Vec<Constraint>, pos: &[u16], neg: &[u16]) {
    if !pos.is_empty() || !neg.is_empty() {
        out.push((
            Attr::Port,
            Keys::Port {
                pos: some_if(pos.to_vec()),
                neg: neg.to_vec(),
            },
        ));
    }
}

/// A request principal matches only when its issuer matches the value's issuer part; an
/// exclusion needs the subject too, so negative values are left to `check`.
fn request_principals(out: &mut Vec<Constraint>, f: &RequestPrincipalField) {
    if !f.pos.is_empty() {
        let pos = f.pos.iter().map(|m| StrKey::covering(m.issuer())).collect();
        out.push((
            Attr::Issuer,
            Keys::Str {
                pos: Some(pos),
                neg: Vec::new(),
            },
        ));
    }
}

/// The constraints of one clause: a `from` entry (or none), a `to` entry (or none) and the
/// rule's `when` conditions, which all must hold.
pub(super) fn constraints(
    from: Option<&CSource>,
    to: Option<&COperation>,
    when: &[CCondition],
    out: &mut Vec<Constraint>,
) {
    if let Some(s) = from {
        str_field(out, Attr::Principal, &s.principals);
        request_principals(out, &s.request_principals);
        str_field(out, Attr::Namespace, &s.namespaces);
        str_field(out, Attr::ServiceAccount, &s.service_accounts);
        str_field(out, Attr::TrustDomain, &s.trust_domains);
        ip_field(out, Attr::SourceIp, &s.ip_blocks);
        ip_field(out, Attr::RemoteIp, &s.remote_ip_blocks);
    }
    if let Some(o) = to {
        ports(out, &o.ports.0, &o.ports.1);
        if !(o.hosts.0.is_empty() && o.hosts.1.is_empty()) {
            let pos: Vec<StrMatch> = o.hosts.0.iter().map(|h| h.value().clone()).collect();
            let neg: Vec<StrMatch> = o.hosts.1.iter().map(|h| h.value().clone()).collect();
            out.push((Attr::Host, str_keys(&pos, &neg, true)));
        }
        str_field(out, Attr::Method, &o.methods);
        if !(o.paths.0.is_empty() && o.paths.1.is_empty()) {
            let pos = o
                .paths
                .0
                .iter()
                .map(|p| StrKey::covering(&p.required_prefix()));
            let neg = o.paths.1.iter().filter_map(|p| match p {
                PathMatch::Str(m) => StrKey::exact(m),
                PathMatch::Template(_) => None,
            });
            out.push((
                Attr::Path,
                Keys::Str {
                    pos: some_if(pos.collect()),
                    neg: neg.collect(),
                },
            ));
        }
    }
    for c in when {
        let Some(attr) = Attr::of_condition(c) else {
            continue;
        };
        match &c.values {
            CondValues::Str(f) => str_field(out, attr, f),
            CondValues::Ip(f) => ip_field(out, attr, f),
            CondValues::Port(pos, neg) => ports(out, pos, neg),
            CondValues::RequestPrincipal(f) => request_principals(out, f),
        }
    }
}

/// Writes `a`, `sep`, `b` into `buf` (or `heap` when too long) and returns it.
fn joined<'b>(
    a: &str,
    sep: &str,
    b: &str,
    buf: &'b mut [u8; 256],
    heap: &'b mut String,
) -> &'b str {
    let n = a.len() + sep.len() + b.len();
    if n > buf.len() {
        *heap = format!("{a}{sep}{b}");
        return heap;
    }
    buf[..a.len()].copy_from_slice(a.as_bytes());
    buf[a.len()..a.len() + sep.len()].copy_from_slice(sep.as_bytes());
    buf[a.len() + sep.len()..n].copy_from_slice(b.as_bytes());
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// `s` with ASCII letters lower-cased, in `buf` when it fits.
fn lowered<'b>(s: &'b str, buf: &'b mut [u8; 256], heap: &'b mut String) -> &'b str {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return s;
    }
    if s.len() > buf.len() {
        *heap = s.to_ascii_lowercase();
        return heap;
    }
    let out = &mut buf[..s.len()];
    out.copy_from_slice(s.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).unwrap_or_default()
}

/// Calls `f` with each string value of `attr` in the request (none when it is absent).
pub(super) fn for_each_str(attr: &Attr, a: &Attrs, mut f: impl FnMut(&str)) {
    let http = a.req.http.as_ref();
    let one = match attr {
        Attr::Principal => a.principal,
        Attr::Namespace => a.namespace,
        Attr::TrustDomain => a.trust_domain,
        Attr::Method => http.map(|h| h.method.as_str()),
        Attr::Path => a.path,
        Attr::Issuer => a.req.auth.as_ref().and_then(|x| x.issuer_subject().0),
        Attr::Cond(k) => {
            key_values(k, a).for_each(f);
            return;
        }
        // Built values: only these need a buffer.
        Attr::ServiceAccount => {
            if let Some((n, s)) = a.service_account {
                let (mut buf, mut heap) = ([0u8; 256], String::new());
                f(joined(n, "/", s, &mut buf, &mut heap));
            }
            return;
        }
        Attr::Host => {
            if let Some(h) = http {
                let (mut buf, mut heap) = ([0u8; 256], String::new());
                f(lowered(&h.host, &mut buf, &mut heap));
            }
            return;
        }
        Attr::SourceIp | Attr::RemoteIp | Attr::DestinationIp | Attr::Port => None,
    };
    if let Some(v) = one {
        f(v);
    }
}

/// The request's address for an address attribute.
pub(super) fn ip(attr: &Attr, a: &Attrs) -> Option<IpAddr> {
    match attr {
        Attr::SourceIp => a.req.source.ip,
        Attr::RemoteIp => a.req.source.remote_ip,
        Attr::DestinationIp => a.req.destination.ip,
        _ => None,
    }
}
