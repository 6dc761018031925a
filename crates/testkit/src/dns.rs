//! DNS for tests (feature `dns`): a small upstream resolver on loopback that the test controls,
//! and a client that sends hand-made queries.
//!
//! The resolver ([`Upstream`]) answers A queries for the names it was given, NXDOMAIN for every
//! other name, on UDP and TCP at one port, and records every query it gets (transport, source
//! address, ID, name, type) so a test can see what was forwarded and how. Its [`Behaviour`] can
//! be switched while it runs: answer, truncate every UDP answer, stay silent, or try to spoof
//! (a forged answer from another port and one with the wrong ID before the real one). Like a
//! real server it truncates a UDP answer larger than the client's EDNS size (512 without EDNS).
//! It stops when dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How the test upstream treats the queries it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer (truncating UDP answers only when too large, as a real server does).
    Answer,
    /// Answer TCP; over UDP send every answer truncated (TC set, no records).
    Truncate,
    /// Record the query and never answer.
    Silent,
    /// Over UDP, before the real answer: a forged answer (`6.6.6.6`) with the right ID from
    /// another socket, and one from the right socket with the ID off by one.
    Spoof,
}

/// One query the upstream received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `"udp"` or `"tcp"`.
    pub transport: &'static str,
    pub from: SocketAddr,
    pub id: u16,
    /// Lowercase, without the trailing dot.
    pub name: String,
    pub rtype: RecordType,
    /// The EDNS payload size the query advertised, if it had an OPT record.
    pub edns: Option<u16>,
}

/// The address every spoofed answer carries.
pub const SPOOFED: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);

struct State {
    names: HashMap<String, Vec<Ipv4Addr>>,
    behaviour: Mutex<Behaviour>,
    seen: Mutex<Vec<Seen>>,
}

/// A test upstream resolver on `127.0.0.1`, UDP and TCP on one port; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Upstream {
    /// Serves `names` (name → its A records) with `behaviour`.
    pub async fn start(names: &[(&str, &[Ipv4Addr])], behaviour: Behaviour) -> Upstream {
        let names = names
            .iter()
            .map(|(n, a)| (n.trim_end_matches('.').to_ascii_lowercase(), a.to_vec()))
            .collect();
        let state = Arc::new(State {
            names,
            behaviour: Mutex::new(behaviour),
            seen: Mutex::new(Vec::new()),
        });
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let tasks = vec![
            tokio::spawn(serve_udp(udp, state.clone())),
            tokio::spawn(serve_tcp(tcp, state.clone())),
        ];
        Upstream { addr, state, tasks }
    }

    /// Changes how later queries are treated.
    pub fn set(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Every query received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

/// UDP and TCP on the same free loopback port.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP in 50 tries");
}

impl State {
    fn behaviour(&self) -> Behaviour {
        *self.behaviour.lock().unwrap()
    }

    /// Records `query` and builds the full answer to it.
    fn answer(&self, query: &Message, transport: &'static str, from: SocketAddr) -> Message {
        let q = query.query().cloned().unwrap_or_default();
        let name = q.name().to_lowercase().to_ascii();
        let name = name.trim_end_matches('.').to_string();
        self.seen.lock().unwrap().push(Seen {
            transport,
            from,
            id: query.id(),
            name: name.clone(),
            rtype: q.query_type(),
            edns: query.extensions().as_ref().map(Edns::max_payload),
        });
        let mut m = response_to(query);
        match self.names.get(&name) {
            None => {
                m.set_response_code(ResponseCode::NXDomain);
            }
            Some(addrs) if q.query_type() == RecordType::A => {
                for a in addrs {
                    m.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(*a))));
                }
            }
            Some(_) => {}
        }
        m
    }
}

fn response_to(query: &Message) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true);
    m.add_queries(query.queries().iter().cloned());
    if query.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        m.set_edns(edns);
    }
    m
}

async fn serve_udp(socket: UdpSocket, state: Arc<State>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let full = state.answer(&query, "udp", from);
        let limit = usize::from(query.max_payload());
        let answer = match state.behaviour() {
            Behaviour::Silent => continue,
            Behaviour::Truncate => full.truncate(),
            _ if full.to_vec().unwrap().len() > limit => full.truncate(),
            _ => full,
        };
        if state.behaviour() == Behaviour::Spoof {
            let socket = socket.clone();
            tokio::spawn(async move { spoof_then_answer(&socket, &query, answer, from).await });
        } else {
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    }
}

async fn spoof_then_answer(socket: &UdpSocket, query: &Message, answer: Message, to: SocketAddr) {
    let mut forged = response_to(query);
    if let Some(q) = query.query() {
        forged.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A(SPOOFED)),
        ));
    }
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let _ = other.send_to(&forged.to_vec().unwrap(), to).await;
    forged.set_id(query.id().wrapping_add(1));
    let _ = socket.send_to(&forged.to_vec().unwrap(), to).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = socket.send_to(&answer.to_vec().unwrap(), to).await;
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(tcp_connection(stream, from, state.clone()));
    }
}

async fn tcp_connection(mut stream: TcpStream, from: SocketAddr, state: Arc<State>) {
    while let Some(bytes) = read_framed(&mut stream).await {
        let Ok(query) = Message::from_vec(&bytes) else {
            return;
        };
        let answer = state.answer(&query, "tcp", from);
        if state.behaviour() == Behaviour::Silent {
            // Hold the connection open and say nothing.
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        if write_framed(&mut stream, &answer.to_vec().unwrap())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A query for `name` and `rtype` with `id`, recursion desired, no EDNS.
pub fn query(id: u16, name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

/// [`query`] with an OPT record advertising `payload` bytes.
pub fn query_edns(id: u16, name: &str, rtype: RecordType, payload: u16) -> Message {
    let mut m = query(id, name, rtype);
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    m.set_edns(edns);
    m
}

/// Sends `bytes` in one datagram to `server` from a fresh socket; the first datagram back
/// within `wait`, if any.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(buf[..n].to_vec())
}

/// Asks `server` over UDP; the parsed answer within 3 s, if any.
pub async fn udp_ask(server: SocketAddr, query: &Message) -> Option<Message> {
    let bytes = udp_raw(server, &query.to_vec().unwrap(), Duration::from_secs(3)).await?;
    Some(Message::from_vec(&bytes).expect("the answer parses"))
}

/// Sends `query` on an open TCP connection and reads one answer, within 3 s.
pub async fn tcp_ask_on(stream: &mut TcpStream, query: &Message) -> Option<Message> {
    let fut = async {
        write_framed(stream, &query.to_vec().unwrap()).await.ok()?;
        read_framed(stream).await
    };
    let bytes = tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .ok()??;
    Some(Message::from_vec(&bytes).expect("the answer parses"))
}

/// Asks `server` over a new TCP connection.
pub async fn tcp_ask(server: SocketAddr, query: &Message) -> Option<Message> {
    let mut stream = TcpStream::connect(server).await.ok()?;
    tcp_ask_on(&mut stream, query).await
}

/// One length-prefixed DNS message from `stream`, or `None` at its end.
pub async fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let len = stream.read_u16().await.ok()?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

/// Writes `bytes` with its two-byte length.
pub async fn write_framed(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await
}

/// The A and AAAA addresses in `msg`'s answer section, in order.
pub fn addresses(msg: &Message) -> Vec<IpAddr> {
    msg.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}
