//! The request target's form (RFC 9112 §3.2) and the octets each form may hold.
//!
//! The tokenizer takes any visible octet in a target; a parser behind us (hyper's `Uri`, the
//! app's router, the policy's path match) reads some of them differently: a `#` ends the path
//! for one and not for another, `<`, `>`, `` ` `` and `"` are refused by some, and a target that
//! is neither a path nor an `http(s)://` URI is anybody's guess. The differential fuzz target
//! (fuzz/`h1_hyper`) found each of these. Refused here is everything hyper refuses or
//! rewrites (and `"` in a path too, which hyper refuses only in a query), so hyper reads every
//! target this crate accepts the same way.

use crate::head::Span;
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/path?query`.
    Origin,
    /// `http(s)://authority/path?query` (as sent to a proxy); the path and query may be empty,
    /// which means `/`.
    Absolute {
        https: bool,
        authority: Span,
        path_and_query: Span,
    },
    /// `host:port`, the target of a CONNECT.
    Authority,
    /// `*`, a server-wide OPTIONS.
    Asterisk,
}

/// The form of `target` (a span of `buf`) for a request with `method`.
pub(crate) fn classify(method: &[u8], target: Span, buf: &[u8]) -> Result<Target, Error> {
    let t = target.of(buf);
    if method == b"CONNECT" {
        return match authority(t) {
            Some(true) => Ok(Target::Authority),
            _ => Err(Error::Target),
        };
    }
    if t == b"*" {
        return if method == b"OPTIONS" {
            Ok(Target::Asterisk)
        } else {
            Err(Error::Target)
        };
    }
    if t.first() == Some(&b'/') {
        return if t.iter().all(|&b| path_octet(b)) {
            Ok(Target::Origin)
        } else {
            Err(Error::Target)
        };
    }
    let (https, rest) = if starts_with_ignore_case(t, b"http://") {
        (false, 7)
    } else if starts_with_ignore_case(t, b"https://") {
        (true, 8)
    } else {
        return Err(Error::Target);
    };
    let end = t[rest..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(t.len(), |i| rest + i);
    if authority(&t[rest..end]).is_none() || !t[end..].iter().all(|&b| path_octet(b)) {
        return Err(Error::Target);
    }
    let at = |from: usize, to: usize| Span {
        start: target.start + from as u32,
        end: target.start + to as u32,
    };
    Ok(Target::Absolute {
        https,
        authority: at(rest, end),
        path_and_query: at(end, t.len()),
    })
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `uri-host [":" port]` (RFC 3986 §3.2.2): a reg-name (unreserved, sub-delims) or an
/// IP literal in brackets, then 1–5 digits after a `:`. No userinfo (`@`), path or whitespace:
/// a Host or authority that hides one could slip past a policy's `hosts` match. `Some(port
/// given)` when valid.
pub(crate) fn authority(a: &[u8]) -> Option<bool> {
    let (host_ok, rest) = if let Some(inner) = a.strip_prefix(b"[") {
        let close = inner.iter().position(|&b| b == b']')?;
        let literal = &inner[..close];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (ok, &inner[close + 1..])
    } else {
        let end = a.iter().position(|&b| b == b':').unwrap_or(a.len());
        let host = &a[..end];
        (
            !host.is_empty() && host.iter().all(|&b| reg_name_octet(b)),
            &a[end..],
        )
    };
    let port = match rest {
        [] => false,
        [b':', port @ ..]
            if (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit) =>
        {
            true
        }
        _ => return None,
    };
    host_ok.then_some(port)
}

/// unreserved and sub-delims (RFC 3986 §3.2.2 reg-name, without its pct-encoded octets:
/// hyper refuses a `%` in an authority, and a host name never needs one).
fn reg_name_octet(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// An octet of a path and query: RFC 3986's pchar, `/` and `?`, plus what clients send
/// unencoded and hyper passes through unchanged (`{ } | \ ^ [ ]`, and octets above ASCII).
/// Not `#` (the fragment: hyper drops it, an app may not), nor `" < > `` ` (hyper refuses
/// them).
fn path_octet(b: u8) -> bool {
    reg_name_octet(b)
        || matches!(
            b,
            b'%' | b':' | b'@' | b'/' | b'?' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'[' | b']'
        )
        || b >= 0x80
}
