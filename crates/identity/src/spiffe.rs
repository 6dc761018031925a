//! SPIFFE IDs and trust domains, validated per the SPIFFE ID specification.
//!
//! Identities are compared as strings by every policy engine downstream (Istio's `principals`,
//! `source.principal`, ...), so the parser is deliberately strict: anything that is not the one
//! canonical spelling of an ID is rejected instead of being normalised. Accepting `SPIFFE://`,
//! percent-encoding or dot segments would let two different strings denote "the same" workload and
//! open the door to policy bypasses.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The only scheme a SPIFFE ID may use. It must be lowercase: we compare IDs byte-for-byte.
pub const SCHEME_PREFIX: &str = "spiffe://";

/// Interoperability limit from the SPIFFE ID spec (section 2.3), counted over the whole URI.
pub const MAX_ID_LEN: usize = 2048;

/// RFC 3986 caps a URI host at 255 bytes, and the trust domain is the host.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain.
///
/// Byte offsets are 0-based positions in the string that was passed to `parse`, so an operator can
/// find the offending character in a long ID from a log line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("SPIFFE ID is empty")]
    Empty,
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    #[error("SPIFFE ID {input:?} must start with \"spiffe://\"")]
    MissingScheme { input: String },
    #[error("SPIFFE ID {input:?} has scheme {scheme:?}; the scheme must be lowercase \"spiffe\"")]
    SchemeNotLowercase { input: String, scheme: String },
    #[error("SPIFFE ID {input:?} has no trust domain after \"spiffe://\"")]
    MissingTrustDomain { input: String },
    #[error("SPIFFE ID is {len} bytes long; the maximum is {MAX_ID_LEN}")]
    TooLong { len: usize },
    #[error("trust domain is {len} bytes long; the maximum is {MAX_TRUST_DOMAIN_LEN}")]
    TrustDomainTooLong { len: usize },
    #[error("invalid character {ch:?} at byte {pos} in trust domain {trust_domain:?}{}", td_hint(*.ch))]
    InvalidTrustDomainChar {
        ch: char,
        pos: usize,
        trust_domain: String,
    },
    #[error("trust domain {input:?} must be a bare name such as \"cluster.local\", not a URI")]
    TrustDomainIsUri { input: String },
    #[error("invalid character {ch:?} at byte {pos} in path segment {segment:?}{}", path_hint(*.ch))]
    InvalidPathChar {
        ch: char,
        pos: usize,
        segment: String,
    },
    #[error("empty path segment ('//') at byte {pos}")]
    EmptySegment { pos: usize },
    #[error("path segment {segment:?} at byte {pos} is not allowed (no '.' or '..' segments)")]
    DotSegment { segment: String, pos: usize },
    #[error("path must not end with '/' (byte {pos})")]
    TrailingSlash { pos: usize },
}

fn td_hint(ch: char) -> &'static str {
    match ch {
        'A'..='Z' => " (trust domains must be lowercase)",
        ':' => " (a port is not allowed in a trust domain)",
        '@' => " (userinfo is not allowed in a trust domain)",
        '%' => " (percent-encoding is not allowed)",
        '?' => " (a query is not allowed in a SPIFFE ID)",
        '#' => " (a fragment is not allowed in a SPIFFE ID)",
        _ => " (allowed: a-z 0-9 . - _)",
    }
}

fn path_hint(ch: char) -> &'static str {
    match ch {
        '%' => " (percent-encoding is not allowed)",
        '?' => " (a query is not allowed in a SPIFFE ID)",
        '#' => " (a fragment is not allowed in a SPIFFE ID)",
        _ => " (allowed: A-Z a-z 0-9 . - _)",
    }
}

fn is_td_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

fn is_path_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

/// The character starting at byte `pos` of `s` (for error messages that must show non-ASCII input
/// faithfully rather than as a lone UTF-8 byte).
fn char_at(s: &str, pos: usize) -> char {
    s[pos..].chars().next().unwrap_or('\u{fffd}')
}

/// A SPIFFE trust domain name, e.g. `cluster.local`.
///
/// Always holds a validated name, so code that has a `TrustDomain` never needs to re-check it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`cluster.local`). URIs are refused with a hint, because
    /// silently stripping `spiffe://` and a path would hide configuration mistakes.
    pub fn parse(name: &str) -> Result<TrustDomain, IdError> {
        if name.contains("://") {
            return Err(IdError::TrustDomainIsUri {
                input: name.to_string(),
            });
        }
        validate_trust_domain(name, 0)?;
        Ok(TrustDomain(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself (`spiffe://td`), which is what a CA certificate
    /// for the domain carries as its URI SAN.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            uri: format!("{SCHEME_PREFIX}{}", self.0),
            td: self.clone(),
        }
    }
}

/// Checks a trust domain that starts at byte `offset` of the caller's input (offsets in errors
/// are reported relative to the full input).
fn validate_trust_domain(td: &str, offset: usize) -> Result<(), IdError> {
    if td.is_empty() {
        return Err(IdError::EmptyTrustDomain);
    }
    if let Some(i) = td.bytes().position(|b| !is_td_char(b)) {
        return Err(IdError::InvalidTrustDomainChar {
            ch: char_at(td, i),
            pos: offset + i,
            trust_domain: td.to_string(),
        });
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong { len: td.len() });
    }
    Ok(())
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustDomain::parse(s)
    }
}

/// Lets APIs such as `TrustBundleSet::add_root` take either an owned or a borrowed domain.
impl From<&TrustDomain> for TrustDomain {
    fn from(td: &TrustDomain) -> Self {
        td.clone()
    }
}

impl AsRef<str> for TrustDomain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated SPIFFE ID, `spiffe://<trust domain><path>`.
///
/// The full URI is stored once so `as_str()` is free (IDs are compared and logged far more often
/// than they are built). Ordering and equality are those of the URI string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    uri: String,
    td: TrustDomain,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID. Nothing is normalised: the input must already be the
    /// canonical form, otherwise an error says what is wrong and at which byte.
    pub fn parse(input: &str) -> Result<SpiffeId, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        if input.len() > MAX_ID_LEN {
            return Err(IdError::TooLong { len: input.len() });
        }
        let rest = match input.strip_prefix(SCHEME_PREFIX) {
            Some(rest) => rest,
            None => {
                let head = input.get(..SCHEME_PREFIX.len()).unwrap_or("");
                if head.eq_ignore_ascii_case(SCHEME_PREFIX) {
                    return Err(IdError::SchemeNotLowercase {
                        input: input.to_string(),
                        scheme: head[..6].to_string(),
                    });
                }
                return Err(IdError::MissingScheme {
                    input: input.to_string(),
                });
            }
        };
        let td_end = rest.find('/').unwrap_or(rest.len());
        let td = &rest[..td_end];
        if td.is_empty() {
            return Err(IdError::MissingTrustDomain {
                input: input.to_string(),
            });
        }
        validate_trust_domain(td, SCHEME_PREFIX.len())?;
        validate_path(&rest[td_end..], SCHEME_PREFIX.len() + td_end)?;
        Ok(SpiffeId {
            uri: input.to_string(),
            td: TrustDomain(td.to_string()),
        })
    }

    /// Builds `spiffe://<td><path>` from parts; `path` is empty or starts with `/` and follows the
    /// same rules as in [`SpiffeId::parse`].
    pub fn from_path(td: &TrustDomain, path: &str) -> Result<SpiffeId, IdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return SpiffeId::parse(&format!("{SCHEME_PREFIX}{td}/{path}"));
        }
        SpiffeId::parse(&format!("{SCHEME_PREFIX}{td}{path}"))
    }

    /// The Istio workload identity `spiffe://<td>/ns/<ns>/sa/<sa>`. Fails only if `ns` or `sa` is
    /// not a valid path segment (Kubernetes names always are).
    pub fn istio(td: &TrustDomain, ns: &str, sa: &str) -> Result<SpiffeId, IdError> {
        let uri = format!("{SCHEME_PREFIX}{td}/ns/{ns}/sa/{sa}");
        // A '/' inside ns or sa would still form a valid ID, just not the intended one.
        let ns_start = SCHEME_PREFIX.len() + td.0.len() + "/ns/".len();
        let sa_start = ns_start + ns.len() + "/sa/".len();
        for (value, start) in [(ns, ns_start), (sa, sa_start)] {
            if let Some(i) = value.find('/') {
                return Err(IdError::InvalidPathChar {
                    ch: '/',
                    pos: start + i,
                    segment: value.to_string(),
                });
            }
        }
        SpiffeId::parse(&uri)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The path including its leading `/`, or `""` for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len() + self.td.0.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// `td/ns/x/sa/y`: the form Istio uses for `principals` and `source.principal`.
    pub fn without_scheme(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len()..]
    }

    /// The namespace of an Istio identity; `None` unless the path is exactly `/ns/<ns>/sa/<sa>`,
    /// because Istio derives namespaces only from that form and guessing from other shapes would
    /// let a crafted path masquerade as a namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// The service account of an Istio identity; see [`SpiffeId::namespace`].
    pub fn service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let rest = self.path().strip_prefix("/ns/")?;
        let (ns, sa) = rest.split_once("/sa/")?;
        if ns.contains('/') || sa.contains('/') {
            return None;
        }
        Some((ns, sa))
    }
}

/// Validates a path (empty or starting with `/`) whose first byte is at `offset` in the input.
fn validate_path(path: &str, offset: usize) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    if let Some(before) = path.strip_suffix('/') {
        // A lone trailing slash is its own mistake; `a//` is reported as an empty segment.
        if before.is_empty() || !before.ends_with('/') {
            return Err(IdError::TrailingSlash {
                pos: offset + before.len(),
            });
        }
    }
    // `path` starts with '/', so the first split element is the empty string before it.
    let mut seg_start = offset + 1;
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err(IdError::EmptySegment { pos: seg_start });
        }
        if let Some(i) = segment.bytes().position(|b| !is_path_char(b)) {
            return Err(IdError::InvalidPathChar {
                ch: char_at(segment, i),
                pos: seg_start + i,
                segment: segment.to_string(),
            });
        }
        if segment == "." || segment == ".." {
            return Err(IdError::DotSegment {
                segment: segment.to_string(),
                pos: seg_start,
            });
        }
        seg_start += segment.len() + 1;
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.uri
    }
}

/// Serialized as the plain string form so IDs read naturally in JSON/YAML output and config.
impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SpiffeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TrustDomain::parse(&s).map_err(serde::de::Error::custom)
    }
}
