//! Auto-allocation of virtual IPs for ServiceEntry hosts that have no `addresses`, so a
//! client's DNS answer (from the DNS proxy) names an address the sidecar can recognise when the
//! connection arrives. Without it, two TCP services on the same port could not be told apart.
//!
//! What Istio does (`pilot/pkg/serviceregistry/serviceentry/auto_allocation.go`, DNS
//! auto-allocation): it allocates for hosts that are not wildcards, of ServiceEntries with no
//! `addresses` and a resolution other than NONE (with NONE the original destination is used,
//! so a made-up address could never be routed); from 240.240.0.0/16 (class E, not routable),
//! skipping addresses ending in .0 and .255; by hashing the service key `namespace/host` with
//! FNV-1a (32 bit) into a slot and probing on collision. Its probe order depends on the order
//! services are listed, and its slot-to-address mapping shifts every later address when a slot
//! ending in .255 is taken, so one new service can move others. (Newer Istio versions can
//! instead let a controller store allocations in the ServiceEntry's status; there is no
//! status to write to on disk.)
//!
//! What trustmesh does, the same idea made stable:
//! - the same candidates, the same key, the same hash, the same range by default (configurable,
//!   see [`crate::Options`]); addresses ending in .0 or .255 are never used;
//! - the slot → address mapping is fixed: slot `s` of a range is always the same address, so an
//!   address depends only on which slot its service gets;
//! - each service starts at slot `hash % slots` and probes forward one slot at a time;
//!   services are placed oldest first (`metadata.creationTimestamp`, then `namespace/host`), so
//!   the result does not depend on file order, and a new service never displaces an existing
//!   one that has a timestamp. Without timestamps, a new service moves another only when both
//!   want the same slot and the new one sorts first — with k services in a /16 (65024 slots)
//!   that is a chance of about k in 65024;
//! - addresses that are already in use — any ServiceEntry's explicit `addresses` (IPs and
//!   CIDRs) and any workload address inside the range — are never handed out;
//! - the same host in the same namespace gets the same address, wherever it is declared;
//! - the IPv6 address, when an IPv6 range is set, sits at the same offset in that range.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::options::AutoAllocate;

/// A service that wants an address: its key and its age.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// `namespace/host`.
    pub key: String,
    /// `metadata.creationTimestamp` (RFC 3339), when known.
    pub created: Option<String>,
}

/// The result: addresses by key, and the keys left without one (the range is full).
#[derive(Debug, Default)]
pub struct Allocation {
    pub v4: HashMap<String, Ipv4Addr>,
    pub v6: HashMap<String, Ipv6Addr>,
    pub exhausted: Vec<String>,
}

/// FNV-1a, 32 bit: Istio's hash for this purpose.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The usable addresses of an IPv4 range, numbered 0.. (those not ending in .0 or .255).
struct Slots {
    base: u32,
    prefix: u8,
    /// For ranges smaller than a /24: the usable offsets.
    small: Vec<u32>,
}

impl Slots {
    fn new(net: ipnet::Ipv4Net) -> Slots {
        let base = u32::from(net.network());
        let prefix = net.prefix_len();
        let small = if prefix > 24 {
            let size = 1u32 << (32 - prefix);
            (0..size)
                .filter(|o| !matches!((base + o) & 0xff, 0 | 255))
                .collect()
        } else {
            Vec::new()
        };
        Slots {
            base,
            prefix,
            small,
        }
    }

    fn count(&self) -> u32 {
        if self.prefix > 24 {
            self.small.len() as u32
        } else {
            (1u32 << (24 - self.prefix)) * 254
        }
    }

    /// Offset of slot `s` from the range's first address.
    fn offset(&self, s: u32) -> u32 {
        if self.prefix > 24 {
            self.small[s as usize]
        } else {
            (s / 254) * 256 + (s % 254) + 1
        }
    }

    /// The slot at `offset`, if that address is one.
    fn slot_of(&self, offset: u32) -> Option<u32> {
        if self.prefix > 24 {
            return self
                .small
                .iter()
                .position(|o| *o == offset)
                .map(|p| p as u32);
        }
        if u64::from(offset) >= (1u64 << (32 - self.prefix)) {
            return None;
        }
        match offset % 256 {
            0 | 255 => None,
            low => Some((offset / 256) * 254 + low - 1),
        }
    }

    /// The first slot at or after `offset`, if any.
    fn ceil(&self, offset: u64) -> Option<u32> {
        if self.prefix > 24 {
            let p = self.small.iter().position(|o| u64::from(*o) >= offset)?;
            return Some(p as u32);
        }
        let (block, low) = (offset / 256, offset % 256);
        let slot = match low {
            0 => block * 254,
            255 => (block + 1) * 254,
            low => block * 254 + low - 1,
        };
        (slot < u64::from(self.count())).then_some(slot as u32)
    }
}

/// Allocates addresses for `candidates`, never handing out an address in `in_use` (explicit
/// service addresses and CIDRs, workload addresses).
pub fn allocate(range: &AutoAllocate, candidates: &[Candidate], in_use: &[IpNet]) -> Allocation {
    let slots = Slots::new(range.v4);
    let count = slots.count();
    let v4_base = slots.base;
    let v6_base = range.v6.map(|n| u128::from(n.network()));
    let offset_of = |ip: IpAddr| -> Option<u32> {
        match ip {
            IpAddr::V4(a) => u32::from(a).checked_sub(v4_base),
            IpAddr::V6(a) => {
                let off = u128::from(a).checked_sub(v6_base?)?;
                u32::try_from(off).ok()
            }
        }
    };
    let mut taken: HashSet<u32> = HashSet::new();
    let mut nets = Vec::new();
    for net in in_use {
        if net.prefix_len() == net.max_prefix_len() {
            if let Some(s) = offset_of(net.addr()).and_then(|o| slots.slot_of(o)) {
                taken.insert(s);
            }
        } else {
            nets.push(*net);
        }
    }
    let address_of = |s: u32| {
        let off = slots.offset(s);
        let v4 = Ipv4Addr::from(v4_base + off);
        // Only inside the IPv6 range: a range smaller than the IPv4 one gives fewer.
        let v6 = v6_base
            .and_then(|b| b.checked_add(u128::from(off)))
            .map(Ipv6Addr::from)
            .filter(|a| range.v6.is_some_and(|n| n.contains(a)));
        (v4, v6)
    };
    // The first free slot from `start` on, wrapping, jumping over an IPv4 CIDR in use at once
    // (a CIDR may cover most of a large range).
    let probe = |start: u32, taken: &HashSet<u32>| -> Option<u32> {
        let total = u64::from(count);
        let (mut s, mut tried) = (u64::from(start), 0u64);
        while tried < total {
            let slot = s as u32;
            let (v4, v6) = address_of(slot);
            let covering = nets.iter().find(|n| {
                n.contains(&IpAddr::V4(v4)) || v6.is_some_and(|a| n.contains(&IpAddr::V6(a)))
            });
            let next = match covering {
                None if !taken.contains(&slot) => return Some(slot),
                Some(IpNet::V4(n)) => {
                    let end = u64::from(u32::from(n.broadcast())) + 1 - u64::from(v4_base);
                    slots.ceil(end).map_or(total, u64::from)
                }
                _ => s + 1,
            };
            let next = next.max(s + 1);
            tried += next - s;
            s = next % total;
        }
        None
    };

    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| {
        (a.created.is_none(), &a.created, &a.key).cmp(&(b.created.is_none(), &b.created, &b.key))
    });
    let mut out = Allocation::default();
    for c in order {
        if out.v4.contains_key(&c.key) || out.exhausted.contains(&c.key) {
            continue;
        }
        let start = fnv1a32(c.key.as_bytes()) % count.max(1);
        match probe(start, &taken) {
            Some(s) => {
                taken.insert(s);
                let (v4, v6) = address_of(s);
                out.v4.insert(c.key.clone(), v4);
                if let Some(v6) = v6 {
                    out.v6.insert(c.key.clone(), v6);
                }
            }
            None => out.exhausted.push(c.key.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v4: &str) -> AutoAllocate {
        AutoAllocate {
            v4: v4.parse().unwrap(),
            v6: None,
        }
    }

    fn cand(key: &str) -> Candidate {
        Candidate {
            key: key.into(),
            created: None,
        }
    }

    #[test]
    fn fnv_matches_the_reference_values() {
        // FNV-1a 32 test vectors (Fowler, Noll, Vo).
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn slots_skip_network_and_broadcast_like_addresses() {
        let s = Slots::new("240.240.0.0/16".parse().unwrap());
        assert_eq!(s.count(), 256 * 254);
        assert_eq!(s.offset(0), 1);
        assert_eq!(s.offset(253), 254);
        assert_eq!(s.offset(254), 257);
        for slot in [0, 253, 254, 65023] {
            assert_eq!(s.slot_of(s.offset(slot)), Some(slot));
        }
        assert_eq!(s.slot_of(256), None);
        assert_eq!(s.slot_of(255), None);
        let small = Slots::new("198.19.0.248/29".parse().unwrap());
        assert_eq!(small.count(), 7, "the .255 address is left out");
    }

    #[test]
    fn the_largest_and_smallest_ranges_work() {
        let all = range("0.0.0.0/0");
        let a = allocate(&all, &[cand("a/x")], &["0.0.0.0/0".parse().unwrap()]);
        assert_eq!(a.exhausted, ["a/x"], "everything in use");
        let one = range("198.19.0.0/32"); // ends in .0: no usable address
        assert_eq!(allocate(&one, &[cand("a/x")], &[]).exhausted, ["a/x"]);
        let small_v6 = AutoAllocate {
            v4: "198.19.0.0/16".parse().unwrap(),
            v6: Some("2001:db8::/120".parse().unwrap()),
        };
        let a = allocate(&small_v6, &[cand("a/x")], &[]);
        let in_v6 = a.v6.contains_key("a/x");
        let offset = u32::from(a.v4["a/x"]) - u32::from(Ipv4Addr::new(198, 19, 0, 0));
        assert_eq!(in_v6, offset < 256, "an IPv6 address only inside its range");
    }

    #[test]
    fn a_cidr_in_use_is_jumped_over() {
        let r = range("198.19.0.0/24");
        let keys: Vec<Candidate> = (0..100).map(|i| cand(&format!("a/s{i}"))).collect();
        let a = allocate(&r, &keys, &["198.19.0.0/25".parse().unwrap()]);
        assert_eq!(a.v4.len(), 100);
        assert!(a.v4.values().all(|ip| ip.octets()[3] >= 128), "{:?}", a.v4);
        assert_eq!(
            allocate(&r, &keys, &["198.19.0.0/24".parse().unwrap()])
                .exhausted
                .len(),
            100
        );
    }

    #[test]
    fn a_full_range_leaves_the_rest_without_an_address() {
        let r = range("198.19.0.0/30"); // .1, .2 and .3 (only .0 and .255 are skipped)
        let c: Vec<Candidate> = ["a/w", "a/x", "a/y", "a/z"]
            .iter()
            .map(|k| cand(k))
            .collect();
        let a = allocate(&r, &c, &[]);
        assert_eq!(a.v4.len(), 3);
        assert_eq!(a.exhausted.len(), 1);
    }

    #[test]
    fn older_services_keep_their_slot() {
        let r = range("198.19.0.0/30");
        let old = Candidate {
            key: "z/old".into(),
            created: Some("2020-01-01T00:00:00Z".into()),
        };
        let alone = allocate(&r, std::slice::from_ref(&old), &[]);
        let with_new = allocate(&r, &[cand("a/new"), old.clone()], &[]);
        assert_eq!(alone.v4["z/old"], with_new.v4["z/old"]);
    }
}
