//! Reading `iptables-save` output: the kernel's current rules, which is the only truth about
//! what is installed. `remove` and a repeated `install` delete exactly the rules of ours found
//! here (by their saved text, which iptables accepts back as a rule spec), and `show` prints
//! them. Everything else in the text is kept only to be left alone.

use crate::chains::{self, Table};

/// One family's rule set, as saved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub tables: Vec<SavedTable>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub name: String,
    /// Every chain declared (`:NAME POLICY [packets:bytes]`), built-in or not.
    pub chains: Vec<String>,
    pub rules: Vec<SavedRule>,
}

/// `-A CHAIN spec`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    pub spec: String,
}

impl SavedRule {
    /// The chain this rule jumps or goes to (`-j X`, `-g X`), if any.
    pub fn target(&self) -> Option<String> {
        let tokens = tokens(&self.spec);
        let at = tokens
            .iter()
            .rposition(|t| matches!(t.as_str(), "-j" | "--jump" | "-g" | "--goto"))?;
        tokens.get(at + 1).cloned()
    }

    /// In one of our chains, or a hook into one.
    pub fn is_ours(&self) -> bool {
        chains::is_ours(&self.chain) || self.is_hook()
    }

    /// A rule in someone else's chain (usually a built-in one) that enters one of ours.
    pub fn is_hook(&self) -> bool {
        !chains::is_ours(&self.chain) && self.target().is_some_and(|t| chains::is_ours(&t))
    }

    /// The line as iptables-save wrote it.
    pub fn line(&self) -> String {
        format!("-A {} {}", self.chain, self.spec)
    }
}

impl Saved {
    /// Parses iptables-save text; lines it does not know (comments, counters) are skipped.
    pub fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                saved.tables.push(SavedTable {
                    name: name.trim().to_string(),
                    ..SavedTable::default()
                });
            } else if let Some(table) = saved.tables.last_mut() {
                if let Some(decl) = line.strip_prefix(':') {
                    if let Some(name) = decl.split_whitespace().next() {
                        table.chains.push(name.to_string());
                    }
                } else if let Some(rule) = line.strip_prefix("-A ") {
                    let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                    table.rules.push(SavedRule {
                        chain: chain.to_string(),
                        spec: spec.trim().to_string(),
                    });
                }
            }
        }
        saved
    }

    pub fn table(&self, table: Table) -> Option<&SavedTable> {
        self.tables.iter().find(|t| t.name == table.name())
    }

    /// Any chain or rule of ours, in the tables we write to.
    pub fn has_ours(&self) -> bool {
        self.our_tables()
            .any(|t| !t.our_chains().is_empty() || t.rules.iter().any(SavedRule::is_ours))
    }

    /// Only what is ours: our chains, their rules and the hooks into them, per table we write
    /// to; tables without any are left out.
    pub fn ours(&self) -> Saved {
        let tables = self
            .our_tables()
            .map(|t| SavedTable {
                name: t.name.clone(),
                chains: t.our_chains(),
                rules: t.rules.iter().filter(|r| r.is_ours()).cloned().collect(),
            })
            .filter(|t| !t.chains.is_empty() || !t.rules.is_empty())
            .collect();
        Saved { tables }
    }

    /// `nat` and `raw`: a chain named like ours in another table is someone else's.
    fn our_tables(&self) -> impl Iterator<Item = &SavedTable> {
        self.tables
            .iter()
            .filter(|t| Table::from_name(&t.name).is_some())
    }

    /// How many rules there are, ours or not.
    pub fn rule_count(&self) -> usize {
        self.tables.iter().map(|t| t.rules.len()).sum()
    }
}

impl SavedTable {
    pub fn our_chains(&self) -> Vec<String> {
        self.chains
            .iter()
            .filter(|c| chains::is_ours(c))
            .cloned()
            .collect()
    }
}

/// Splits a saved rule spec into words the way iptables-save quotes them: `"..."` with `\"`
/// and `\\` escapes (comments), so a comment that says `-j X` is not taken for a target.
pub fn tokens(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
