//! Finding tokens in a request.
//!
//! A rule only looks where it is told to: its `fromHeaders`, `fromParams` and `fromCookies`, or,
//! when it names none, Envoy's defaults (`Authorization: Bearer <t>`, then the `access_token`
//! query parameter). A token sitting anywhere else is not a credential for that rule and is
//! ignored, which is what lets a request pass unauthenticated when it carries a token only in a
//! place no rule inspects.

use super::rule::JwtRule;
use super::JwtConfigError;
use hyper::http::{header, HeaderMap, HeaderName};

/// One place a rule takes tokens from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// The locations of `rule`, with Envoy's defaults when it names none.
pub(crate) fn locations_for(index: usize, rule: &JwtRule) -> Result<Vec<Location>, JwtConfigError> {
    if rule.from_headers.is_empty() && rule.from_params.is_empty() && rule.from_cookies.is_empty() {
        return Ok(vec![
            Location::Header {
                name: header::AUTHORIZATION,
                prefix: "Bearer ".to_string(),
            },
            Location::Param("access_token".to_string()),
        ]);
    }
    let mut out = Vec::new();
    for h in &rule.from_headers {
        let name = HeaderName::from_bytes(h.name.trim().to_ascii_lowercase().as_bytes()).map_err(
            |_| JwtConfigError::InvalidHeaderName {
                index,
                name: h.name.clone(),
            },
        )?;
        out.push(Location::Header {
            name,
            prefix: h.prefix.clone(),
        });
    }
    out.extend(rule.from_params.iter().cloned().map(Location::Param));
    out.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
    Ok(out)
}

/// Every token present at `location`, in request order.
pub(crate) fn extract(
    location: &Location,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Vec<String> {
    match location {
        Location::Header { name, prefix } => headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| token_after_prefix(v, prefix))
            .collect(),
        Location::Param(param) => query
            .map(|q| {
                q.split('&')
                    .filter_map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        (percent_decode(k) == *param).then(|| percent_decode(v))
                    })
                    .filter_map(|v| leading_token(&v))
                    .collect()
            })
            .unwrap_or_default(),
        Location::Cookie(cookie) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k.trim() == cookie).then(|| v.trim().trim_matches('"').to_string())
            })
            .filter_map(|v| leading_token(&v))
            .collect(),
    }
}

/// Strips `prefix` (ASCII case-insensitively, since auth schemes are case-insensitive) and takes
/// the token that follows. A value without the prefix holds no token for this location.
fn token_after_prefix(value: &str, prefix: &str) -> Option<String> {
    let value = value.trim_start();
    if value.len() < prefix.len() || !value.is_char_boundary(prefix.len()) {
        return None;
    }
    let (head, rest) = value.split_at(prefix.len());
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    leading_token(rest.trim_start())
}

/// The JWT at the start of `text`: the longest run of base64url characters and dots, as Envoy
/// takes it (so a trailing `, other-scheme ...` is not part of the token).
fn leading_token(text: &str) -> Option<String> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')))
        .unwrap_or(text.len());
    (end > 0).then(|| text[..end].to_string())
}

/// Minimal `%XX` decoding for query components (a JWT never needs more).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::rule::JwtHeader;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn default_locations_are_bearer_then_access_token() {
        let locs = locations_for(0, &JwtRule::default()).unwrap();
        let h = headers(&[("authorization", "Bearer aaa.bbb.ccc")]);
        assert_eq!(extract(&locs[0], &h, None), vec!["aaa.bbb.ccc"]);
        assert_eq!(
            extract(&locs[1], &h, Some("x=1&access_token=ddd.eee.fff")),
            vec!["ddd.eee.fff"]
        );
        // Case-insensitive scheme, other schemes ignored.
        let h = headers(&[
            ("authorization", "bearer a.b.c"),
            ("authorization", "Basic Zm9v"),
        ]);
        assert_eq!(extract(&locs[0], &h, None), vec!["a.b.c"]);
    }

    #[test]
    fn configured_header_prefix_must_be_present() {
        let rule = JwtRule {
            from_headers: vec![JwtHeader {
                name: "X-Jwt-Assertion".into(),
                prefix: "Token ".into(),
            }],
            ..Default::default()
        };
        let locs = locations_for(0, &rule).unwrap();
        assert_eq!(locs.len(), 1, "explicit locations replace the defaults");
        let h = headers(&[("x-jwt-assertion", "Token x.y.z")]);
        assert_eq!(extract(&locs[0], &h, None), vec!["x.y.z"]);
        let h = headers(&[("x-jwt-assertion", "x.y.z")]);
        assert!(extract(&locs[0], &h, None).is_empty());
    }

    #[test]
    fn params_and_cookies() {
        let rule = JwtRule {
            from_params: vec!["my_token".into()],
            from_cookies: vec!["auth".into()],
            ..Default::default()
        };
        let locs = locations_for(0, &rule).unwrap();
        assert_eq!(
            extract(&locs[0], &HeaderMap::new(), Some("my%5Ftoken=a.b.c")),
            vec!["a.b.c"]
        );
        assert!(extract(&locs[0], &HeaderMap::new(), Some("my_tokenx=a.b.c")).is_empty());
        let h = headers(&[("cookie", "x=1; auth=\"p.q.r\"; y=2")]);
        assert_eq!(extract(&locs[1], &h, None), vec!["p.q.r"]);
    }

    #[test]
    fn percent_decoding_handles_truncation() {
        assert_eq!(percent_decode("a%2Eb%"), "a.b%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
