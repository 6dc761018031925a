//! `trustmesh cert`: inspect certificate files and verify X.509-SVIDs against trust bundles,
//! with the same verifier the proxy uses, so "does this cert work?" has one answer.
//!
//! `verify` exit codes: 0 valid, 1 not a valid SVID for these bundles (reason printed),
//! 2 unusable input (missing, unreadable or malformed files and arguments).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use trustmesh_ca::duration::format_human;
use trustmesh_ca::rfc3339;
use trustmesh_identity::inspect::CertInfo;
use trustmesh_identity::{load, verify_svid, TrustBundleSet, TrustConfig, TrustDomain, UnixTime};

#[derive(clap::Subcommand)]
pub enum CertCommand {
    /// Show every certificate in a PEM file: identity, issuer, validity, key, CA flag.
    Inspect(InspectArgs),
    /// Verify an X.509-SVID chain (leaf first) against trust bundles.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 printed; 2 the file cannot be read or holds no certificate."
)]
pub struct InspectArgs {
    /// PEM file with one or more certificates (e.g. cert-chain.pem).
    pub file: PathBuf,
    #[command(flatten)]
    pub output: super::output::OutputArg,
}

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 a valid X.509-SVID; 1 not valid (the reason is printed); 2 bad input (an unreadable chain or bundle)."
)]
pub struct VerifyArgs {
    /// PEM chain to verify: the leaf SVID first, then intermediates.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Trust bundle: a PEM file or a directory of them; `TD=PATH` assigns the trust domain
    /// instead of reading it from each root's spiffe:// URI. Repeatable.
    #[arg(long, value_name = "[TD=]PATH", required = true)]
    pub bundle: Vec<String>,
    /// Local trust domain (default: the leaf's own).
    #[arg(long, value_name = "TD")]
    pub trust_domain: Option<TrustDomain>,
    /// Trust domain alias of the local one (shares its roots). Repeatable.
    #[arg(long, value_name = "TD")]
    pub alias: Vec<TrustDomain>,
    #[command(flatten)]
    pub output: super::output::OutputArg,
}

pub fn run(c: CertCommand) -> ExitCode {
    match c {
        CertCommand::Inspect(a) => inspect(a),
        CertCommand::Verify(a) => verify(a),
    }
}

/// One certificate of `cert inspect --output json`: identity's facts plus what only makes
/// sense relative to "now" and to the file's order.
#[derive(Serialize)]
struct InspectedCert {
    index: usize,
    role: &'static str,
    trust_domain: Option<String>,
    expired: bool,
    remaining: String,
    remaining_seconds: i64,
    #[serde(flatten)]
    info: CertInfo,
}

fn inspect(a: InspectArgs) -> ExitCode {
    let certs = match load::certs_from_pem_file(&a.file) {
        Ok(c) => c,
        Err(e) => return super::fail(2, e),
    };
    let now = unix_now();
    let mut out = Vec::with_capacity(certs.len());
    for (i, der) in certs.iter().enumerate() {
        let info = match CertInfo::from_der(der) {
            Ok(info) => info,
            Err(e) => {
                return super::fail(
                    2,
                    format!("{}: certificate #{}: {e}", a.file.display(), i + 1),
                )
            }
        };
        let left = info.not_after_unix - now;
        out.push(InspectedCert {
            index: i + 1,
            role: role(i, &info),
            trust_domain: info
                .spiffe_id
                .as_ref()
                .map(|id| id.trust_domain().to_string()),
            expired: left < 0,
            remaining: if left < 0 {
                "expired".into()
            } else {
                format_human(secs(left))
            },
            remaining_seconds: left,
            info,
        });
    }
    if !super::output::print(a.output.format, &out) {
        print_text(&a.file, &out, now);
    }
    ExitCode::SUCCESS
}

fn role(index: usize, info: &CertInfo) -> &'static str {
    match (info.is_ca, info.self_signed) {
        (true, true) => "root",
        (true, false) => "intermediate",
        (false, _) if index == 0 => "leaf",
        (false, _) => "end-entity",
    }
}

fn print_text(file: &Path, certs: &[InspectedCert], now: i64) {
    println!("{}: {} certificate(s)", file.display(), certs.len());
    for c in certs {
        let i = &c.info;
        println!();
        println!("[{}] {}", c.index, c.role);
        println!("  Subject:       {}", empty_dash(&i.subject));
        println!(
            "  SPIFFE ID:     {}",
            i.spiffe_id.as_ref().map_or("-".into(), |id| id.to_string())
        );
        println!(
            "  Trust domain:  {}",
            c.trust_domain.as_deref().unwrap_or("-")
        );
        if i.spiffe_id.is_none() && !i.uri_sans.is_empty() {
            println!("  URI SANs:      {}", i.uri_sans.join(", "));
        }
        if !i.dns_sans.is_empty() {
            println!("  DNS SANs:      {}", i.dns_sans.join(", "));
        }
        println!("  Issuer:        {}", empty_dash(&i.issuer));
        println!("  Not before:    {}", i.not_before);
        println!("  Not after:     {}", i.not_after);
        let remaining = if c.expired {
            format!("expired {} ago", format_human(secs(now - i.not_after_unix)))
        } else {
            c.remaining.clone()
        };
        println!("  Remaining:     {remaining}");
        println!("  Key:           {}", i.key_type);
        println!("  Serial:        {}", i.serial_hex);
        let ca = match (i.is_ca, i.path_len_constraint) {
            (true, Some(n)) => format!("yes (pathlen {n})"),
            (true, None) => "yes".into(),
            (false, _) => "no".into(),
        };
        println!("  CA:            {ca}");
    }
}

fn empty_dash(s: &str) -> &str {
    if s.is_empty() {
        "(empty)"
    } else {
        s
    }
}

fn verify(a: VerifyArgs) -> ExitCode {
    let chain = match load::certs_from_pem_file(&a.cert) {
        Ok(c) => c,
        Err(e) => return super::fail(2, e),
    };
    let mut bundles = TrustBundleSet::new();
    for spec in &a.bundle {
        match load_bundle(spec) {
            Ok(b) => bundles.merge(b),
            Err(e) => return super::fail(2, e),
        }
    }
    // The leaf's own domain is local unless told otherwise; a leaf without a usable SPIFFE ID
    // falls back to Istio's default so verification still reports *why* the leaf is unusable.
    let local = a.trust_domain.clone().unwrap_or_else(|| {
        CertInfo::from_der(&chain[0])
            .ok()
            .and_then(|i| i.spiffe_id.map(|id| id.trust_domain().clone()))
            .unwrap_or_else(|| {
                TrustDomain::parse(trustmesh_ca::DEFAULT_TRUST_DOMAIN).expect("valid")
            })
    });
    let trust = TrustConfig::new(local, bundles).with_aliases(a.alias.iter().cloned());
    match verify_svid(&chain, &trust, UnixTime::now()) {
        Ok(v) => {
            let not_after = v.not_after.duration_since(UNIX_EPOCH).unwrap_or_default();
            let left = v
                .not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let expiry = time::OffsetDateTime::from_unix_timestamp(not_after.as_secs() as i64)
                .map(rfc3339)
                .unwrap_or_default();
            let result = serde_json::json!({
                "valid": true,
                "spiffeId": v.id.to_string(),
                "notAfter": expiry,
                "expiresInSeconds": left.as_secs(),
            });
            if !super::output::print(a.output.format, &result) {
                println!(
                    "valid: {} (expires {expiry}, in {})",
                    v.id,
                    format_human(left)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let result = serde_json::json!({ "valid": false, "reason": e.to_string() });
            if super::output::print(a.output.format, &result) {
                return ExitCode::from(1);
            }
            super::fail(1, format!("{}: invalid X.509-SVID: {e}", a.cert.display()))
        }
    }
}

/// `PATH` or `TD=PATH`; PATH is a PEM file or a directory of `*.pem` / `*.crt` files.
fn load_bundle(spec: &str) -> Result<TrustBundleSet, String> {
    let (td, path) = match spec.split_once('=') {
        // An existing path that happens to contain '=' is taken literally.
        Some((td, path)) if !Path::new(spec).exists() => {
            let td = TrustDomain::parse(td)
                .map_err(|e| format!("--bundle {spec}: invalid trust domain {td:?}: {e}"))?;
            (Some(td), Path::new(path))
        }
        _ => (None, Path::new(spec)),
    };
    let loaded = if path.is_dir() {
        load::bundle_from_dir_with(path, td.as_ref())
    } else {
        load::bundle_from_pem_file(path, td)
    };
    loaded.map_err(|e| e.to_string())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}
