//! What the registry needs besides the files: the DNS domain of Kubernetes-style service names
//! and the ranges virtual IPs are auto-allocated from. Both are settings of Istio's control
//! plane and agent rather than of any resource (`--domain` of pilot, `cluster.local` by
//! default; DNS auto-allocation, `240.240.0.0/16` and `2001:2::/48` in
//! `pilot/pkg/serviceregistry/serviceentry/auto_allocation.go`), so they are options here.

use ipnet::{Ipv4Net, Ipv6Net};

/// Istio's default DNS domain of Kubernetes services.
pub const DEFAULT_DOMAIN_SUFFIX: &str = "cluster.local";

/// Istio's IPv4 auto-allocation range: class E, not routable outside the pod.
pub const DEFAULT_AUTO_ALLOCATE_V4: &str = "240.240.0.0/16";

/// Istio's IPv6 auto-allocation range: the benchmarking block of RFC 5180.
pub const DEFAULT_AUTO_ALLOCATE_V6: &str = "2001:2::/48";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The domain of `<name>.<namespace>.svc.<domain>` hosts, used for short names in DNS and
    /// DestinationRule hosts.
    pub domain_suffix: String,
    /// `None` turns auto-allocation off: services without `addresses` then have no VIP.
    pub auto_allocate: Option<AutoAllocate>,
}

/// Where auto-allocated VIPs come from (see [`crate::alloc`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoAllocate {
    pub v4: Ipv4Net,
    /// Also give each service an IPv6 VIP, at the same offset in this range (Istio allocates
    /// both and hands IPv6 ones only to proxies without IPv4). Off by default: a client that
    /// gets an AAAA answer may try it first.
    pub v6: Option<Ipv6Net>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            domain_suffix: DEFAULT_DOMAIN_SUFFIX.to_string(),
            auto_allocate: Some(AutoAllocate::default()),
        }
    }
}

impl Default for AutoAllocate {
    fn default() -> Self {
        AutoAllocate {
            v4: DEFAULT_AUTO_ALLOCATE_V4
                .parse()
                .expect("valid default range"),
            v6: None,
        }
    }
}

impl AutoAllocate {
    /// Istio's pair of ranges, IPv6 included.
    pub fn dual_stack() -> Self {
        AutoAllocate {
            v4: DEFAULT_AUTO_ALLOCATE_V4
                .parse()
                .expect("valid default range"),
            v6: Some(
                DEFAULT_AUTO_ALLOCATE_V6
                    .parse()
                    .expect("valid default range"),
            ),
        }
    }
}
