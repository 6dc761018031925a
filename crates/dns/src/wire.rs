//! The DNS wire format at the proxy's edges: reading what a client sent, building our own
//! responses, fitting a response into what the client can take, and checking that an upstream
//! message answers what was asked. Parsing and encoding are hickory-proto's; this module only
//! decides what to do with the result.
//!
//! Which client messages are answered at all follows the server library Istio's agent uses
//! (miekg/dns `defaultMsgAcceptFunc`): a response is dropped (answering it could start a loop
//! between two servers), an opcode other than QUERY gets NOTIMP, and a message without exactly
//! one question, or with more records than a query carries (more than one answer or authority
//! record, more than two additional), gets FORMERR, as does one hickory cannot parse. A message
//! too short for a header cannot be answered (there is no ID to answer) and is dropped.
//!
//! Sizes: a UDP client takes at most its EDNS payload size, and at least 512 bytes (RFC 6891
//! §6.2.5; Istio's `size` in `pkg/dns/client/dns.go`); TCP takes 65535. A response over the
//! limit loses its additional records, then its authority records and as many answers as
//! needed, and says so with the TC bit (RFC 2181 §9), so the client asks again over TCP.

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// The largest message over TCP (its length prefix is 16 bits).
pub(crate) const TCP_LIMIT: usize = u16::MAX as usize;
/// The EDNS payload size we advertise in our own responses (the 2020 DNS flag day's value).
const OUR_PAYLOAD: u16 = 1232;

/// What a client's message calls for.
pub(crate) enum Inbound {
    /// A query to answer.
    Query(Message),
    /// Answer this error and nothing else.
    Refuse(Message, Refusal),
    /// Send nothing back.
    Drop,
}

/// Why a message is refused, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed,
    NotImplemented,
}

/// Reads one client message.
pub(crate) fn read_query(bytes: &[u8]) -> Inbound {
    let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
        return Inbound::Drop;
    };
    if header.message_type() == MessageType::Response {
        return Inbound::Drop;
    }
    if header.op_code() != OpCode::Query {
        let refusal = error_for(&header, ResponseCode::NotImp);
        return Inbound::Refuse(refusal, Refusal::NotImplemented);
    }
    let formerr = || {
        Inbound::Refuse(
            error_for(&header, ResponseCode::FormErr),
            Refusal::Malformed,
        )
    };
    if header.query_count() != 1
        || header.answer_count() > 1
        || header.name_server_count() > 1
        || header.additional_count() > 2
    {
        return formerr();
    }
    match Message::from_vec(bytes) {
        Ok(query) if query.queries().len() == 1 => Inbound::Query(query),
        _ => formerr(),
    }
}

/// An error response built from a header alone (the rest could not be read).
fn error_for(header: &Header, rcode: ResponseCode) -> Message {
    let mut h = Header::response_from_request(header);
    h.set_response_code(rcode);
    let mut m = Message::new();
    m.set_header(h);
    m
}

/// Our response to `query`: its ID, question and RD/CD bits, recursion available, `rcode`, and
/// an OPT record when the query had one.
pub(crate) fn reply(query: &Message, rcode: ResponseCode) -> Message {
    let mut h = Header::response_from_request(query.header());
    h.set_recursion_available(true);
    let mut m = Message::new();
    m.set_header(h);
    m.add_queries(query.queries().iter().cloned());
    if query.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_PAYLOAD);
        m.set_edns(edns);
    }
    m.set_response_code(rcode);
    m
}

/// The most a UDP client takes in one answer.
pub(crate) fn udp_limit(query: &Message) -> usize {
    // hickory's max_payload is already at least 512.
    usize::from(query.max_payload())
}

/// `msg` encoded in at most `limit` bytes, cut as the module doc says; `None` when it cannot be
/// encoded at all (a record hickory refuses to write).
pub(crate) fn encode(msg: &Message, limit: usize) -> Option<Vec<u8>> {
    let full = msg.to_vec().ok()?;
    if full.len() <= limit {
        return Some(full);
    }
    let fits = |m: &Message| m.to_vec().ok().filter(|b| b.len() <= limit);
    let mut cut = msg.clone();
    cut.take_additionals();
    if let Some(bytes) = fits(&cut) {
        return Some(bytes);
    }
    cut.take_name_servers();
    cut.set_truncated(true);
    let answers = cut.take_answers();
    // The most answers that still fit, by bisection: a 64 KiB TCP answer relayed to a UDP
    // client can hold thousands of records.
    let (mut lo, mut hi) = (0, answers.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        *cut.answers_mut() = answers[..mid].to_vec();
        if fits(&cut).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    *cut.answers_mut() = answers[..lo].to_vec();
    cut.to_vec().ok()
}

/// `bytes` with the message ID replaced by `id`.
pub(crate) fn with_id(bytes: &[u8], id: u16) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() >= 2 {
        out[..2].copy_from_slice(&id.to_be_bytes());
    }
    out
}

/// Whether `response` answers the query with `id` asking `asked`: same ID, a response, and the
/// same question (names compared case-insensitively). An error response may carry no question
/// (a server that could not read ours); it is accepted on the ID alone.
pub(crate) fn answers(response: &Message, id: u16, asked: &Query) -> bool {
    if response.id() != id || response.message_type() != MessageType::Response {
        return false;
    }
    match response.queries() {
        [q] => {
            q.name() == asked.name()
                && q.query_type() == asked.query_type()
                && q.query_class() == asked.query_class()
        }
        [] => response.response_code() != ResponseCode::NoError,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
