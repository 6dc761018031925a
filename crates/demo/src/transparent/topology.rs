//! The transparent quickstart's network: a namespace per workload, like a pod, and one for an
//! outsider without a sidecar, each with a veth `eth0` plugged into a bridge in a hub
//! namespace. Addresses come from 198.18.0.0/15 only (RFC 2544's benchmarking range, never
//! routed on a real network): workloads in 198.18.2.0/24, service VIPs in 198.19.2.0/24. Every
//! namespace's resolver is the hub's address, where nothing answers: a name an app resolves is
//! answered by its sidecar's DNS proxy (the capture redirects port 53) or not at all.
//!
//! ```text
//!       tmq-hub-<pid>: br0 198.18.2.1, control planes on :15012 (team-a), :16012 (team-b)
//!      ┌──────────┬──────────┬─────┴────┬──────────┬──────────┐
//!   frontend   reviews    ratings    payroll   analytics   outsider
//!     .10        .11        .12        .13        .14        .30
//! ```
//!
//! Namespace names carry the quickstart's pid (`tmq-reviews-<pid>`), so two runs never share
//! one; the hub's bridge lives in its own namespace, so the machine's network is never touched.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::netns::{veth, Netns, Network};
use crate::workloads::{Workload, ALL};

/// The hub's address on the bridge, where the control planes listen, and every namespace's
/// nameserver (where nothing answers DNS).
pub const HUB: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// Where the registry auto-allocates service VIPs (`capture.vipRange`).
pub const VIPS: &str = "198.19.2.0/24";
/// The namespace without a sidecar.
pub const OUTSIDER: &str = "outsider";

/// A namespace on the bridge.
#[derive(Debug, Clone)]
pub struct Node {
    pub ns: Netns,
    pub addr: Ipv4Addr,
}

/// Every node by role (the workloads' names and [`OUTSIDER`]), and the hub, where the
/// control planes run on the bridge address [`HUB`].
pub struct Topology {
    pub nodes: BTreeMap<&'static str, Node>,
    pub hub: Netns,
}

impl Topology {
    pub fn node(&self, w: &Workload) -> &Node {
        &self.nodes[w.name]
    }

    pub fn outsider(&self) -> &Node {
        &self.nodes[OUTSIDER]
    }
}

/// The address of a workload (or the outsider) on the bridge.
pub fn address(role: &str) -> Ipv4Addr {
    let last = match role {
        "frontend" => 10,
        "reviews" => 11,
        "ratings" => 12,
        "payroll" => 13,
        "analytics" => 14,
        _ => 30,
    };
    Ipv4Addr::new(198, 18, 2, last)
}

/// Builds the hub and a node per workload plus the outsider, registering each namespace with
/// `net` as soon as it exists, so whatever happens next removes it.
pub fn build(net: &mut Network) -> anyhow::Result<Topology> {
    let pid = std::process::id();
    let hub = net.create(&format!("tmq-hub-{pid}"), None)?;
    hub.ip(&["link", "add", "br0", "type", "bridge"])?;
    hub.ip(&["addr", "add", &format!("{HUB}/24"), "dev", "br0"])?;
    hub.ip(&["link", "set", "br0", "up"])?;
    let roles = ALL.iter().map(|w| w.name).chain([OUTSIDER]);
    let mut nodes = BTreeMap::new();
    for role in roles {
        let ns = net.create(&format!("tmq-{role}-{pid}"), Some(&HUB.to_string()))?;
        let addr = address(role);
        let hub_end = format!("veth-{role}");
        veth(&ns, "eth0", &format!("{addr}/24"), &hub, &hub_end)?;
        hub.ip(&["link", "set", &hub_end, "master", "br0"])?;
        // The VIPs are on no link: a route sends the app's connect out, where the capture
        // takes it before it leaves.
        ns.ip(&["route", "add", VIPS, "dev", "eth0"])?;
        nodes.insert(role, Node { ns, addr });
    }
    Ok(Topology { nodes, hub })
}
