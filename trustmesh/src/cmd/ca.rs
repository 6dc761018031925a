//! `trustmesh ca`: create CA directories in Istio's `cacerts` layout and issue X.509-SVIDs
//! from them; `ca serve` runs the CA server (its own module).
//!
//! Exit codes: 0 success, 1 the CA refused (TTL too long, wrong trust domain, CSR for another
//! identity, existing CA without --force), 2 unusable input (missing or malformed files, bad
//! options), so scripts can tell "fix your files" from "this request is not allowed".

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::flags;
use trustmesh_ca::{
    rfc3339, CaError, CertificateAuthority, InitOptions, IssueRequest, KeyType, TtlPolicy,
    CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE, TLS_CERT_FILE,
    TLS_KEY_FILE, TLS_ROOT_FILE,
};
use trustmesh_config::{format_go, Deprecations, LegacyDuration};
use trustmesh_identity::{SpiffeId, TrustDomain};

#[derive(clap::Subcommand)]
pub enum CaCommand {
    /// Create a CA: a self-signed root, or with --parent an intermediate (Istio plug-in CA).
    Init(InitArgs),
    /// Issue a workload certificate (key.pem, cert-chain.pem, root-cert.pem) from a CA.
    Issue(IssueArgs),
    /// Run the CA server (Istio certificate API + SPIFFE bundle endpoint).
    Serve(Box<super::ca_serve::Args>),
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// Trust domain the CA signs for (e.g. cluster.local).
    #[arg(long, value_name = "TD")]
    pub trust_domain: TrustDomain,
    /// Directory to write ca-cert.pem, ca-key.pem, cert-chain.pem and root-cert.pem into (not
    /// one holding cert-manager's tls.crt, tls.key, ca.crt, which would be read first).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// CA directory of the parent; makes an intermediate signed by it instead of a root.
    #[arg(long, value_name = "DIR")]
    pub parent: Option<PathBuf>,
    /// Key algorithm of the new CA key.
    #[arg(long, value_name = "ecdsa-p256|rsa2048", default_value = "ecdsa-p256")]
    pub key_type: KeyType,
    /// Lifetime of the CA certificate (an intermediate's is clipped to its parent's expiry).
    #[arg(long, value_name = "DURATION", default_value = "87600h", value_parser = flags::duration)]
    pub validity: LegacyDuration,
    /// pathLenConstraint (default: none for a root, 0 for an intermediate).
    #[arg(long, value_name = "N")]
    pub path_len: Option<u8>,
    /// With --parent: allow an intermediate for another trust domain than the parent's (trust
    /// domain migration or a shared root across clusters).
    #[arg(long, requires = "parent")]
    pub cross_trust_domain: bool,
    /// Replace a CA already present in --out.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct IssueArgs {
    /// CA directory (Istio cacerts layout).
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// Identity to certify, e.g. spiffe://cluster.local/ns/default/sa/web.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: SpiffeId,
    /// Certificate lifetime (default: the CA's default, 24h).
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    pub ttl: Option<LegacyDuration>,
    /// Longest lifetime the CA allows (Istio's MAX_WORKLOAD_CERT_TTL, default 90 days).
    #[arg(long, value_name = "DURATION", default_value = "2160h", value_parser = flags::duration)]
    pub max_ttl: LegacyDuration,
    /// PEM CSR whose key is certified; no key is generated or written then.
    #[arg(long, value_name = "FILE", conflicts_with = "key_type")]
    pub csr: Option<PathBuf>,
    /// Key algorithm of the generated key.
    #[arg(long, value_name = "ecdsa-p256|rsa2048")]
    pub key_type: Option<KeyType>,
    /// Trust domain of a CA whose certificates carry no spiffe:// URI (default: cluster.local).
    #[arg(long, value_name = "TD")]
    pub trust_domain: Option<TrustDomain>,
    /// Directory for key.pem (mode 0600), cert-chain.pem and root-cert.pem.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(c: CaCommand) -> ExitCode {
    match c {
        CaCommand::Init(a) => init(a),
        CaCommand::Issue(a) => issue(a),
        CaCommand::Serve(a) => super::ca_serve::run(*a),
    }
}

fn ca_fail(e: CaError) -> ExitCode {
    super::fail(if e.is_bad_input() { 2 } else { 1 }, e)
}

fn init(a: InitArgs) -> ExitCode {
    let mut deprecated = Deprecations::new("trustmesh ca init");
    deprecated.flag("--validity", &a.validity);
    flags::report(&deprecated);
    // cert-manager's files are read before the cacerts ones (as istiod does), so a CA written
    // beside them would be ignored: --force cannot make that right, removing them can.
    if let Some(tls) = [TLS_CERT_FILE, TLS_KEY_FILE, TLS_ROOT_FILE]
        .iter()
        .find(|f| a.out.join(f).exists())
    {
        return super::fail(
            1,
            format!(
                "{} holds a cert-manager CA ({tls} exists), which is read before ca-cert.pem and \
                 the other cacerts files; remove tls.crt, tls.key and ca.crt first",
                a.out.display()
            ),
        );
    }
    if !a.force {
        if let Some(existing) = [CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE]
            .iter()
            .find(|f| a.out.join(f).exists())
        {
            return super::fail(
                1,
                format!(
                    "{} already holds a CA ({existing} exists); pass --force to replace it",
                    a.out.display()
                ),
            );
        }
    }
    let mut opts = match a.parent {
        Some(_) => InitOptions::intermediate(),
        None => InitOptions::root(),
    };
    opts.key_type = a.key_type;
    opts.validity = a.validity.get();
    if a.path_len.is_some() {
        opts.path_len = a.path_len;
    }
    opts.cross_trust_domain = a.cross_trust_domain;
    let created = match &a.parent {
        None => CertificateAuthority::init_root(&a.trust_domain, &opts),
        Some(parent_dir) => {
            // A parent naming no trust domain takes the requested one; a parent naming another
            // domain is loaded as it is, and init_intermediate refuses it unless
            // --cross-trust-domain was given, saying so.
            let parent = CertificateAuthority::load_with_trust_domain(parent_dir, &a.trust_domain)
                .or_else(|e| match CertificateAuthority::load(parent_dir) {
                    Ok(p) if p.trust_domain() != &a.trust_domain => Ok(p),
                    _ => Err(e),
                });
            parent.and_then(|parent| {
                CertificateAuthority::init_intermediate(&parent, &a.trust_domain, &opts)
            })
        }
    };
    let ca = match created.and_then(|ca| ca.write(&a.out).map(|()| ca)) {
        Ok(ca) => ca,
        Err(e) => return ca_fail(e),
    };
    let kind = if a.parent.is_some() {
        "intermediate"
    } else {
        "root"
    };
    println!(
        "created {kind} CA for trust domain {} in {} ({}, expires {})",
        ca.trust_domain(),
        a.out.display(),
        ca.key_algorithm(),
        rfc3339(ca.not_after())
    );
    ExitCode::SUCCESS
}

fn issue(a: IssueArgs) -> ExitCode {
    let mut deprecated = Deprecations::new("trustmesh ca issue");
    if let Some(ttl) = &a.ttl {
        deprecated.flag("--ttl", ttl);
    }
    deprecated.flag("--max-ttl", &a.max_ttl);
    flags::report(&deprecated);
    match try_issue(&a) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => ca_fail(e),
    }
}

fn try_issue(a: &IssueArgs) -> Result<String, CaError> {
    let mut ca = match &a.trust_domain {
        Some(td) => CertificateAuthority::load_with_trust_domain(&a.ca, td)?,
        None => CertificateAuthority::load(&a.ca)?,
    };
    let mut policy = TtlPolicy {
        max_ttl: a.max_ttl.get(),
        ..TtlPolicy::default()
    };
    policy.default_ttl = policy.default_ttl.min(policy.max_ttl);
    ca.set_ttl_policy(policy)?;

    let mut req = IssueRequest::new(a.spiffe_id.clone());
    req.ttl = a.ttl.as_ref().map_or(Duration::ZERO, LegacyDuration::get);
    req.key_type = a.key_type.unwrap_or_default();
    if let Some(csr) = &a.csr {
        req.csr_pem = Some(read_text(csr)?);
    }
    let svid = ca.issue(&req)?;
    svid.write_issued(&a.out)?;
    let lifetime = (svid.not_after - svid.not_before - trustmesh_ca::CLOCK_SKEW_GRACE)
        .try_into()
        .unwrap_or(Duration::ZERO);
    let files = if svid.key_pem.is_some() {
        format!("{KEY_FILE}, {CERT_CHAIN_FILE}, {ROOT_CERT_FILE}")
    } else {
        format!("{CERT_CHAIN_FILE}, {ROOT_CERT_FILE}")
    };
    Ok(format!(
        "issued {} (serial {}) valid until {} ({}); wrote {files} to {}",
        svid.spiffe_id,
        svid.serial_hex,
        rfc3339(svid.not_after),
        format_go(lifetime),
        a.out.display()
    ))
}

fn read_text(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CaError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            CaError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })
}
