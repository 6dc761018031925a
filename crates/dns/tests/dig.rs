//! dig, a DNS client we did not write, against the proxy: a mesh name, a forwarded name, the
//! same over TCP, and NODATA (tier 1: the proxy in-process, dig as a child process). Skipped
//! with a loud SKIP where dig is missing, except under CI, which installs it.

mod support;

use support::*;
use trustmesh_testkit::dns::Behaviour;
use trustmesh_testkit::tools::{dig, dig_available};

#[tokio::test]
async fn dig_resolves_mesh_and_forwarded_names() {
    if !dig_available("the dig interop test") {
        return;
    }
    let up = upstream(Behaviour::Answer).await;
    let (proxy, _drain) = proxy(&[&up], quick()).await;
    let port = proxy.udp.port().to_string();
    let at = |extra: &[&'static str], name: &str, rtype: &str| {
        let mut args = vec!["@127.0.0.1".to_string(), "-p".into(), port.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([name.to_string(), rtype.to_string()]);
        args
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        dig(&args).await
    };

    let out = run(at(&["+short"], REVIEWS, "A")).await;
    assert_eq!(out.trim(), REVIEWS_IP);
    let out = run(at(&["+short"], OUTSIDE, "A")).await;
    assert_eq!(out.trim(), OUTSIDE_IP.to_string());
    let out = run(at(&["+short", "+tcp"], REVIEWS, "A")).await;
    assert_eq!(out.trim(), REVIEWS_IP);
    let out = run(at(&["+short", "+tcp"], OUTSIDE, "A")).await;
    assert_eq!(out.trim(), OUTSIDE_IP.to_string());

    // NODATA: dig's full output says NOERROR, with no answer and the AA flag.
    let out = run(at(&[], REVIEWS, "AAAA")).await;
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("ANSWER: 0"), "{out}");
    assert!(out.contains(" aa "), "{out}");

    assert_eq!(up.seen().len(), 2, "only the outside name went upstream");
}
