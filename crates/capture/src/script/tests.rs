//! The restore input for install and remove against saved states, and `show`'s text.

use super::*;
use crate::family::Family;
use crate::options::{DnsCapture, DnsServers, Options};
use crate::plan::plan;
use crate::saved::tests::FIXTURE;

#[test]
fn install_on_a_clean_namespace_declares_and_appends_only() {
    let text = install(&plan(&Options::default(), Family::V4), &Saved::default());
    assert!(!text.contains("-D ") && !text.contains("-X "), "{text}");
    assert_eq!(text.matches("*nat").count(), 1);
    assert_eq!(text.matches("COMMIT").count(), 1);
}

#[test]
fn install_over_ours_deletes_our_hooks_by_their_saved_text_and_keeps_the_rest() {
    let text = install(
        &plan(&Options::default(), Family::V4),
        &Saved::parse(FIXTURE),
    );
    let nat = text.split("*raw").next().unwrap();
    assert!(
        nat.starts_with(
            "*nat\n\
         -D PREROUTING -p tcp -j TRUSTMESH_INBOUND\n\
         -D OUTPUT -j TRUSTMESH_OUTPUT\n\
         :TRUSTMESH_INBOUND - [0:0]\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("OTHER_CHAIN"),
        "someone else's rules untouched: {text}"
    );
    assert_eq!(text.matches("-A OUTPUT -j TRUSTMESH_OUTPUT\n").count(), 1);
    // DNS is off now: the raw chains are emptied and deleted, nothing added there.
    let raw = text.split("*raw\n").nth(1).unwrap();
    assert_eq!(
        raw,
        "-D PREROUTING -j TRUSTMESH_INBOUND_DNS\n\
         -D OUTPUT -j TRUSTMESH_OUTPUT_DNS\n\
         :TRUSTMESH_INBOUND_DNS - [0:0]\n\
         :TRUSTMESH_OUTPUT_DNS - [0:0]\n\
         -X TRUSTMESH_INBOUND_DNS\n\
         -X TRUSTMESH_OUTPUT_DNS\n\
         COMMIT\n"
    );
}

#[test]
fn install_never_touches_tables_it_does_not_use() {
    let text = install(
        &plan(&Options::default(), Family::V4),
        &Saved::parse(FIXTURE),
    );
    assert!(
        !text.contains("*filter") && !text.contains("INPUT"),
        "{text}"
    );
}

#[test]
fn install_with_dns_over_a_clean_namespace_writes_raw_too() {
    let opts = Options {
        dns: Some(DnsCapture {
            port: 15053,
            servers: DnsServers::All,
        }),
        ..Options::default()
    };
    let text = install(&plan(&opts, Family::V4), &Saved::default());
    assert!(text.contains("*raw\n:TRUSTMESH_OUTPUT_DNS - [0:0]\n:TRUSTMESH_INBOUND_DNS - [0:0]\n"));
}

#[test]
fn remove_deletes_hooks_then_empties_and_deletes_our_chains() {
    let text = remove(&Saved::parse(FIXTURE)).unwrap();
    assert_eq!(
        text,
        "*nat\n\
         -D PREROUTING -p tcp -j TRUSTMESH_INBOUND\n\
         -D OUTPUT -j TRUSTMESH_OUTPUT\n\
         :TRUSTMESH_INBOUND - [0:0]\n\
         :TRUSTMESH_IN_REDIRECT - [0:0]\n\
         :TRUSTMESH_OUTPUT - [0:0]\n\
         :TRUSTMESH_REDIRECT - [0:0]\n\
         -X TRUSTMESH_INBOUND\n\
         -X TRUSTMESH_IN_REDIRECT\n\
         -X TRUSTMESH_OUTPUT\n\
         -X TRUSTMESH_REDIRECT\n\
         COMMIT\n\
         *raw\n\
         -D PREROUTING -j TRUSTMESH_INBOUND_DNS\n\
         -D OUTPUT -j TRUSTMESH_OUTPUT_DNS\n\
         :TRUSTMESH_INBOUND_DNS - [0:0]\n\
         :TRUSTMESH_OUTPUT_DNS - [0:0]\n\
         -X TRUSTMESH_INBOUND_DNS\n\
         -X TRUSTMESH_OUTPUT_DNS\n\
         COMMIT\n"
    );
}

#[test]
fn remove_with_nothing_of_ours_is_nothing() {
    let clean = "*nat\n:OUTPUT ACCEPT [0:0]\n:OTHER - [0:0]\n-A OUTPUT -j OTHER\nCOMMIT\n";
    assert_eq!(remove(&Saved::parse(clean)), None);
    assert_eq!(remove(&Saved::default()), None);
}

/// A hook left without its chain's rules (or a chain without its hook) is still ours.
#[test]
fn remove_cleans_up_half_installed_states() {
    let hook_only = "*nat\n:OUTPUT ACCEPT [0:0]\n:TRUSTMESH_OUTPUT - [0:0]\n-A OUTPUT -j TRUSTMESH_OUTPUT\nCOMMIT\n";
    assert_eq!(
        remove(&Saved::parse(hook_only)).unwrap(),
        "*nat\n-D OUTPUT -j TRUSTMESH_OUTPUT\n:TRUSTMESH_OUTPUT - [0:0]\n-X TRUSTMESH_OUTPUT\nCOMMIT\n"
    );
    let chain_only = "*raw\n:TRUSTMESH_INBOUND_DNS - [0:0]\nCOMMIT\n";
    assert_eq!(
        remove(&Saved::parse(chain_only)).unwrap(),
        "*raw\n:TRUSTMESH_INBOUND_DNS - [0:0]\n-X TRUSTMESH_INBOUND_DNS\nCOMMIT\n"
    );
}

#[test]
fn show_prints_only_ours_in_save_form() {
    let text = show(&Saved::parse(FIXTURE));
    assert!(
        text.starts_with("*raw\n:TRUSTMESH_INBOUND_DNS - [0:0]\n"),
        "{text}"
    );
    assert!(text.contains("-A OUTPUT -j TRUSTMESH_OUTPUT\n"));
    assert!(text.contains("-A TRUSTMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"));
    assert!(!text.contains("OTHER_CHAIN") && !text.contains("*filter") && !text.contains('#'));
    assert_eq!(text.lines().filter(|l| l.starts_with("-A ")).count(), 15);
    assert_eq!(show(&Saved::default()), "");
}
