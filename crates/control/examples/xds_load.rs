//! The load generator of `bench/control.sh`: N simulated sidecars in one process, each with its
//! own SVID (issued here from the benchmark's CA folder), its own TCP + mTLS connection and one
//! incremental ADS stream subscribed to trustmesh's three types — so the control plane sees N
//! real sidecars, not N streams multiplexed on a few connections.
//!
//! Why a generator of our own rather than N `trustmesh proxy` processes: 10,000 sidecar processes
//! do not fit a 2-core machine, and the question is what the *control plane* costs per sidecar.
//! Each simulated sidecar does what a sidecar's xDS client does on the wire (node metadata
//! NAMESPACE/LABELS, one request per type, an ACK per response) and nothing more: it does not
//! build policies, so the times measured are the control plane's and the transport's, plus a
//! memory search for the marker.
//!
//! Driven over stdin/stdout by the script, one line each way:
//! - on start it issues the certificates, connects every sidecar (a few handshakes at a time)
//!   and prints `ready connected=… synced=… …` once each has ACKed its first response of all
//!   three types (or after `--timeout`);
//! - `change SRC DST TOKEN NAMESPACE|*` arms the marker TOKEN for the sidecars of NAMESPACE
//!   (`*`: all), renames SRC onto DST (the file change, timed from just before the rename), and
//!   prints `result …` once each of those sidecars has ACKed a response carrying TOKEN in a
//!   resource (or after `--timeout`): receive and ACK times p50/p99/max in ms, and how many
//!   responses the other sidecars received meanwhile (a namespace's change should reach no one
//!   else);
//! - `stats` prints the counters; `quit` (or end of input) exits.
//!
//! Per sidecar: one task of ours, plus tonic's connection task and its request-buffer task.
//!
//! Usage: xds_load --control HOST:PORT --ca DIR --n N [--namespaces 100] [--service-accounts 10]
//!        [--handshakes 32] [--timeout SECS]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use trustmesh_ca::{CertificateAuthority, IssueRequest};
use trustmesh_identity::SpiffeId;
use trustmesh_xds::pb::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use trustmesh_xds::pb::DeltaDiscoveryRequest;
use trustmesh_xds::types;

const TYPES: [&str; 3] = [
    types::MESH_CONFIG,
    types::TRUST_BUNDLE,
    types::ISTIO_RESOURCE,
];
const ALL_TYPES: u8 = 0b111;
/// The name the control plane's serving certificate carries (one of `ca serve`'s defaults).
const SERVER_NAME: &str = "istiod.istio-system.svc";

struct Args {
    control: String,
    ca: String,
    n: usize,
    namespaces: usize,
    service_accounts: usize,
    handshakes: usize,
    timeout: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        control: String::new(),
        ca: String::new(),
        n: 0,
        namespaces: 100,
        service_accounts: 10,
        handshakes: 32,
        timeout: Duration::from_secs(300),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag}: not a positive number: {v:?}"))
        };
        match flag.as_str() {
            "--control" => a.control = v.clone(),
            "--ca" => a.ca = v.clone(),
            "--n" => a.n = num()?,
            "--namespaces" => a.namespaces = num()?,
            "--service-accounts" => a.service_accounts = num()?,
            "--handshakes" => a.handshakes = num()?,
            "--timeout" => a.timeout = Duration::from_secs(num()? as u64),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.control.is_empty() || a.ca.is_empty() || a.n == 0 {
        return Err(
            "usage: xds_load --control HOST:PORT --ca DIR --n N [--namespaces 100] \
                    [--service-accounts 10] [--handshakes 32] [--timeout SECS]"
                .into(),
        );
    }
    Ok(a)
}

/// One simulated sidecar's record; times are ns since [`Shared::base`], 0 for "not yet".
#[derive(Default)]
struct Slot {
    namespace: u16,
    /// Types whose first response it has ACKed (bits in [`TYPES`] order).
    synced: AtomicU8,
    responses: AtomicU32,
    marker_recv: AtomicU64,
    marker_ack: AtomicU64,
}

struct Shared {
    base: Instant,
    slots: Vec<Slot>,
    /// The armed marker: responses carrying it are timed.
    marker: RwLock<Option<Vec<u8>>>,
    connected: AtomicU64,
    synced: AtomicU64,
    /// Streams that ended (refused, broken) and were opened again.
    reconnects: AtomicU64,
    last_error: RwLock<String>,
    stop: AtomicBool,
}

impl Shared {
    fn now(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).max(1)
    }
}

struct Svid {
    namespace: String,
    service_account: String,
    chain: String,
    key: String,
}

fn issue(a: &Args) -> Result<Vec<Svid>, String> {
    let ca = CertificateAuthority::load(&a.ca).map_err(|e| format!("{}: {e}", a.ca))?;
    let td = ca.trust_domain().to_string();
    (0..a.n)
        .map(|i| {
            let namespace = format!("bench-{:03}", i % a.namespaces);
            let service_account = format!("sa-{}", (i / a.namespaces) % a.service_accounts);
            let id = format!("spiffe://{td}/ns/{namespace}/sa/{service_account}");
            let id = SpiffeId::parse(&id).map_err(|e| format!("{id}: {e}"))?;
            let s = ca
                .issue(&IssueRequest::new(id))
                .map_err(|e| format!("issuing: {e}"))?;
            Ok(Svid {
                namespace,
                service_account,
                chain: s.chain_pem,
                key: s.key_pem.unwrap_or_default(),
            })
        })
        .collect()
}

fn node(i: usize, svid: &Svid) -> trustmesh_xds::core::Node {
    use prost_types::value::Kind;
    let s = |v: &str| prost_types::Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let labels = prost_types::Struct {
        fields: [("app".to_string(), s(&svid.service_account))]
            .into_iter()
            .collect(),
    };
    let fields: BTreeMap<String, prost_types::Value> = [
        ("NAMESPACE".to_string(), s(&svid.namespace)),
        (
            "LABELS".to_string(),
            prost_types::Value {
                kind: Some(Kind::StructValue(labels)),
            },
        ),
    ]
    .into_iter()
    .collect();
    trustmesh_xds::core::Node {
        id: format!(
            "sidecar~10.0.0.1~load-{i}.{}~{0}.svc.cluster.local",
            svid.namespace
        ),
        metadata: Some(prost_types::Struct {
            fields: fields.into_iter().collect(),
        }),
        ..Default::default()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// One stream's life: connect, subscribe, ACK every response. Returns why it ended.
async fn stream(
    i: usize,
    svid: &Svid,
    shared: &Shared,
    root: &Certificate,
    control: &str,
    handshakes: &Semaphore,
) -> String {
    let permit = handshakes.acquire().await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(root.clone())
        .domain_name(SERVER_NAME)
        .identity(Identity::from_pem(&svid.chain, &svid.key));
    let endpoint =
        match Endpoint::from_shared(format!("https://{control}")).and_then(|e| e.tls_config(tls)) {
            Ok(e) => e,
            Err(e) => return format!("endpoint: {e}"),
        };
    // As the sidecars' client: a PING every 30 s (which also keeps the server's idle timeout
    // away from a quiet stream).
    let channel = match endpoint
        .connect_timeout(Duration::from_secs(20))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => return format!("connect: {e:?}"),
    };
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(4);
    for (n, t) in TYPES.iter().enumerate() {
        let req = DeltaDiscoveryRequest {
            node: (n == 0).then(|| node(i, svid)),
            type_url: t.to_string(),
            ..Default::default()
        };
        if tx.send(req).await.is_err() {
            return "request queue closed".into();
        }
    }
    let mut responses = match AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(16 << 20)
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return format!("refused: {:?} {}", s.code(), s.message()),
    };
    shared.connected.fetch_add(1, Relaxed);
    let slot = &shared.slots[i];
    let mut permit = Some(permit);
    let why = loop {
        let resp = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break "the server closed the stream".to_string(),
            Err(s) => break format!("{:?}: {}", s.code(), s.message()),
        };
        slot.responses.fetch_add(1, Relaxed);
        let marked = {
            let m = shared.marker.read().expect("marker lock");
            m.as_ref().is_some_and(|m| {
                resp.resources.iter().any(|r| {
                    r.resource
                        .as_ref()
                        .is_some_and(|any| contains(&any.value, m))
                })
            })
        };
        if marked {
            let _ = slot
                .marker_recv
                .compare_exchange(0, shared.now(), Relaxed, Relaxed);
        }
        let bit = TYPES
            .iter()
            .position(|t| *t == resp.type_url)
            .map_or(0, |p| 1u8 << p);
        let ack = DeltaDiscoveryRequest {
            type_url: resp.type_url,
            response_nonce: resp.nonce,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break "request queue closed".to_string();
        }
        if marked {
            let _ = slot
                .marker_ack
                .compare_exchange(0, shared.now(), Relaxed, Relaxed);
        }
        let before = slot.synced.fetch_or(bit, Relaxed);
        if before != ALL_TYPES && before | bit == ALL_TYPES {
            shared.synced.fetch_add(1, Relaxed);
            // Synced: the next sidecar may start its handshake.
            permit = None;
        }
    };
    drop(permit);
    shared.connected.fetch_sub(1, Relaxed);
    if slot.synced.swap(0, Relaxed) == ALL_TYPES {
        shared.synced.fetch_sub(1, Relaxed);
    }
    why
}

async fn sidecar(
    i: usize,
    svids: Arc<Vec<Svid>>,
    shared: Arc<Shared>,
    root: Certificate,
    control: Arc<str>,
    handshakes: Arc<Semaphore>,
) {
    while !shared.stop.load(Relaxed) {
        let why = stream(i, &svids[i], &shared, &root, &control, &handshakes).await;
        *shared.last_error.write().expect("error lock") = why;
        shared.reconnects.fetch_add(1, Relaxed);
        tokio::time::sleep(Duration::from_millis(500 + (i as u64 % 1000))).await;
    }
}

/// The `q` quantile (0..1) of sorted `v`, nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{name}_p50_ms={:.1} {name}_p99_ms={:.1} {name}_max_ms={:.1}",
        quantile(&v, 0.50),
        quantile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

async fn change(line: &str, shared: &Shared, names: &[String], timeout: Duration) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [_, src, dst, token, ns] = parts[..] else {
        return "error usage: change SRC DST TOKEN NAMESPACE|*".into();
    };
    let target = if ns == "*" {
        None
    } else {
        match names.iter().position(|n| n == ns) {
            Some(p) => Some(p as u16),
            None => return format!("error no sidecar in namespace {ns}"),
        }
    };
    let affected: Vec<usize> = (0..shared.slots.len())
        .filter(|i| target.is_none_or(|t| shared.slots[*i].namespace == t))
        .collect();
    for s in &shared.slots {
        s.marker_recv.store(0, Relaxed);
        s.marker_ack.store(0, Relaxed);
    }
    *shared.marker.write().expect("marker lock") = Some(token.as_bytes().to_vec());
    let before: Vec<u32> = shared
        .slots
        .iter()
        .map(|s| s.responses.load(Relaxed))
        .collect();
    let t0 = shared.now();
    if let Err(e) = std::fs::rename(src, dst) {
        return format!("error renaming {src} to {dst}: {e}");
    }
    let started = Instant::now();
    let mut acked = 0;
    while started.elapsed() < timeout {
        acked = affected
            .iter()
            .filter(|i| shared.slots[**i].marker_ack.load(Relaxed) != 0)
            .count();
        if acked == affected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Anything still on its way to an unaffected sidecar has had a moment to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    *shared.marker.write().expect("marker lock") = None;
    let ms = |t: u64| (t.saturating_sub(t0)) as f64 / 1e6;
    let recv: Vec<f64> = affected
        .iter()
        .map(|i| shared.slots[*i].marker_recv.load(Relaxed))
        .filter(|t| *t != 0)
        .map(ms)
        .collect();
    let ack: Vec<f64> = affected
        .iter()
        .map(|i| shared.slots[*i].marker_ack.load(Relaxed))
        .filter(|t| *t != 0)
        .map(ms)
        .collect();
    let first = ack.iter().copied().fold(f64::INFINITY, f64::min);
    // Responses each sidecar received during the round, affected ones and the others apart.
    let (mut to_affected, mut to_others) = (0u64, 0u64);
    for (i, s) in shared.slots.iter().enumerate() {
        let n = s.responses.load(Relaxed).wrapping_sub(before[i]) as u64;
        if target.is_none_or(|t| s.namespace == t) {
            to_affected += n;
        } else {
            to_others += n;
        }
    }
    format!(
        "result affected={} acked={acked} first_ack_ms={first:.1} {} {} responses={} \
         other_responses={to_others}",
        affected.len(),
        summary("recv", recv),
        summary("ack", ack),
        to_affected
    )
}

fn stats(shared: &Shared) -> String {
    format!(
        "stats connected={} synced={} reconnects={} last_error={:?}",
        shared.connected.load(Relaxed),
        shared.synced.load(Relaxed),
        shared.reconnects.load(Relaxed),
        shared.last_error.read().expect("error lock")
    )
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xds_load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let svids = match issue(&a) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xds_load: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let issue_ms = started.elapsed().as_millis();
    let root = match std::fs::read(format!("{}/root-cert.pem", a.ca)) {
        Ok(r) => Certificate::from_pem(r),
        Err(e) => {
            eprintln!("xds_load: {}/root-cert.pem: {e}", a.ca);
            return std::process::ExitCode::from(1);
        }
    };
    let names: Vec<String> = (0..a.namespaces).map(|i| format!("bench-{i:03}")).collect();
    let shared = Arc::new(Shared {
        base: Instant::now(),
        slots: (0..a.n)
            .map(|i| Slot {
                namespace: (i % a.namespaces) as u16,
                ..Default::default()
            })
            .collect(),
        marker: RwLock::new(None),
        connected: AtomicU64::new(0),
        synced: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        last_error: RwLock::new(String::new()),
        stop: AtomicBool::new(false),
    });
    let svids = Arc::new(svids);
    let control: Arc<str> = a.control.clone().into();
    let handshakes = Arc::new(Semaphore::new(a.handshakes));
    let connecting = Instant::now();
    for i in 0..a.n {
        tokio::spawn(sidecar(
            i,
            svids.clone(),
            shared.clone(),
            root.clone(),
            control.clone(),
            handshakes.clone(),
        ));
    }
    while (shared.synced.load(Relaxed) as usize) < a.n && connecting.elapsed() < a.timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "ready n={} connected={} synced={} issue_ms={issue_ms} connect_ms={} reconnects={} \
         last_error={:?}",
        a.n,
        shared.connected.load(Relaxed),
        shared.synced.load(Relaxed),
        connecting.elapsed().as_millis(),
        shared.reconnects.load(Relaxed),
        shared.last_error.read().expect("error lock")
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let out = match line.split_whitespace().next() {
            Some("change") => change(&line, &shared, &names, a.timeout).await,
            Some("stats") => stats(&shared),
            Some("quit") => break,
            _ => format!("error unknown command {line:?}"),
        };
        println!("{out}");
    }
    shared.stop.store(true, Relaxed);
    std::process::ExitCode::SUCCESS
}
