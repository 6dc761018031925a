//! What every certificate this CA makes shares, CA or workload: a random serial and a
//! notBefore backdated for clock skew. Both `init` (CA certificates) and `issue` (SVIDs) build
//! on it, so neither imports the other.

use rand::RngCore;
use rcgen::SerialNumber;

/// Istio's `ClockSkewGracePeriod`: certificates are valid from 2 minutes before issuance so a
/// peer whose clock is slightly behind the CA's does not reject a brand-new certificate.
pub const CLOCK_SKEW_GRACE: time::Duration = time::Duration::minutes(2);

/// A random positive serial of 16 bytes (Istio draws 128 random bits). The top byte is forced
/// into 0x40..=0x7f so the DER INTEGER is always exactly 16 bytes and positive: 126 random bits,
/// far above the 64 bits CA/B Forum requires.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Lower-case hex of `bytes` (serials, key tags).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
