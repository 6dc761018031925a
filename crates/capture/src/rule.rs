//! One rule as iptables-restore reads it (`-A CHAIN args…`), the planner's output unit. A leaf
//! of its own: every part of the planner builds rules, and the planner assembles them.

use std::fmt;

use crate::chains::Table;

/// One `-A CHAIN args…` line of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: &'static str,
    pub args: Vec<String>,
}

impl Rule {
    pub(crate) fn new(table: Table, chain: &'static str, args: &[&str]) -> Rule {
        Rule {
            table,
            chain,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {} {}", self.chain, self.args.join(" "))
    }
}
