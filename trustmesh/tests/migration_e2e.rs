//! Trust domain migration (old.example → new.example) through a real `trustmesh proxy`, with
//! every certificate made by the trustmesh CLI: `ca init` for the old root, `ca init --parent
//! --cross-trust-domain` for the new domain's intermediate under that root, `ca issue` for the
//! SVIDs. Clients are `curl` over mTLS to the server sidecar's inbound port.

mod proxy_support;

use std::time::Duration;

use proxy_support::*;

const OLD_CART: &str = "spiffe://old.example/ns/shop/sa/cart";
const NEW_CART: &str = "spiffe://new.example/ns/shop/sa/cart";
const NEW_WEB: &str = "spiffe://new.example/ns/shop/sa/web";
const SERVER: &str = "spiffe://new.example/ns/shop/sa/catalog";

fn mesh_yaml(aliases: &[&str]) -> String {
    format!(
        "trustDomain: new.example\ntrustDomainAliases: [{}]\n",
        aliases.join(", ")
    )
}

fn authz_for(principal: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: allow-cart, namespace: shop }}\n\
         spec:\n  action: ALLOW\n  rules:\n  - from: [ {{ source: {{ principals: [\"{principal}\"] }} }} ]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_domain_policy_and_clients_keep_working_until_the_alias_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    trustmesh_in(
        dir,
        &[
            "ca",
            "init",
            "--trust-domain",
            "old.example",
            "--out",
            "ca-old",
        ],
    );
    let cross = [
        "--parent",
        "ca-old",
        "--cross-trust-domain",
        "--out",
        "ca-new",
    ];
    trustmesh_in(
        dir,
        &[&["ca", "init", "--trust-domain", "new.example"], &cross[..]].concat(),
    );
    let issue = |ca, label, id| ca_issue(dir, ca, label, id, &["--ttl", "1h"]);
    let old_cart = issue("ca-old", "old-cart", OLD_CART);
    let new_cart = issue("ca-new", "new-cart", NEW_CART);
    let new_web = issue("ca-new", "new-web", NEW_WEB);
    let server = issue("ca-new", "server", SERVER);

    let pol = policy_dir(dir, "policies");
    write_policy(
        &pol,
        "pa.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: { name: default, namespace: shop }\nspec:\n  mtls: { mode: STRICT }\n",
    );
    // Written for the OLD domain, as policies are before a migration.
    write_policy(
        &pol,
        "authz.yaml",
        &authz_for("old.example/ns/shop/sa/cart"),
    );
    let mesh_file = dir.join("mesh.yaml");
    std::fs::write(&mesh_file, mesh_yaml(&["old.example"])).unwrap();

    let backend = http_backend("catalog").await;
    let (inb, admin) = (free_port(), free_port());
    let bundles = vec![format!("new.example={}/root-cert.pem", p("ca-old"))];
    let cfg = Cfg {
        mesh: format!("\"{}\"", mesh_file.display()),
        ..Cfg::trusting(
            "shop",
            "catalog",
            &server,
            "new.example",
            bundles,
            &pol,
            admin,
        )
        .inbound(inb, backend, "http")
    };
    let mut proxy = Proxy::start(dir, "catalog", &cfg.yaml(), admin).await;

    // The old-domain client is accepted (alias) and allowed by the old-domain policy; the app
    // sees its old identity.
    let (code, body) = curl_mtls(inb, "/items", &old_cart, &[]).await;
    assert_eq!(code, 200, "{body}\n{}", proxy.logs());
    assert!(body.starts_with("catalog GET /items"), "{body}");
    assert!(body.contains(&format!("URI={OLD_CART}")), "{body}");
    assert!(body.contains(&format!("By={SERVER}")), "{body}");

    // The same workload with its new-domain SVID: the old-domain policy still matches it.
    let (code, body) = curl_mtls(inb, "/items", &new_cart, &[]).await;
    assert_eq!(code, 200, "{body}\n{}", proxy.logs());
    assert!(body.contains(&format!("URI={NEW_CART}")), "{body}");

    // Another new-domain identity passes mTLS but not the policy.
    let (code, body) = curl_mtls(inb, "/items", &new_web, &[]).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body, "RBAC: access denied");

    // Before the alias goes: `migrate plan` replays what the sidecar has served against the
    // mesh without it and predicts exactly what the steps below then observe.
    let proposed = dir.join("proposed-mesh.yaml");
    std::fs::write(&proposed, mesh_yaml(&[])).unwrap();
    let admin_addr = format!("127.0.0.1:{admin}");
    let plan = |mesh: &std::path::Path| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trustmesh"))
            .args([
                "migrate",
                "plan",
                "--admin",
                &admin_addr,
                "-o",
                "json",
                "--mesh",
            ])
            .arg(mesh)
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        (o.status.code(), doc)
    };
    let (code, doc) = plan(&proposed);
    assert_eq!(code, Some(1), "{doc:#}");
    let refused = doc["sidecars"][0]["refused"].as_array().unwrap().clone();
    let find = |peer: &str| {
        refused
            .iter()
            .find(|r| r["peer"] == peer)
            .unwrap_or_else(|| panic!("{peer} not in the plan: {doc:#}"))
    };
    let old = find(OLD_CART)["why"].as_str().unwrap();
    assert!(
        old.contains("trust domain old.example would not be trusted"),
        "{old}"
    );
    let new = find(NEW_CART);
    assert_eq!(
        new["request"],
        "GET /items (host 127.0.0.1:".to_string() + &inb.to_string() + ")"
    );
    assert!(
        new["why"]
            .as_str()
            .unwrap()
            .starts_with("policy would deny it"),
        "{new}"
    );
    // The identity policy refuses today is not news, and nothing else is listed.
    assert_eq!(refused.len(), 2, "{doc:#}");
    // Keeping the alias changes nothing: exit 0, nothing refused.
    let (code, doc) = plan(&mesh_file);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["refused"], 0, "{doc:#}");

    // Migration finished: the alias goes away (hot reload of the mesh file). The old-domain
    // client is now a foreign trust domain and is refused in the handshake.
    std::fs::write(&mesh_file, mesh_yaml(&[])).unwrap();
    let took = within(Duration::from_secs(2), || async {
        curl_mtls(inb, "/items", &old_cart, &[]).await.0 == 0
    })
    .await;
    assert!(
        took.is_some(),
        "old-domain client still served 2 s after the alias was removed\n{}",
        proxy.logs()
    );
    // Refused at TLS, not by HTTP: no response at all, and counted as a handshake error.
    let (code, body) = curl_mtls(inb, "/items", &old_cart, &["--http1.1"]).await;
    assert_eq!(code, 0, "{body}");
    let m = proxy.metrics().await;
    assert!(m.contains("reason=\"tls_handshake_error\""), "{m}");

    // Without the alias, a principal of old.example is neither the local domain nor an alias,
    // so (as in Istio) it is no longer rewritten into new.example: the old-domain policy stops
    // matching the new-domain cart...
    let (code, body) = curl_mtls(inb, "/items", &new_cart, &[]).await;
    assert_eq!(code, 403, "{body}");
    // ...until the policy itself is migrated; then the new-domain cart gets 200 again, and the
    // other identity is still refused.
    write_policy(
        &pol,
        "authz.yaml",
        &authz_for("new.example/ns/shop/sa/cart"),
    );
    let took = within(Duration::from_secs(2), || async {
        curl_mtls(inb, "/items", &new_cart, &[]).await.0 == 200
    })
    .await;
    assert!(
        took.is_some(),
        "migrated policy not applied in 2 s\n{}",
        proxy.logs()
    );
    let (code, _) = curl_mtls(inb, "/items", &new_web, &[]).await;
    assert_eq!(code, 403);
    let (code, _) = curl_mtls(inb, "/items", &old_cart, &[]).await;
    assert_eq!(code, 0);

    // /config_dump reflects the reloaded mesh.
    let (code, dump) = http_get(admin, "/config_dump").await.unwrap();
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["trustDomain"], "new.example", "{dump}");
    assert_eq!(dump["trustDomainAliases"], serde_json::json!([]), "{dump}");
    assert!(proxy.alive());
}
