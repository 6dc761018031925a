//! The planner's rule text, option by option, against what istio-iptables writes for the same
//! options (its `testdata/*.golden`, with our chain names and without the HBONE tunnel port).

use super::*;
use crate::options::{self, DnsCapture, DnsServers, Ports, Ranges};
use crate::saved::Saved;
use crate::script;

/// The restore input for a namespace with nothing of ours: the plan as an operator reads it.
fn text(opts: &Options, family: Family) -> String {
    script::install(&plan(opts, family), &Saved::default())
}

/// The `-A` lines of one chain (table `nat` unless the chain says otherwise), without the
/// `-A CHAIN ` prefix.
fn chain(opts: &Options, family: Family, table: Table, name: &str) -> Vec<String> {
    plan(opts, family)
        .rules
        .iter()
        .filter(|r| r.table == table && r.chain == name)
        .map(|r| r.args.join(" "))
        .collect()
}

fn out(opts: &Options, family: Family) -> Vec<String> {
    chain(opts, family, Table::Nat, chains::OUTPUT)
}

const DEFAULT_V4: &str = "\
*nat
:TRUSTMESH_INBOUND - [0:0]
:TRUSTMESH_REDIRECT - [0:0]
:TRUSTMESH_IN_REDIRECT - [0:0]
:TRUSTMESH_OUTPUT - [0:0]
-A TRUSTMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A TRUSTMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A TRUSTMESH_INBOUND -p tcp --dport 15008 -j RETURN
-A TRUSTMESH_INBOUND -p tcp -j TRUSTMESH_IN_REDIRECT
-A TRUSTMESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A TRUSTMESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --uid-owner 1337 -j TRUSTMESH_IN_REDIRECT
-A TRUSTMESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A TRUSTMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A TRUSTMESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --gid-owner 1337 -j TRUSTMESH_IN_REDIRECT
-A TRUSTMESH_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A TRUSTMESH_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN
-A TRUSTMESH_OUTPUT -j TRUSTMESH_REDIRECT
-A PREROUTING -p tcp -j TRUSTMESH_INBOUND
-A OUTPUT -j TRUSTMESH_OUTPUT
COMMIT
";

#[test]
fn default_ipv4_rules() {
    assert_eq!(text(&Options::default(), Family::V4), DEFAULT_V4);
}

#[test]
fn default_ipv6_rules_use_ipv6_loopback_and_passthrough_addresses() {
    let expected = DEFAULT_V4
        .replace("127.0.0.6/32", "::6/128")
        .replace("127.0.0.1/32", "::1/128");
    assert_eq!(text(&Options::default(), Family::V6), expected);
}

#[test]
fn ports_are_the_ones_given() {
    let opts = Options {
        proxy_port: 7001,
        inbound_port: 7006,
        ..Options::default()
    };
    let t = text(&opts, Family::V4);
    assert!(t.contains("-A TRUSTMESH_REDIRECT -p tcp -j REDIRECT --to-ports 7001\n"));
    assert!(t.contains("-A TRUSTMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 7006\n"));
}

#[test]
fn inbound_port_list_captures_only_those_ports_and_ignores_exclusions() {
    let opts = Options {
        inbound_ports: Ports::List(vec![8080, 9090]),
        inbound_ports_exclude: vec![15020],
        ..Options::default()
    };
    assert_eq!(
        chain(&opts, Family::V4, Table::Nat, chains::INBOUND),
        [
            "-p tcp --dport 8080 -j TRUSTMESH_IN_REDIRECT",
            "-p tcp --dport 9090 -j TRUSTMESH_IN_REDIRECT",
        ]
    );
}

#[test]
fn inbound_exclusions_come_before_the_catch_all_redirect() {
    let opts = Options {
        inbound_ports_exclude: vec![15020, 15090],
        ..Options::default()
    };
    assert_eq!(
        chain(&opts, Family::V4, Table::Nat, chains::INBOUND),
        [
            "-p tcp --dport 15008 -j RETURN",
            "-p tcp --dport 15020 -j RETURN",
            "-p tcp --dport 15090 -j RETURN",
            "-p tcp -j TRUSTMESH_IN_REDIRECT",
        ]
    );
    let no_tunnel = Options {
        inbound_tunnel_port: None,
        ..Options::default()
    };
    assert_eq!(
        chain(&no_tunnel, Family::V4, Table::Nat, chains::INBOUND),
        ["-p tcp -j TRUSTMESH_IN_REDIRECT"]
    );
}

#[test]
fn no_inbound_ports_means_no_prerouting_hook() {
    let opts = Options {
        inbound_ports: Ports::List(vec![]),
        ..Options::default()
    };
    let p = plan(&opts, Family::V4);
    assert!(p.rules.iter().all(|r| r.chain != "PREROUTING"), "{p:?}");
    assert!(chain(&opts, Family::V4, Table::Nat, chains::INBOUND).is_empty());
}

#[test]
fn outbound_ranges_are_split_by_family() {
    let opts = Options {
        outbound_ranges: Ranges::List(
            options::parse_cidrs(&["10.0.0.0/8,fd00::/8", "192.168.1.7"]).unwrap(),
        ),
        ..Options::default()
    };
    let v4 = out(&opts, Family::V4);
    assert_eq!(
        &v4[v4.len() - 2..],
        [
            "-d 10.0.0.0/8 -j TRUSTMESH_REDIRECT",
            "-d 192.168.1.7/32 -j TRUSTMESH_REDIRECT"
        ]
    );
    let v6 = out(&opts, Family::V6);
    assert_eq!(v6.last().unwrap(), "-d fd00::/8 -j TRUSTMESH_REDIRECT");
    assert!(!v4.iter().any(|r| r == "-j TRUSTMESH_REDIRECT"));
}

#[test]
fn no_outbound_ranges_means_no_catch_all_redirect() {
    let opts = Options {
        outbound_ranges: Ranges::List(vec![]),
        ..Options::default()
    };
    let rules = out(&opts, Family::V4);
    assert_eq!(rules.last().unwrap(), "-d 127.0.0.1/32 -j RETURN");
    // The hook stays: the proxy's loopback rules still apply.
    assert!(plan(&opts, Family::V4)
        .rules
        .iter()
        .any(|r| r.chain == "OUTPUT"));
}

#[test]
fn excluded_ranges_return_before_any_redirect() {
    let opts = Options {
        outbound_ranges_exclude: options::parse_cidrs(&["10.96.0.0/12", "fd00:1::/64"]).unwrap(),
        outbound_ports: vec![3306],
        ..Options::default()
    };
    let v4 = out(&opts, Family::V4);
    let n = v4.len();
    assert_eq!(
        &v4[n - 4..],
        [
            "-d 127.0.0.1/32 -j RETURN",
            "-d 10.96.0.0/12 -j RETURN",
            "-p tcp --dport 3306 -j TRUSTMESH_REDIRECT",
            "-j TRUSTMESH_REDIRECT",
        ]
    );
    assert!(out(&opts, Family::V6).contains(&"-d fd00:1::/64 -j RETURN".to_string()));
    assert!(!out(&opts, Family::V6)
        .iter()
        .any(|r| r.contains("10.96.0.0")));
}

#[test]
fn excluded_outbound_ports_come_first_for_tcp_and_udp() {
    let opts = Options {
        outbound_ports_exclude: vec![5432, 11211],
        ..Options::default()
    };
    assert_eq!(
        &out(&opts, Family::V4)[..5],
        [
            "-p tcp --dport 5432 -j RETURN",
            "-p udp --dport 5432 -j RETURN",
            "-p tcp --dport 11211 -j RETURN",
            "-p udp --dport 11211 -j RETURN",
            "-o lo -s 127.0.0.6/32 -j RETURN",
        ]
    );
}

#[test]
fn included_outbound_ports_redirect_even_without_ranges() {
    let opts = Options {
        outbound_ranges: Ranges::List(vec![]),
        outbound_ports: vec![80, 443],
        ..Options::default()
    };
    let rules = out(&opts, Family::V4);
    assert_eq!(
        &rules[rules.len() - 2..],
        [
            "-p tcp --dport 80 -j TRUSTMESH_REDIRECT",
            "-p tcp --dport 443 -j TRUSTMESH_REDIRECT",
        ]
    );
}

#[test]
fn every_proxy_uid_and_gid_gets_its_three_rules_in_order() {
    let opts = Options {
        proxy_uids: vec![3, 4],
        proxy_gids: vec![1],
        ..Options::default()
    };
    let rules = out(&opts, Family::V4);
    assert_eq!(
        &rules[1..10],
        [
            "-o lo ! -d 127.0.0.1/32 -p tcp -m owner --uid-owner 3 -j TRUSTMESH_IN_REDIRECT",
            "-o lo -m owner ! --uid-owner 3 -j RETURN",
            "-m owner --uid-owner 3 -j RETURN",
            "-o lo ! -d 127.0.0.1/32 -p tcp -m owner --uid-owner 4 -j TRUSTMESH_IN_REDIRECT",
            "-o lo -m owner ! --uid-owner 4 -j RETURN",
            "-m owner --uid-owner 4 -j RETURN",
            "-o lo ! -d 127.0.0.1/32 -p tcp -m owner --gid-owner 1 -j TRUSTMESH_IN_REDIRECT",
            "-o lo -m owner ! --gid-owner 1 -j RETURN",
            "-m owner --gid-owner 1 -j RETURN",
        ]
    );
}

#[test]
fn gid_only_proxy_has_no_uid_rules() {
    let opts = Options {
        proxy_uids: vec![],
        proxy_gids: vec![1337],
        ..Options::default()
    };
    assert!(!text(&opts, Family::V4).contains("--uid-owner"));
    assert!(opts.validate().is_ok());
}

#[test]
fn a_loopback_range_included_captures_the_app_talking_to_itself() {
    let opts = Options {
        outbound_ranges: Ranges::List(options::parse_cidrs(&["127.0.0.0/8"]).unwrap()),
        ..Options::default()
    };
    let rules = out(&opts, Family::V4);
    assert!(
        !rules.iter().any(|r| r.contains("! --uid-owner")),
        "{rules:#?}"
    );
    assert!(rules.contains(&"-m owner --uid-owner 1337 -j RETURN".to_string()));
}

#[test]
fn excluded_interfaces_return_first_in_both_directions() {
    let opts = Options {
        exclude_interfaces: vec!["eth1".into()],
        ..Options::default()
    };
    assert_eq!(out(&opts, Family::V4)[0], "-o eth1 -j RETURN");
    assert_eq!(
        chain(&opts, Family::V4, Table::Nat, chains::INBOUND)[0],
        "-i eth1 -j RETURN"
    );
}

/// Istio's `dns-uid-gid` golden case, capturing every server (`--capture-all-dns`).
#[test]
fn dns_capture_of_every_server() {
    let opts = Options {
        proxy_uids: vec![3],
        proxy_gids: vec![1],
        dns: Some(DnsCapture {
            port: 15053,
            servers: DnsServers::All,
        }),
        ..Options::default()
    };
    let t = text(&opts, Family::V4);
    let expected_nat = "\
-A TRUSTMESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A TRUSTMESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 53 -m owner --uid-owner 3 -j TRUSTMESH_IN_REDIRECT
-A TRUSTMESH_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 3 -j RETURN
-A TRUSTMESH_OUTPUT -m owner --uid-owner 3 -j RETURN
-A TRUSTMESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 53 -m owner --gid-owner 1 -j TRUSTMESH_IN_REDIRECT
-A TRUSTMESH_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner 1 -j RETURN
-A TRUSTMESH_OUTPUT -m owner --gid-owner 1 -j RETURN
-A TRUSTMESH_OUTPUT -j TRUSTMESH_OUTPUT_DNS
-A TRUSTMESH_OUTPUT -d 127.0.0.1/32 -j RETURN
-A TRUSTMESH_OUTPUT -j TRUSTMESH_REDIRECT
-A TRUSTMESH_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053
-A TRUSTMESH_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-ports 15053
-A PREROUTING -p tcp -j TRUSTMESH_INBOUND
-A OUTPUT -j TRUSTMESH_OUTPUT
COMMIT
*raw
:TRUSTMESH_OUTPUT_DNS - [0:0]
:TRUSTMESH_INBOUND_DNS - [0:0]
-A TRUSTMESH_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 3 -j CT --zone 1
-A TRUSTMESH_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 3 -j CT --zone 2
-A TRUSTMESH_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1 -j CT --zone 1
-A TRUSTMESH_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1 -j CT --zone 2
-A TRUSTMESH_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2
-A TRUSTMESH_INBOUND_DNS -p udp --sport 53 -j CT --zone 1
-A OUTPUT -j TRUSTMESH_OUTPUT_DNS
-A PREROUTING -j TRUSTMESH_INBOUND_DNS
COMMIT
";
    assert!(
        t.contains(":TRUSTMESH_OUTPUT_DNS - [0:0]\n-A TRUSTMESH_REDIRECT"),
        "{t}"
    );
    assert!(t.ends_with(expected_nat), "{t}");
}

#[test]
fn dns_capture_of_listed_servers_is_per_family() {
    let opts = Options {
        dns: Some(DnsCapture {
            port: 5353,
            servers: DnsServers::List(options::parse_addrs(&["10.96.0.10", "fd00::a"]).unwrap()),
        }),
        ..Options::default()
    };
    assert_eq!(
        chain(&opts, Family::V4, Table::Nat, chains::OUTPUT_DNS),
        [
            "-p tcp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 5353",
            "-p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 5353",
        ]
    );
    assert_eq!(
        chain(&opts, Family::V6, Table::Raw, chains::INBOUND_DNS),
        ["-p udp --sport 53 -s fd00::a/128 -j CT --zone 1"]
    );
    let v4_only = Options {
        dns: Some(DnsCapture {
            port: 15053,
            servers: DnsServers::List(options::parse_addrs(&["10.96.0.10"]).unwrap()),
        }),
        ..Options::default()
    };
    let v6 = text(&v4_only, Family::V6);
    assert!(!v6.contains("DNS") && !v6.contains("*raw"), "{v6}");
}

#[test]
fn dns_off_writes_no_dns_rules_and_no_raw_table() {
    let t = text(&Options::default(), Family::V4);
    assert!(
        !t.contains("53") && !t.contains("*raw") && !t.contains("-j CT"),
        "{t}"
    );
}

/// In every chain, nothing the operator or Istio excludes can come after a rule that
/// redirects the same traffic: each RETURN precedes the catch-all jumps.
#[test]
fn exclusions_come_before_redirects() {
    let opts = Options {
        proxy_uids: vec![1337, 1338],
        outbound_ports_exclude: vec![25],
        outbound_ranges_exclude: options::parse_cidrs(&["10.0.0.0/8"]).unwrap(),
        inbound_ports_exclude: vec![15090],
        exclude_interfaces: vec!["eth9".into()],
        dns: Some(DnsCapture {
            port: 15053,
            servers: DnsServers::All,
        }),
        ..Options::default()
    };
    for family in Family::BOTH {
        for name in [chains::OUTPUT, chains::INBOUND] {
            let rules = chain(&opts, family, Table::Nat, name);
            let last_return = rules
                .iter()
                .rposition(|r| r.ends_with("-j RETURN"))
                .unwrap();
            let first_catch_all = rules
                .iter()
                .position(|r| {
                    r == "-j TRUSTMESH_REDIRECT" || r == "-p tcp -j TRUSTMESH_IN_REDIRECT"
                })
                .unwrap();
            assert!(last_return < first_catch_all, "{family} {name}: {rules:#?}");
        }
    }
}

#[test]
fn validation_refuses_what_would_loop_or_break() {
    let no_owner = Options {
        proxy_uids: vec![],
        proxy_gids: vec![],
        ..Options::default()
    };
    assert!(no_owner.validate().unwrap_err().contains("--proxy-uid"));
    let bad_if = Options {
        exclude_interfaces: vec!["eth0 -j ACCEPT".into()],
        ..Options::default()
    };
    assert!(bad_if.validate().is_err());
    assert!(Options::default().validate().is_ok());
}

#[test]
fn option_lists_parse_like_istio_iptables() {
    assert_eq!(options::parse_ports_or_all(&["*"]).unwrap(), Ports::All);
    assert_eq!(
        options::parse_ports_or_all(&[""]).unwrap(),
        Ports::List(vec![])
    );
    assert_eq!(
        options::parse_ports_or_all(&["80, 443", "8080"]).unwrap(),
        Ports::List(vec![80, 443, 8080])
    );
    assert!(options::parse_ports(&["http"])
        .unwrap_err()
        .contains("\"http\""));
    assert!(options::parse_ports(&["0"]).is_err());
    assert_eq!(options::parse_ranges_or_all(&["*"]).unwrap(), Ranges::All);
    assert_eq!(
        options::parse_cidrs(&["10.1.2.3/8"]).unwrap()[0].to_string(),
        "10.0.0.0/8"
    );
    assert!(options::parse_cidrs(&["*"]).is_err());
    assert!(options::parse_cidrs(&["10.0.0.0/33"]).is_err());
    assert_eq!(options::parse_ids(&["0,1337"]).unwrap(), [0, 1337]);
    assert!(options::parse_ids(&["istio-proxy"]).is_err());
    let resolv =
        "# comment\nsearch x\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\noptions ndots:5\n";
    assert_eq!(
        options::resolv_conf_servers(resolv),
        options::parse_addrs(&["10.96.0.10", "fe80::1"]).unwrap()
    );
}
