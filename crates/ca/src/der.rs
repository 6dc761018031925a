//! Just enough DER to re-wrap legacy private-key encodings as PKCS#8.
//!
//! ring (our signer) only accepts PKCS#8, while existing Istio `cacerts` directories made with
//! openssl commonly hold PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) keys. Wrapping
//! them is a fixed structure, so a tiny reader/writer is clearer than another ASN.1 dependency.

/// DER tags used here.
pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
/// `[0]` constructed, context-specific (SEC1 `parameters`).
pub(crate) const CONTEXT_0: u8 = 0xa0;

/// Splits one TLV off the front of `input`: `(tag, content, rest)`. Only definite lengths
/// (which DER mandates) are accepted.
pub(crate) fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Encodes one TLV with a minimal-length header.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Concatenates already-encoded TLVs into a SEQUENCE.
pub(crate) fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_short_and_long_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let enc = tlv(OCTET_STRING, &content);
            let (tag, got, rest) = read_tlv(&enc).unwrap();
            assert_eq!(tag, OCTET_STRING);
            assert_eq!(got.len(), len);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn rejects_truncated_input() {
        let enc = tlv(SEQUENCE, &[1, 2, 3]);
        assert!(read_tlv(&enc[..enc.len() - 1]).is_none());
        assert!(read_tlv(&[0x30]).is_none());
        assert!(read_tlv(&[0x30, 0x80]).is_none());
    }
}
