//! `trustmesh`: one binary, CLI wiring only. Every subcommand lives in `cmd/` and calls into the
//! workspace crates, which hold the logic.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// mimalloc instead of the C library's allocator: a proxied request allocates and frees dozens of
/// small buffers across threads, where glibc's arenas spent ~9 % of the sidecar's CPU (perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Istio's zero-trust security model: SPIFFE identities, mutual TLS and Istio policies.
#[derive(Parser)]
#[command(name = "trustmesh", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Certificate authority: create a root or intermediate (plug-in) CA, issue workload certs.
    #[command(subcommand)]
    Ca(cmd::ca::CaCommand),
    /// Inspect and verify X.509-SVIDs.
    #[command(subcommand)]
    Cert(cmd::cert::CertCommand),
    /// Validate Istio security policies and the service registry's kinds (WorkloadEntry, ServiceEntry, DestinationRule).
    Validate(cmd::policy::ValidateArgs),
    /// Explain which policies allow or deny a request.
    #[command(subcommand)]
    Authz(cmd::policy::AuthzCommand),
    /// Run the control plane: the CA plus xDS to every sidecar, from a watched directory of
    /// Istio YAML (istiod's role for security and the registry).
    Control(Box<cmd::control::ControlArgs>),
    /// List the sidecars connected to the control plane and whether they are in sync.
    ProxyStatus(cmd::control::StatusArgs),
    /// Run the mTLS sidecar proxy.
    Proxy(cmd::proxy::Args),
    /// Run the node agent: key + CSR, rotation, SPIFFE Workload API.
    Agent(cmd::agent::Args),
    /// Start a whole mesh on loopback (two CAs, agents, sidecars, demo apps) and tour it;
    /// `--transparent` (root): in network namespaces, with the capture and unmodified apps.
    #[command(alias = "demo")]
    Quickstart(cmd::quickstart::Args),
    /// Send a workload's traffic through its sidecar: install, remove or show the iptables
    /// rules (istio-iptables' role).
    #[command(subcommand)]
    Capture(cmd::capture::CaptureCommand),
    /// Show a running sidecar's identity, certificate lifetime, trust bundles and mTLS modes.
    TlsCheck(cmd::tls_check::Args),
    /// Before a trust-domain change or an alias removal: what running sidecars would refuse.
    #[command(subcommand)]
    Migrate(cmd::migrate::MigrateCommand),
    /// Which sources still reach each workload port in plaintext, from the sidecars' metrics:
    /// whether PERMISSIVE → STRICT is safe (exit 0 ready, 1 not ready, 2 a sidecar unreadable).
    MtlsReadiness(cmd::mtls_readiness::Args),
}

fn main() -> ExitCode {
    // Before anything allocates: the sidecar's heap must never get a huge page (see
    // `cmd::pages::small_pages`; parsing the command line and starting the log already touched
    // three 2 MiB pages when this ran later).
    if std::env::args_os().nth(1).is_some_and(|a| a == "proxy") {
        cmd::pages::small_pages();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Ca(c) => cmd::ca::run(c),
        Command::Cert(c) => cmd::cert::run(c),
        Command::Validate(a) => cmd::policy::validate(a),
        Command::Authz(c) => cmd::policy::authz(c),
        Command::Control(a) => cmd::control::run(*a),
        Command::ProxyStatus(a) => cmd::control::proxy_status(a),
        Command::Proxy(a) => cmd::proxy::run(a),
        Command::Agent(a) => cmd::agent::run(a),
        Command::Quickstart(a) => cmd::quickstart::run(a),
        Command::TlsCheck(a) => cmd::tls_check::run(a),
        Command::Migrate(c) => cmd::migrate::run(c),
        Command::Capture(c) => cmd::capture::run(c),
        Command::MtlsReadiness(a) => cmd::mtls_readiness::run(a),
    }
}
