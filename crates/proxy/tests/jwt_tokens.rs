//! RequestAuthentication against real tokens: keys from `openssl genpkey`, tokens minted by
//! PyJWT (an independent implementation) and by `jsonwebtoken`, inline JWKS built by PyJWT.
//!
//! Needs python3 with PyJWT + cryptography (tests/python/requirements.txt). Without them the
//! tests print a loud SKIP, except under CI (`CI` set), where their absence is a failure.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::http::{HeaderMap, HeaderValue, Uri};
use serde_json::{json, Value};
use trustmesh_proxy::jwt::{
    ClaimToHeader, JwtAuthenticator, JwtError, JwtHeader, JwtOptions, JwtRule,
};
use trustmesh_testkit::jwt::{bearer, jwks, pyjwt, Key};
use trustmesh_testkit::pki::unix_now as now;

const ISS: &str = "https://issuer.trustmesh.test";

/// Whether PyJWT is importable; panics under CI, where it must be.
fn pyjwt_available() -> bool {
    trustmesh_testkit::tools::python_has("jwt, cryptography", "JWT interop test")
}

/// A token minted by the `jsonwebtoken` crate.
fn rust_jwt(key: &Key, alg: jsonwebtoken::Algorithm, claims: Value) -> String {
    use jsonwebtoken::{EncodingKey, Header};
    let pem = std::fs::read(&key.pem).unwrap();
    let enc = match alg {
        jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::ES384 => {
            EncodingKey::from_ec_pem(&pem)
        }
        jsonwebtoken::Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &enc).unwrap()
}

fn rule(jwks: &str) -> JwtRule {
    JwtRule {
        issuer: ISS.into(),
        jwks: Some(jwks.into()),
        ..Default::default()
    }
}

fn root() -> Uri {
    Uri::from_static("/")
}

#[test]
fn pyjwt_tokens_of_every_supported_algorithm_verify() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rsa = Key::generate(dir.path(), "rsa", "rsa-1");
    let p256 = Key::generate(dir.path(), "p256", "ec-256");
    let p384 = Key::generate(dir.path(), "p384", "ec-384");
    let ed = Key::generate(dir.path(), "ed25519", "ed-1");
    let auth = JwtAuthenticator::new(
        vec![rule(&jwks(&[&rsa, &p256, &p384, &ed]))],
        JwtOptions::default(),
    )
    .unwrap();
    let cases = [
        (&rsa, "RS256"),
        (&rsa, "RS384"),
        (&rsa, "RS512"),
        (&rsa, "PS256"),
        (&p256, "ES256"),
        (&p384, "ES384"),
        (&ed, "EdDSA"),
    ];
    for (key, alg) in cases {
        let sub = format!("user-{alg}");
        let token = pyjwt(
            key,
            alg,
            json!({"iss": ISS, "sub": sub, "exp": "now+300", "azp": "web"}),
        );
        let info = auth
            .authenticate(&bearer(&token), &root())
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"))
            .unwrap_or_else(|| panic!("{alg}: token not seen"));
        assert_eq!(info.principal, format!("{ISS}/{sub}"), "{alg}");
        assert_eq!(info.presenter.as_deref(), Some("web"));
        assert_eq!(info.claims["sub"], sub.as_str());
        assert_eq!(info.raw_token, token);
        assert_eq!(info.rule_index, 0);
    }
}

#[test]
fn jsonwebtoken_tokens_verify_too() {
    if !pyjwt_available() {
        return;
    }
    use jsonwebtoken::Algorithm::*;
    let dir = tempfile::tempdir().unwrap();
    let rsa = Key::generate(dir.path(), "rsa", "rsa-1");
    let p256 = Key::generate(dir.path(), "p256", "ec-256");
    let ed = Key::generate(dir.path(), "ed25519", "ed-1");
    let auth = JwtAuthenticator::new(
        vec![rule(&jwks(&[&rsa, &p256, &ed]))],
        JwtOptions::default(),
    )
    .unwrap();
    for (key, alg) in [(&rsa, RS256), (&rsa, PS256), (&p256, ES256), (&ed, EdDSA)] {
        let token = rust_jwt(
            key,
            alg,
            json!({"iss": ISS, "sub": "bob", "exp": now() + 300}),
        );
        let info = auth
            .authenticate(&bearer(&token), &root())
            .unwrap()
            .unwrap();
        assert_eq!(info.principal, format!("{ISS}/bob"), "{alg:?}");
    }
}

#[test]
fn invalid_tokens_are_rejected_with_envoy_messages() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = Key::generate(dir.path(), "rsa", "k1");
    // Same kid as the published key, different key material: a forged token.
    let forger = Key::generate(dir.path(), "rsa", "forger").with_kid("k1");
    let stranger = Key::generate(dir.path(), "ed25519", "unknown-kid");
    let mut r = rule(&jwks(&[&good]));
    r.audiences = vec!["svc-a".into(), "svc-b".into()];
    let auth = JwtAuthenticator::new(vec![r], JwtOptions::default()).unwrap();
    let check = |token: &str| auth.authenticate(&bearer(token), &root());
    let claims = |extra: Value| {
        let mut base = json!({"iss": ISS, "sub": "carol", "aud": "svc-b", "exp": "now+300"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };

    // Baseline: valid, including an audience list that intersects.
    assert!(check(&pyjwt(&good, "RS256", claims(json!({}))))
        .unwrap()
        .is_some());
    let t = pyjwt(&good, "RS256", claims(json!({"aud": ["x", "svc-a"]})));
    assert_eq!(check(&t).unwrap().unwrap().audiences, vec!["x", "svc-a"]);
    // Expired 30 s ago: still inside the 60 s clock skew.
    assert!(check(&pyjwt(&good, "RS256", claims(json!({"exp": "now-30"})))).is_ok());

    let err = check(&pyjwt(&forger, "RS256", claims(json!({})))).unwrap_err();
    assert_eq!(err, JwtError::InvalidSignature);
    assert_eq!(err.http_status(), 401);
    assert_eq!(err.http_body(), "Jwt verification fails");

    // Payload swapped after signing.
    let t = pyjwt(&good, "RS256", claims(json!({})));
    let parts: Vec<&str> = t.split('.').collect();
    let evil = URL_SAFE_NO_PAD.encode(
        claims(json!({"sub": "admin"}))
            .to_string()
            .replace("\"now+300\"", &(now() + 300).to_string()),
    );
    let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
    assert_eq!(check(&tampered).unwrap_err(), JwtError::InvalidSignature);

    let err = check(&pyjwt(&good, "RS256", claims(json!({"exp": "now-120"})))).unwrap_err();
    assert!(matches!(err, JwtError::Expired { .. }), "{err:?}");
    assert_eq!(err.http_body(), "Jwt is expired");

    let err = check(&pyjwt(&good, "RS256", claims(json!({"nbf": "now+600"})))).unwrap_err();
    assert!(matches!(err, JwtError::NotYetValid { .. }), "{err:?}");

    let err = check(&pyjwt(
        &good,
        "RS256",
        claims(json!({"iss": "https://evil.test"})),
    ))
    .unwrap_err();
    assert_eq!(
        err,
        JwtError::UnknownIssuer {
            issuer: Some("https://evil.test".into())
        }
    );
    assert_eq!(err.http_body(), "Jwt issuer is not configured");

    let err = check(&pyjwt(&good, "RS256", claims(json!({"aud": "svc-c"})))).unwrap_err();
    assert!(
        matches!(err, JwtError::AudienceNotAllowed { .. }),
        "{err:?}"
    );

    let err = check(&pyjwt(&stranger, "EdDSA", claims(json!({})))).unwrap_err();
    assert!(matches!(err, JwtError::NoMatchingKey { .. }), "{err:?}");

    // HMAC signed with a guessable secret is refused outright.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": ISS, "sub": "x", "aud": "svc-a"}),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert!(matches!(
        check(&hs).unwrap_err(),
        JwtError::UnsupportedAlgorithm { .. }
    ));

    // alg=none with an empty signature is not even a well-formed JWS for us.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(json!({"iss": ISS, "sub": "x"}).to_string())
    );
    assert!(check(&none).is_err());
    assert_eq!(check("not-a-jwt").unwrap_err(), JwtError::BadFormat);
}

#[test]
fn requests_without_tokens_pass_unauthenticated() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "p256", "k");
    let auth = JwtAuthenticator::new(vec![rule(&jwks(&[&key]))], JwtOptions::default()).unwrap();
    assert_eq!(auth.authenticate(&HeaderMap::new(), &root()), Ok(None));
    let mut basic = HeaderMap::new();
    basic.insert(
        "authorization",
        HeaderValue::from_static("Basic dXNlcjpwdw=="),
    );
    assert_eq!(auth.authenticate(&basic, &root()), Ok(None));
    // The default locations include the access_token query parameter.
    let t = pyjwt(&key, "ES256", json!({"iss": ISS, "sub": "q"}));
    let uri: Uri = format!("/p?a=1&access_token={t}").parse().unwrap();
    assert_eq!(
        auth.authenticate(&HeaderMap::new(), &uri)
            .unwrap()
            .unwrap()
            .subject,
        "q"
    );
}

#[test]
fn from_headers_with_prefix_and_from_params() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "ed25519", "k");
    let mut r = rule(&jwks(&[&key]));
    r.from_headers = vec![JwtHeader {
        name: "x-jwt-assertion".into(),
        prefix: "Token ".into(),
    }];
    r.from_params = vec!["my_token".into()];
    let auth = JwtAuthenticator::new(vec![r], JwtOptions::default()).unwrap();
    let token = pyjwt(
        &key,
        "EdDSA",
        json!({"iss": ISS, "sub": "dave", "exp": "now+60"}),
    );

    let mut h = HeaderMap::new();
    h.insert(
        "x-jwt-assertion",
        HeaderValue::from_str(&format!("Token {token}")).unwrap(),
    );
    assert_eq!(
        auth.authenticate(&h, &root()).unwrap().unwrap().subject,
        "dave"
    );

    // Without the prefix the header holds no token for this rule.
    let mut h = HeaderMap::new();
    h.insert("x-jwt-assertion", HeaderValue::from_str(&token).unwrap());
    assert_eq!(auth.authenticate(&h, &root()), Ok(None));

    // Explicit locations replace the defaults: a Bearer token is not looked at.
    assert_eq!(auth.authenticate(&bearer(&token), &root()), Ok(None));
    assert_eq!(
        auth.authenticate(&bearer("garbage.garbage.garbage"), &root()),
        Ok(None)
    );

    let uri: Uri = format!("/items?x=1&my_token={token}").parse().unwrap();
    assert_eq!(
        auth.authenticate(&HeaderMap::new(), &uri)
            .unwrap()
            .unwrap()
            .subject,
        "dave"
    );
    let uri: Uri = "/items?my_token=a.b.c".parse().unwrap();
    assert!(matches!(
        auth.authenticate(&HeaderMap::new(), &uri),
        Err(JwtError::BadHeader { .. })
    ));
}

#[test]
fn multiple_tokens_all_must_be_valid_and_first_wins() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "p256", "k");
    let other = Key::generate(dir.path(), "p256", "other");
    let auth = JwtAuthenticator::new(vec![rule(&jwks(&[&key]))], JwtOptions::default()).unwrap();
    let alice = pyjwt(&key, "ES256", json!({"iss": ISS, "sub": "alice"}));
    let bob = pyjwt(&key, "ES256", json!({"iss": ISS, "sub": "bob"}));
    let forged = pyjwt(
        &other.with_kid("k"),
        "ES256",
        json!({"iss": ISS, "sub": "root"}),
    );

    let uri: Uri = format!("/?access_token={bob}").parse().unwrap();
    let info = auth.authenticate(&bearer(&alice), &uri).unwrap().unwrap();
    assert_eq!(
        info.subject, "alice",
        "the Authorization header comes first"
    );

    let uri: Uri = format!("/?access_token={forged}").parse().unwrap();
    assert_eq!(
        auth.authenticate(&bearer(&alice), &uri).unwrap_err(),
        JwtError::InvalidSignature
    );
}

#[test]
fn rule_is_picked_by_issuer() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = Key::generate(dir.path(), "rsa", "a");
    let b = Key::generate(dir.path(), "p384", "b");
    let rules = vec![
        JwtRule {
            issuer: "issuer-a".into(),
            jwks: Some(jwks(&[&a])),
            ..Default::default()
        },
        JwtRule {
            issuer: "issuer-b".into(),
            jwks: Some(jwks(&[&b])),
            ..Default::default()
        },
    ];
    let auth = JwtAuthenticator::new(rules, JwtOptions::default()).unwrap();
    let tb = pyjwt(&b, "ES384", json!({"iss": "issuer-b", "sub": "s"}));
    let info = auth.authenticate(&bearer(&tb), &root()).unwrap().unwrap();
    assert_eq!(
        (info.rule_index, info.principal.as_str()),
        (1, "issuer-b/s")
    );
    // Issuer b's token signed with issuer a's key: right issuer, wrong keys.
    let cross = pyjwt(
        &a.with_kid("b"),
        "RS256",
        json!({"iss": "issuer-b", "sub": "s"}),
    );
    assert!(auth.authenticate(&bearer(&cross), &root()).is_err());
}

#[test]
fn outputs_payload_claims_and_token_forwarding() {
    if !pyjwt_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "rsa", "k");
    let set = jwks(&[&key]);
    let mut r = rule(&set);
    r.output_payload_to_header = Some("x-jwt-payload".into());
    r.output_claim_to_headers = vec![
        ClaimToHeader {
            header: "x-jwt-sub".into(),
            claim: "sub".into(),
        },
        ClaimToHeader {
            header: "x-jwt-team".into(),
            claim: "org.team".into(),
        },
        ClaimToHeader {
            header: "x-jwt-groups".into(),
            claim: "groups".into(),
        },
    ];
    let auth = JwtAuthenticator::new(vec![r.clone()], JwtOptions::default()).unwrap();
    let token = pyjwt(
        &key,
        "RS256",
        json!({"iss": ISS, "sub": "erin", "org": {"team": "blue"}, "groups": ["a", "b"]}),
    );
    let mut headers = bearer(&token);
    headers.insert("x-jwt-sub", HeaderValue::from_static("spoofed"));
    let info = auth.authenticate(&headers, &root()).unwrap().unwrap();
    auth.remove_spoofed_outputs(&mut headers);
    auth.apply_outputs(&info, &mut headers);
    assert!(
        !headers.contains_key("authorization"),
        "token removed by default"
    );
    assert_eq!(headers["x-jwt-sub"], "erin");
    assert_eq!(headers["x-jwt-team"], "blue");
    assert_eq!(headers["x-jwt-groups"], "a,b");
    let payload = URL_SAFE_NO_PAD
        .decode(headers["x-jwt-payload"].as_bytes())
        .unwrap();
    let payload: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(payload["sub"], "erin");

    // A client cannot smuggle output headers on an unauthenticated request.
    let mut anon = HeaderMap::new();
    anon.insert("x-jwt-payload", HeaderValue::from_static("e30"));
    assert_eq!(auth.authenticate(&anon, &root()), Ok(None));
    auth.remove_spoofed_outputs(&mut anon);
    assert!(anon.is_empty());

    r.forward_original_token = true;
    let auth = JwtAuthenticator::new(vec![r], JwtOptions::default()).unwrap();
    let mut headers = bearer(&token);
    let info = auth.authenticate(&headers, &root()).unwrap().unwrap();
    auth.apply_outputs(&info, &mut headers);
    assert!(
        headers.contains_key("authorization"),
        "forwardOriginalToken keeps it"
    );
}

#[test]
fn configuration_errors_are_reported() {
    let bad = JwtAuthenticator::new(
        vec![JwtRule {
            issuer: "i".into(),
            jwks: Some(r#"{"keys":[]}"#.into()),
            ..Default::default()
        }],
        JwtOptions::default(),
    );
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("jwtRules[0]: invalid jwks"));
    let bad = JwtAuthenticator::new(
        vec![JwtRule {
            issuer: "i".into(),
            jwks_uri: Some("ftp://x/jwks".into()),
            ..Default::default()
        }],
        JwtOptions::default(),
    );
    assert!(bad.is_err());
    let bad = JwtAuthenticator::new(vec![JwtRule::default()], JwtOptions::default());
    assert!(bad.unwrap_err().to_string().contains("issuer is required"));
}
