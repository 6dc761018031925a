//! HTTP request normalization, as Istio's sidecars do it before any policy sees a request.
//!
//! Why: a path policy is only as strong as the agreement between the path it checks and the path
//! the app serves. `DENY paths: ["/admin/*"]` means nothing if `/foo/../admin/x` or `/%61dmin/x`
//! reaches the app's `/admin/x` (CVE-2021-31920). So the path is normalized *once*, and the
//! normalized form is both what policy matches and what the app receives.
//!
//! The modes are `meshConfig.pathNormalization.normalization`, with the Envoy options Istio maps
//! them to (`pilot/pkg/networking/core/listener_builder.go` in istio/istio):
//! - `NONE`: the path as received (`normalize_path: false`).
//! - `BASE` (Istio's default, also `DEFAULT`): RFC 3986 normalization as Envoy's `normalize_path`
//!   performs it with Chromium's URL path canonicalizer: dot segments (`.`, `..`, and their
//!   encoded forms `%2e`) are removed, percent-encoded unreserved characters (`A-Z a-z 0-9 - . _
//!   ~`) are decoded, a backslash becomes a slash, characters that may not stand raw in a path
//!   (`"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}`, bytes above 0x7f) are percent-encoded, and every
//!   other escape (`%2F`, `%5C`, `%20`, ...) is kept exactly as written.
//! - `MERGE_SLASHES`: `BASE`, then runs of slashes become one (Envoy's `merge_slashes`).
//! - `DECODE_AND_MERGE_SLASHES`: first `%2F`/`%5C` (either case) are decoded to `/` and `\`
//!   (Envoy's `UNESCAPE_AND_FORWARD`), then `MERGE_SLASHES`.
//!
//! The query string is never normalized; a fragment (`#...`, which no client may send in a
//! request target) is dropped, as Envoy does. The expected outputs in the tests come from Istio's
//! own conformance test (`tests/integration/security/normalization_test.go`).
//!
//! Requests are refused (before any policy runs) where Envoy refuses them, and in a few places
//! where it does not but nothing legitimate is lost: `%00` in the path in every mode (Envoy
//! refuses it while normalizing; a NUL byte in a path is never meaningful and truncates paths in
//! C-based apps), control characters or spaces in the request target, a path that does not start
//! with `/`, and a method that is not an upper-case token (Envoy rejects `get`; a lower-case
//! method would slip past `methods: ["GET"]` into an app that upper-cases it). `CONNECT` gets a
//! 405: a sidecar in front of one app has no tunnel to offer.
//!
//! One deliberate difference from Istio: in `BASE` and `MERGE_SLASHES`, which keep `%2F` and
//! `%5C` as they are, a path where an encoded slash touches a dot segment (`/public/..%2Fadmin`)
//! is refused with 400 instead of forwarded, because an app that decodes slashes would resolve
//! it to a path policy never saw (see `ambiguous_slashes`). Encoded slashes inside names
//! (`/repos/group%2Fproject`) still pass unchanged.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// `meshConfig.pathNormalization.normalization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Normalization {
    #[serde(rename = "NONE")]
    None,
    /// Istio's `DEFAULT` is `BASE`.
    #[default]
    #[serde(rename = "BASE", alias = "DEFAULT")]
    Base,
    #[serde(rename = "MERGE_SLASHES")]
    MergeSlashes,
    #[serde(rename = "DECODE_AND_MERGE_SLASHES")]
    DecodeAndMergeSlashes,
}

impl Normalization {
    pub const ALL: [Normalization; 4] = [
        Normalization::None,
        Normalization::Base,
        Normalization::MergeSlashes,
        Normalization::DecodeAndMergeSlashes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Normalization::None => "NONE",
            Normalization::Base => "BASE",
            Normalization::MergeSlashes => "MERGE_SLASHES",
            Normalization::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        }
    }

    fn merges_slashes(self) -> bool {
        matches!(
            self,
            Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes
        )
    }
}

/// `meshConfig.pathNormalization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathNormalization {
    #[serde(default)]
    pub normalization: Normalization,
}

/// Why a request was refused before policy. Each is a 400 except [`Rejection::Connect`] (405).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `%00` in the path.
    EncodedNul,
    /// A control character, space or DEL in the request target.
    InvalidCharacter(u8),
    /// The path does not start with `/` (and is not `OPTIONS *`).
    NotAbsolutePath,
    /// The method is empty, not a token, or not upper case.
    InvalidMethod,
    /// `CONNECT`: the sidecar does not tunnel.
    Connect,
    /// An encoded slash next to a dot segment, in a mode that keeps encoded slashes: the app
    /// could resolve the path differently from policy (see [`ambiguous_slashes`]).
    AmbiguousEncodedSlash,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Connect => 405,
            _ => 400,
        }
    }

    /// A short machine-readable label (metrics, access log).
    pub fn label(self) -> &'static str {
        match self {
            Rejection::EncodedNul => "encoded_nul_in_path",
            Rejection::InvalidCharacter(_) => "invalid_character_in_target",
            Rejection::NotAbsolutePath => "path_not_absolute",
            Rejection::InvalidMethod => "invalid_method",
            Rejection::Connect => "connect_not_supported",
            Rejection::AmbiguousEncodedSlash => "ambiguous_encoded_slash",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::EncodedNul => f.write_str("the path contains %00"),
            Rejection::InvalidCharacter(b) => {
                write!(f, "the request target contains byte 0x{b:02x}")
            }
            Rejection::NotAbsolutePath => f.write_str("the path does not start with /"),
            Rejection::InvalidMethod => f.write_str("the method is not an upper-case token"),
            Rejection::Connect => f.write_str("CONNECT is not supported by this sidecar"),
            Rejection::AmbiguousEncodedSlash => f.write_str(
                "an encoded slash (%2F or %5C) next to a dot segment; decode it, or use \
                 pathNormalization DECODE_AND_MERGE_SLASHES",
            ),
        }
    }
}

/// Checks the method and normalizes the request target (origin form: path and query, as in
/// HTTP/2's `:path`). `Cow::Borrowed` means the target is already normal (the common case, which
/// allocates nothing).
pub fn request<'a>(
    method: &str,
    target: &'a str,
    mode: Normalization,
) -> Result<Cow<'a, str>, Rejection> {
    check_method(method)?;
    if method == "CONNECT" {
        return Err(Rejection::Connect);
    }
    if method == "OPTIONS" && target == "*" {
        return Ok(Cow::Borrowed(target));
    }
    path_and_query(target, mode)
}

/// [`request`] applied to a policy [`crate::Request`] (what `trustmesh authz check` evaluates),
/// so offline answers equal the proxy's. Returns the path as given when normalization changed
/// it; a TCP request (no `http`) is left alone.
pub fn http_request(
    req: &mut crate::Request,
    mode: Normalization,
) -> Result<Option<String>, Rejection> {
    let Some(http) = req.http.as_mut() else {
        return Ok(None);
    };
    let normalized = match request(&http.method, &http.path, mode)? {
        Cow::Borrowed(_) => return Ok(None),
        Cow::Owned(p) => p,
    };
    Ok(Some(std::mem::replace(&mut http.path, normalized)))
}

/// RFC 9110 token characters, upper case only. Envoy refuses lower-case methods.
pub fn check_method(method: &str) -> Result<(), Rejection> {
    let ok = !method.is_empty()
        && method.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        });
    if ok {
        Ok(())
    } else {
        Err(Rejection::InvalidMethod)
    }
}

/// Normalizes a path with its optional query (and drops a fragment).
pub fn path_and_query(target: &str, mode: Normalization) -> Result<Cow<'_, str>, Rejection> {
    normalize_target(target, mode, true)
}

/// [`path_and_query`]; `refuse_ambiguous: false` is Envoy's behaviour to the letter (tests hold
/// it against Istio's conformance cases).
fn normalize_target(
    target: &str,
    mode: Normalization,
    refuse_ambiguous: bool,
) -> Result<Cow<'_, str>, Rejection> {
    let (target, had_fragment) = match target.find('#') {
        Some(i) => (&target[..i], true),
        None => (target, false),
    };
    if !target.starts_with('/') {
        return Err(Rejection::NotAbsolutePath);
    }
    let (path_len, dirty) = scan(target.as_bytes(), mode)?;
    if mode == Normalization::None || !dirty {
        return Ok(if had_fragment {
            Cow::Owned(target.to_string())
        } else {
            Cow::Borrowed(target)
        });
    }
    let (path, query) = target.split_at(path_len);
    let decoded;
    let input = if mode == Normalization::DecodeAndMergeSlashes {
        decoded = decode_slashes(path);
        decoded.as_ref()
    } else {
        path
    };
    let mut out = canonicalize(input.as_bytes())?;
    if refuse_ambiguous
        && mode != Normalization::DecodeAndMergeSlashes
        && ambiguous_slashes(path, &out)?
    {
        return Err(Rejection::AmbiguousEncodedSlash);
    }
    if mode.merges_slashes() {
        out = merge_slashes(out);
    }
    if out == path.as_bytes() && !had_fragment {
        return Ok(Cow::Borrowed(target));
    }
    out.extend_from_slice(query.as_bytes());
    // Only ASCII is ever written (bytes above 0x7f are percent-encoded).
    Ok(Cow::Owned(String::from_utf8(out).unwrap_or_default()))
}

/// One pass over the request target (this runs for every request): refuses control characters
/// anywhere and `%00` in the path, and tells where the path ends and whether it could change
/// under `mode` (false for the ordinary `/api/v1/items/7?page=2`).
fn scan(target: &[u8], mode: Normalization) -> Result<(usize, bool), Rejection> {
    let mut path_len = target.len();
    let mut dirty = false;
    let mut prev = 0u8;
    for (i, &b) in target.iter().enumerate() {
        if b <= b' ' || b == 0x7f {
            return Err(Rejection::InvalidCharacter(b));
        }
        if i >= path_len {
            continue;
        }
        dirty |= match b {
            b'?' => {
                path_len = i;
                continue;
            }
            b'%' => {
                if target.get(i + 1) == Some(&b'0') && target.get(i + 2) == Some(&b'0') {
                    return Err(Rejection::EncodedNul);
                }
                true
            }
            b'\\' => true,
            b'.' => prev == b'/',
            b'/' => prev == b'/' && mode.merges_slashes(),
            _ => class(b) == Class::Escape,
        };
        prev = b;
    }
    Ok((path_len, dirty))
}

/// How Chromium's path canonicalizer treats a byte, raw or percent-decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Kept as is, raw or escaped.
    Pass,
    /// Unreserved: kept raw, and decoded where it arrives escaped.
    Unescape,
    /// Must not stand raw in a path: percent-encoded; kept when it arrives escaped.
    Escape,
    /// NUL: refused.
    Invalid,
}

fn class(b: u8) -> Class {
    match b {
        0 => Class::Invalid,
        b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'-' | b'_' | b'~' => Class::Unescape,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'/' | b':' | b';'
        | b'=' | b'@' | b'[' | b']' | b'.' => Class::Pass,
        _ => Class::Escape,
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte a valid `%XX` escape at `at` stands for.
fn escape_at(s: &[u8], at: usize) -> Option<u8> {
    if s.get(at) != Some(&b'%') {
        return None;
    }
    let hi = hex_value(*s.get(at + 1)?)?;
    let lo = hex_value(*s.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

/// Length of a dot at `at`: 1 for `.`, 3 for `%2e`/`%2E`, 0 for anything else.
fn dot_len(s: &[u8], at: usize) -> usize {
    match s.get(at) {
        Some(b'.') => 1,
        Some(b'%')
            if s.get(at + 1) == Some(&b'2') && matches!(s.get(at + 2), Some(b'e' | b'E')) =>
        {
            3
        }
        _ => 0,
    }
}

fn is_slash(b: Option<&u8>) -> bool {
    matches!(b, Some(b'/' | b'\\'))
}

/// What a dot segment that starts right after a slash means.
enum Dots {
    /// `.`: skip this many input bytes.
    Current(usize),
    /// `..`: drop the last output segment and skip this many input bytes.
    Up(usize),
    /// Part of a name (`.hidden`, `...`).
    Name,
}

fn classify_dots(s: &[u8], at: usize, first: usize) -> Dots {
    let after = at + first;
    if after == s.len() {
        return Dots::Current(first);
    }
    if is_slash(s.get(after)) {
        return Dots::Current(first + 1);
    }
    let second = dot_len(s, after);
    if second > 0 {
        let end = after + second;
        if end == s.len() {
            return Dots::Up(first + second);
        }
        if is_slash(s.get(end)) {
            return Dots::Up(first + second + 1);
        }
    }
    Dots::Name
}

/// Drops the last segment of `out`, which ends with `/`, keeping that segment's leading slash;
/// never above the root.
fn back_up(out: &mut Vec<u8>) {
    let last = out.len() - 1;
    if last == 0 {
        return;
    }
    let keep = out[..last].iter().rposition(|&b| b == b'/').unwrap_or(0);
    out.truncate(keep + 1);
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// RFC 3986 path canonicalization with Chromium's rules (which Envoy's `normalize_path` uses).
/// `path` starts with `/` (or `\`).
fn canonicalize(path: &[u8]) -> Result<Vec<u8>, Rejection> {
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    if !is_slash(path.first()) {
        out.push(b'/');
    }
    // Where in `out` a `%` stands that did not begin a valid escape in the input: decoding the
    // characters after it could make it one (`%%30%30` -> `%00`), which a later decoder would
    // then read differently from us. Such a `%` is rewritten as `%25`.
    let mut stray_percent: Option<usize> = None;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        let dots = if b == b'.' || b == b'%' {
            dot_len(path, i)
        } else {
            0
        };
        if dots > 0 {
            if out.last() == Some(&b'/') {
                match classify_dots(path, i, dots) {
                    Dots::Current(skip) => i += skip,
                    Dots::Up(skip) => {
                        back_up(&mut out);
                        i += skip;
                    }
                    Dots::Name => {
                        out.push(b'.');
                        i += dots;
                    }
                }
            } else {
                out.push(b'.');
                i += dots;
            }
            continue;
        }
        match b {
            b'\\' => out.push(b'/'),
            b'%' => match escape_at(path, i) {
                Some(v) => {
                    match class(v) {
                        Class::Unescape => {
                            out.push(v);
                            if stray_percent.is_some_and(|p| p + 3 >= out.len()) {
                                guard_nested_escape(path, i + 3, stray_percent.unwrap(), &mut out);
                            }
                        }
                        Class::Invalid => return Err(Rejection::EncodedNul),
                        // Kept exactly as written, hex case included.
                        _ => out.extend_from_slice(&path[i..i + 3]),
                    }
                    i += 3;
                    continue;
                }
                None => {
                    stray_percent = Some(out.len());
                    out.push(b'%');
                }
            },
            _ => match class(b) {
                Class::Invalid => return Err(Rejection::EncodedNul),
                Class::Escape => push_escaped(&mut out, b),
                _ => out.push(b),
            },
        }
        i += 1;
    }
    Ok(out)
}

/// `out` ends with a `%` at `percent` followed by one or two bytes, the last just decoded. If
/// they now read as a valid escape, the `%` becomes `%25` so nobody decodes it later.
fn guard_nested_escape(path: &[u8], next: usize, percent: usize, out: &mut Vec<u8>) {
    let len = out.len();
    let decoded = out[len - 1];
    let one_after = percent + 2 == len;
    if one_after {
        // `%` + the decoded byte: the escape would be completed by the next input byte.
        match path.get(next) {
            Some(&c) if c < 0x80 => out.push(c),
            _ => return,
        }
    }
    if escape_at(out, percent).is_some() {
        if !one_after {
            out.push(out[percent + 1]);
        }
        out[percent + 1] = b'2';
        out[percent + 2] = b'5';
        out.push(decoded);
    } else if one_after {
        out.truncate(len);
    }
}

/// Whether an app that decodes `%2F`/`%5C` would find dot segments that policy did not see.
///
/// `BASE` keeps encoded slashes, as Istio does, because apps use them inside names
/// (`group%2Fproject`). But `/public/..%2Fadmin` then passes a DENY on `/admin/*` as an opaque
/// name, while an app that decodes the slash and then resolves dots (nginx does) serves
/// `/admin`. Istio documents this gap and leaves it to `DECODE_AND_MERGE_SLASHES`; we close it in
/// every decoding-free mode by refusing exactly the paths where the two readings differ.
/// `canonical` is `path` after [`canonicalize`].
fn ambiguous_slashes(path: &str, canonical: &[u8]) -> Result<bool, Rejection> {
    let Cow::Owned(decoded) = decode_slashes(path) else {
        return Ok(false);
    };
    let resolved = canonicalize(decoded.as_bytes())?;
    let kept = String::from_utf8_lossy(canonical);
    let seen_by_app: Vec<u8> = decode_slashes(&kept)
        .bytes()
        .map(|b| if b == b'\\' { b'/' } else { b })
        .collect();
    Ok(resolved != seen_by_app)
}

/// `%2F`/`%2f` -> `/`, `%5C`/`%5c` -> `\` (Envoy's `UNESCAPE_AND_FORWARD`), before canonicalizing.
fn decode_slashes(path: &str) -> Cow<'_, str> {
    let b = path.as_bytes();
    let is_slash_escape = |i: usize| {
        b[i] == b'%'
            && matches!(
                (b.get(i + 1), b.get(i + 2)),
                (Some(b'2'), Some(b'f' | b'F')) | (Some(b'5'), Some(b'c' | b'C'))
            )
    };
    if !(0..b.len()).any(is_slash_escape) {
        return Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if is_slash_escape(i) {
            out.push(if b[i + 1] == b'2' { b'/' } else { b'\\' });
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Only ASCII escapes were replaced by ASCII bytes: still valid UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_default())
}

/// Runs of `/` become one (Envoy's `merge_slashes`).
fn merge_slashes(mut path: Vec<u8>) -> Vec<u8> {
    path.dedup_by(|a, b| *a == b'/' && *b == b'/');
    path
}

#[cfg(test)]
mod tests;
