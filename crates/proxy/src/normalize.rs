//! Request hygiene at the door of the L7 path: what Envoy refuses is refused here too, and the
//! path is normalized (per `meshConfig.pathNormalization`) *in the request itself*, before
//! authentication, policy, the access log and the app see it. One rewrite serves all of them, so
//! policy can never judge a different path from the one the app serves.
//!
//! The path rules are the policy crate's ([`trustmesh_policy::normalize`]), shared with
//! `trustmesh authz check`; the rules on `Host` are this module's, because only a real request
//! can carry two of them:
//! - HTTP/1.1 needs exactly one `Host` (RFC 9112 §3.2: "A server MUST respond with a 400 (Bad
//!   Request) status code to any HTTP/1.1 request message that lacks a Host header field and to
//!   any request message that contains more than one Host header field"). Otherwise policy would
//!   see the first and the app might act on the other.
//! - HTTP/2 may carry `Host` beside `:authority`; if it names another authority the request is
//!   malformed (RFC 9113 §8.3.1), since policy matches `:authority` and the app reads `Host`.

use http::{HeaderMap, Request, Version};
use trustmesh_policy::normalize::{self, Normalization, Rejection};

/// Why a request was refused before policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Target(Rejection),
    MissingHost,
    MultipleHosts,
    HostMismatch,
}

impl Refusal {
    pub fn status(self) -> http::StatusCode {
        let code = match self {
            Refusal::Target(r) => r.status(),
            _ => 400,
        };
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_REQUEST)
    }

    /// The access log's and metrics' word for it.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Target(r) => r.label(),
            Refusal::MissingHost => "missing_host",
            Refusal::MultipleHosts => "multiple_hosts",
            Refusal::HostMismatch => "host_authority_mismatch",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Target(r) => r.fmt(f),
            Refusal::MissingHost => f.write_str("an HTTP/1.1 request needs a Host header"),
            Refusal::MultipleHosts => f.write_str("more than one Host header"),
            Refusal::HostMismatch => f.write_str("Host names another authority than :authority"),
        }
    }
}

/// Checks `req` and normalizes its path in place. Returns the path and query as the client
/// sent them when normalization changed them (for the access log), `None` when unchanged.
pub fn apply<B>(req: &mut Request<B>, mode: Normalization) -> Result<Option<String>, Refusal> {
    check_host(req.version(), req.uri().authority(), req.headers())?;
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let normalized = match normalize::request(req.method().as_str(), target, mode) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(None),
        Ok(std::borrow::Cow::Owned(p)) => p,
        Err(r) => return Err(Refusal::Target(r)),
    };
    let original = target.to_string();
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    // Only bytes a path may carry are ever written by the normalizer.
    parts.path_and_query = Some(
        http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(normalized))
            .map_err(|_| Refusal::Target(Rejection::NotAbsolutePath))?,
    );
    *req.uri_mut() =
        http::Uri::from_parts(parts).map_err(|_| Refusal::Target(Rejection::NotAbsolutePath))?;
    Ok(Some(original))
}

fn check_host(
    version: Version,
    authority: Option<&http::uri::Authority>,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::MultipleHosts);
    }
    match version {
        Version::HTTP_11 if first.is_none() => Err(Refusal::MissingHost),
        Version::HTTP_2 => match (first, authority) {
            (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
                Err(Refusal::HostMismatch)
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// `:authority` for HTTP/2, `Host` for HTTP/1.1.
pub fn authority<B>(req: &Request<B>) -> Option<String> {
    req.uri().authority().map(|a| a.to_string()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut r = Request::builder().version(version).uri(uri);
        for h in hosts {
            r = r.header("host", *h);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn host_rules() {
        let base = Normalization::Base;
        assert_eq!(
            apply(&mut req(Version::HTTP_11, "/", &["a"]), base),
            Ok(None)
        );
        assert_eq!(
            apply(&mut req(Version::HTTP_11, "/", &[]), base),
            Err(Refusal::MissingHost)
        );
        assert_eq!(
            apply(&mut req(Version::HTTP_11, "/", &["a", "b"]), base),
            Err(Refusal::MultipleHosts)
        );
        // HTTP/1.0 did not require Host.
        assert_eq!(apply(&mut req(Version::HTTP_10, "/", &[]), base), Ok(None));
        assert_eq!(
            apply(&mut req(Version::HTTP_2, "http://a:80/", &[]), base),
            Ok(None)
        );
        assert_eq!(
            apply(&mut req(Version::HTTP_2, "http://A:80/", &["a:80"]), base),
            Ok(None)
        );
        assert_eq!(
            apply(&mut req(Version::HTTP_2, "http://a:80/", &["b:80"]), base),
            Err(Refusal::HostMismatch)
        );
        assert_eq!(
            apply(&mut req(Version::HTTP_2, "http://a/", &["a", "a"]), base),
            Err(Refusal::MultipleHosts)
        );
    }

    #[test]
    fn path_is_rewritten_in_place() {
        let mut r = req(Version::HTTP_11, "/public/../admin/x?y=%2e", &["a"]);
        let original = apply(&mut r, Normalization::Base).unwrap();
        assert_eq!(original.as_deref(), Some("/public/../admin/x?y=%2e"));
        assert_eq!(r.uri().path_and_query().unwrap().as_str(), "/admin/x?y=%2e");
        // Absolute form keeps its scheme and authority.
        let mut r = req(Version::HTTP_2, "http://app:8080/a/%2E%2e/b", &[]);
        apply(&mut r, Normalization::Base).unwrap();
        assert_eq!(r.uri().to_string(), "http://app:8080/b");
        // NONE leaves it alone.
        let mut r = req(Version::HTTP_11, "/a/../b", &["a"]);
        assert_eq!(apply(&mut r, Normalization::None), Ok(None));
        assert_eq!(r.uri().path(), "/a/../b");
    }

    #[test]
    fn refusals_carry_their_status() {
        let mut r = req(Version::HTTP_11, "/a%00", &["a"]);
        let e = apply(&mut r, Normalization::None).unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.label()),
            (400, "encoded_nul_in_path")
        );
        let mut r = Request::builder()
            .method("CONNECT")
            .uri("example.com:443")
            .header("host", "example.com:443")
            .body(())
            .unwrap();
        let e = apply(&mut r, Normalization::Base).unwrap_err();
        assert_eq!(e.status().as_u16(), 405);
        let mut r = Request::builder()
            .method("get")
            .uri("/")
            .header("host", "a")
            .body(())
            .unwrap();
        assert_eq!(
            apply(&mut r, Normalization::Base),
            Err(Refusal::Target(Rejection::InvalidMethod))
        );
    }
}
