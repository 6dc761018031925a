use super::*;
use trustmesh_ca_server::auth::review::PodRef;

fn pod(ns: &str, name: &str, uid: &str, sa: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": name, "uid": uid},
        "spec": {"serviceAccountName": sa, "nodeName": node, "containers": []}
    }))
    .unwrap()
}

fn ztunnel(pod: Option<(&str, &str)>) -> ServiceAccount {
    ServiceAccount {
        namespace: "istio-system".into(),
        name: "ztunnel".into(),
        issuer: "test".into(),
        pod: pod.map(|(n, u)| PodRef {
            name: n.into(),
            uid: u.into(),
        }),
    }
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")).unwrap()
}

#[test]
fn a_node_proxy_obtains_its_own_nodes_identities_only() {
    let trusted = vec!["istio-system/ztunnel".parse::<NodeAccount>().unwrap()];
    let pods = vec![
        pod("istio-system", "ztunnel-a", "u-a", "ztunnel", "node-a"),
        pod("istio-system", "ztunnel-b", "u-b", "ztunnel", "node-b"),
        pod("shop", "web-1", "u-1", "web", "node-a"),
        pod("shop", "db-1", "u-2", "db", "node-b"),
        pod("shop", "pending", "u-3", "batch", ""),
    ];
    let ok =
        |caller: &ServiceAccount, req: &SpiffeId| authorize(&trusted, pods.iter(), caller, req);
    let on_a = ztunnel(Some(("ztunnel-a", "u-a")));
    assert_eq!(ok(&on_a, &id("shop", "web")), Ok(()));
    let e = ok(&on_a, &id("shop", "db")).unwrap_err();
    assert!(
        e.contains("no pod of shop/db runs on node \"node-a\""),
        "{e}"
    );
    assert!(
        ok(&on_a, &id("shop", "batch")).is_err(),
        "an unscheduled pod is on no node"
    );
    assert!(
        ok(&on_a, &id("other", "web")).is_err(),
        "namespace is part of the identity"
    );
    assert!(ok(&ztunnel(Some(("ztunnel-b", "u-b"))), &id("shop", "db")).is_ok());

    let stale = ok(&ztunnel(Some(("ztunnel-a", "old-uid"))), &id("shop", "web")).unwrap_err();
    assert!(stale.contains("re-created"), "{stale}");
    let unbound = ok(&ztunnel(None), &id("shop", "web")).unwrap_err();
    assert!(unbound.contains("not bound to a pod"), "{unbound}");
    let gone = ok(&ztunnel(Some(("ztunnel-z", "u-z"))), &id("shop", "web")).unwrap_err();
    assert!(gone.contains("not known"), "{gone}");
    // A workload's own token, even bound to a pod on the node, impersonates nobody.
    let web = ServiceAccount {
        namespace: "shop".into(),
        name: "web".into(),
        issuer: "test".into(),
        pod: Some(PodRef {
            name: "web-1".into(),
            uid: "u-1".into(),
        }),
    };
    let untrusted = ok(&web, &id("shop", "web")).unwrap_err();
    assert!(
        untrusted.contains("not a trusted node account"),
        "{untrusted}"
    );
    // A trusted name in a pod running as another account is refused.
    let mut liar = pods.clone();
    liar.push(pod("istio-system", "fake", "u-f", "default", "node-b"));
    let e = authorize(
        &trusted,
        liar.iter(),
        &ztunnel(Some(("fake", "u-f"))),
        &id("shop", "db"),
    )
    .unwrap_err();
    assert!(e.contains("runs as default"), "{e}");
}

#[test]
fn node_accounts_parse() {
    assert!("istio-system/ztunnel".parse::<NodeAccount>().is_ok());
    for bad in ["ztunnel", "/ztunnel", "ns/", "a/b/c"] {
        assert!(bad.parse::<NodeAccount>().is_err(), "{bad}");
    }
}
