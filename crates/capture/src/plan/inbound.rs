//! `TRUSTMESH_INBOUND`: TCP arriving for the workload goes to the sidecar's inbound port,
//! except on excluded interfaces and ports and the HBONE port (15008), where the sidecar
//! listens itself, as istio-iptables' `--inbound-tunnel-port` leaves it. Loopback traffic never passes `nat PREROUTING`
//! for a new connection (its address translation is decided in `OUTPUT`), so the inbound
//! loopback cases live in the outbound chain.

use crate::chains::{self, Table};
use crate::options::{Options, Ports};
use crate::rule::Rule;

/// Whether anything is captured inbound; without it there is no `PREROUTING` hook at all.
pub fn captures_any(opts: &Options) -> bool {
    match &opts.inbound_ports {
        Ports::All => true,
        Ports::List(ports) => !ports.is_empty(),
    }
}

pub fn rules(opts: &Options) -> Vec<Rule> {
    let mut rules = Vec::new();
    if !captures_any(opts) {
        return rules;
    }
    for name in &opts.exclude_interfaces {
        rules.push(Rule::new(
            Table::Nat,
            chains::INBOUND,
            &["-i", name, "-j", "RETURN"],
        ));
    }
    match &opts.inbound_ports {
        Ports::All => {
            for port in opts
                .inbound_tunnel_port
                .iter()
                .chain(&opts.inbound_ports_exclude)
            {
                rules.push(Rule::new(
                    Table::Nat,
                    chains::INBOUND,
                    &["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"],
                ));
            }
            rules.push(Rule::new(
                Table::Nat,
                chains::INBOUND,
                &["-p", "tcp", "-j", chains::IN_REDIRECT],
            ));
        }
        Ports::List(ports) => {
            for port in ports {
                rules.push(Rule::new(
                    Table::Nat,
                    chains::INBOUND,
                    &[
                        "-p",
                        "tcp",
                        "--dport",
                        &port.to_string(),
                        "-j",
                        chains::IN_REDIRECT,
                    ],
                ));
            }
        }
    }
    rules
}
