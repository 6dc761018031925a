//! The names we own. Every rule of ours sits in one of these chains; the only rules elsewhere
//! are jumps into them from the built-in `OUTPUT` and `PREROUTING`. So "ours" is a fixed list
//! of names rather than a prefix match: a chain someone else calls `TRUSTMESH_FOO` is theirs,
//! and `remove` leaves it alone.

use std::fmt;

/// Outbound entry point, jumped to from `nat OUTPUT` (Istio's `ISTIO_OUTPUT`).
pub const OUTPUT: &str = "TRUSTMESH_OUTPUT";
/// Redirects to the sidecar's outbound port (`ISTIO_REDIRECT`).
pub const REDIRECT: &str = "TRUSTMESH_REDIRECT";
/// Inbound entry point, jumped to from `nat PREROUTING` (`ISTIO_INBOUND`).
pub const INBOUND: &str = "TRUSTMESH_INBOUND";
/// Redirects to the sidecar's inbound port (`ISTIO_IN_REDIRECT`).
pub const IN_REDIRECT: &str = "TRUSTMESH_IN_REDIRECT";
/// DNS: redirection to the DNS port in `nat`, conntrack zones for queries in `raw`
/// (`ISTIO_OUTPUT_DNS`).
pub const OUTPUT_DNS: &str = "TRUSTMESH_OUTPUT_DNS";
/// DNS: conntrack zones for answers, jumped to from `raw PREROUTING` (Istio reuses the name
/// `ISTIO_INBOUND` in `raw`; a name of its own says what the chain is for).
pub const INBOUND_DNS: &str = "TRUSTMESH_INBOUND_DNS";

/// Every chain name we create, in any table.
pub const ALL: [&str; 6] = [
    OUTPUT,
    REDIRECT,
    INBOUND,
    IN_REDIRECT,
    OUTPUT_DNS,
    INBOUND_DNS,
];

/// Whether `chain` is one of ours.
pub fn is_ours(chain: &str) -> bool {
    ALL.contains(&chain)
}

/// The tables we write to: `nat` for redirection, `raw` for DNS conntrack zones (which must be
/// set before conntrack sees the packet, so before `nat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nat,
    Raw,
}

impl Table {
    /// Both, in the order scripts and `show` list them.
    pub const ALL: [Table; 2] = [Table::Nat, Table::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
