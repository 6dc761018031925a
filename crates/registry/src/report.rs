//! What loading or validating the registry found: problems, notices and counts. Problems and
//! notices are the policy crate's types, so `trustmesh validate` prints both crates' findings
//! one way (`file:document:field path: message (hint: ...)`).

use trustmesh_policy::{Location, Notice, Problem};

#[derive(Debug, Default)]
pub struct Report {
    /// Errors (the resource is left out, or for a DestinationRule fails closed) and warnings
    /// ([`Problem::warning`]: applied as written, probably not what was meant).
    pub problems: Vec<Problem>,
    pub notices: Vec<Notice>,
    /// Every object of a kind the registry reads, valid or not: another reader of the same
    /// files need not mention them as skipped.
    pub handled: Vec<Location>,
    /// Resources of each kind met, valid or not.
    pub workload_entries: usize,
    pub service_entries: usize,
    pub destination_rules: usize,
    /// Services made (one per ServiceEntry host).
    pub services: usize,
}

impl Report {
    /// Errors only (warnings left out).
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.warning)
    }
}
