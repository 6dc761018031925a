//! rustls plumbing: SPIFFE-aware certificate verifiers and the server/client configs built on
//! them.
//!
//! WebPKI's hostname checks do not apply to a mesh: identities are SPIFFE URIs, and which CA may
//! vouch for a peer depends on the peer's *trust domain* (local, alias, or federated). So both
//! directions delegate chain validation to `trustmesh_identity::verify_svid`, keeping the trust
//! decision in one place shared with the CLI and the agent; rustls still does the handshake
//! signature checks with the ring provider. The verifiers go through the snapshot's
//! [`ChainVerifier`], which remembers the chains it accepted: the identity read after the
//! handshake, and a resumed session's chain, are then checked without validating the path again.
//!
//! Session resumption between sidecars (TLS 1.3 PSK with a fresh ECDHE, rustls's stateful
//! tickets): a resumed handshake skips both sides' signatures and chain checks, which are most of
//! a handshake's cost. It is safe here because (1) a client config's ticket store belongs to that
//! config alone — one snapshot's trust and one expected peer — so a ticket was issued by a server
//! this config's verifier accepted, and only that server holds the ticket's secret; and (2) after
//! every resumed handshake the peer's chain is checked again as of now, on both sides
//! (`upstream::connect`, `inbound::terminate`), so a certificate that expired or a trust domain
//! that was removed since the first handshake is refused as on a full one (issue #11's expired
//! peer was reached through a resumed session before this check existed).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use trustmesh_identity::{ChainVerifier, SpiffeId, TrustDomain, Usage};

/// Who the peer of an outbound connection must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedPeer {
    Exact(SpiffeId),
    TrustDomain(TrustDomain),
    /// Any one of these (a service's accounts, or an endpoint's plus the ServiceEntry's
    /// `subjectAltNames`).
    AnyOf(Vec<SpiffeId>),
}

impl std::fmt::Display for ExpectedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedPeer::Exact(id) => write!(f, "{id}"),
            ExpectedPeer::TrustDomain(td) => write!(f, "any identity in trust domain {td}"),
            ExpectedPeer::AnyOf(ids) => {
                let ids: Vec<&str> = ids.iter().map(SpiffeId::as_str).collect();
                write!(f, "one of {}", ids.join(", "))
            }
        }
    }
}

/// The verifier's error for a valid SVID of someone else; [`crate::upstream`] finds it inside
/// the handshake error to say who answered.
#[derive(Debug, thiserror::Error)]
#[error("peer presented {got}, expected {expected}")]
pub(crate) struct PeerMismatch {
    pub got: SpiffeId,
    pub expected: String,
}

/// The operating system's trust store, for servers outside the mesh (remote JWKS, TLS the
/// sidecar originates without `caCertificates`). One unparsable system certificate must not
/// disable the rest.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// ring's provider with TLS 1.3's AES-128-GCM-SHA256 offered first, as Envoy (BoringSSL) and
/// Go order them; the other suites (TLS 1.2's included) follow in rustls's order. rustls's
/// default puts AES-256-GCM-SHA384 first, and its SHA-384 key schedule runs SHA-512 in software
/// while SHA-256 has the CPU's SHA extensions: SHA-512 was 5–7 % of each sidecar's CPU when
/// every request opened a connection (perf, this machine), and AES-128 also takes fewer rounds
/// per byte relayed. AES-128-GCM-SHA256 is the one suite every TLS 1.3 peer must implement
/// (RFC 8446, section 9.1).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut p = rustls::crypto::ring::default_provider();
    let first = cipher_suite::TLS13_AES_128_GCM_SHA256.suite();
    // A stable sort: only that suite moves.
    p.cipher_suites.sort_by_key(|c| c.suite() != first);
    Arc::new(p)
}

fn chain_of(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Vec<CertificateDer<'static>> {
    std::iter::once(end_entity)
        .chain(intermediates.iter())
        .map(|c| c.clone().into_owned())
        .collect()
}

/// A failed handshake in words. rustls's own Display leaves Debug text in the sentence
/// (`invalid peer certificate: Other(OtherError(UntrustedTrustDomain { .. }))`, `received
/// fatal alert: BadCertificate`), so the kinds a mesh meets are said here: our verifiers'
/// errors with their own Display, certificate problems and alerts in words.
pub fn handshake_sentence(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(r) => rustls_sentence(r),
        None => e.to_string(),
    }
}

/// See [`handshake_sentence`].
pub fn rustls_sentence(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => format!("invalid peer certificate: {}", certificate_words(c)),
        E::AlertReceived(alert) => format!(
            "the peer ended the handshake with TLS alert \"{}\"{}",
            words(&format!("{alert:?}")),
            match alert {
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA
                | rustls::AlertDescription::CertificateUnknown
                | rustls::AlertDescription::CertificateRequired => {
                    ": it did not accept our certificate (is our trust domain trusted there?)"
                }
                _ => "",
            }
        ),
        E::NoCertificatesPresented => {
            "the peer presented no certificate; mutual TLS requires a client certificate".into()
        }
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            "the peer did not speak TLS as expected (a malformed or unexpected TLS message)".into()
        }
        E::PeerIncompatible(_) => {
            "the peer has no TLS version, cipher suite or key exchange in common with us".into()
        }
        E::General(why) => why.clone(),
        other => other.to_string(),
    }
}

fn certificate_words(c: &CertificateError) -> String {
    match c {
        CertificateError::Other(OtherError(o)) => o.to_string(),
        CertificateError::Expired => "it has expired".into(),
        CertificateError::NotValidYet => "it is not valid yet".into(),
        CertificateError::UnknownIssuer => "it is not signed by a trusted root".into(),
        CertificateError::BadSignature => "its signature does not verify".into(),
        CertificateError::BadEncoding => "it is not a well-formed certificate".into(),
        CertificateError::Revoked => "it has been revoked".into(),
        CertificateError::NotValidForName => "it is not valid for the expected name".into(),
        other => words(&format!("{other:?}")),
    }
}

/// `BadCertificate` → `bad certificate`: the name of a variant without fields, as words.
fn words(debug: &str) -> String {
    let name = debug.split(['(', ' ', '{']).next().unwrap_or(debug);
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(ch.to_lowercase());
    }
    out
}

fn cert_error(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Verifies client certificates on inbound mTLS: the chain must be a valid X.509-SVID of an
/// accepted trust domain, anchored in that domain's bundle.
#[derive(Debug)]
pub struct SvidClientVerifier {
    chains: Arc<ChainVerifier>,
    provider: Arc<CryptoProvider>,
}

impl SvidClientVerifier {
    pub fn new(chains: Arc<ChainVerifier>, provider: Arc<CryptoProvider>) -> Self {
        SvidClientVerifier { chains, provider }
    }
}

impl ClientCertVerifier for SvidClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA hints: peers have exactly one SVID, and listing every federated root would leak
        // the federation topology to anyone who connects.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chain = chain_of(end_entity, intermediates);
        self.chains
            .verify(&chain, now, Usage::ClientAuth)
            .map_err(cert_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// Verifies the server on outbound mTLS: a valid SVID *and* the identity we meant to reach.
/// The TLS server name is ignored — peers are addressed by IP and identified by SPIFFE ID.
#[derive(Debug)]
pub struct SvidServerVerifier {
    chains: Arc<ChainVerifier>,
    expected: ExpectedPeer,
    provider: Arc<CryptoProvider>,
}

impl SvidServerVerifier {
    pub fn new(
        chains: Arc<ChainVerifier>,
        expected: ExpectedPeer,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        SvidServerVerifier {
            chains,
            expected,
            provider,
        }
    }
}

impl ServerCertVerifier for SvidServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = chain_of(end_entity, intermediates);
        let svid = self
            .chains
            .verify(&chain, now, Usage::ServerAuth)
            .map_err(cert_error)?;
        let ok = match &self.expected {
            ExpectedPeer::Exact(id) => &svid.id == id,
            ExpectedPeer::TrustDomain(td) => svid.id.trust_domain() == td,
            ExpectedPeer::AnyOf(ids) => ids.contains(&svid.id),
        };
        if !ok {
            return Err(cert_error(PeerMismatch {
                got: svid.id.clone(),
                expected: self.expected.to_string(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Our own certificate and key, as loaded from disk.
pub struct OwnCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for OwnCert {
    fn clone(&self) -> Self {
        OwnCert {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What HTTP listeners offer in ALPN.
pub const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What the capture's inbound port offers: one port carries every protocol, so the client's
/// ALPN is what tells HTTP from TCP after the handshake. Besides the standard names, the ones
/// Istio's sidecars send (`istio-h2`, `istio-http/1.1`, `istio-http/1.0` for HTTP, and
/// `istio-peer-exchange` / `istio` on TCP), so a mesh client is never refused for offering them.
pub const CAPTURED_ALPN: [&[u8]; 7] = [
    b"h2",
    b"http/1.1",
    b"istio-h2",
    b"istio-http/1.1",
    b"istio-http/1.0",
    b"istio-peer-exchange",
    b"istio",
];

/// Whether an agreed ALPN protocol means HTTP, and then whether HTTP/2.
pub fn alpn_http(protocol: &[u8]) -> Option<bool> {
    match protocol {
        b"h2" | b"istio-h2" => Some(true),
        b"http/1.1" | b"istio-http/1.1" | b"istio-http/1.0" => Some(false),
        _ => None,
    }
}

/// Inbound server config. `alpn` is offered only on HTTP listeners; TCP listeners advertise
/// none, because rustls fails a handshake whose offered ALPN set has no overlap with ours.
pub fn server_config(
    chains: &Arc<ChainVerifier>,
    own: &OwnCert,
    alpn: bool,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let offered: &[&[u8]] = if alpn { &HTTP_ALPN } else { &[] };
    server_config_offering(chains, own, offered)
}

/// [`server_config`] offering exactly `alpn`.
pub fn server_config_offering(
    chains: &Arc<ChainVerifier>,
    own: &OwnCert,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = provider();
    let verifier = SvidClientVerifier::new(chains.clone(), provider.clone());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(own.chain.clone(), own.key.clone_key())?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Stateful tickets (an in-memory session cache, one per config, so one per snapshot and
    // listener kind, growing with use: `sessions`): a ticket is only good with the server that
    // issued it. One ticket per connection, not rustls's default two: a mesh client holds a
    // connection for long and resumes once per new connection.
    cfg.session_storage = Arc::new(crate::sessions::ServerSessions::new(SERVER_SESSIONS));
    cfg.send_tls13_tickets = 1;
    Ok(Arc::new(cfg))
}

/// A resumed session's peer chain was accepted by a verifier of this snapshot when the session
/// began, but perhaps long ago: checks it again as of now (answered from the snapshot's memory
/// of verified chains while the path is still valid). Full handshakes pass untouched (their
/// verifier just ran).
pub fn recheck_resumed(
    conn: &rustls::CommonState,
    chains: &ChainVerifier,
    usage: Usage,
) -> Result<(), String> {
    if conn.handshake_kind() != Some(rustls::HandshakeKind::Resumed) {
        return Ok(());
    }
    let chain = conn
        .peer_certificates()
        .ok_or("a resumed session without the peer's certificate")?;
    chains
        .verify(chain, UnixTime::now(), usage)
        .map(|_| ())
        .map_err(|e| format!("resumed session: the peer's certificate no longer verifies: {e}"))
}

/// Resumable sessions a server config remembers (about 200 bytes each) and a client config
/// keeps tickets for (one per server address).
pub const SERVER_SESSIONS: usize = 4096;
pub const CLIENT_SESSIONS: usize = 1024;

/// Outbound client config presenting our SVID and pinning the expected peer.
pub fn client_config(
    chains: &Arc<ChainVerifier>,
    own: &OwnCert,
    expected: ExpectedPeer,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    client_config_offering(chains, own, expected, &[])
}

/// [`client_config`] offering `alpn` (what a mesh connection carries, see `mesh::Carry`).
pub fn client_config_offering(
    chains: &Arc<ChainVerifier>,
    own: &OwnCert,
    expected: ExpectedPeer,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = SvidServerVerifier::new(chains.clone(), expected, provider.clone());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(own.chain.clone(), own.key.clone_key())?;
    // Resumption with this config's own ticket store: see the module comment for why that is
    // safe, and `recheck_resumed` for the check every resumed session gets as of now.
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(CLIENT_SESSIONS);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    #[test]
    fn aes_128_gcm_is_offered_first_and_tls_1_2_suites_remain() {
        let p = super::provider();
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|c| format!("{:?}", c.suite()))
            .collect();
        assert_eq!(names[0], "TLS13_AES_128_GCM_SHA256", "{names:?}");
        assert_eq!(
            names.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
        assert!(
            names.iter().any(|n| n.starts_with("TLS_ECDHE_")),
            "{names:?}"
        );
    }

    #[test]
    fn handshake_failures_are_sentences() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert_eq!(
            super::rustls_sentence(&alert),
            "the peer ended the handshake with TLS alert \"bad certificate\": it did not accept \
             our certificate (is our trust domain trusted there?)"
        );
        let ours = super::cert_error(trustmesh_identity::SvidError::UntrustedTrustDomain {
            id: trustmesh_identity::SpiffeId::parse("spiffe://team-b.eks.local/ns/x/sa/y").unwrap(),
            td: trustmesh_identity::TrustDomain::parse("team-b.eks.local").unwrap(),
        });
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, ours);
        let said = super::handshake_sentence(&io);
        assert!(
            said.starts_with(
                "invalid peer certificate: peer spiffe://team-b.eks.local/ns/x/sa/y: \
                 trust domain team-b.eks.local is not trusted"
            ),
            "{said}"
        );
        for e in [
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            rustls::Error::NoCertificatesPresented,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        ] {
            let s = super::rustls_sentence(&e);
            assert!(!s.contains(['(', '{']), "{s}");
            // No CamelCase variant names (`BadCertificate`); `TLS` is a word.
            let camel = s.split(' ').any(|w| {
                w.chars().any(char::is_lowercase) && w.chars().skip(1).any(char::is_uppercase)
            });
            assert!(!camel, "no Debug names: {s}");
        }
    }
}
