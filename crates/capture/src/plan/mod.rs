//! The planner: [`Options`] → the ordered rules for one IP family, as iptables-restore lines.
//! Pure, so the rule text is what the tests check and what `--dry-run` prints.
//!
//! The order inside each chain is Istio's (`tools/istio-iptables/pkg/capture/run.go`), because
//! the first matching rule wins and every exclusion must come before the redirect it excludes
//! from: port exclusions, the proxy's own traffic (by owner), loopback, excluded ranges, and
//! only then included ports and ranges. Rules of ours outside our chains are only the hooks
//! (`OUTPUT -j TRUSTMESH_OUTPUT`, ...), listed last so a reader meets each chain before the
//! jump into it; iptables-restore applies the whole table at once, so the order of chains
//! does not matter to the kernel.

mod dns;
mod inbound;
mod outbound;

use crate::chains::{self, Table};
use crate::family::Family;
use crate::options::Options;
pub use crate::rule::Rule;

/// Everything one family gets: our chains per table, and the rules in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub family: Family,
    pub chains: Vec<(Table, &'static str)>,
    pub rules: Vec<Rule>,
}

impl Plan {
    pub fn chains_in(&self, table: Table) -> impl Iterator<Item = &'static str> + '_ {
        self.chains
            .iter()
            .filter(move |(t, _)| *t == table)
            .map(|(_, c)| *c)
    }

    pub fn rules_in(&self, table: Table) -> impl Iterator<Item = &Rule> + '_ {
        self.rules.iter().filter(move |r| r.table == table)
    }
}

/// The rules for `family`. Call [`Options::validate`] first: the planner trusts its input.
pub fn plan(opts: &Options, family: Family) -> Plan {
    let dns = dns::Dns::new(opts, family);
    let mut chains = vec![
        (Table::Nat, chains::INBOUND),
        (Table::Nat, chains::REDIRECT),
        (Table::Nat, chains::IN_REDIRECT),
        (Table::Nat, chains::OUTPUT),
    ];
    let mut rules = vec![
        redirect(chains::REDIRECT, opts.proxy_port),
        redirect(chains::IN_REDIRECT, opts.inbound_port),
    ];
    rules.extend(inbound::rules(opts));
    rules.extend(outbound::rules(opts, family, dns.as_ref()));
    if let Some(dns) = &dns {
        chains.push((Table::Nat, chains::OUTPUT_DNS));
        rules.extend(dns.nat_rules());
    }
    if inbound::captures_any(opts) {
        rules.push(Rule::new(
            Table::Nat,
            "PREROUTING",
            &["-p", "tcp", "-j", chains::INBOUND],
        ));
    }
    rules.push(Rule::new(Table::Nat, "OUTPUT", &["-j", chains::OUTPUT]));
    if let Some(dns) = &dns {
        chains.push((Table::Raw, chains::OUTPUT_DNS));
        chains.push((Table::Raw, chains::INBOUND_DNS));
        rules.extend(dns.raw_rules());
    }
    Plan {
        family,
        chains,
        rules,
    }
}

fn redirect(chain: &'static str, port: u16) -> Rule {
    Rule::new(
        Table::Nat,
        chain,
        &[
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &port.to_string(),
        ],
    )
}

#[cfg(test)]
mod tests;
