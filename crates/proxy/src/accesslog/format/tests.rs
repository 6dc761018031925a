//! The format parser and writer: Istio's default line, operators, JSON, errors at load.

use super::*;

fn record() -> AccessLog {
    AccessLog {
        // 2026-11-30T14:22:37.5Z
        time: crate::clock::Stamp(
            std::time::UNIX_EPOCH + std::time::Duration::new(1_796_048_557, 500_000_000),
        ),
        direction: "inbound",
        protocol: "http",
        listener_port: 15006,
        source_address: "10.0.0.1:40000".into(),
        destination_address: "127.0.0.1:8080".into(),
        source_principal: Some("spiffe://cluster.local/ns/a/sa/b".into()),
        request_id: Some("id-1".into()),
        method: Some("GET".into()),
        path: Some("/headers".into()),
        authority: Some("svc:8080".into()),
        status: Some(200),
        decision: "allow",
        duration_ms: 7,
        response_code_details: Some("via_upstream".into()),
        istio_dry_run_deny_shadow_engine_result: Some("denied"),
        istio_dry_run_deny_shadow_effective_policy_id: Some("ns[a]-policy[d]-rule[0]".into()),
        http_version: Some("HTTP/1.1"),
        local_address: Some("127.0.0.1:15006".into()),
        ..Default::default()
    }
}

fn line(f: &Format, r: &AccessLog) -> String {
    let mut out = Vec::new();
    f.write(r, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn istios_default_text_line() {
    let f = Format::text(ISTIO_TEXT).unwrap();
    assert_eq!(
        f.needs.request_headers,
        ["x-envoy-original-path", "x-forwarded-for", "user-agent"]
    );
    assert_eq!(f.needs.response_headers, ["x-envoy-upstream-service-time"]);
    let mut r = record();
    r.request_headers = vec![None, None, Some("curl/8.5.0".into())];
    assert_eq!(
        line(&f, &r),
        "[2026-11-30T14:22:37.500Z] \"GET /headers HTTP/1.1\" 200 - via_upstream - \"-\" 0 0 7 - \"-\" \
         \"curl/8.5.0\" \"id-1\" \"svc:8080\" \"127.0.0.1:8080\" inbound|8080|| - 127.0.0.1:15006 \
         10.0.0.1:40000 - default"
    );
}

#[test]
fn alternatives_lengths_and_metadata() {
    let f = Format::text(
        "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):4% %DYNAMIC_METADATA(envoy.filters.http.rbac:istio_dry_run_deny_shadow_effective_policy_id)% \
         %DYNAMIC_METADATA(envoy.common:access_log_hint)% %REQ(:SCHEME)% 100%% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    )
    .unwrap();
    let mut r = record();
    r.request_headers = vec![None];
    assert_eq!(
        line(&f, &r),
        "/hea ns[a]-policy[d]-rule[0] - - 100% 10.0.0.1"
    );
    r.access_log_hint = true;
    r.request_headers = vec![Some("/orig".into())];
    assert_eq!(
        line(&f, &r),
        "/ori ns[a]-policy[d]-rule[0] true - 100% 10.0.0.1"
    );
}

#[test]
fn json_keeps_types_and_writes_null_for_unset() {
    let f = Format::json(
        r#"{"code":"%RESPONSE_CODE%","flags":"%RESPONSE_FLAGS%","path":"%REQ(:PATH)%","both":"%REQ(:METHOD)% %REQ(:PATH)%","fixed":1,"shadow":"%DYNAMIC_METADATA(envoy.filters.http.rbac)%"}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line(&f, &record())).unwrap();
    assert_eq!(v["code"], 200);
    assert_eq!(v["flags"], serde_json::Value::Null);
    assert_eq!(v["path"], "/headers");
    assert_eq!(v["both"], "GET /headers");
    assert_eq!(v["fixed"], 1);
    let shadow: serde_json::Value = serde_json::from_str(v["shadow"].as_str().unwrap()).unwrap();
    assert_eq!(shadow["istio_dry_run_deny_shadow_engine_result"], "denied");
}

#[test]
fn unknown_operators_are_refused_by_name() {
    for (f, want) in [
        ("%NOT_AN_OPERATOR%", "%NOT_AN_OPERATOR%"),
        ("[%START_TIME", "never closed"),
        ("%REQ()%", "header name is required"),
        ("%REQ(a b)%", "not a header name"),
        ("%RESPONSE_CODE(x)%", "takes no argument"),
        ("%REQ(X):abc%", "must be a number"),
    ] {
        let e = Format::text(f).unwrap_err();
        assert!(e.contains(want), "{f}: {e}");
    }
    assert!(Format::json("[1]").unwrap_err().contains("JSON object"));
    assert!(Format::json(r#"{"a":{"b":"%DURATION%"}}"#)
        .unwrap_err()
        .contains("nested"));
}

#[test]
fn the_mesh_config_chooses() {
    let mut mesh = MeshConfig::default();
    assert_eq!(Format::from_mesh(&mesh).unwrap(), None);
    mesh.access_log_encoding = Some(AccessLogEncoding::Text);
    assert_eq!(
        Format::from_mesh(&mesh).unwrap(),
        Some(Format::text(ISTIO_TEXT).unwrap())
    );
    mesh.access_log_format = Some("%DURATION%\n".into());
    assert_eq!(
        line(&Format::from_mesh(&mesh).unwrap().unwrap(), &record()),
        "7"
    );
    // JSON without a format keeps trustmesh's record.
    mesh.access_log_encoding = Some(AccessLogEncoding::Json);
    mesh.access_log_format = None;
    assert_eq!(Format::from_mesh(&mesh).unwrap(), None);
    mesh.access_log_format = Some("%BOGUS%".into());
    assert!(Format::from_mesh(&mesh).is_err());
}

#[test]
fn start_time_has_milliseconds() {
    assert_eq!(
        ops::start_time("2026-01-02T03:04:05Z"),
        "2026-01-02T03:04:05.000Z"
    );
    assert_eq!(
        ops::start_time("2026-01-02T03:04:05.123456789Z"),
        "2026-01-02T03:04:05.123Z"
    );
}
