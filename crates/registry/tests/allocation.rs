//! Auto-allocated VIPs: who gets one, from the configured range, deterministic, stable when
//! services are added, and never an address already in use.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use support::{clean, join, load_with, mesh, options_198, DB, HTTPBIN, REVIEWS};
use trustmesh_registry::{AutoAllocate, Options, Registry};

fn dns_entry(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: ext}}\nspec:\n  hosts: [{host}]\n  resolution: DNS\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n"
    )
}

fn vips(reg: &Registry) -> BTreeMap<String, Vec<IpAddr>> {
    reg.services()
        .iter()
        .map(|s| (s.key(), s.auto_allocated.clone()))
        .collect()
}

#[test]
fn hosts_without_addresses_get_one_from_the_configured_range() {
    let reg = clean(&join(&[REVIEWS, HTTPBIN, DB]));
    let range: ipnet::Ipv4Net = "198.19.7.0/24".parse().unwrap();
    for s in reg.services() {
        match s.host.as_str() {
            "orders-db.shop.svc.cluster.local" => {
                assert!(s.auto_allocated.is_empty(), "explicit addresses are kept");
            }
            _ => {
                assert_eq!(s.auto_allocated.len(), 1, "{}", s.host);
                let IpAddr::V4(a) = s.auto_allocated[0] else {
                    panic!()
                };
                assert!(range.contains(&a), "{a}");
                assert!(!matches!(a.octets()[3], 0 | 255), "{a}");
            }
        }
    }
    // Deterministic: the same input, in another order, gives the same addresses.
    let again = clean(&join(&[DB, HTTPBIN, REVIEWS]));
    assert_eq!(vips(&reg), vips(&again));
}

#[test]
fn istio_default_range_and_none_or_wildcard_services_get_nothing() {
    let none_and_wild = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: ext}
spec:
  hosts: [legacy.example.net]
  resolution: NONE
  ports: [{number: 8443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: ext}
spec:
  hosts: ["*.example.org"]
  resolution: STATIC
  endpoints: [{address: 203.0.113.9}]
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;
    let (reg, report) = load_with(
        &join(&[HTTPBIN, none_and_wild]),
        &mesh(""),
        &Options::default(),
    );
    assert!(report.problems.is_empty());
    let by_host = |h: &str| reg.services().iter().find(|s| s.host == h).unwrap();
    let a = by_host("httpbin.org").auto_allocated[0];
    assert!(a.to_string().starts_with("240.240."), "{a}");
    assert!(by_host("legacy.example.net").auto_allocated.is_empty());
    assert!(by_host("*.example.org").auto_allocated.is_empty());
    // Off: nobody gets one.
    let off = Options {
        auto_allocate: None,
        ..Options::default()
    };
    let (reg, _) = load_with(HTTPBIN, &mesh(""), &off);
    assert!(reg.services()[0].auto_allocated.is_empty());
}

#[test]
fn adding_an_unrelated_service_moves_no_other() {
    let base: Vec<String> = (0..20)
        .map(|i| dns_entry(&format!("s{i}"), &format!("api{i}.example.com")))
        .collect();
    let before = clean(&join(&base.iter().map(String::as_str).collect::<Vec<_>>()));
    let mut more = base.clone();
    // Sorts before every other key: an allocator handing out addresses in key order would
    // move all of them.
    more.push(dns_entry("new", "aaa.example.com"));
    let after = clean(&join(&more.iter().map(String::as_str).collect::<Vec<_>>()));
    let (b, a) = (vips(&before), vips(&after));
    for (key, ip) in &b {
        assert_eq!(a.get(key), Some(ip), "{key} moved");
    }
    assert_eq!(a.len(), b.len() + 1);
    let all: std::collections::HashSet<&Vec<IpAddr>> = a.values().collect();
    assert_eq!(all.len(), a.len(), "every service has its own VIP");
}

#[test]
fn explicit_addresses_and_workload_addresses_are_never_handed_out() {
    // A range of three usable addresses (.1 .2 .3); two are taken, one by an explicit VIP and
    // one by a CIDR. The only address left goes to the one service that wants one.
    let opts = Options {
        auto_allocate: Some(AutoAllocate {
            v4: "198.19.7.0/30".parse().unwrap(),
            v6: None,
        }),
        ..Options::default()
    };
    let taken = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: explicit, namespace: ext}
spec:
  hosts: [explicit.example.com]
  addresses: [198.19.7.1]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cidr, namespace: ext}
spec:
  hosts: [cidr.example.com]
  addresses: [198.19.7.2/32, 198.19.7.3/32]
  resolution: STATIC
  endpoints: [{address: 203.0.113.1}]
  ports: [{number: 443, name: tls, protocol: TLS}]
"#;
    let (reg, report) = load_with(&join(&[taken, HTTPBIN]), &mesh(""), &opts);
    let httpbin = reg
        .services()
        .iter()
        .find(|s| s.host == "httpbin.org")
        .unwrap();
    assert!(
        httpbin.auto_allocated.is_empty(),
        "{:?}",
        httpbin.auto_allocated
    );
    let l: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        l.iter().any(|p| p.contains(
            "warning: no address left in the auto-allocation range 198.19.7.0/30 for httpbin.org"
        )),
        "{l:#?}"
    );

    // Free one address: it is used, whatever hash the host has.
    let fewer = taken.replace("[198.19.7.2/32, 198.19.7.3/32]", "[198.19.7.2/32]");
    let (reg, _) = load_with(&join(&[&fewer, HTTPBIN]), &mesh(""), &opts);
    let httpbin = reg
        .services()
        .iter()
        .find(|s| s.host == "httpbin.org")
        .unwrap();
    assert_eq!(
        httpbin.auto_allocated,
        vec!["198.19.7.3".parse::<IpAddr>().unwrap()]
    );

    // A workload address inside the range is in use too.
    let we = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm, namespace: ext}\nspec: {address: 198.19.7.3}\n";
    let (reg, _) = load_with(&join(&[&fewer, we, HTTPBIN]), &mesh(""), &opts);
    let httpbin = reg
        .services()
        .iter()
        .find(|s| s.host == "httpbin.org")
        .unwrap();
    assert!(httpbin.auto_allocated.is_empty());
}

#[test]
fn colliding_hosts_both_get_an_address_and_the_older_keeps_its_own() {
    // Find two hosts whose hash lands on the same slot of the /24 (254 slots).
    let slot = |h: &str| trustmesh_registry::alloc::fnv1a32(format!("ext/{h}").as_bytes()) % 254;
    let first = "a0.example.com".to_string();
    let second = (1..10_000)
        .map(|i| format!("a{i}.example.com"))
        .find(|h| slot(h) == slot(&first))
        .expect("a collision within 10000 names");
    let old = dns_entry("old", &first).replace(
        "metadata: {name: old, namespace: ext}",
        "metadata: {name: old, namespace: ext, creationTimestamp: \"2020-01-01T00:00:00Z\"}",
    );
    let alone = clean(&old);
    let both = clean(&join(&[&dns_entry("new", &second), &old]));
    let vip = |reg: &Registry, h: &str| {
        reg.services()
            .iter()
            .find(|s| s.host == h)
            .unwrap()
            .auto_allocated
            .clone()
    };
    assert_eq!(
        vip(&both, &first),
        vip(&alone, &first),
        "the older service keeps its slot"
    );
    assert_ne!(vip(&both, &second), vip(&both, &first));
    assert_eq!(vip(&both, &second).len(), 1);
}

#[test]
fn ipv6_addresses_sit_at_the_same_offset_when_a_range_is_set() {
    let opts = Options {
        auto_allocate: Some(AutoAllocate::dual_stack()),
        ..Options::default()
    };
    let (reg, _) = load_with(HTTPBIN, &mesh(""), &opts);
    let a = &reg.services()[0].auto_allocated;
    assert_eq!(a.len(), 2);
    let (IpAddr::V4(v4), IpAddr::V6(v6)) = (a[0], a[1]) else {
        panic!("{a:?}")
    };
    let off4 = u32::from(v4) - u32::from("240.240.0.0".parse::<std::net::Ipv4Addr>().unwrap());
    let off6 = u128::from(v6) - u128::from("2001:2::".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(u128::from(off4), off6);
    let _ = options_198();
}
