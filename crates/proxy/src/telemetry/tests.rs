use std::collections::BTreeMap;

use trustmesh_identity::SpiffeId;

use std::sync::atomic::Ordering;

use super::labels::lock;
use super::peer::Known;
use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// The sample line of `family` whose labels contain every one of `having`.
fn sample<'a>(text: &'a str, family: &str, having: &[&str]) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && having.iter().all(|h| l.contains(h)))
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn names_derive_from_labels_as_istio_does() {
    let w = Workload::from_labels(None, "shop", "sa-cart", &labels(&[]));
    assert_eq!(&*w.name, "sa-cart");
    assert_eq!(&*w.canonical_service, "sa-cart");
    assert_eq!(&*w.canonical_revision, "latest");
    assert_eq!(&*w.app, "unknown");

    let w = Workload::from_labels(
        None,
        "shop",
        "sa",
        &labels(&[("app", "cart"), ("version", "v2")]),
    );
    assert_eq!((&*w.name, &*w.app, &*w.version), ("cart", "cart", "v2"));
    assert_eq!(
        (&*w.canonical_service, &*w.canonical_revision),
        ("cart", "v2")
    );

    // The canonical labels win over app.kubernetes.io/*, which win over app/version.
    let w = Workload::from_labels(
        Some("cart-deploy"),
        "shop",
        "sa",
        &labels(&[
            ("app", "cart"),
            ("version", "v2"),
            ("app.kubernetes.io/name", "kcart"),
            ("app.kubernetes.io/version", "k3"),
            ("service.istio.io/canonical-name", "ccart"),
        ]),
    );
    assert_eq!(&*w.name, "cart-deploy");
    assert_eq!(
        (&*w.canonical_service, &*w.canonical_revision),
        ("ccart", "k3")
    );
}

#[test]
fn a_request_renders_istios_labels_and_histograms() {
    let istio = Istio::default();
    istio.set_own(Workload::from_labels(
        None,
        "shop",
        "cart",
        &labels(&[("app", "cart"), ("version", "v1")]),
    ));
    let own = id("spiffe://cluster.local/ns/shop/sa/cart");
    let peer = id("spiffe://cluster.local/ns/web/sa/front");
    let known = labels(&[("app", "frontend")]);
    let side = istio.inbound_side(
        Some(&peer),
        &own,
        Some(Known {
            namespace: "web",
            service_account: "front",
            labels: &known,
        }),
        "127.0.0.1".parse().unwrap(),
        8080,
    );
    for (ms, code) in [(3.0, 200), (40.0, 200), (700.0, 503)] {
        let mut f = side.facts(
            &istio,
            Protocol::Http,
            istio.service("cart.shop", "cart.shop"),
            None,
        );
        f.request_bytes = 10;
        f.response_bytes = 2000;
        istio.request(&f, code, (code == 503).then_some("UF"), ms);
    }
    let mut out = String::new();
    istio.render(&mut out);
    let ok = sample(&out, "istio_requests_total", &["response_code=\"200\""]).expect(&out);
    for want in [
        "reporter=\"destination\"",
        "source_workload=\"frontend\"",
        "source_workload_namespace=\"web\"",
        "source_principal=\"spiffe://cluster.local/ns/web/sa/front\"",
        "source_canonical_revision=\"latest\"",
        "destination_workload=\"cart\"",
        "destination_principal=\"spiffe://cluster.local/ns/shop/sa/cart\"",
        "destination_version=\"v1\"",
        "destination_service=\"cart.shop\"",
        "destination_service_namespace=\"shop\"",
        "request_protocol=\"http\"",
        "grpc_response_status=\"\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(ok.contains(want), "{want} in {ok}");
    }
    assert_eq!(value(ok), 2.0);
    let failed = sample(&out, "istio_requests_total", &["response_code=\"503\""]).unwrap();
    assert!(failed.contains("response_flags=\"UF\""), "{failed}");
    // Cumulative buckets: 3 ms is under 5, 40 under 50; +Inf counts everything.
    let b = |le: &str| {
        value(
            sample(
                &out,
                "istio_request_duration_milliseconds_bucket",
                &["response_code=\"200\"", &format!("le=\"{le}\"")],
            )
            .expect(le),
        )
    };
    assert_eq!(
        (b("1"), b("5"), b("25"), b("50"), b("+Inf")),
        (0.0, 1.0, 1.0, 2.0, 2.0)
    );
    let sum = sample(
        &out,
        "istio_request_duration_milliseconds_sum",
        &["response_code=\"200\""],
    );
    assert_eq!(value(sum.unwrap()), 43.0);
    let bytes = sample(
        &out,
        "istio_response_bytes_bucket",
        &["response_code=\"503\"", "le=\"2500\""],
    );
    assert_eq!(value(bytes.unwrap()), 1.0);
    assert!(out.contains("# TYPE istio_request_duration_milliseconds histogram"));
    let readiness = sample(&out, "trustmesh_inbound_sources_total", &["port=\"8080\""]);
    assert!(readiness.is_none(), "only the outcome records sources");
}

#[test]
fn plaintext_and_tcp_are_labelled_as_istio_labels_them() {
    let istio = Istio::default();
    istio.set_own(Workload::from_labels(None, "shop", "db", &labels(&[])));
    let own = id("spiffe://cluster.local/ns/shop/sa/db");
    let side = istio.inbound_side(None, &own, None, "10.1.2.3".parse().unwrap(), 5432);
    let mut f = side.facts(&istio, Protocol::Tcp, istio.unknown_service(), None);
    istio.tcp_opened(&mut f, None);
    istio.tcp_closed(&mut f, Some("UF"), 100, 7);
    let (port, who) = f.inbound.clone().unwrap();
    istio.readiness.record(port, f.security, &who);
    let mut out = String::new();
    istio.render(&mut out);
    let opened = sample(&out, "istio_tcp_connections_opened_total", &[]).expect(&out);
    for want in [
        "source_workload=\"unknown\"",
        "source_principal=\"unknown\"",
        "destination_principal=\"unknown\"",
        // No host: Istio labels the service with our canonical service, in our namespace.
        "destination_service=\"db\"",
        "destination_service_namespace=\"shop\"",
        "request_protocol=\"tcp\"",
        "response_code=\"0\"",
        "connection_security_policy=\"none\"",
        // The flags of the moment it opened, for the close as well.
        "response_flags=\"-\"",
    ] {
        assert!(opened.contains(want), "{want} in {opened}");
    }
    assert_eq!(value(opened), 1.0);
    let closed = sample(&out, "istio_tcp_connections_closed_total", &[]).unwrap();
    assert_eq!(value(closed), 1.0);
    assert_eq!(
        value(sample(&out, "istio_tcp_sent_bytes_total", &[]).unwrap()),
        100.0
    );
    assert_eq!(
        value(sample(&out, "istio_tcp_received_bytes_total", &[]).unwrap()),
        7.0
    );
    // A plaintext peer the registry knows at its address is named as that workload.
    let vm = labels(&[("app", "billing")]);
    let known = Known {
        namespace: "shop",
        service_account: "billing",
        labels: &vm,
    };
    let side = istio.inbound_side(None, &own, Some(known), "10.1.2.4".parse().unwrap(), 5432);
    let (port, who) = side.inbound.clone().unwrap();
    istio.readiness.record(port, side.security, &who);
    let mut out = String::new();
    istio.render(&mut out);
    let vm_line = sample(&out, "trustmesh_inbound_sources_total", &["billing"]).expect(&out);
    assert!(
        vm_line.contains("source=\"workload billing.shop\""),
        "{vm_line}"
    );
    let r = sample(
        &out,
        "trustmesh_inbound_sources_total",
        &["address 10.1.2.3"],
    )
    .unwrap();
    assert!(r.contains("connection_security_policy=\"none\""), "{r}");
    assert!(r.contains("source=\"address 10.1.2.3\""), "{r}");
}

#[test]
fn the_source_reporter_says_unknown_for_security() {
    let istio = Istio::default();
    istio.set_own(Workload::from_labels(None, "web", "front", &labels(&[])));
    let own = id("spiffe://cluster.local/ns/web/sa/front");
    let side = istio.outbound_side(Some("spiffe://cluster.local/ns/shop/sa/cart"), &own, None);
    let f = side.facts(
        &istio,
        Protocol::Grpc,
        istio.cluster_service("outbound|80||cart.shop.svc.cluster.local"),
        None,
    );
    istio.request(&f, 200, None, 1.0);
    let mut out = String::new();
    istio.render(&mut out);
    let line = sample(&out, "istio_requests_total", &[]).unwrap();
    for want in [
        "reporter=\"source\"",
        "source_workload=\"front\"",
        "source_principal=\"spiffe://cluster.local/ns/web/sa/front\"",
        "destination_workload=\"unknown\"",
        "destination_workload_namespace=\"shop\"",
        "destination_service=\"cart.shop.svc.cluster.local\"",
        "destination_service_namespace=\"shop\"",
        "destination_canonical_revision=\"latest\"",
        "request_protocol=\"grpc\"",
        "connection_security_policy=\"unknown\"",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
}

#[test]
fn metadata_exchange_round_trips_and_cannot_move_a_namespace() {
    let own = Workload::from_labels(
        Some("reviews-v2"),
        "bookinfo",
        "reviews",
        &labels(&[("app", "reviews"), ("version", "v2")]),
    );
    let (value, id) = exchange::encode(&own);
    assert_eq!(
        id.to_str().unwrap(),
        "sidecar~0.0.0.0~reviews-v2.bookinfo~bookinfo.svc.cluster.local"
    );
    let back = exchange::decode(value.as_bytes()).unwrap();
    assert_eq!(back, own);
    assert!(exchange::decode(b"not base64!").is_none());
    assert!(exchange::decode(&vec![b'A'; 5000]).is_none());

    let istio = Istio::default();
    let claimed = istio
        .from_metadata(value.as_bytes(), Some("other"))
        .unwrap();
    assert_eq!(
        &*claimed.0.namespace, "other",
        "the SPIFFE ID's namespace wins"
    );
    let again = istio.from_metadata(value.as_bytes(), None).unwrap();
    assert_eq!(&*again.0.namespace, "bookinfo");
    assert_eq!(&*again.0.name, "reviews-v2");

    // Headers are taken off what the app or client would see.
    let mut h = http::HeaderMap::new();
    exchange::add(&mut h, &(value.clone(), id));
    assert!(exchange::take(&mut h).is_some());
    assert!(h.is_empty());
}

#[test]
fn cardinality_is_capped_and_overflow_counted() {
    let istio = Istio::default();
    let own = id("spiffe://cluster.local/ns/a/sa/b");
    let side = istio.inbound_side(None, &own, None, "10.0.0.1".parse().unwrap(), 80);
    for i in 0..(MAX_INTERNED + 50) {
        let host = format!("h{i}.example");
        let f = side.facts(&istio, Protocol::Http, istio.service(&host, &host), None);
        istio.request(&f, 200, None, 1.0);
    }
    let interned = lock(&istio.tables).service_count;
    assert_eq!(interned, MAX_INTERNED);
    assert_eq!(istio.overflow.load(Ordering::Relaxed), 50);
    // Past the cap hosts become `unknown`: one more series, not fifty.
    assert_eq!(lock(&istio.http).len(), MAX_INTERNED + 1);
    let mut out = String::new();
    istio.render(&mut out);
    assert!(out.contains("trustmesh_istio_metrics_overflow_total 50\n"));
}
