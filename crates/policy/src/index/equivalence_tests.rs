//! Randomized equivalence: for random policy sets and requests, a bucket's `first_match` must
//! be exactly the first rule a plain scan with `check` finds, in set order. Seeded, so a
//! failure reproduces: the message gives the seed and the case; `TRUSTMESH_INDEX_SEED` picks
//! another seed and `TRUSTMESH_INDEX_CASES` the number of policy sets.

use serde_json::{json, Value};

use super::{Bucket, RuleRef, WorkloadView};
use crate::authz::{compile, Attrs, CompiledPolicy};
use crate::crd::AuthorizationPolicySpec;
use crate::mesh::MeshConfig;
use crate::problem::Location;
use crate::request::Request;
use crate::PolicySet;

/// splitmix64: small, seedable, good enough to pick test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, l: &[&'a str]) -> &'a str {
        l[self.below(l.len())]
    }
    /// 1 to `max` values of `l`.
    fn some(&mut self, l: &[&str], max: usize) -> Value {
        let n = 1 + self.below(max);
        Value::from((0..n).map(|_| self.pick(l).to_string()).collect::<Vec<_>>())
    }
}

const PRINCIPALS: &[&str] = &[
    "cluster.local/ns/ns0/sa/sa0",
    "cluster.local/ns/ns1/sa/sa1",
    "old.td/ns/ns2/sa/sa0",
    "cluster.local/ns/ns1/*",
    "*/sa/sa2",
    "other.td/*",
    "*",
];
const NAMESPACES: &[&str] = &["ns0", "ns1", "ns2", "ns*", "*1", "n*2", "*", "*s*"];
const SERVICE_ACCOUNTS: &[&str] = &["ns0/sa0", "ns1/sa1", "sa2", "ns2/sa0"];
const TRUST_DOMAINS: &[&str] = &["cluster.local", "other.td", "*.td", "old.td"];
const IP_BLOCKS: &[&str] = &[
    "10.0.0.0/16",
    "10.1.1.1",
    "10.2.1.0/24",
    "10.0.0.0/8",
    "2001:db8::/32",
    "0.0.0.0/0",
    "192.168.0.1",
];
const REMOTE_IPS: &[&str] = &["203.0.113.1", "203.0.113.0/24", "198.51.100.0/24"];
const REQUEST_PRINCIPALS: &[&str] = &[
    "https://issuer/sub",
    "https://issuer/*",
    "*",
    "*/sub",
    "other/x*",
    "*suer/sub",
];
const HOSTS: &[&str] = &[
    "reviews:9080",
    "reviews:*",
    "*.prod",
    "Reviews.PROD",
    "*",
    "x*",
];
const PORTS: &[&str] = &["9000", "9001", "9002"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "G*", "*"];
const PATHS: &[&str] = &[
    "/p0", "/p1*", "*/x1", "/p1/{*}", "/p2/{**}", "*", "/p0/q", "/{*}/x1", "/p1/q", "*/q",
];
const HEADER_VALUES: &[&str] = &["a", "b", "a*", "*b", "*", ""];
const CLAIM_VALUES: &[&str] = &["admin", "dev", "read", "write", "ad*", "*", "deep"];

/// One to three of `fields`, each possibly as its `not…` form, with values from its pool.
fn some_fields(r: &mut Rng, fields: &[(&str, &[&str])]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for _ in 0..1 + r.below(3) {
        let (name, pool) = fields[r.below(fields.len())];
        let name = if r.chance(35) {
            format!("not{}{}", name[..1].to_uppercase(), &name[1..])
        } else {
            name.to_string()
        };
        m.insert(name, r.some(pool, 3));
    }
    m
}

fn source(r: &mut Rng) -> Value {
    let s = some_fields(
        r,
        &[
            ("principals", PRINCIPALS),
            ("namespaces", NAMESPACES),
            ("serviceAccounts", SERVICE_ACCOUNTS),
            ("trustDomains", TRUST_DOMAINS),
            ("ipBlocks", IP_BLOCKS),
            ("remoteIpBlocks", REMOTE_IPS),
            ("requestPrincipals", REQUEST_PRINCIPALS),
        ],
    );
    json!({ "source": s })
}

fn operation(r: &mut Rng) -> Value {
    let o = some_fields(
        r,
        &[
            ("hosts", HOSTS),
            ("ports", PORTS),
            ("methods", METHODS),
            ("paths", PATHS),
        ],
    );
    json!({ "operation": o })
}

fn condition(r: &mut Rng) -> Value {
    let (key, pool): (&str, &[&str]) = match r.below(17) {
        0 | 1 => ("request.headers[x-a]", HEADER_VALUES),
        2 => ("request.headers[:path]", &["/p0", "/p1*", "*?q=1"]),
        3 => ("request.headers[:authority]", &["reviews:9080", "*"]),
        4 => ("source.ip", IP_BLOCKS),
        5 => ("remote.ip", REMOTE_IPS),
        6 => (
            "destination.ip",
            &["10.0.0.2", "10.0.0.0/24", "10.9.0.0/16"],
        ),
        7 => ("destination.port", PORTS),
        8 => ("source.namespace", NAMESPACES),
        9 => ("source.principal", PRINCIPALS),
        10 => ("source.serviceAccount", SERVICE_ACCOUNTS),
        11 => ("source.trustDomain", TRUST_DOMAINS),
        12 => ("request.auth.principal", REQUEST_PRINCIPALS),
        13 => ("request.auth.audiences", &["aud1", "aud2", "au*"]),
        14 => ("request.auth.presenter", &["pres", "*", "p*"]),
        15 => (
            [
                "request.auth.claims[groups]",
                "request.auth.claims[scope]",
                "request.auth.claims[nested][level][key]",
            ][r.below(3)],
            CLAIM_VALUES,
        ),
        _ => ("connection.sni", &["reviews.prod", "*.prod", "*"]),
    };
    let mut c = serde_json::Map::new();
    c.insert("key".into(), key.into());
    match r.below(3) {
        0 => c.insert("values".into(), r.some(pool, 3)),
        1 => c.insert("notValues".into(), r.some(pool, 3)),
        _ => {
            c.insert("values".into(), r.some(pool, 2));
            c.insert("notValues".into(), r.some(pool, 2))
        }
    };
    Value::Object(c)
}

fn entries(r: &mut Rng, f: fn(&mut Rng) -> Value) -> Vec<Value> {
    // Mostly 0-2 entries; sometimes many, beyond the clause cap.
    let n = if r.chance(5) {
        5 + r.below(4)
    } else {
        r.below(3)
    };
    (0..n).map(|_| f(r)).collect()
}

fn spec(r: &mut Rng) -> Value {
    let action = ["ALLOW", "DENY", "CUSTOM", "AUDIT"][r.below(4)];
    let rules: Vec<Value> = (0..r.below(4))
        .map(|_| {
            let mut rule = serde_json::Map::new();
            for (name, l) in [
                ("from", entries(r, source)),
                ("to", entries(r, operation)),
                ("when", (0..r.below(3)).map(|_| condition(r)).collect()),
            ] {
                if !l.is_empty() {
                    rule.insert(name.into(), Value::from(l));
                }
            }
            Value::Object(rule)
        })
        .collect();
    let mut s = json!({"action": action, "rules": rules});
    if action == "CUSTOM" {
        s["provider"] = json!({"name": "authz"});
    }
    s
}

fn request(r: &mut Rng) -> Value {
    let principal = match r.below(5) {
        0 => Value::Null,
        1 => json!("spiffe://other.td/ns/ns1/sa/sa2"),
        2 => json!("spiffe://odd-principal"),
        _ => json!(format!(
            "spiffe://cluster.local/ns/ns{}/sa/sa{}",
            r.below(3),
            r.below(3)
        )),
    };
    let ip = [
        "10.0.1.1",
        "10.1.1.1",
        "10.2.1.7",
        "2001:db8::1",
        "192.168.0.1",
        "",
    ];
    let opt = |v: &str| if v.is_empty() { Value::Null } else { json!(v) };
    let mut req = json!({
        "destination": {"namespace": "prod", "port": 9000 + r.below(3),
                        "ip": opt(["10.0.0.2", "10.9.1.1", ""][r.below(3)])},
        "source": {"principal": principal, "ip": opt(ip[r.below(ip.len())]),
                   "remoteIp": opt(["203.0.113.1", "198.51.100.9", ""][r.below(3)])},
        "connection": {"sni": opt(["reviews.prod", "x.other", ""][r.below(3)])},
    });
    if r.chance(75) {
        let mut headers = serde_json::Map::new();
        if r.chance(70) {
            headers.insert(
                ["x-a", "X-A"][r.below(2)].into(),
                json!(["a", "b", "ab", "", "zz"][r.below(5)]),
            );
        }
        req["http"] = json!({
            "method": (["GET", "POST", "PUT", "DELETE"][r.below(4)]),
            "path": (["/p0", "/p1/q?q=1", "/p2/a/b", "/a/x1#f", "/p0/q", "/", "/p1", "/p0?x"][r.below(8)]),
            "host": (["reviews:9080", "REVIEWS.prod", "", "x.prod", "a"][r.below(5)]),
            "headers": headers,
        });
    }
    if r.chance(60) {
        let mut claims = serde_json::Map::new();
        match r.below(3) {
            0 => claims.insert("groups".into(), json!(["admin", "dev"])),
            1 => claims.insert("groups".into(), json!("admin dev")),
            _ => None,
        };
        if r.chance(50) {
            claims.insert("scope".into(), json!("read  write"));
        }
        if r.chance(40) {
            claims.insert("nested".into(), json!({"level": {"key": "deep"}}));
        }
        if r.chance(30) {
            claims.insert("iss".into(), json!("other"));
        }
        req["auth"] = json!({
            "principal": (["https://issuer/sub", "other/xy", "noslash"][r.below(3)]),
            "audiences": (["aud1", "aud2", "x"][..r.below(4)]),
            "presenter": (["", "pres", "px"][r.below(3)]),
            "claims": claims,
        });
    }
    req
}

/// The first matching rule, checking every rule in order.
fn scan(policies: &[CompiledPolicy], rules: &[RuleRef], a: &Attrs) -> Option<RuleRef> {
    rules.iter().copied().find(|&(pi, ri)| {
        let p = &policies[pi as usize];
        p.rules[ri as usize]
            .check(a, p.widens_on_tcp(), false)
            .is_ok()
    })
}

fn seed() -> u64 {
    std::env::var("TRUSTMESH_INDEX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7472_7573_746d)
}

fn cases(default: usize) -> usize {
    std::env::var("TRUSTMESH_INDEX_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn mesh() -> MeshConfig {
    MeshConfig {
        trust_domain_aliases: vec!["old.td".into()],
        ..Default::default()
    }
}

/// Buckets of random rules (every action mixed in one bucket, and one bucket per action, as
/// a workload view has) against the plain scan, compiled as written: values a validating
/// load would reject are kept, and some rules are marked dropped.
#[test]
fn filter_matches_plain_scan() {
    let seed = seed();
    let mesh = mesh();
    let mut r = Rng(seed);
    let (mut decisions, mut matched) = (0usize, 0usize);
    for case in 0..cases(400) {
        let n = [1, 3, 10, 40, 150][r.below(5)];
        let specs: Vec<Value> = (0..n).map(|_| spec(&mut r)).collect();
        let mut policies: Vec<CompiledPolicy> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let spec: AuthorizationPolicySpec = serde_json::from_value(s.clone()).unwrap();
                let loc = Location::new("random.yaml", i, "");
                compile(
                    &format!("p{i}"),
                    "ns0",
                    false,
                    &spec,
                    &loc,
                    &mesh,
                    &mut Vec::new(),
                )
            })
            .collect();
        for p in &mut policies {
            for rule in &mut p.rules {
                rule.dropped = r.chance(3);
            }
        }
        let all: Vec<RuleRef> = policies
            .iter()
            .enumerate()
            .flat_map(|(pi, p)| (0..p.rules.len()).map(move |ri| (pi as u32, ri as u32)))
            .collect();
        let mut buckets: Vec<(String, Bucket, Vec<RuleRef>)> = Vec::new();
        let mut mixed = Bucket::default();
        (0..n as u32).for_each(|pi| mixed.add(pi, &policies[pi as usize]));
        mixed.build(&policies);
        buckets.push(("mixed".into(), mixed, all.clone()));
        for action in ["ALLOW", "DENY", "CUSTOM", "AUDIT"] {
            let mut b = Bucket::default();
            let pis: Vec<u32> = (0..n as u32)
                .filter(|&pi| policies[pi as usize].action.as_str() == action)
                .collect();
            pis.iter().for_each(|&pi| b.add(pi, &policies[pi as usize]));
            b.build(&policies);
            let rules = all
                .iter()
                .copied()
                .filter(|rr| pis.contains(&rr.0))
                .collect();
            buckets.push((action.into(), b, rules));
        }
        for q in 0..30 {
            let rv = request(&mut r);
            let req: Request = serde_json::from_value(rv.clone()).unwrap();
            let a = Attrs::new(&req, r.chance(10));
            for (name, b, rules) in &buckets {
                let want = scan(&policies, rules, &a);
                let got = b.first_match(&policies, &a);
                decisions += 1;
                matched += usize::from(want.is_some());
                assert_eq!(
                    got,
                    want,
                    "seed {seed}, case {case}, request {q}, bucket {name}: filter gave {got:?}, scan {want:?}\nrequest: {rv}\npolicies: {}",
                    serde_json::to_string(&specs).unwrap()
                );
            }
        }
    }
    // The inputs must exercise both outcomes, or the comparison proves little.
    assert!(
        matched * 10 > decisions && matched * 10 < decisions * 9,
        "{matched} of {decisions} decisions matched"
    );
}

/// Whole sets, loaded as the proxy loads them (invalid policies enforced fail-closed, dry-run
/// ones shadowed): the hot path must name the same deciding policy and rule as the full
/// explanation, which checks every policy.
#[test]
fn hot_path_matches_full_evaluation() {
    let seed = seed() ^ 0x5e7;
    let mesh = mesh();
    let mut r = Rng(seed);
    for case in 0..cases(400) / 4 {
        let n = [2, 10, 60][r.below(3)];
        let mut yaml = String::new();
        for i in 0..n {
            let dry = if r.chance(10) {
                ", annotations: {istio.io/dry-run: 'true'}"
            } else {
                ""
            };
            yaml.push_str(&format!(
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i:03}, namespace: prod{dry}}}\nspec: {}\n",
                spec(&mut r)
            ));
        }
        let (set, _) = PolicySet::from_yaml_str("random.yaml", &yaml, &mesh).unwrap();
        for q in 0..20 {
            let rv = request(&mut r);
            let req: Request = serde_json::from_value(rv.clone()).unwrap();
            let full = set.evaluate(&req);
            let fast = set.evaluate_authz_only(&req);
            let ctx = || format!("seed {seed}, case {case}, request {q}\nrequest: {rv}\n{yaml}");
            assert_eq!(full.decision, fast.decision, "{}", ctx());
            for p in &fast.policies {
                let first = full
                    .policies
                    .iter()
                    .find(|f| f.action == p.action && !f.dry_run && f.matched);
                assert_eq!(
                    first.map(|f| (&f.name, f.rule)),
                    Some((&p.name, p.rule)),
                    "{}",
                    ctx()
                );
            }
        }
    }
}

/// The view's buckets are built: none falls back to checking every rule.
#[test]
fn views_build_their_filters() {
    let mut r = Rng(seed());
    let policies: Vec<CompiledPolicy> = (0..20)
        .map(|i| {
            let spec: AuthorizationPolicySpec = serde_json::from_value(spec(&mut r)).unwrap();
            let loc = Location::new("random.yaml", i, "");
            compile("p", "ns0", false, &spec, &loc, &mesh(), &mut Vec::new())
        })
        .collect();
    let v = WorkloadView::build(&policies, (0..20).collect());
    for b in [
        &v.custom,
        &v.custom_tcp,
        &v.deny,
        &v.allow,
        &v.audit,
        &v.shadow_deny,
        &v.shadow_allow,
    ] {
        assert!(b.filter.is_some());
    }
}
