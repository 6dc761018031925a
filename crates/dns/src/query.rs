//! One client message from bytes in to bytes out, shared by the UDP and TCP listeners so both
//! answer alike: read it ([`wire`]), answer it from the mesh ([`answer`]) or forward it
//! ([`upstream`]), count the outcome, and fit the response to the client's transport.
//!
//! Answering is split in two so the listeners can bound the slow half: [`Shared::handle`] is
//! synchronous and decides everything that needs no upstream; only a query to forward comes
//! back as [`Step::Forward`], holding one of the [`Limits::max_in_flight`] permits (none left:
//! SERVFAIL at once), and [`Shared::forward`] then waits on the upstreams.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::answer::{self, Decision, MeshAnswer};
use crate::counters::{bump, Counters};
use crate::limits::Limits;
use crate::names::MeshNames;
use crate::upstream::{Forwarder, Transport};
use crate::wire::{self, Inbound, Refusal};

/// What the listeners share: the mesh's names, the upstreams, the bounds and the counters.
pub(crate) struct Shared {
    names: Arc<dyn MeshNames>,
    search: Vec<String>,
    forwarder: Forwarder,
    pub(crate) limits: Limits,
    pub(crate) counters: Arc<Counters>,
    in_flight: Arc<Semaphore>,
}

/// What to do after reading one message.
pub(crate) enum Step {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Wait on the upstreams ([`Shared::forward`]), then send what it returns.
    Forward(Pending),
    /// Send nothing.
    Nothing,
}

/// A query on its way upstream; it holds an in-flight permit until it is answered or dropped.
pub(crate) struct Pending {
    query: Message,
    bytes: Vec<u8>,
    _slot: InFlight,
}

/// One in-flight permit, kept in the counters' gauge while held.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    counters: Arc<Counters>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub(crate) fn new(
        names: Arc<dyn MeshNames>,
        search: Vec<String>,
        forwarder: Forwarder,
        limits: Limits,
        counters: Arc<Counters>,
    ) -> Shared {
        Shared {
            names,
            search,
            forwarder,
            in_flight: Arc::new(Semaphore::new(permits(limits.max_in_flight))),
            limits,
            counters,
        }
    }

    /// Everything about one client message that needs no upstream.
    pub(crate) fn handle(&self, bytes: &[u8], via: Transport) -> Step {
        bump(&self.counters.queries);
        let query = match wire::read_query(bytes) {
            Inbound::Query(query) => query,
            Inbound::Refuse(msg, why) => {
                bump(match why {
                    Refusal::Malformed => &self.counters.malformed,
                    Refusal::NotImplemented => &self.counters.not_implemented,
                });
                return reply(wire::encode(&msg, wire::TCP_LIMIT));
            }
            Inbound::Drop => {
                bump(&self.counters.malformed);
                return Step::Nothing;
            }
        };
        match answer::decide(&query, &*self.names, &self.search) {
            Decision::Mesh(msg, kind) => {
                bump(match kind {
                    MeshAnswer::Addresses => &self.counters.mesh_answers,
                    MeshAnswer::NoData => &self.counters.mesh_nodata,
                });
                reply(wire::encode(&msg, limit(via, &query)))
            }
            Decision::Forward => match self.in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
                    Step::Forward(Pending {
                        query,
                        bytes: bytes.to_vec(),
                        _slot: InFlight {
                            _permit: permit,
                            counters: self.counters.clone(),
                        },
                    })
                }
                Err(_) => {
                    bump(&self.counters.refused_in_flight);
                    reply(servfail(&query))
                }
            },
        }
    }

    /// Forwards a pending query; the bytes to send back (empty only if even SERVFAIL could
    /// not be encoded, which a query hickory parsed cannot cause).
    pub(crate) async fn forward(&self, pending: Pending, via: Transport) -> Vec<u8> {
        bump(&self.counters.forwarded);
        let query = &pending.query;
        let Some(answer) = self.forwarder.forward(&pending.bytes, query, via).await else {
            bump(&self.counters.servfail);
            return servfail(query).unwrap_or_default();
        };
        let limit = limit(via, query);
        if answer.bytes.len() <= limit {
            return wire::with_id(&answer.bytes, query.id());
        }
        // Only after a TCP retry can an answer outgrow a UDP client: cut it to size.
        let mut msg = answer.msg;
        msg.set_id(query.id());
        wire::encode(&msg, limit)
            .or_else(|| servfail(query))
            .unwrap_or_default()
    }
}

/// A cap as semaphore permits: tokio's semaphore holds at most `MAX_PERMITS`, and a larger
/// cap means no cap at all.
pub(crate) fn permits(cap: usize) -> usize {
    cap.min(Semaphore::MAX_PERMITS)
}

fn reply(bytes: Option<Vec<u8>>) -> Step {
    bytes.map_or(Step::Nothing, Step::Reply)
}

fn servfail(query: &Message) -> Option<Vec<u8>> {
    wire::encode(&wire::reply(query, ResponseCode::ServFail), wire::TCP_LIMIT)
}

/// The largest response `query`'s client takes over `via`.
fn limit(via: Transport, query: &Message) -> usize {
    match via {
        Transport::Udp => wire::udp_limit(query),
        Transport::Tcp => wire::TCP_LIMIT,
    }
}
