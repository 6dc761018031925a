//! IP addresses as the ztunnel protos carry them (raw bytes), shared by the policy and the
//! registry translations so both encode addresses the same way.

use std::net::IpAddr;

/// The address bytes istiod sends (Go's `netip.Addr.AsSlice`): 4 bytes for IPv4, 16 for IPv6.
pub(crate) fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}
