//! Owned by the foundation work (issue 2); replace wholesale.
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum CertCommand {
    /// Not yet built.
    Todo,
}

pub fn run(_c: CertCommand) -> ExitCode {
    super::fail(2, "not yet built")
}
