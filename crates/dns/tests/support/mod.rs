//! What the DNS proxy's tests share: the mesh table they answer from, the upstream's names,
//! short limits so timeouts take milliseconds, and the proxy started in-process on loopback.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use trustmesh_dns::{start_with, Bound, Limits, StaticNames, Upstreams};
use trustmesh_lifecycle::drain::{self, Trigger};
use trustmesh_testkit::dns::{Behaviour, Upstream};

pub const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";
pub const REVIEWS_IP: &str = "10.96.1.1";
pub const DUAL: &str = "ratings.bookinfo.svc.cluster.local";
pub const DUAL_V6: &str = "fd00::2";
/// A forwarded name the test upstream knows.
pub const OUTSIDE: &str = "example.org";
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// A forwarded name whose answer (100 A records) does not fit 512 bytes.
pub const BIG: &str = "big.example.org";

pub fn mesh() -> Arc<StaticNames> {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    Arc::new(
        StaticNames::new()
            .with(REVIEWS, [ip(REVIEWS_IP)])
            .with(DUAL, [ip("10.96.2.1"), ip(DUAL_V6)]),
    )
}

pub fn big_addresses() -> Vec<Ipv4Addr> {
    (0..100u8).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect()
}

/// The upstream resolver the tests forward to.
pub async fn upstream(behaviour: Behaviour) -> Upstream {
    let big = big_addresses();
    Upstream::start(&[(OUTSIDE, &[OUTSIDE_IP]), (BIG, &big)], behaviour).await
}

/// Limits short enough that a silent upstream costs a test 300 ms.
pub fn quick() -> Limits {
    Limits {
        upstream_timeout: Duration::from_millis(300),
        query_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// The proxy on a free loopback port, forwarding to `upstreams` in order; the trigger drains
/// it (it runs until the test's runtime ends otherwise).
pub async fn proxy(upstreams: &[&Upstream], limits: Limits) -> (Bound, Trigger) {
    let servers: Vec<SocketAddr> = upstreams.iter().map(|u| u.addr).collect();
    let search = [
        "bookinfo.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ];
    let (trigger, watch) = drain::channel();
    let bound = start_with(
        "127.0.0.1:0".parse().unwrap(),
        mesh(),
        Upstreams::new(servers).with_search(&search),
        limits,
        watch,
    )
    .await
    .expect("the DNS proxy starts");
    (bound, trigger)
}
