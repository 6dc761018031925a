//! iptables-restore input for `install` and `remove`, computed from the plan and the saved
//! state, and the text `show` prints.
//!
//! Each table is one `*table … COMMIT` block, which iptables-restore applies as one
//! transaction (`--noflush` keeps everything else in the table). Inside it: the hooks into our
//! chains found in the saved state are deleted by their saved text, each chain of ours is
//! declared (`:CHAIN - [0:0]` creates it, or empties it if it exists), leftovers are deleted
//! (`-X`), and the planned rules are appended. So installing twice gives one copy of each
//! rule, installing other options replaces ours, and removing is installing nothing. A table
//! is written only if the plan uses it or it holds something of ours: we never create a table
//! just to leave it empty.

use std::fmt::Write;

use crate::chains::Table;
use crate::plan::Plan;
use crate::saved::Saved;

/// The restore input that turns `current` into `current` minus ours plus `plan`.
pub fn install(plan: &Plan, current: &Saved) -> String {
    render(Some(plan), current).unwrap_or_default()
}

/// The restore input that deletes everything of ours from `current`; `None` when there is
/// nothing of ours.
pub fn remove(current: &Saved) -> Option<String> {
    render(None, current)
}

fn render(plan: Option<&Plan>, current: &Saved) -> Option<String> {
    let mut out = String::new();
    for table in Table::ALL {
        let planned: Vec<&str> = plan
            .map(|p| p.chains_in(table).collect())
            .unwrap_or_default();
        let saved = current.table(table);
        let existing = saved.map(|t| t.our_chains()).unwrap_or_default();
        let hooks: Vec<String> = saved
            .map(|t| {
                t.rules
                    .iter()
                    .filter(|r| r.is_hook())
                    .map(|r| r.line())
                    .collect()
            })
            .unwrap_or_default();
        if planned.is_empty() && existing.is_empty() && hooks.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{table}");
        for hook in &hooks {
            // `-A CHAIN spec` → `-D CHAIN spec`: delete by the exact saved text.
            let _ = writeln!(out, "-D{}", &hook[2..]);
        }
        let leftovers: Vec<&String> = existing
            .iter()
            .filter(|c| !planned.contains(&c.as_str()))
            .collect();
        for chain in planned
            .iter()
            .copied()
            .chain(leftovers.iter().map(|c| c.as_str()))
        {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for chain in leftovers {
            let _ = writeln!(out, "-X {chain}");
        }
        if let Some(plan) = plan {
            for rule in plan.rules_in(table) {
                let _ = writeln!(out, "{rule}");
            }
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// Our chains, rules and hooks in `current`, as iptables-save shows them (one block per
/// table); empty when nothing of ours is installed.
pub fn show(current: &Saved) -> String {
    let mut out = String::new();
    for table in current.ours().tables {
        let _ = writeln!(out, "*{}", table.name);
        for chain in &table.chains {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for rule in &table.rules {
            let _ = writeln!(out, "{}", rule.line());
        }
        out.push_str("COMMIT\n");
    }
    out
}

#[cfg(test)]
mod tests;
