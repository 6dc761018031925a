//! What validating or loading policies found: the problems, notices and fail-closed
//! resources, with counts. Shared by the builders and the set, below both.

use crate::failclosed::InvalidResource;
use crate::problem::{Notice, Problem};

/// Result of [`crate::validate`]: every problem and notice, and how many resources were read.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub notices: Vec<Notice>,
    /// Resources with errors and what loading them does instead (fail-closed).
    pub invalid: Vec<InvalidResource>,
    pub authorization_policies: usize,
    pub peer_authentications: usize,
    pub request_authentications: usize,
}
