//! DNS capture: UDP and TCP to port 53 from the workload go to the DNS proxy's port. The
//! proxy's own queries never get here (`TRUSTMESH_OUTPUT` returns them earlier, by owner).
//!
//! The `raw` rules put the two legs of a redirected query in different conntrack zones, as
//! Istio does: the app's query to the resolver (redirected to the DNS proxy) and the proxy's
//! own query to that same resolver can otherwise share a UDP tuple, and conntrack would then
//! drop or misdirect one of them. Zone 1 is the proxy ↔ resolver leg, zone 2 the app ↔ proxy
//! leg. Only the servers given are captured (Istio: those in `/etc/resolv.conf`), unless all
//! are, so a local resolver the proxy forwards to is not captured again.
//!
//! The DNS proxy must listen on `127.0.0.1` / `::1` (as istio-agent does), not on the wildcard
//! address: a redirected query arrives for loopback, and an answer sent from any other source
//! address does not match the connection, is not translated back to the resolver's address,
//! and the app never takes it.

use std::net::IpAddr;

use crate::chains::{self, Table};
use crate::family::Family;
use crate::options::{DnsServers, Options};
use crate::rule::Rule;

pub struct Dns {
    port: String,
    /// `None`: every server; otherwise this family's servers as `/32` or `/128` (never empty).
    servers: Option<Vec<String>>,
    owners: Vec<(&'static str, String)>,
}

impl Dns {
    /// DNS capture for `family`, if it is on and concerns this family at all.
    pub fn new(opts: &Options, family: Family) -> Option<Dns> {
        let dns = opts.dns.as_ref()?;
        let servers = match &dns.servers {
            DnsServers::All => None,
            DnsServers::List(list) => {
                let ours: Vec<String> = list
                    .iter()
                    .filter(|a| Family::of(a) == family)
                    .map(|a| host(a, family))
                    .collect();
                if ours.is_empty() {
                    return None;
                }
                Some(ours)
            }
        };
        let owners = opts
            .proxy_uids
            .iter()
            .map(|u| ("--uid-owner", u.to_string()))
            .chain(
                opts.proxy_gids
                    .iter()
                    .map(|g| ("--gid-owner", g.to_string())),
            )
            .collect();
        Some(Dns {
            port: dns.port.to_string(),
            servers,
            owners,
        })
    }

    /// `nat TRUSTMESH_OUTPUT_DNS`: TCP then UDP to port 53 → the DNS port.
    pub fn nat_rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        for proto in ["tcp", "udp"] {
            for dest in self.destinations("-d") {
                let mut args = vec!["-p", proto, "--dport", "53"];
                args.extend(dest.iter().map(String::as_str));
                args.extend_from_slice(&["-j", "REDIRECT", "--to-ports", &self.port]);
                rules.push(Rule::new(Table::Nat, chains::OUTPUT_DNS, &args));
            }
        }
        rules
    }

    /// `raw`: the conntrack zones, and the hooks into both raw chains.
    pub fn raw_rules(&self) -> Vec<Rule> {
        let out = |args: &[&str]| Rule::new(Table::Raw, chains::OUTPUT_DNS, args);
        let mut rules = Vec::new();
        for (flag, id) in &self.owners {
            let owner = ["-m", "owner", flag, id];
            let mut upstream = vec!["-p", "udp", "--dport", "53"];
            upstream.extend_from_slice(&owner);
            upstream.extend_from_slice(&["-j", "CT", "--zone", "1"]);
            rules.push(out(&upstream));
            let mut answers = vec!["-p", "udp", "--sport", &self.port];
            answers.extend_from_slice(&owner);
            answers.extend_from_slice(&["-j", "CT", "--zone", "2"]);
            rules.push(out(&answers));
        }
        for dest in self.destinations("-d") {
            let mut args = vec!["-p", "udp", "--dport", "53"];
            args.extend(dest.iter().map(String::as_str));
            args.extend_from_slice(&["-j", "CT", "--zone", "2"]);
            rules.push(out(&args));
        }
        for src in self.destinations("-s") {
            let mut args = vec!["-p", "udp", "--sport", "53"];
            args.extend(src.iter().map(String::as_str));
            args.extend_from_slice(&["-j", "CT", "--zone", "1"]);
            rules.push(Rule::new(Table::Raw, chains::INBOUND_DNS, &args));
        }
        rules.push(Rule::new(Table::Raw, "OUTPUT", &["-j", chains::OUTPUT_DNS]));
        rules.push(Rule::new(
            Table::Raw,
            "PREROUTING",
            &["-j", chains::INBOUND_DNS],
        ));
        rules
    }

    /// One address match per server (`flag server`), or one empty match for all servers.
    fn destinations(&self, flag: &str) -> Vec<Vec<String>> {
        match &self.servers {
            None => vec![Vec::new()],
            Some(list) => list
                .iter()
                .map(|s| vec![flag.to_string(), s.clone()])
                .collect(),
        }
    }
}

fn host(addr: &IpAddr, family: Family) -> String {
    format!("{addr}/{}", family.host_prefix())
}
