//! Trust domains on captured ports: aliases, federation through a bundle folder, and a
//! migration from one domain to another with every certificate from the CLI.

use std::time::{Duration, Instant};

use super::*;
use crate::mesh_support::*;

const TEAM_A: &str = "team-a.gke.local";
const TEAM_B: &str = "team-b.eks.local";
const OLD_CART: &str = "spiffe://old.example/ns/shop/sa/cart";
const NEW_CART: &str = "spiffe://new.example/ns/shop/sa/cart";
const NEW_WEB: &str = "spiffe://new.example/ns/shop/sa/web";
const CATALOG: &str = "spiffe://new.example/ns/shop/sa/catalog";

fn allow_cart(principal: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: allow-cart, namespace: shop }}\n\
         spec:\n  action: ALLOW\n  rules:\n  - from: [ {{ source: {{ principals: [\"{principal}\"] }} }} ]\n"
    )
}

/// `trustmesh ca issue` from the CA folder `ca`: the SVID for `id` in `<dir>/<label>`.
fn cli_issue(dir: &Path, ca: &str, label: &str, id: &str) -> Svid {
    let (ca, out) = (dir.join(ca), dir.join(label));
    support::trustmesh(&[
        "ca",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--spiffe-id",
        id,
        "--out",
        out.to_str().unwrap(),
    ]);
    (out.join("cert-chain.pem"), out.join("key.pem"))
}

/// Copies `file` into the bundle folder as `name`, whole.
fn add_bundle(folder: &Path, file: &Path, name: &str) {
    let tmp = folder.join(format!(".{name}.tmp"));
    std::fs::copy(file, &tmp).unwrap();
    std::fs::rename(&tmp, folder.join(name)).unwrap();
}

/// The sidecar's config generation, once it is above `above`.
fn next_generation(n: &Node, above: u64) {
    wait("the reload", Duration::from_secs(10), || {
        config_dump(n)["generation"].as_u64().unwrap_or(0) > above
    });
}

#[test]
fn trust_domain_aliases_federation_and_migration_on_captured_ports() {
    if !netns::usable("mesh_policy_e2e", TOOLS) {
        return;
    }
    let (a_at, shop_at) = (NET.addr(11), NET.addr(12));
    let registry = [
        workload_entry("httpbin", "foo", &a_at, "httpbin", "httpbin"),
        workload_entry("catalog", "shop", &shop_at, "catalog", "catalog"),
        service_entry("httpbin", "foo", "httpbin", &[(8080, "HTTP")]),
        service_entry("catalog", "shop", "catalog", &[(8080, "HTTP")]),
    ]
    .concat();
    let (tmp, _, hub) = setup(&registry);
    let dir = tmp.path();

    // team-a's server: STRICT, a policy naming team-a's sleep and the partner's batch job;
    // its bundles in a folder, as a federation agent writes them (one root per file).
    let ca_a = OpensslCa::new(dir, "a", TEAM_A);
    let ca_b = OpensslCa::new(dir, "b", TEAM_B);
    let partner = OpensslCa::new(dir, "partner", "partner.example");
    let b_sleep = ca_b.issue("b-sleep", &format!("spiffe://{TEAM_B}/ns/foo/sa/sleep"));
    let b_other = ca_b.issue("b-other", &format!("spiffe://{TEAM_B}/ns/foo/sa/other"));
    let batch = partner.issue("batch", "spiffe://partner.example/ns/ext/sa/batch");
    policy(dir, "foo-pa.yaml", &strict_in("foo"));
    policy(
        dir,
        "foo-authz.yaml",
        &format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{ name: allow-sleep, namespace: foo }}\nspec:\n  action: ALLOW\n  rules:\n  - from: [ {{ source: {{ principals: [\"{TEAM_A}/ns/foo/sa/sleep\", \"partner.example/ns/ext/sa/batch\"] }} }} ]\n"),
    );
    let bundles = dir.join("bundles-a");
    std::fs::create_dir(&bundles).unwrap();
    add_bundle(&bundles, &ca_a.root, "team-a.pem");
    let mesh_a = dir.join("mesh-a.yaml");
    std::fs::write(&mesh_a, format!("trustDomain: {TEAM_A}\n")).unwrap();

    // The catalog, migrating from old.example to new.example: every certificate from the CLI,
    // the new domain's CA an intermediate of the old root; the policy still names the old
    // domain (migration_e2e).
    let ca_dir = |name: &str| dir.join(name).to_str().unwrap().to_string();
    support::trustmesh(&[
        "ca",
        "init",
        "--trust-domain",
        "old.example",
        "--out",
        &ca_dir("ca-old"),
    ]);
    support::trustmesh(&[
        "ca",
        "init",
        "--trust-domain",
        "new.example",
        "--parent",
        &ca_dir("ca-old"),
        "--cross-trust-domain",
        "--out",
        &ca_dir("ca-new"),
    ]);
    let old_cart = cli_issue(dir, "ca-old", "old-cart", OLD_CART);
    let new_cart = cli_issue(dir, "ca-new", "new-cart", NEW_CART);
    let new_web = cli_issue(dir, "ca-new", "new-web", NEW_WEB);
    let catalog_cert = cli_issue(dir, "ca-new", "catalog", CATALOG);
    policy(dir, "shop-pa.yaml", &strict_in("shop"));
    policy(
        dir,
        "shop-authz.yaml",
        &allow_cart("old.example/ns/shop/sa/cart"),
    );
    let mesh_new = dir.join("mesh-new.yaml");
    let aliases = |a: &str| format!("trustDomain: new.example\ntrustDomainAliases: [{a}]\n");
    std::fs::write(&mesh_new, aliases("old.example")).unwrap();

    let a = node(&hub, "team-a", &a_at);
    let shop = node(&hub, "shop", &shop_at);
    let out = node(&hub, "out", &NET.addr(OUTSIDE));
    let _apps = [
        apps(&a.ns, &["http:8080:httpbin"]),
        apps(&shop.ns, &["http:8080:catalog"]),
    ];
    let spec = |ns: &str, sa: &str, bundles: Vec<String>, mesh: &Path| Spec {
        ns: ns.into(),
        sa: sa.into(),
        app: sa.into(),
        bundles,
        mesh: format!("\"{}\"", mesh.display()),
        policy_dir: dir.join("mesh"),
        extra: String::new(),
    };
    let a_cert = ca_a.issue("a-httpbin", &format!("spiffe://{TEAM_A}/ns/foo/sa/httpbin"));
    let a_sc = start_sidecar(
        dir,
        &a,
        spec(
            "foo",
            "httpbin",
            vec![bundles.display().to_string()],
            &mesh_a,
        ),
        a_cert,
    );
    let old_root = format!("new.example={}/root-cert.pem", ca_dir("ca-old"));
    let shop_sc = start_sidecar(
        dir,
        &shop,
        spec("shop", "catalog", vec![old_root], &mesh_new),
        catalog_cert,
    );

    // team-b is accepted only once its root is trusted and it is an alias
    // (proxy_e2e::trust_domain_b_accepted_only_after_root_and_alias_added).
    let a_url = format!("https://{a_at}:8080/items");
    assert_eq!(
        get_mtls(&out.ns, &a_url, &b_sleep, &[]).0,
        0,
        "{}",
        a_sc.log.text()
    );
    // The alias alone is not enough: team-b's certificate does not chain to a trusted root.
    std::fs::write(
        &mesh_a,
        format!("trustDomain: {TEAM_A}\ntrustDomainAliases: [{TEAM_B}]\n"),
    )
    .unwrap();
    next_generation(&a, 1);
    assert_eq!(get_mtls(&out.ns, &a_url, &b_sleep, &[]).0, 0);
    // team-b's root in the bundle folder too: accepted within 2.5 s, and the policy written
    // for team-a's sleep matches team-b's.
    add_bundle(&bundles, &ca_b.root, "team-b.pem");
    let started = Instant::now();
    wait("team-b accepted", Duration::from_secs(5), || {
        get_mtls(&out.ns, &a_url, &b_sleep, &[]).0 == 200
    });
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    let (_, text) = get_mtls(&out.ns, &a_url, &b_sleep, &[]);
    assert!(
        text.contains(&format!("URI=spiffe://{TEAM_B}/ns/foo/sa/sleep")),
        "{text}"
    );
    assert_eq!(get_mtls(&out.ns, &a_url, &b_other, &[]).0, 403);

    // Federation follows the bundle folder (proxy_e2e::federation_follows_the_bundle_directory).
    assert_eq!(get_mtls(&out.ns, &a_url, &batch, &[]).0, 0);
    add_bundle(&bundles, &partner.root, "partner.example.pem");
    let started = Instant::now();
    wait("the partner accepted", Duration::from_secs(4), || {
        get_mtls(&out.ns, &a_url, &batch, &[]).0 == 200
    });
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    let (_, text) = get_mtls(&out.ns, &a_url, &batch, &[]);
    assert!(
        text.contains("URI=spiffe://partner.example/ns/ext/sa/batch"),
        "{text}"
    );
    std::fs::remove_file(bundles.join("partner.example.pem")).unwrap();
    wait("the partner refused again", Duration::from_secs(4), || {
        get_mtls(&out.ns, &a_url, &batch, &[]).0 == 0
    });

    // The migration (migration_e2e::old_domain_policy_and_clients_keep_working_until_the_alias_
    // is_removed): the old-domain client is accepted (alias) and allowed by the old-domain
    // policy, and so is the same workload with its new-domain SVID; another identity is not.
    let shop_url = format!("https://{shop_at}:8080/items");
    let (code, text) = get_mtls(&out.ns, &shop_url, &old_cart, &[]);
    assert_eq!(code, 200, "{text}\n{}", shop_sc.log.text());
    assert!(body(&text).starts_with("catalog GET /items"), "{text}");
    assert!(text.contains(&format!("URI={OLD_CART}")), "{text}");
    assert!(text.contains(&format!("By={CATALOG}")), "{text}");
    let (code, text) = get_mtls(&out.ns, &shop_url, &new_cart, &[]);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains(&format!("URI={NEW_CART}")), "{text}");
    let (code, text) = get_mtls(&out.ns, &shop_url, &new_web, &[]);
    assert_eq!((code, body(&text)), (403, "RBAC: access denied"), "{text}");
    // The alias goes away: the old-domain client is refused in the handshake...
    std::fs::write(&mesh_new, aliases("")).unwrap();
    wait("the old domain refused", Duration::from_secs(2), || {
        get_mtls(&out.ns, &shop_url, &old_cart, &[]).0 == 0
    });
    assert_eq!(get_mtls(&out.ns, &shop_url, &old_cart, &["--http1.1"]).0, 0);
    let m = shop.admin("/metrics");
    assert!(m.contains("reason=\"tls_handshake_error\""), "{m}");
    // ... and the old-domain policy no longer matches the new-domain cart, until it is migrated.
    assert_eq!(get_mtls(&out.ns, &shop_url, &new_cart, &[]).0, 403);
    policy(
        dir,
        "shop-authz.yaml",
        &allow_cart("new.example/ns/shop/sa/cart"),
    );
    wait("the migrated policy", Duration::from_secs(2), || {
        get_mtls(&out.ns, &shop_url, &new_cart, &[]).0 == 200
    });
    assert_eq!(get_mtls(&out.ns, &shop_url, &new_web, &[]).0, 403);
    assert_eq!(get_mtls(&out.ns, &shop_url, &old_cart, &[]).0, 0);
    let dump = config_dump(&shop);
    assert_eq!(dump["trustDomain"], "new.example", "{dump}");
    assert_eq!(dump["trustDomainAliases"], serde_json::json!([]), "{dump}");
}
