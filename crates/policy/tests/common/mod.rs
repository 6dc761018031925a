//! Shared helpers for the table-driven tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use trustmesh_policy::{validate, Decision, MeshConfig, PolicySet, Request, SourceText, Verdict};

/// A baseline HTTP request to `prod/reviews:9080` from `prod/frontend` over mTLS.
pub fn base() -> Value {
    json!({
        "destination": {"namespace": "prod", "labels": {"app": "reviews"}, "ip": "10.0.0.2", "port": 9080},
        "source": {"principal": "spiffe://cluster.local/ns/prod/sa/frontend", "ip": "10.0.0.1", "remoteIp": "203.0.113.7"},
        "connection": {"sni": "reviews.prod"},
        "http": {"method": "GET", "path": "/api/v1?q=1", "host": "reviews:9080", "headers": {"x-token": "a"}},
        "auth": {"principal": "https://issuer/sub", "audiences": ["aud1"], "presenter": "pres",
                 "claims": {"groups": ["admin", "dev"], "iss": "https://issuer", "nested": {"level": {"key": "deep"}}}}
    })
}

/// Applies a JSON merge patch (RFC 7386): `null` deletes.
pub fn patch(mut v: Value, p: &Value) -> Value {
    merge(&mut v, p);
    v
}

fn merge(v: &mut Value, p: &Value) {
    match p {
        Value::Object(po) => {
            if !v.is_object() {
                *v = json!({});
            }
            let vo = v.as_object_mut().unwrap();
            for (k, pv) in po {
                if pv.is_null() {
                    vo.remove(k);
                } else {
                    merge(vo.entry(k.clone()).or_insert(Value::Null), pv);
                }
            }
        }
        _ => *v = p.clone(),
    }
}

pub fn request(v: Value) -> Request {
    serde_json::from_value(v).expect("test request JSON")
}

pub fn set(yaml: &str, mesh: &MeshConfig) -> PolicySet {
    match PolicySet::from_yaml_str("test.yaml", yaml, mesh) {
        Ok((s, _)) => s,
        Err(e) => panic!("policies did not load: {e}"),
    }
}

/// Evaluates with the full explaining path and checks the fast path agrees on the verdict
/// (the fast path skips the mTLS check, so only compare when mTLS did not decide).
pub fn eval(set: &PolicySet, req: &Request) -> Decision {
    let full = set.evaluate(req);
    let fast = set.evaluate_authz_only(req);
    // The proxy's form: the workload's policies looked up once; the request then carries no
    // destination namespace/labels, and no headers when no applicable policy reads them.
    let wp = set.workload_policies(&trustmesh_policy::Workload {
        namespace: req.destination.namespace.clone(),
        labels: req.destination.labels.clone(),
    });
    let mut bare = req.clone();
    bare.destination.namespace.clear();
    bare.destination.labels.clear();
    if !wp.needs_request_headers() {
        if let Some(h) = bare.http.as_mut() {
            h.headers.clear();
        }
    }
    for after_custom in [false, true] {
        let pinned = set.evaluate_for(&wp, &bare, after_custom);
        let want = if after_custom {
            set.evaluate_after_custom(req)
        } else {
            fast.clone()
        };
        assert_eq!(
            (pinned.decision, pinned.reason),
            (want.decision, want.reason),
            "evaluate_for disagrees (after_custom={after_custom})"
        );
    }
    if !full.reason.starts_with("plaintext connection rejected")
        && full.mtls_mode != Some(trustmesh_policy::MtlsMode::Disable)
    {
        assert_eq!(
            full.decision, fast.decision,
            "fast path disagrees: full={full:?} fast={fast:?}"
        );
    }
    full
}

pub fn verdict(s: &str) -> Verdict {
    match s {
        "ALLOW" => Verdict::Allow,
        "DENY" => Verdict::Deny,
        other => panic!("unknown verdict {other}"),
    }
}

/// What `validate` reports for `yaml` read as `p.yaml`, one line per problem.
pub fn problems(yaml: &str, mesh: &MeshConfig) -> Vec<String> {
    let source = SourceText {
        file: "p.yaml".into(),
        text: yaml.into(),
    };
    validate(&[source], mesh)
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

/// Asserts a problem at `loc` (prefix) whose text contains `word`.
pub fn has(ps: &[String], loc: &str, word: &str) {
    assert!(
        ps.iter().any(|p| p.starts_with(loc) && p.contains(word)),
        "no problem at {loc} mentioning {word:?}; got:\n{}",
        ps.join("\n")
    );
}
