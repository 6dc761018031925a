//! The chain a CA directory claims, checked as a whole: it starts at the signing certificate,
//! each certificate is issued and signed by the next, all are valid now, path lengths allow
//! the depth, and it ends at a root of the directory. Messages name the files of the layout
//! the directory has (`cert-chain.pem` or `tls.crt`), so the operator opens the right one.

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::certs::{self, rfc3339, CertFacts};
use crate::layout::Files;

pub(crate) fn check_validity(
    f: &CertFacts,
    file: &str,
    what: &str,
    now: OffsetDateTime,
) -> Result<(), String> {
    if now > f.not_after {
        return Err(format!("{what} {file} expired at {}", rfc3339(f.not_after)));
    }
    if now < f.not_before {
        return Err(format!(
            "{what} {file} is not valid before {}",
            rfc3339(f.not_before)
        ));
    }
    Ok(())
}

pub(crate) enum ChainError {
    Invalid(String),
    Malformed(std::path::PathBuf, String),
}

/// Checks the chain file (`cert-chain.pem`, or `tls.crt`): starts with the signing cert, each
/// certificate is issued and signed by the next, all are valid now, path-length constraints
/// allow the depth, and it ends at a root from the root file (appended when the chain stops
/// just below the root, which is how a `tls.crt` without the root is completed by `ca.crt`).
pub(crate) fn check_chain(
    mut chain: Vec<CertificateDer<'static>>,
    ca_der: &CertificateDer<'static>,
    roots: &[CertificateDer<'static>],
    files: &Files,
    now: OffsetDateTime,
) -> Result<(Vec<CertificateDer<'static>>, Vec<CertFacts>), ChainError> {
    use ChainError::Invalid;
    let (chain_file, root_file) = (files.chain_name, files.root_name);
    if chain[0] != *ca_der {
        return Err(Invalid(format!(
            "{chain_file} does not start with {}",
            files.cert_name
        )));
    }
    let root_facts = roots
        .iter()
        .map(|r| certs::facts(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|r| ChainError::Malformed(files.root.clone(), r))?;
    let last = chain.last().expect("non-empty").clone();
    if !roots.contains(&last) {
        let last_facts = certs::facts(&last).map_err(|r| Invalid(format!("{chain_file}: {r}")))?;
        let parent = roots
            .iter()
            .zip(&root_facts)
            .find(|(r, f)| f.subject_raw == last_facts.issuer_raw && certs::signed_by(&last, r));
        match parent {
            Some((r, _)) => chain.push(r.clone()),
            None => {
                return Err(Invalid(format!(
                    "{chain_file} does not end at (or directly below) a root in {root_file}"
                )))
            }
        }
    }
    let facts = chain
        .iter()
        .map(|c| certs::facts(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|r| Invalid(format!("{chain_file}: {r}")))?;
    for (i, pair) in facts.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        let (ci, pi) = (i + 1, i + 2);
        if child.issuer_raw != parent.subject_raw || !certs::signed_by(&chain[i], &chain[i + 1]) {
            return Err(Invalid(format!(
                "{chain_file}: certificate {ci} ({}) is not issued by certificate {pi} ({})",
                child.subject, parent.subject
            )));
        }
        if !parent.is_ca {
            return Err(Invalid(format!(
                "{chain_file}: certificate {pi} ({}) is not a CA certificate",
                parent.subject
            )));
        }
    }
    for (i, f) in facts.iter().enumerate().skip(1) {
        let what = format!("certificate {} ({}) in", i + 1, f.subject);
        check_validity(f, chain_file, &what, now).map_err(Invalid)?;
        // Certificates 1..i sit between this one and any leaf we issue; self-issued ones
        // (a root re-signing itself) don't count, per RFC 5280 6.1.4 (l).
        let below = facts[..i].iter().filter(|c| !c.self_issued()).count() as u32;
        if let Some(max) = f.path_len {
            if below > max {
                return Err(Invalid(format!(
                    "{chain_file}: certificate {} ({}) has pathLenConstraint {max}, too \
                     small for {below} CA certificate(s) below it",
                    i + 1,
                    f.subject
                )));
            }
        }
    }
    Ok((chain, facts))
}
