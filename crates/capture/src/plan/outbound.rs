//! `TRUSTMESH_OUTPUT`: what the workload sends goes to the sidecar's outbound port, except the
//! sidecar's own traffic and what the operator excluded. The loopback rules are the subtle
//! part, and follow Istio case by case:
//!
//! - the proxy passing inbound traffic through to the app binds `127.0.0.6` (`::6`) as its
//!   source: never captured, or it would come back to the inbound listener forever;
//! - the proxy connecting over `lo` to the workload's own address (the app called its own
//!   service, the outbound side picked this very pod) goes to the *inbound* port, so the call
//!   gets the inbound side's policy like any other;
//! - the app talking to itself over `lo` is left alone (unless the included ranges name a
//!   loopback network, where Istio captures it);
//! - every other packet of the proxy is left alone, whatever its destination;
//! - with DNS capture on, port 53 is kept out of the loopback rules so a resolver on the
//!   workload's own address still reaches the DNS proxy, not the inbound port.

use crate::chains::{self, Table};
use crate::family::Family;
use crate::options::{of_family, Options, Ranges};
use crate::plan::dns::Dns;
use crate::rule::Rule;

pub fn rules(opts: &Options, family: Family, dns: Option<&Dns>) -> Vec<Rule> {
    let mut out = Out(Vec::new());
    for name in &opts.exclude_interfaces {
        out.push(&["-o", name, "-j", "RETURN"]);
    }
    for port in &opts.outbound_ports_exclude {
        let port = port.to_string();
        out.push(&["-p", "tcp", "--dport", &port, "-j", "RETURN"]);
        out.push(&["-p", "udp", "--dport", &port, "-j", "RETURN"]);
    }
    out.push(&[
        "-o",
        "lo",
        "-s",
        family.passthrough_source(),
        "-j",
        "RETURN",
    ]);
    let app_loopback_exempt = !includes_loopback(&opts.outbound_ranges);
    let owners = opts
        .proxy_uids
        .iter()
        .map(|u| ("--uid-owner", u))
        .chain(opts.proxy_gids.iter().map(|g| ("--gid-owner", g)));
    for (owner_flag, id) in owners {
        let id = id.to_string();
        let not_dns: &[&str] = if dns.is_some() {
            &["!", "--dport", "53"]
        } else {
            &[]
        };
        let mut to_inbound = vec!["-o", "lo", "!", "-d", family.loopback(), "-p", "tcp"];
        to_inbound.extend_from_slice(not_dns);
        to_inbound.extend_from_slice(&["-m", "owner", owner_flag, &id]);
        to_inbound.extend_from_slice(&["-j", chains::IN_REDIRECT]);
        out.push(&to_inbound);
        if app_loopback_exempt {
            let mut app_to_itself = vec!["-o", "lo"];
            if dns.is_some() {
                app_to_itself.extend_from_slice(&["-p", "tcp"]);
                app_to_itself.extend_from_slice(not_dns);
            }
            app_to_itself.extend_from_slice(&["-m", "owner", "!", owner_flag, &id]);
            app_to_itself.extend_from_slice(&["-j", "RETURN"]);
            out.push(&app_to_itself);
        }
        out.push(&["-m", "owner", owner_flag, &id, "-j", "RETURN"]);
    }
    if dns.is_some() {
        out.push(&["-j", chains::OUTPUT_DNS]);
    }
    out.push(&["-d", family.loopback(), "-j", "RETURN"]);
    for net in of_family(&opts.outbound_ranges_exclude, family) {
        out.push(&["-d", &net.to_string(), "-j", "RETURN"]);
    }
    for port in &opts.outbound_ports {
        let port = port.to_string();
        out.push(&["-p", "tcp", "--dport", &port, "-j", chains::REDIRECT]);
    }
    match &opts.outbound_ranges {
        Ranges::All => out.push(&["-j", chains::REDIRECT]),
        Ranges::List(nets) => {
            for net in of_family(nets, family) {
                out.push(&["-d", &net.to_string(), "-j", chains::REDIRECT]);
            }
        }
    }
    out.0
}

/// Istio's `HasLoopBackIP`: an included range on loopback means the operator wants the app's
/// loopback traffic captured too. Either family's loopback counts for both, as there.
fn includes_loopback(ranges: &Ranges) -> bool {
    match ranges {
        Ranges::All => false,
        Ranges::List(nets) => nets.iter().any(|n| n.addr().is_loopback()),
    }
}

struct Out(Vec<Rule>);

impl Out {
    fn push(&mut self, args: &[&str]) {
        self.0.push(Rule::new(Table::Nat, chains::OUTPUT, args));
    }
}
