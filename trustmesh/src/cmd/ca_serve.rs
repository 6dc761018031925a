//! `trustmesh ca serve`: runs the CA server (Istio's certificate API over TLS, plus the SPIFFE
//! bundle endpoint) from an Istio `cacerts` folder. SIGTERM or SIGINT drains it (calls in flight
//! are answered, for up to `--termination-drain`, default `server::DRAIN_DEADLINE`), a second one stops it at once; SIGHUP,
//! SIGUSR1 and SIGUSR2 are logged and ignored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use trustmesh_ca::{CertificateAuthority, TtlPolicy};
use trustmesh_ca_server::auth::jwt::{IssuerConfig, JwksSource};
use trustmesh_ca_server::ca_signer::{server_identity, CaSigner};
use trustmesh_ca_server::jwt_authority::JwtAuthority;
use trustmesh_ca_server::server::{self, IdentitySource, Options};
use trustmesh_config::{Deprecations, LegacyDuration};
use trustmesh_identity::TrustDomain;
use trustmesh_lifecycle::signals::Hangup;

use super::flags;

#[derive(clap::Args)]
pub struct Args {
    /// CA folder in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)
    /// or cert-manager's (tls.crt, tls.key, ca.crt; read first when tls.crt is there, as istiod does).
    /// Required, except for `control --kube`, which then reads the cluster's cacerts Secret.
    #[arg(long, value_name = "DIR")]
    pub ca: Option<PathBuf>,
    /// Trust domain the CA issues in (Istio's meshConfig.trustDomain). Required when the CA
    /// certificates name none (no spiffe:// URI SAN, as in CAs made by openssl or cert-manager);
    /// when they name another, this one is used and a warning says so.
    #[arg(long, value_name = "TD")]
    pub trust_domain: Option<TrustDomain>,
    /// Address of the gRPC certificate service (istiod uses port 15012).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15012")]
    pub listen: SocketAddr,
    /// Address of the HTTPS SPIFFE bundle endpoint for federation (off when not given).
    #[arg(long, value_name = "ADDR")]
    pub bundle_listen: Option<SocketAddr>,
    /// Trusted token issuer (`iss`); repeat together with --jwks, paired in order.
    #[arg(long = "jwt-issuer", value_name = "ISS")]
    pub jwt_issuers: Vec<String>,
    /// JWKS of the issuer at the same position: a file, or an https:// URL verified with --jwks-ca.
    #[arg(long = "jwks", value_name = "FILE|URL")]
    pub jwks: Vec<String>,
    /// Roots (PEM) that verify https:// JWKS servers.
    #[arg(long, value_name = "FILE")]
    pub jwks_ca: Option<PathBuf>,
    /// Accepted token audience; a token must carry one of these (Istio's default is istio-ca).
    #[arg(long = "audience", value_name = "AUD", default_values_t = vec!["istio-ca".to_string()])]
    pub audiences: Vec<String>,
    /// Longest certificate lifetime a caller may request; longer requests are refused.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = flags::positive_duration)]
    pub max_ttl: LegacyDuration,
    /// Lifetime issued when a request asks for none (clipped to --max-ttl).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = flags::positive_duration)]
    pub default_ttl: LegacyDuration,
    /// DNS names / IPs in the CA endpoint's serving certificate.
    #[arg(long = "server-name", value_name = "NAME", default_values_t = vec!["trustmesh-ca".to_string(), "istiod.istio-system.svc".to_string(), "localhost".to_string(), "127.0.0.1".to_string()])]
    pub server_names: Vec<String>,
    /// Key of the trust domain's JWT authority (ECDSA P-256, PKCS#8 PEM; created 0600 if absent).
    /// Enables JWT-SVID minting and publishes the key in the bundle.
    #[arg(long, value_name = "FILE")]
    pub jwt_authority_key: Option<PathBuf>,
    /// Lifetime of the serving certificate (renewed at half of it).
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = flags::positive_duration)]
    pub server_cert_ttl: LegacyDuration,
    /// How long a bearer token that verified is accepted again without re-checking its signature
    /// (never past its exp; cleared when an issuer's JWKS changes). 0 checks every request.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = flags::duration)]
    pub token_cache_max_age: LegacyDuration,
    /// Connections each listener (certificate service, bundle endpoint) holds at once; more are
    /// closed on arrival.
    #[arg(long, value_name = "N", default_value_t = trustmesh_ca_server::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// A connection whose client sends nothing this long is closed (TLS handshakes have 10s,
    /// a bundle request head 10s).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = flags::positive_duration)]
    pub idle_timeout: LegacyDuration,
    /// On SIGTERM/SIGINT, how long calls in flight are given to finish before the rest is cut
    /// (a second signal cuts them at once).
    #[arg(long, value_name = "DURATION",
          default_value_t = trustmesh_config::Duration::from_millis(server::DRAIN_DEADLINE.as_millis() as u64))]
    pub termination_drain: trustmesh_config::Duration,
}

/// What `ca serve` and `control` start the CA from.
pub struct Prepared {
    pub signer: Arc<CaSigner>,
    pub identity: IdentitySource,
    pub opts: Options,
}

pub fn run(a: Args) -> ExitCode {
    super::init_logging();
    super::raise_fd_limit();
    let deadline = a.termination_drain.get();
    let Prepared {
        signer: ca,
        identity,
        opts,
    } = match prepare(&a, false) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let signals = match super::register_signals(Hangup::Ignore) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let mut running = match server::start(ca, identity, opts).await {
            Ok(r) => r,
            Err(e) => return super::fail(1, e),
        };
        // Machine-readable lines: tests and scripts started with port 0 learn the real ports.
        println!("listening grpc={}", running.addr);
        if let Some(b) = running.bundle_addr {
            println!("listening bundle={b}");
        }
        tokio::select! {
            _ = running.wait() => return super::fail(1, "CA server stopped unexpectedly"),
            _ = signals.shutdown() => {}
        }
        // Calls in flight are answered; a second signal cuts them.
        running.drain(deadline, signals.again()).await;
        ExitCode::SUCCESS
    })
}

/// Reads the CA folder, keys and flags into what the CA server starts from; errors are
/// printed and returned as the exit code.
pub fn prepare(a: &Args, token_review: bool) -> Result<Prepared, ExitCode> {
    let Some(dir) = &a.ca else {
        return Err(super::fail(
            2,
            "--ca DIR is required (a CA folder: trustmesh ca init --out DIR makes one)",
        ));
    };
    let ca = match CertificateAuthority::load_to_serve(dir, a.trust_domain.as_ref()) {
        Ok(ca) => ca,
        Err(e) => return Err(super::fail(1, format!("loading CA: {e}"))),
    };
    report_loaded(dir, &ca);
    prepare_with(a, ca, token_review)
}

/// [`prepare`] with a CA loaded elsewhere (`control --kube`: from the cluster, which also
/// reviews tokens: `token_review`).
pub fn prepare_with(
    a: &Args,
    mut ca: CertificateAuthority,
    token_review: bool,
) -> Result<Prepared, ExitCode> {
    let mut deprecated = Deprecations::new("trustmesh ca serve");
    for (flag, d) in [
        ("--max-ttl", &a.max_ttl),
        ("--default-ttl", &a.default_ttl),
        ("--server-cert-ttl", &a.server_cert_ttl),
        ("--token-cache-max-age", &a.token_cache_max_age),
        ("--idle-timeout", &a.idle_timeout),
    ] {
        deprecated.flag(flag, d);
    }
    deprecated.warn();
    let (max_ttl, server_cert_ttl) = (a.max_ttl.get(), a.server_cert_ttl.get());
    if a.jwt_issuers.len() != a.jwks.len() {
        return Err(super::fail(
            2,
            format!(
                "--jwt-issuer and --jwks must be given in pairs ({} issuer(s), {} JWKS)",
                a.jwt_issuers.len(),
                a.jwks.len()
            ),
        ));
    }
    if a.jwt_issuers.is_empty() && !token_review {
        tracing::warn!(
            "no --jwt-issuer configured: only callers presenting a valid client certificate \
             (renewals) can obtain certificates"
        );
    }

    let default_ttl = a.default_ttl.get().min(max_ttl);
    if let Err(e) = ca.set_ttl_policy(TtlPolicy {
        default_ttl,
        max_ttl,
    }) {
        return Err(super::fail(2, e));
    }
    let issuers = a
        .jwt_issuers
        .iter()
        .zip(&a.jwks)
        .map(|(iss, jwks)| IssuerConfig {
            issuer: iss.clone(),
            jwks: JwksSource::from_arg(jwks, a.jwks_ca.clone()),
        })
        .collect();
    let jwt_authority = match &a.jwt_authority_key {
        Some(p) => match JwtAuthority::load_or_create(p) {
            Ok(j) => Some(j),
            Err(e) => return Err(super::fail(1, format!("JWT authority: {e}"))),
        },
        None => None,
    };
    let opts = Options {
        jwt_authority,
        server_cert_ttl,
        trust_domain: ca.trust_domain().clone(),
        listen: a.listen,
        bundle_listen: a.bundle_listen,
        issuers,
        audiences: a.audiences.clone(),
        max_ttl,
        default_ttl,
        token_cache_max_age: a.token_cache_max_age.get(),
        max_connections: a.max_connections,
        idle_timeout: a.idle_timeout.get(),
        reviewer: None,
        node_authorizer: None,
    };
    let ca = Arc::new(CaSigner::new(ca));
    let identity: IdentitySource = {
        let (ca, names, ttl) = (ca.clone(), a.server_names.clone(), server_cert_ttl);
        Arc::new(move || server_identity(&ca.current(), &names, ttl))
    };
    Ok(Prepared {
        signer: ca,
        identity,
        opts,
    })
}

/// Says how the CA folder was read, and warns where that may surprise: the explicit trust
/// domain overriding the one the certificates name (istiod takes meshConfig.trustDomain and
/// never reads the certificates' URI, so the override is kept; peers that derive the domain
/// from the root's URI will disagree), and a folder holding both layouts (tls.crt wins, as in
/// istiod).
fn report_loaded(dir: &std::path::Path, ca: &CertificateAuthority) {
    let (layout, shadowed) = ca.layout();
    tracing::info!(
        "loaded the CA from {} ({}, {} key), issuing in trust domain {}",
        dir.display(),
        layout.describe(),
        ca.key_algorithm(),
        ca.trust_domain()
    );
    if shadowed {
        tracing::warn!(
            "{} holds both layouts: tls.crt, tls.key and ca.crt are used, ca-cert.pem, ca-key.pem, \
             cert-chain.pem and root-cert.pem are ignored (istiod reads them in the same order)",
            dir.display()
        );
    }
    if let Some(named) = ca.named_trust_domain().filter(|n| *n != ca.trust_domain()) {
        tracing::warn!(
            "--trust-domain {} overrides the trust domain the CA certificates name (spiffe://{named}): \
             certificates are issued in {}; peers that take the trust domain from the root's URI \
             will see {named}",
            ca.trust_domain(),
            ca.trust_domain()
        );
    }
}
