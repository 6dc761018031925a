//! Owned by the policy engine work (issue 3); replace wholesale.
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ValidateArgs {}

#[derive(clap::Subcommand)]
pub enum AuthzCommand {
    /// Not yet built.
    Check,
}

pub fn validate(_a: ValidateArgs) -> ExitCode {
    super::fail(2, "not yet built")
}

pub fn authz(_c: AuthzCommand) -> ExitCode {
    super::fail(2, "not yet built")
}
