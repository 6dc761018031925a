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
use crate::matcher::{HostMatch, PathMatch, StrMatch};
use crate::request_principal::RequestPrincipalMatch;

/// One request attribute: a fixed one, or a `when` key read as strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Attr {
    Fixed(Fixed),
    /// Headers, claims, audiences, presenter, SNI.
    Cond(CondKey),
}

/// The same, borrowed from a rule, to find its entry without cloning a `when` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum AttrRef<'a> {
    Fixed(Fixed),
    Cond(&'a CondKey),
}

/// How many [`Fixed`] attributes there are.
pub(super) const FIXED: usize = Fixed::Issuer as usize + 1;

/// The attributes read from fixed places of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Fixed {
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
}

impl Attr {
    pub(super) fn as_ref(&self) -> AttrRef<'_> {
        match self {
            Attr::Fixed(f) => AttrRef::Fixed(*f),
            Attr::Cond(k) => AttrRef::Cond(k),
        }
    }
}

impl AttrRef<'_> {
    pub(super) fn to_owned(self) -> Attr {
        match self {
            AttrRef::Fixed(f) => Attr::Fixed(f),
            AttrRef::Cond(k) => Attr::Cond(k.clone()),
        }
    }

    /// HTTP-only: DENY, CUSTOM and AUDIT rules ignore it on TCP (and an ALLOW rule using it
    /// cannot match there), so on TCP the filter does not use it.
    pub(super) fn http_only(self) -> bool {
        match self {
            AttrRef::Fixed(Fixed::Host | Fixed::Method | Fixed::Path | Fixed::Issuer) => true,
            AttrRef::Cond(k) => k.http_only(),
            AttrRef::Fixed(_) => false,
        }
    }

    /// The attribute a `when` key reads, if the filter can read it the same way.
    fn of_condition(c: &CCondition) -> Option<AttrRef<'_>> {
        let f = match (&c.key, &c.values) {
            (CondKey::SourceIp, CondValues::Ip(_)) => Fixed::SourceIp,
            (CondKey::RemoteIp, CondValues::Ip(_)) => Fixed::RemoteIp,
            (CondKey::DestinationIp, CondValues::Ip(_)) => Fixed::DestinationIp,
            (_, CondValues::Ip(_)) => return None,
            (CondKey::DestinationPort, CondValues::Port(..)) => Fixed::Port,
            (_, CondValues::Port(..)) => return None,
            (CondKey::AuthPrincipal, CondValues::RequestPrincipal(_)) => Fixed::Issuer,
            (_, CondValues::RequestPrincipal(_)) => return None,
            (CondKey::SourcePrincipal, _) => Fixed::Principal,
            (CondKey::SourceNamespace, _) => Fixed::Namespace,
            (CondKey::SourceServiceAccount, _) => Fixed::ServiceAccount,
            (CondKey::SourceTrustDomain, _) => Fixed::TrustDomain,
            (
                CondKey::Header(_)
                | CondKey::AuthAudiences
                | CondKey::AuthPresenter
                | CondKey::AuthClaims(_)
                | CondKey::ConnectionSni,
                _,
            ) => return Some(AttrRef::Cond(&c.key)),
            _ => return None,
        };
        let a = AttrRef::Fixed(f);
        // `check` skips a condition on TCP exactly when its key is HTTP-only.
        (a.http_only() == c.key.http_only()).then_some(a)
    }
}

/// One field of a clause, borrowed from the rule: the request value must match one of
/// `pos` (when not empty), and a value matching one of `neg` excludes the clause.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field<'a> {
    Str {
        pos: &'a [StrMatch],
        neg: &'a [StrMatch],
    },
    /// Compared ignoring ASCII case.
    Hosts {
        pos: &'a [HostMatch],
        neg: &'a [HostMatch],
    },
    Paths {
        pos: &'a [PathMatch],
        neg: &'a [PathMatch],
    },
    /// Positive request principals, keyed by their issuer part: an exclusion needs the
    /// subject too, so negative values are left to `check`.
    Issuers(&'a [RequestPrincipalMatch]),
    Ip {
        pos: &'a [IpNet],
        neg: &'a [IpNet],
    },
    Port {
        pos: &'a [u16],
        neg: &'a [u16],
    },
}

impl<'a> Field<'a> {
    pub(super) fn has_pos(&self) -> bool {
        match self {
            Field::Str { pos, .. } => !pos.is_empty(),
            Field::Hosts { pos, .. } => !pos.is_empty(),
            Field::Paths { pos, .. } => !pos.is_empty(),
            Field::Issuers(pos) => !pos.is_empty(),
            Field::Ip { pos, .. } => !pos.is_empty(),
            Field::Port { pos, .. } => !pos.is_empty(),
        }
    }

    /// Calls `f` with a key covering each positive value (string fields).
    pub(super) fn pos_keys(&self, mut f: impl FnMut(StrKey<'a>)) {
        match *self {
            Field::Str { pos, .. } => pos.iter().for_each(|m| f(StrKey::covering(m))),
            Field::Hosts { pos, .. } => pos
                .iter()
                .for_each(|m| f(StrKey::covering(m.value()).lowercase())),
            Field::Paths { pos, .. } => pos.iter().for_each(|p| match p {
                PathMatch::Str(m) => f(StrKey::covering(m)),
                PathMatch::Template(t) => f(StrKey::Prefix(t.literal_prefix().into())),
            }),
            Field::Issuers(pos) => pos.iter().for_each(|m| f(StrKey::covering(m.issuer()))),
            Field::Ip { .. } | Field::Port { .. } => {}
        }
    }

    /// Calls `f` with the exact key of each negative value that has one (string fields).
    pub(super) fn neg_keys(&self, mut f: impl FnMut(StrKey<'a>)) {
        match *self {
            Field::Str { neg, .. } => neg.iter().filter_map(StrKey::exact).for_each(f),
            Field::Hosts { neg, .. } => neg
                .iter()
                .filter_map(|m| StrKey::exact(m.value()))
                .for_each(|k| f(k.lowercase())),
            Field::Paths { neg, .. } => neg
                .iter()
                .filter_map(|p| match p {
                    PathMatch::Str(m) => StrKey::exact(m),
                    PathMatch::Template(_) => None,
                })
                .for_each(f),
            Field::Issuers(_) | Field::Ip { .. } | Field::Port { .. } => {}
        }
    }
}

/// Calls `f` with every constrained attribute of one clause — a `from` entry (or none), a
/// `to` entry (or none) and the rule's `when` conditions, which all must hold — and its field.
pub(super) fn fields<'a>(
    from: Option<&'a CSource>,
    to: Option<&'a COperation>,
    when: &'a [CCondition],
    mut f: impl FnMut(AttrRef<'a>, Field<'a>),
) {
    let mut str_field = |a: Fixed, s: &'a StrField| {
        if !(s.pos.is_empty() && s.neg.is_empty()) {
            f(
                AttrRef::Fixed(a),
                Field::Str {
                    pos: &s.pos.0,
                    neg: &s.neg.0,
                },
            );
        }
    };
    if let Some(s) = from {
        str_field(Fixed::Principal, &s.principals);
        str_field(Fixed::Namespace, &s.namespaces);
        str_field(Fixed::ServiceAccount, &s.service_accounts);
        str_field(Fixed::TrustDomain, &s.trust_domains);
    }
    if let Some(o) = to {
        str_field(Fixed::Method, &o.methods);
    }
    let ip = |s: &'a IpField| Field::Ip {
        pos: &s.pos,
        neg: &s.neg,
    };
    let set = |s: &IpField| !(s.pos.is_empty() && s.neg.is_empty());
    if let Some(s) = from {
        if !s.request_principals.pos.is_empty() {
            f(
                AttrRef::Fixed(Fixed::Issuer),
                Field::Issuers(&s.request_principals.pos),
            );
        }
        if set(&s.ip_blocks) {
            f(AttrRef::Fixed(Fixed::SourceIp), ip(&s.ip_blocks));
        }
        if set(&s.remote_ip_blocks) {
            f(AttrRef::Fixed(Fixed::RemoteIp), ip(&s.remote_ip_blocks));
        }
    }
    if let Some(o) = to {
        let (pos, neg) = (&o.ports.0, &o.ports.1);
        if !(pos.is_empty() && neg.is_empty()) {
            f(AttrRef::Fixed(Fixed::Port), Field::Port { pos, neg });
        }
        let (pos, neg) = (&o.hosts.0, &o.hosts.1);
        if !(pos.is_empty() && neg.is_empty()) {
            f(AttrRef::Fixed(Fixed::Host), Field::Hosts { pos, neg });
        }
        let (pos, neg) = (&o.paths.0, &o.paths.1);
        if !(pos.is_empty() && neg.is_empty()) {
            f(AttrRef::Fixed(Fixed::Path), Field::Paths { pos, neg });
        }
    }
    for c in when {
        let Some(attr) = AttrRef::of_condition(c) else {
            continue;
        };
        let field = match &c.values {
            CondValues::Str(s) => Field::Str {
                pos: &s.pos.0,
                neg: &s.neg.0,
            },
            CondValues::Ip(s) => ip(s),
            CondValues::Port(pos, neg) => Field::Port { pos, neg },
            CondValues::RequestPrincipal(s) => Field::Issuers(&s.pos),
        };
        f(attr, field);
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
        Attr::Fixed(Fixed::Principal) => a.principal,
        Attr::Fixed(Fixed::Namespace) => a.namespace,
        Attr::Fixed(Fixed::TrustDomain) => a.trust_domain,
        Attr::Fixed(Fixed::Method) => http.map(|h| h.method.as_str()),
        Attr::Fixed(Fixed::Path) => a.path,
        Attr::Fixed(Fixed::Issuer) => a.req.auth.as_ref().and_then(|x| x.issuer_subject().0),
        Attr::Cond(k) => {
            key_values(k, a).for_each(f);
            return;
        }
        // Built values: only these need a buffer.
        Attr::Fixed(Fixed::ServiceAccount) => {
            if let Some((n, s)) = a.service_account {
                let (mut buf, mut heap) = ([0u8; 256], String::new());
                f(joined(n, "/", s, &mut buf, &mut heap));
            }
            return;
        }
        Attr::Fixed(Fixed::Host) => {
            if let Some(h) = http {
                let (mut buf, mut heap) = ([0u8; 256], String::new());
                f(lowered(&h.host, &mut buf, &mut heap));
            }
            return;
        }
        Attr::Fixed(Fixed::SourceIp)
        | Attr::Fixed(Fixed::RemoteIp)
        | Attr::Fixed(Fixed::DestinationIp)
        | Attr::Fixed(Fixed::Port) => None,
    };
    if let Some(v) = one {
        f(v);
    }
}

/// The request's address for an address attribute.
pub(super) fn ip(attr: &Attr, a: &Attrs) -> Option<IpAddr> {
    match attr {
        Attr::Fixed(Fixed::SourceIp) => a.req.source.ip,
        Attr::Fixed(Fixed::RemoteIp) => a.req.source.remote_ip,
        Attr::Fixed(Fixed::DestinationIp) => a.req.destination.ip,
        _ => None,
    }
}
