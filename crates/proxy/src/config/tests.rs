use super::*;

const GOOD: &str = r#"
workload: { namespace: foo, serviceAccount: web, labels: { app: web } }
certs: { key: key.pem, certChain: chain.pem }
trustBundles: [ "root.pem", "b.example=/etc/b.pem" ]
mesh: { trustDomain: cluster.local }
policyDir: policies
inbound: [ { port: 15006, targetPort: 8080, protocol: http } ]
outbound: [ { port: 15001, peer: "127.0.0.1:16006", peerTrustDomain: cluster.local } ]
admin: { address: "127.0.0.1:15000" }
"#;

#[test]
fn parses_and_resolves_relative_paths() {
    let c = ProxyConfig::parse(GOOD, Path::new("/cfg/p.yaml"), Path::new("/cfg"))
        .unwrap()
        .0;
    assert_eq!(c.certs.key, PathBuf::from("/cfg/key.pem"));
    assert_eq!(c.policy_dir, Some(PathBuf::from("/cfg/policies")));
    let b = c.bundle_sources();
    assert_eq!(b[0].path, PathBuf::from("/cfg/root.pem"));
    assert_eq!(b[1].trust_domain.as_deref(), Some("b.example"));
    assert_eq!(b[1].path, PathBuf::from("/etc/b.pem"));
    assert_eq!(c.inbound[0].protocol, Protocol::Http);
    assert_eq!(c.outbound[0].protocol, Protocol::Tcp);
    assert!(c.outbound[0].tls);
    assert_eq!(c.timeouts.handshake(), DEFAULT_HANDSHAKE.get());
    assert_eq!(c.reload_poll, DEFAULT_RELOAD_POLL);
}

#[test]
fn unknown_field_names_the_field() {
    let bad = GOOD.replace("targetPort: 8080", "targetPort: 8080, prot: http");
    let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("p.yaml: inbound[0]"), "{e}");
    assert!(e.contains("prot"), "{e}");
}

#[test]
fn bad_port_type_names_the_field() {
    let bad = GOOD.replace("port: 15006", "port: seventy");
    let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("inbound[0].port"), "{e}");
}

#[test]
fn duplicate_listener_rejected() {
    let bad = GOOD.replace("port: 15001", "port: 15006");
    let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("outbound[0].port") && e.contains("already used"),
        "{e}"
    );
}

#[test]
fn tls_outbound_needs_expected_peer() {
    let bad = GOOD.replace(", peerTrustDomain: cluster.local", "");
    let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("outbound[0]") && e.contains("peerIdentity"),
        "{e}"
    );
}

#[test]
fn concurrency_defaults_to_the_cores_and_is_bounded() {
    let parse = |extra: &str| {
        ProxyConfig::parse(
            &format!("{GOOD}{extra}"),
            Path::new("p.yaml"),
            Path::new("."),
        )
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(parse("").unwrap().0.worker_threads(), cores);
    assert_eq!(parse("concurrency: 0\n").unwrap().0.worker_threads(), cores);
    assert_eq!(parse("concurrency: 3\n").unwrap().0.worker_threads(), 3);
    let e = parse("concurrency: 5000\n").unwrap_err().to_string();
    assert!(e.contains("concurrency"), "{e}");
    let e = parse("concurrency: -1\n").unwrap_err().to_string();
    assert!(e.contains("concurrency"), "{e}");
}

fn parse_extra(extra: &str) -> Result<(ProxyConfig, Deprecations), String> {
    ProxyConfig::parse(
        &format!("{GOOD}{extra}"),
        Path::new("p.yaml"),
        Path::new("."),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn durations_in_go_spelling() {
    let (c, old) = parse_extra(
        "reloadPoll: 250ms\ntimeouts: { handshake: 1.5s, requestHeaders: 1m, connect: 2s, \
         terminationDrain: 0s, tcpIdle: 1h30m, httpIdle: 90s, maxHeaderBytes: 8192 }\n",
    )
    .unwrap();
    assert!(old.is_empty(), "{:?}", old.messages());
    let ms = std::time::Duration::from_millis;
    assert_eq!(c.reload_poll.get(), ms(250));
    assert_eq!(c.timeouts.handshake(), ms(1500));
    assert_eq!(c.timeouts.header_read(), ms(60_000));
    assert_eq!(c.timeouts.connect(), ms(2000));
    assert_eq!(c.timeouts.drain(), ms(0));
    assert_eq!(c.timeouts.tcp_idle(), ms(5_400_000));
    assert_eq!(c.timeouts.http_idle(), ms(90_000));
    assert_eq!(c.timeouts.max_header_bytes, 8192);
    // The admin config dump shows them the way they are written.
    let dump = serde_json::to_value(&c).unwrap();
    assert_eq!(dump["reloadPoll"], "250ms");
    assert_eq!(dump["timeouts"]["tcpIdle"], "1h30m0s");
}

#[test]
fn old_millisecond_keys_load_with_a_deprecation() {
    let (c, old) = parse_extra(
        "reloadPollMs: 250\ntimeouts: { handshakeMs: 500, headerReadMs: 60000, connectMs: 2000, \
         drainMs: 5000, tcpIdleMs: 400, httpIdleMs: 3600000 }\n",
    )
    .unwrap();
    let ms = std::time::Duration::from_millis;
    assert_eq!(c.reload_poll.get(), ms(250));
    assert_eq!(c.timeouts.handshake(), ms(500));
    assert_eq!(c.timeouts.header_read(), ms(60_000));
    assert_eq!(c.timeouts.connect(), ms(2000));
    assert_eq!(c.timeouts.drain(), ms(5000));
    assert_eq!(c.timeouts.tcp_idle(), ms(400));
    assert_eq!(c.timeouts.http_idle(), ms(3_600_000));
    let want = |old: &str, new: &str| format!("p.yaml: `{old}` is deprecated; write `{new}`");
    assert_eq!(
        old.messages(),
        [
            want("reloadPollMs: 250", "reloadPoll: 250ms"),
            want("timeouts.handshakeMs: 500", "timeouts.handshake: 500ms"),
            want(
                "timeouts.headerReadMs: 60000",
                "timeouts.requestHeaders: 1m"
            ),
            want("timeouts.connectMs: 2000", "timeouts.connect: 2s"),
            want("timeouts.drainMs: 5000", "timeouts.terminationDrain: 5s"),
            want("timeouts.tcpIdleMs: 400", "timeouts.tcpIdle: 400ms"),
            want("timeouts.httpIdleMs: 3600000", "timeouts.httpIdle: 1h"),
        ]
    );
}

#[test]
fn both_spellings_of_a_timeout_are_an_error() {
    let e = parse_extra("timeouts: { handshake: 1s, handshakeMs: 1000 }\n").unwrap_err();
    assert_eq!(
        e,
        "p.yaml: timeouts.handshake: `handshakeMs` is the deprecated spelling of \
         `handshake`; give only `handshake`"
    );
    let e = parse_extra("reloadPoll: 1s\nreloadPollMs: 1000\n").unwrap_err();
    assert!(e.starts_with("p.yaml: reloadPoll: `reloadPollMs`"), "{e}");
}

#[test]
fn bad_duration_names_file_and_field_path() {
    let e = parse_extra("timeouts: { tcpIdle: 10 }\n").unwrap_err();
    assert!(
        e.starts_with("p.yaml: timeouts.tcpIdle: invalid duration \"10\": missing unit"),
        "{e}"
    );
    let e = parse_extra("reloadPoll: -1s\n").unwrap_err();
    assert!(
        e.starts_with("p.yaml: reloadPoll: invalid duration \"-1s\""),
        "{e}"
    );
    let e = parse_extra("reloadPoll: 10ms\n").unwrap_err();
    assert_eq!(e, "p.yaml: reloadPoll: 10ms is not between 100ms and 1m0s");
    let e = parse_extra("reloadPollMs: 60001\n").unwrap_err();
    assert!(
        e.starts_with("p.yaml: reloadPoll: 1m0.001s is not between"),
        "{e}"
    );
    let e = parse_extra("timeouts: { httpIdle: 0s }\n").unwrap_err();
    assert!(e.contains("greater than 0"), "{e}");
}

#[test]
fn bundle_prefix_only_without_slash() {
    let s = parse_bundle_source("/a=b/c.pem");
    assert_eq!(s.trust_domain, None);
    assert_eq!(s.path, PathBuf::from("/a=b/c.pem"));
}

#[test]
fn inline_mesh_config_errors_name_the_file_and_the_mesh_field() {
    let bad = GOOD.replace(
        "mesh: { trustDomain: cluster.local }",
        "mesh: { trustDomain: cluster.local, outboundTrafficPolicy: { mode: DENY } }",
    );
    let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("p.yaml: mesh.outboundTrafficPolicy.mode: unknown variant `DENY`"),
        "{e}"
    );
    // The same field through an IstioOperator envelope names the envelope's path.
    let bad = GOOD.replace(
        "mesh: { trustDomain: cluster.local }",
        "mesh: { spec: { meshConfig: { trustDomainAliases: 7 } } }",
    );
    let e = ProxyConfig::parse(&bad, Path::new("p.yaml"), Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("p.yaml: mesh.spec.meshConfig.trustDomainAliases:"),
        "{e}"
    );
}

#[test]
fn a_control_plane_replaces_the_policy_and_mesh_files() {
    let with_cp = GOOD
        .replace("mesh: { trustDomain: cluster.local }\n", "")
        .replace(
            "policyDir: policies\n",
            "controlPlane: { addresses: [\"cp-a:15012\", \"cp-b:15012\"], rootCert: root.pem, token: token }\n",
        );
    let c = ProxyConfig::parse(&with_cp, Path::new("/cfg/p.yaml"), Path::new("/cfg"))
        .unwrap()
        .0;
    let cp = c.control_plane.as_ref().unwrap();
    assert_eq!(cp.servers(), ["https://cp-a:15012", "https://cp-b:15012"]);
    assert_eq!(cp.root_cert, PathBuf::from("/cfg/root.pem"));
    assert_eq!(cp.server_name, DEFAULT_SERVER_NAME);
    assert_eq!(cp.initial_fetch_timeout, DEFAULT_INITIAL_FETCH_TIMEOUT);
    assert!(c.watched_paths().contains(&PathBuf::from("/cfg/token")));

    let err = |yaml: &str| {
        ProxyConfig::parse(yaml, Path::new("p.yaml"), Path::new("."))
            .unwrap_err()
            .to_string()
    };
    let both = with_cp.replace("controlPlane:", "policyDir: policies\ncontrolPlane:");
    assert!(
        err(&both).starts_with("p.yaml: policyDir: policies come from the control plane"),
        "{}",
        err(&both)
    );
    let mesh_too = format!("{with_cp}mesh: {{ trustDomain: cluster.local }}\n");
    assert!(
        err(&mesh_too).starts_with("p.yaml: mesh: the mesh config comes from the control plane")
    );
    let no_port = with_cp.replace("\"cp-b:15012\"", "\"cp-b\"");
    assert_eq!(
        err(&no_port),
        "p.yaml: controlPlane.addresses[1]: \"cp-b\" is not host:port"
    );
    let none = with_cp.replace("addresses: [\"cp-a:15012\", \"cp-b:15012\"], ", "");
    assert!(err(&none).starts_with("p.yaml: controlPlane.address: name the control plane"));
    // Without a control plane the mesh config is still required.
    let no_mesh = GOOD.replace("mesh: { trustDomain: cluster.local }\n", "");
    assert!(
        err(&no_mesh).starts_with("p.yaml: mesh: must be a mapping"),
        "{}",
        err(&no_mesh)
    );
}

#[test]
fn hbone_defaults_to_istios_port_in_transparent_mode_and_is_opt_in_otherwise() {
    let parse = |text: &str| ProxyConfig::parse(text, Path::new("p.yaml"), Path::new("."));
    let explicit = parse(GOOD).unwrap().0;
    assert_eq!(explicit.hbone_listener(), None);
    let captured = parse(&format!("{GOOD}capture: {{}}\n")).unwrap().0;
    let h = captured.hbone_listener().unwrap();
    assert_eq!(
        (h.port, h.max_concurrent_streams, h.captured),
        (15008, 200, true)
    );
    assert_eq!(captured.hbone_slot(), captured.listener_count() - 1);
    let opted = parse(&format!(
        "{GOOD}hbone: {{ port: 15009, maxConcurrentStreams: 8 }}\n"
    ))
    .unwrap()
    .0;
    let h = opted.hbone_listener().unwrap();
    assert_eq!(
        (h.port, h.max_concurrent_streams, h.captured),
        (15009, 8, false)
    );
    for (extra, field) in [
        ("capture: {}\nhbone: {}\n", "p.yaml: hbone"),
        (
            "hbone: { maxConcurrentStreams: 0 }\n",
            "hbone.maxConcurrentStreams",
        ),
        ("hbone: { port: 15006 }\n", "hbone.port"),
        ("capture: { hbonePort: 15006 }\n", "capture.hbonePort"),
        ("hbone: { port: 15009, stream: 1 }\n", "hbone"),
    ] {
        let e = parse(&format!("{GOOD}{extra}")).unwrap_err().to_string();
        assert!(e.contains(field), "{extra}: {e}");
    }
}

/// `workload.name` is optional: unset, Istio's metric labels fall back to the `app` label.
#[test]
fn workload_name_is_optional() {
    let c = ProxyConfig::parse(GOOD, Path::new("p.yaml"), Path::new("."))
        .unwrap()
        .0;
    assert_eq!(c.workload.name, None);
    let own = crate::snapshot::OwnTelemetry::of(&c).workload;
    assert_eq!(&*own.name, "web");
    let named = GOOD.replace("namespace: foo,", "namespace: foo, name: web-v1,");
    let c = ProxyConfig::parse(&named, Path::new("p.yaml"), Path::new("."))
        .unwrap()
        .0;
    assert_eq!(c.workload.name.as_deref(), Some("web-v1"));
    let own = crate::snapshot::OwnTelemetry::of(&c).workload;
    assert_eq!((&*own.name, &*own.canonical_service), ("web-v1", "web"));
}
