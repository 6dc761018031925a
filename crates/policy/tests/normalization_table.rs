//! Request targets an attacker would try, against a DENY on `/admin` and `/admin/*` and an ALLOW
//! on `/public/*`, in each `pathNormalization` mode: the normalized path (what policy matches and
//! the app receives) and the decision. Envoy's behaviour behind each mode is Istio's
//! (`tests/integration/security/normalization_test.go` and the "Authorization Policy
//! Normalization" reference page in istio/istio); `400` marks a request refused before policy.
//! The one place we refuse where Istio forwards is an encoded slash next to a dot segment in the
//! modes that keep encoded slashes (see `trustmesh_policy::normalize`).

use trustmesh_policy::normalize::{http_request, Normalization};
use trustmesh_policy::{MeshConfig, PolicySet, Request, Verdict};

const DENY_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: prod}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin", "/admin/*"]}}]}]
"#;

const ALLOW_PUBLIC: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: public-only, namespace: prod}
spec:
  rules: [{to: [{operation: {paths: ["/public/*"]}}]}]
"#;

/// Request target -> per mode (NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES):
/// `"<normalized path> <A|D>"` (allowed or denied by the DENY policy) or `"400"`.
#[rustfmt::skip]
const TABLE: &[(&str, [&str; 4])] = &[
    ("/admin", ["/admin D", "/admin D", "/admin D", "/admin D"]),
    ("/admin/", ["/admin/ D", "/admin/ D", "/admin/ D", "/admin/ D"]),
    ("/admin/x", ["/admin/x D", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/admin?x=1", ["/admin?x=1 D", "/admin?x=1 D", "/admin?x=1 D", "/admin?x=1 D"]),
    ("/admin/x?y=/../z", ["/admin/x?y=/../z D", "/admin/x?y=/../z D", "/admin/x?y=/../z D", "/admin/x?y=/../z D"]),
    ("/Admin/x", ["/Admin/x A", "/Admin/x A", "/Admin/x A", "/Admin/x A"]),
    ("/ADMIN", ["/ADMIN A", "/ADMIN A", "/ADMIN A", "/ADMIN A"]),
    ("/foo/../admin/x", ["/foo/../admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/./admin/x", ["/./admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/%61dmin/x", ["/%61dmin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/adm%69n", ["/adm%69n A", "/admin D", "/admin D", "/admin D"]),
    ("/%41dmin", ["/%41dmin A", "/Admin A", "/Admin A", "/Admin A"]),
    ("/%2561dmin", ["/%2561dmin A", "/%2561dmin A", "/%2561dmin A", "/%2561dmin A"]),
    ("/foo/%2e%2e/admin/x", ["/foo/%2e%2e/admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/foo/%2E%2E/admin/x", ["/foo/%2E%2E/admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/foo/.%2e/admin/x", ["/foo/.%2e/admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/foo/%2e./admin/x", ["/foo/%2e./admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/public/../admin/x", ["/public/../admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/public/./../admin/x", ["/public/./../admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/admin/./x", ["/admin/./x D", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/admin/../admin/x", ["/admin/../admin/x D", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/%2e/admin/x", ["/%2e/admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/a/b/../../admin/x", ["/a/b/../../admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/../admin/x", ["/../admin/x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/../../admin", ["/../../admin A", "/admin D", "/admin D", "/admin D"]),
    ("/admin/x/..", ["/admin/x/.. D", "/admin/ D", "/admin/ D", "/admin/ D"]),
    ("/admin/.", ["/admin/. D", "/admin/ D", "/admin/ D", "/admin/ D"]),
    ("/admin/..", ["/admin/.. D", "/ A", "/ A", "/ A"]),
    ("/admin/.x", ["/admin/.x D", "/admin/.x D", "/admin/.x D", "/admin/.x D"]),
    ("/admin..", ["/admin.. A", "/admin.. A", "/admin.. A", "/admin.. A"]),
    ("/..admin", ["/..admin A", "/..admin A", "/..admin A", "/..admin A"]),
    ("/...admin", ["/...admin A", "/...admin A", "/...admin A", "/...admin A"]),
    ("//admin/x", ["//admin/x A", "//admin/x A", "/admin/x D", "/admin/x D"]),
    ("/admin//x", ["/admin//x D", "/admin//x D", "/admin/x D", "/admin/x D"]),
    ("///admin", ["///admin A", "///admin A", "/admin D", "/admin D"]),
    ("/foo//../admin/x", ["/foo//../admin/x A", "/foo/admin/x A", "/foo/admin/x A", "/foo/admin/x A"]),
    ("/foo/..//admin/x", ["/foo/..//admin/x A", "//admin/x A", "/admin/x D", "/admin/x D"]),
    ("\\admin\\x", ["400", "400", "400", "400"]),
    ("/foo\\..\\admin\\x", ["/foo\\..\\admin\\x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/admin\\x", ["/admin\\x A", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/foo/%5c../admin/x", ["/foo/%5c../admin/x A", "400", "400", "/foo/admin/x A"]),
    ("/foo%5c..%5cadmin%5cx", ["/foo%5c..%5cadmin%5cx A", "400", "400", "/admin/x D"]),
    ("/foo/..%5cadmin/x", ["/foo/..%5cadmin/x A", "400", "400", "/admin/x D"]),
    ("/admin%2fx", ["/admin%2fx A", "/admin%2fx A", "/admin%2fx A", "/admin/x D"]),
    ("/admin%2Fx", ["/admin%2Fx A", "/admin%2Fx A", "/admin%2Fx A", "/admin/x D"]),
    ("/foo/..%2fadmin/x", ["/foo/..%2fadmin/x A", "400", "400", "/admin/x D"]),
    ("/foo/..%2Fadmin/x", ["/foo/..%2Fadmin/x A", "400", "400", "/admin/x D"]),
    ("/foo%2f..%2fadmin%2fx", ["/foo%2f..%2fadmin%2fx A", "400", "400", "/admin/x D"]),
    ("/%2e%2e%2fadmin", ["/%2e%2e%2fadmin A", "400", "400", "/admin D"]),
    ("/admin%2f..%2fpublic", ["/admin%2f..%2fpublic A", "400", "400", "/public A"]),
    ("/public%2F..%2Fadmin", ["/public%2F..%2Fadmin A", "400", "400", "/admin D"]),
    ("/%2fadmin", ["/%2fadmin A", "/%2fadmin A", "/%2fadmin A", "/admin D"]),
    ("/%2Fadmin/x", ["/%2Fadmin/x A", "/%2Fadmin/x A", "/%2Fadmin/x A", "/admin/x D"]),
    ("/admin%00", ["400", "400", "400", "400"]),
    ("/admin/x%00.html", ["400", "400", "400", "400"]),
    ("/%00admin", ["400", "400", "400", "400"]),
    ("/admin#frag", ["/admin D", "/admin D", "/admin D", "/admin D"]),
    ("/admin/x#/../public", ["/admin/x D", "/admin/x D", "/admin/x D", "/admin/x D"]),
    ("/public#/../admin", ["/public A", "/public A", "/public A", "/public A"]),
    ("/admin x", ["400", "400", "400", "400"]),
    ("/admin%20x", ["/admin%20x A", "/admin%20x A", "/admin%20x A", "/admin%20x A"]),
    ("/adm%69n%2Fx", ["/adm%69n%2Fx A", "/admin%2Fx A", "/admin%2Fx A", "/admin/x D"]),
    ("/%7eadmin", ["/%7eadmin A", "/~admin A", "/~admin A", "/~admin A"]),
    ("/admin/%7e", ["/admin/%7e D", "/admin/~ D", "/admin/~ D", "/admin/~ D"]),
    ("/%c0%ae%c0%ae/admin", ["/%c0%ae%c0%ae/admin A", "/%c0%ae%c0%ae/admin A", "/%c0%ae%c0%ae/admin A", "/%c0%ae%c0%ae/admin A"]),
    ("/%252e%252e/admin", ["/%252e%252e/admin A", "/%252e%252e/admin A", "/%252e%252e/admin A", "/%252e%252e/admin A"]),
    ("/admin;x=1", ["/admin;x=1 A", "/admin;x=1 A", "/admin;x=1 A", "/admin;x=1 A"]),
    ("/admin/x;/../y", ["/admin/x;/../y D", "/admin/y D", "/admin/y D", "/admin/y D"]),
    ("/admin/\"x\"", ["/admin/\"x\" D", "/admin/%22x%22 D", "/admin/%22x%22 D", "/admin/%22x%22 D"]),
    ("/admin/{x}", ["/admin/{x} D", "/admin/%7Bx%7D D", "/admin/%7Bx%7D D", "/admin/%7Bx%7D D"]),
    ("/admin|x", ["/admin|x A", "/admin%7Cx A", "/admin%7Cx A", "/admin%7Cx A"]),
    ("/public/x", ["/public/x A", "/public/x A", "/public/x A", "/public/x A"]),
    ("/public/%2e%2e%2e/x", ["/public/%2e%2e%2e/x A", "/public/.../x A", "/public/.../x A", "/public/.../x A"]),
];

fn request(path: &str) -> Request {
    serde_json::from_value(serde_json::json!({
        "destination": {"namespace": "prod", "port": 8080},
        "source": {"principal": "spiffe://cluster.local/ns/prod/sa/web"},
        "http": {"method": "GET", "path": path, "host": "app"}
    }))
    .unwrap()
}

fn set(yaml: &str) -> PolicySet {
    PolicySet::from_yaml_str("p.yaml", yaml, &MeshConfig::default())
        .unwrap()
        .0
}

#[test]
fn every_target_in_every_mode() {
    assert!(
        TABLE.len() >= 60,
        "the table covers at least 60 request targets"
    );
    let (deny, allow) = (set(DENY_ADMIN), set(ALLOW_PUBLIC));
    for (target, want) in TABLE {
        for (mode, want) in Normalization::ALL.iter().zip(want) {
            let at = format!("{target:?} in {}", mode.as_str());
            let mut req = request(target);
            let outcome = http_request(&mut req, *mode);
            if *want == "400" {
                assert!(outcome.is_err(), "{at}: refused, got {:?}", req.http);
                continue;
            }
            let (want_path, want_letter) = want.rsplit_once(' ').unwrap();
            let changed = outcome.unwrap_or_else(|e| panic!("{at}: refused: {e}"));
            let path = req.http.as_ref().unwrap().path.clone();
            assert_eq!(path, want_path, "{at}");
            assert_eq!(changed.is_some(), path != *target, "{at}: original kept");
            let verdict = deny.evaluate(&req).decision;
            let letter = if verdict == Verdict::Deny { "D" } else { "A" };
            assert_eq!(letter, want_letter, "{at}: DENY /admin decision");
            // The ALLOW on /public/* admits exactly the normalized paths under /public/.
            let url_path = path.split(['?', '#']).next().unwrap();
            let public = url_path.starts_with("/public/") && url_path.len() > "/public/".len();
            assert_eq!(
                allow.evaluate(&req).decision == Verdict::Allow,
                public,
                "{at}: ALLOW /public/* decision for {path}"
            );
        }
    }
}

#[test]
fn the_reported_bypasses_are_closed_by_default() {
    // The issue's attacks: each reached the app's /admin/x before normalization existed.
    let deny = set(DENY_ADMIN);
    let allow = set(ALLOW_PUBLIC);
    for target in [
        "/foo/../admin/x",
        "/./admin/x",
        "/%61dmin/x",
        "/adm%69n",
        "/foo/%2e%2e/admin/x",
    ] {
        let mut req = request(target);
        http_request(&mut req, Normalization::default()).unwrap();
        assert_eq!(deny.evaluate(&req).decision, Verdict::Deny, "{target}");
    }
    let mut req = request("/public/../admin/x");
    http_request(&mut req, Normalization::default()).unwrap();
    assert_eq!(req.http.as_ref().unwrap().path, "/admin/x");
    assert_eq!(allow.evaluate(&req).decision, Verdict::Deny);
    // Lower-case methods are refused; TCP requests are left alone.
    let mut req = request("/x");
    req.http.as_mut().unwrap().method = "get".into();
    assert!(http_request(&mut req, Normalization::default()).is_err());
    let mut tcp = request("/x");
    tcp.http = None;
    assert_eq!(http_request(&mut tcp, Normalization::default()), Ok(None));
}
