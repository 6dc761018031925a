//! The address side of the registry, built for the sidecar's per-connection question "what is
//! this original destination?": exact VIPs and workload addresses in hash maps, CIDR
//! `addresses` by longest prefix (one hash probe per distinct prefix length in use, longest
//! first, as a routing table would), and the ports claimed on every address (see
//! [`crate::classify`]).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Services by address; values are indices into the registry's services (or workloads).
#[derive(Debug, Default)]
pub struct AddressIndex {
    vips: HashMap<IpAddr, Vec<u32>>,
    /// Per prefix length (longest first, IPv4 and IPv6 apart): network → services.
    cidrs: Vec<(u8, bool, HashMap<IpNet, Vec<u32>>)>,
    any_address: HashMap<u16, Vec<u32>>,
    workloads: HashMap<IpAddr, Vec<u32>>,
}

impl AddressIndex {
    pub fn add_vip(&mut self, ip: IpAddr, service: u32) {
        push_unique(self.vips.entry(ip).or_default(), service);
    }

    pub fn add_cidr(&mut self, net: IpNet, service: u32) {
        let v4 = matches!(net, IpNet::V4(_));
        let len = net.prefix_len();
        let at = match self
            .cidrs
            .iter()
            .position(|(l, f, _)| *l == len && *f == v4)
        {
            Some(i) => i,
            None => {
                self.cidrs.push((len, v4, HashMap::new()));
                self.cidrs.sort_by_key(|c| std::cmp::Reverse(c.0));
                self.cidrs
                    .iter()
                    .position(|(l, f, _)| *l == len && *f == v4)
                    .expect("just added")
            }
        };
        push_unique(self.cidrs[at].2.entry(net.trunc()).or_default(), service);
    }

    pub fn add_any_address(&mut self, port: u16, service: u32) {
        push_unique(self.any_address.entry(port).or_default(), service);
    }

    pub fn add_workload(&mut self, ip: IpAddr, workload: u32) {
        push_unique(self.workloads.entry(ip).or_default(), workload);
    }

    pub fn vip(&self, ip: &IpAddr) -> &[u32] {
        self.vips.get(ip).map_or(&[], Vec::as_slice)
    }

    /// The services of the longest CIDR containing `ip`, with that CIDR.
    pub fn cidr(&self, ip: &IpAddr) -> Option<(IpNet, &[u32])> {
        let v4 = ip.is_ipv4();
        self.cidrs
            .iter()
            .filter(|(_, f, _)| *f == v4)
            .find_map(|(len, _, map)| {
                let net = IpNet::new(*ip, *len).ok()?.trunc();
                map.get(&net).map(|s| (net, s.as_slice()))
            })
    }

    pub fn any_address(&self, port: u16) -> &[u32] {
        self.any_address.get(&port).map_or(&[], Vec::as_slice)
    }

    pub fn workloads(&self, ip: &IpAddr) -> &[u32] {
        self.workloads.get(ip).map_or(&[], Vec::as_slice)
    }
}

fn push_unique(v: &mut Vec<u32>, x: u32) {
    if !v.contains(&x) {
        v.push(x);
    }
}
