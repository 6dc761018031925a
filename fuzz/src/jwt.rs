//! The `jwt` target: every verifier that takes a token from outside the process.
//!
//! - the sidecar's RequestAuthentication (`trustmesh_proxy::jwt`), token in a request;
//! - the agent's JWT-SVID validation (Workload API `ValidateJWTSVID`);
//! - the CA's bearer-token authentication of workloads (`trustmesh_ca_server::auth::jwt`).
//!
//! Input: a token (each verifier gets it), or `JWKS \0 token`, which verifies the token
//! against a key set the fuzzer wrote (the sidecar's inline `jwks` and the agent's bundle
//! parsing). What must hold besides "no panic": nothing verifies as `forgery.test`, and what
//! verifies as `known.test` reports the issuer, subject and audience it was checked for.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Uri};
use trustmesh_ca_server::auth::jwt::{IssuerConfig, JwksSource, JwtAuthenticator as CaAuth};
use trustmesh_proxy::jwt::{ClaimToHeader, JwtAuthenticator, JwtHeader, JwtOptions, JwtRule};

use crate::keys::*;

struct Verifiers {
    proxy: JwtAuthenticator,
    ca: CaAuth,
    runtime: tokio::runtime::Runtime,
}

fn verifiers() -> &'static Verifiers {
    static V: OnceLock<Verifiers> = OnceLock::new();
    V.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The CA reads its issuers' key sets from files (or URLs); these live as long as the
        // process, which the fuzzer keeps for many inputs.
        let dir = std::env::temp_dir().join(format!("trustmesh-fuzz-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write key set");
            JwksSource::File(path)
        };
        let issuers = vec![
            IssuerConfig {
                issuer: KNOWN_ISSUER.into(),
                jwks: file("known.json", KNOWN_JWKS),
            },
            IssuerConfig {
                issuer: FORGERY_ISSUER.into(),
                jwks: file("forgery.json", FORGERY_JWKS),
            },
        ];
        let ca = runtime
            .block_on(CaAuth::new(issuers, vec!["istio-ca".into()]))
            .expect("CA authenticator")
            // No cache: an answer must not depend on earlier inputs (AFL's stability), and every
            // input reaches the signature check.
            .with_cache_max_age(Duration::ZERO);
        let proxy = JwtAuthenticator::new(
            vec![forgery_rule(), known_rule(KNOWN_JWKS)],
            JwtOptions::default(),
        )
        .expect("proxy authenticator");
        Verifiers { proxy, ca, runtime }
    })
}

fn forgery_rule() -> JwtRule {
    JwtRule {
        issuer: FORGERY_ISSUER.into(),
        jwks: Some(FORGERY_JWKS.into()),
        ..JwtRule::default()
    }
}

/// A rule that uses every output and location option, so verified tokens exercise them.
fn known_rule(jwks: &str) -> JwtRule {
    JwtRule {
        issuer: KNOWN_ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        jwks: Some(jwks.into()),
        from_headers: vec![
            JwtHeader {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            JwtHeader {
                name: "x-jwt".into(),
                prefix: String::new(),
            },
        ],
        from_params: vec!["access_token".into()],
        from_cookies: vec!["session".into()],
        output_payload_to_header: Some("x-payload".into()),
        output_claim_to_headers: vec![
            ClaimToHeader {
                header: "x-sub".into(),
                claim: "sub".into(),
            },
            ClaimToHeader {
                header: "x-nested".into(),
                claim: "nested.a.b".into(),
            },
        ],
        space_delimited_claims: vec!["scope".into()],
        ..JwtRule::default()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The token where each location the rules read would find it.
fn request_with(token: &str) -> Option<(HeaderMap, Uri)> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
    );
    headers.insert("x-jwt", HeaderValue::from_str(token).ok()?);
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("a=b; session={token}")).ok()?,
    );
    let uri = Uri::try_from(format!("/p?x=1&access_token={token}")).unwrap_or_default();
    Some((headers, uri))
}

pub fn jwt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.split_once('\0') {
        Some((jwks, token)) => with_fuzzed_keys(jwks, token),
        None => {
            verdicts(text);
        }
    }
}

/// Which verifiers accepted a token, checking what each accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub sidecar: bool,
    pub agent: bool,
    pub ca: bool,
}

/// `token` through the three verifiers, against the committed key sets.
pub fn verdicts(token: &str) -> Verdicts {
    let v = verifiers();
    let mut out = Verdicts::default();

    // The sidecar.
    if let Some((mut headers, uri)) = request_with(token) {
        if let Ok(Some(info)) = v.proxy.authenticate_at(&headers, &uri, now()) {
            assert_eq!(
                info.issuer, KNOWN_ISSUER,
                "forged token accepted by the sidecar"
            );
            assert_eq!(info.principal, format!("{}/{}", info.issuer, info.subject));
            assert!(
                info.audiences.iter().any(|a| a == AUDIENCE),
                "accepted for another audience: {:?}",
                info.audiences
            );
            v.proxy.remove_spoofed_outputs(&mut headers);
            v.proxy.apply_outputs(&info, &mut headers);
            out.sidecar = true;
        }
    }

    // The agent's Workload API.
    if let Ok((id, claims)) = trustmesh_agent::jwt::validate(token, AUDIENCE, &agent_bundles()) {
        assert_eq!(
            id.trust_domain(),
            &known_domain(),
            "forged JWT-SVID accepted by the agent"
        );
        assert_eq!(
            claims.get("sub").and_then(|s| s.as_str()),
            Some(id.as_str())
        );
        let _ = trustmesh_agent::jwt::to_struct(claims);
        out.agent = true;
    }

    // The CA.
    if let Ok(account) = v.runtime.block_on(v.ca.authenticate(token)) {
        assert_eq!(
            account.issuer, KNOWN_ISSUER,
            "forged bearer token accepted by the CA"
        );
        out.ca = true;
    }
    out
}

fn with_fuzzed_keys(jwks: &str, token: &str) {
    let _ = trustmesh_proxy::jwt::KeySet::parse(jwks);
    if let Ok(proxy) = JwtAuthenticator::new(vec![known_rule(jwks)], JwtOptions::default()) {
        if let Some((headers, uri)) = request_with(token) {
            let _ = proxy.authenticate_at(&headers, &uri, now());
        }
    }
    let bundles = std::collections::BTreeMap::from([(known_domain(), jwks.as_bytes().to_vec())]);
    let _ = trustmesh_agent::jwt::validate(token, AUDIENCE, &bundles);
}
