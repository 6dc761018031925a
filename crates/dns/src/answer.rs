//! The proxy's own answers: which queries the mesh answers and with what, decided without any
//! I/O (the listeners send the result, or forward when the mesh has nothing to say).
//!
//! This is Istio's agent behaviour (`pkg/dns/client/dns.go`, `ServeDNS` and `lookupHost`),
//! which ztunnel's `src/dns/server.rs` repeats:
//! - Only A and AAAA questions (class IN) are answered; every other type, also for a mesh
//!   name (MX, TXT, SRV, PTR…), is forwarded as it came, since the cluster's resolver may know
//!   it and the mesh has no such records.
//! - A mesh name is answered authoritatively (AA) with its addresses of the asked family,
//!   TTL 30 s (Istio's `defaultTTLInSeconds`: low, so a client that caches sees changes soon),
//!   in a random order each time (Istio's `roundRobinResponse`, ztunnel's shuffle: clients take
//!   the first address, so this spreads them like kube-dns does).
//! - A mesh name without an address of the asked family is NOERROR with no record (NODATA),
//!   never NXDOMAIN and never forwarded: NXDOMAIN would tell a client sending A and AAAA at
//!   once that the whole name does not exist (istio/istio#31250).
//! - Search domains: a client whose resolver appends its search list asks for, say,
//!   `reviews.bookinfo.svc.cluster.local.bookinfo.svc.cluster.local` before trying the name
//!   itself. When a name is not the mesh's but ends in one of the pod's search domains and what
//!   precedes it is a mesh name, the answer is a CNAME to that name plus its addresses, so the
//!   client stops there instead of walking its search list through the upstream. Istio's agent
//!   precomputes this for the first search domain only; ztunnel strips each search domain at
//!   query time (`get_aliases`). We do what ztunnel does: it needs no table of our own, and the
//!   registry behind [`MeshNames`] keeps resolving short names relative to the namespace.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::seq::SliceRandom;

use crate::names::{Lookup, MeshNames};
use crate::wire;

/// The TTL of every record the proxy makes.
pub const TTL_SECONDS: u32 = 30;

/// What to do with a query.
pub(crate) enum Decision {
    /// Answered from the mesh.
    Mesh(Message, MeshAnswer),
    /// Not the mesh's: forward it.
    Forward,
}

/// Which kind of mesh answer, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MeshAnswer {
    Addresses,
    NoData,
}

/// Decides `query` (one question, as [`wire::read_query`] guarantees) against the mesh's names
/// and the pod's search domains.
pub(crate) fn decide(query: &Message, names: &dyn MeshNames, search: &[String]) -> Decision {
    let Some(q) = query.query() else {
        return Decision::Forward;
    };
    let rtype = q.query_type();
    if q.query_class() != DNSClass::IN || !matches!(rtype, RecordType::A | RecordType::AAAA) {
        return Decision::Forward;
    }
    let name = lookup_key(q.name());
    if let Lookup::Mesh { v4, v6 } = names.lookup(&name) {
        return answer(query, q.name().clone(), None, v4, v6);
    }
    for domain in search {
        let Some(prefix) = strip_domain(&name, domain) else {
            continue;
        };
        if let Lookup::Mesh { v4, v6 } = names.lookup(prefix) {
            let Ok(target) = Name::from_ascii(format!("{prefix}.")) else {
                continue;
            };
            return answer(query, q.name().clone(), Some(target), v4, v6);
        }
    }
    Decision::Forward
}

/// A query name as [`MeshNames::lookup`] takes it: lowercase ASCII, no trailing dot.
fn lookup_key(name: &Name) -> String {
    let mut key = name.to_lowercase().to_ascii();
    if key.ends_with('.') {
        key.pop();
    }
    key
}

/// `name` without `.domain` at its end, when something precedes it.
fn strip_domain<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    let prefix = name.strip_suffix(domain)?.strip_suffix('.')?;
    (!prefix.is_empty()).then_some(prefix)
}

/// The mesh's answer for `asked`: a CNAME to `canonical` first when the name was found through
/// a search domain, then the addresses of the asked family under the canonical name.
fn answer(
    query: &Message,
    asked: Name,
    canonical: Option<Name>,
    mut v4: Vec<std::net::Ipv4Addr>,
    mut v6: Vec<std::net::Ipv6Addr>,
) -> Decision {
    let mut msg = wire::reply(query, ResponseCode::NoError);
    msg.set_authoritative(true);
    let rdata: Vec<RData> = if query.query().map(|q| q.query_type()) == Some(RecordType::A) {
        v4.shuffle(&mut rand::thread_rng());
        v4.into_iter().map(|a| RData::A(A(a))).collect()
    } else {
        v6.shuffle(&mut rand::thread_rng());
        v6.into_iter().map(|a| RData::AAAA(AAAA(a))).collect()
    };
    if rdata.is_empty() {
        return Decision::Mesh(msg, MeshAnswer::NoData);
    }
    let owner = match canonical {
        Some(target) => {
            msg.add_answer(Record::from_rdata(
                asked,
                TTL_SECONDS,
                RData::CNAME(CNAME(target.clone())),
            ));
            target
        }
        None => asked,
    };
    for r in rdata {
        msg.add_answer(Record::from_rdata(owner.clone(), TTL_SECONDS, r));
    }
    Decision::Mesh(msg, MeshAnswer::Addresses)
}

#[cfg(test)]
mod tests;
