//! What can go wrong, in sentences for the operator who ran `trustmesh capture`: the tool that
//! failed, why, and what to do about it. The tools' own words are passed on where they are the
//! best explanation (a rule iptables refused), with the line of ours they refused.

use crate::family::Family;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("invalid capture options: {0}")]
    Invalid(String),
    #[error(
        "{tool} is not installed (not on PATH, /usr/sbin or /sbin): traffic capture needs the \
         iptables tools (Debian and Ubuntu: apt-get install iptables)"
    )]
    Missing { tool: &'static str },
    #[error(
        "{tool} was not allowed to read or change the firewall rules: this takes root \
         (CAP_NET_ADMIN in the workload's network namespace); run `trustmesh capture` as root"
    )]
    NotPermitted { tool: &'static str },
    #[error("{tool} failed ({status}): {message}")]
    Failed {
        tool: &'static str,
        status: String,
        message: String,
    },
    #[error("cannot run {tool}: {reason}")]
    Run { tool: &'static str, reason: String },
    #[error(
        "the {applied} rules were applied but the {failed} rules were not: {source}; run \
         `trustmesh capture install` again, or `trustmesh capture remove`"
    )]
    Partial {
        applied: Family,
        failed: Family,
        source: Box<CaptureError>,
    },
}
