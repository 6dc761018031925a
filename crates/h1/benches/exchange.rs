//! What the plan in docs/ARCHITECTURE.md ("HTTP/1 without two codecs") would save, measured
//! before building it: one request and response through a relay between two in-memory
//! streams, the relay being either hyper's server and client (what the sidecar runs today on
//! each side) or a loop over this crate (parse the head, write it on, relay the body by its
//! length). The client and the app are the same byte scripts for both: wrk's request, nginx's
//! response with a 615-byte body. Tokio, the streams and the copying cost the same in both
//! columns; the difference is the codecs. Neither relay does policy, logging or metrics.

use std::sync::Arc;

use criterion::Criterion;
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use trustmesh_h1::{encode, request_framing, response_framing, Body, Head, Limits};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 198.18.42.2:18080\r\n\r\n";
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 21:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 615\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"674c3b40-267\"\r\nAccept-Ranges: bytes\r\n\r\n";
const BODY: usize = 615;

/// The app: answers every request head with nginx's response.
async fn app(mut s: DuplexStream) {
    let mut response = RESPONSE_HEAD.to_vec();
    response.extend_from_slice(&[b'x'; BODY]);
    let mut buf = Vec::with_capacity(4096);
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        }
        buf.clear();
        s.write_all(&response).await.unwrap();
    }
}

/// The client: one request, then the whole response (head, then 615 bytes).
async fn exchange(s: &mut DuplexStream, buf: &mut Vec<u8>) {
    s.write_all(REQUEST).await.unwrap();
    buf.clear();
    loop {
        s.read_buf(buf).await.unwrap();
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if buf.len() >= end + 4 + BODY {
                assert!(buf.starts_with(b"HTTP/1.1 200"));
                return;
            }
        }
    }
}

fn hyper_relay(front: DuplexStream, back: DuplexStream) {
    tokio::spawn(async move {
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(back))
                .await
                .unwrap();
        tokio::spawn(conn);
        let sender = Arc::new(tokio::sync::Mutex::new(sender));
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let sender = sender.clone();
            async move {
                let (parts, _) = req.into_parts();
                let out = hyper::Request::from_parts(parts, Empty::new());
                sender.lock().await.send_request(out).await
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(front), service)
            .await;
    });
}

/// Connection-scoped fields the relay does not pass on.
fn hop_by_hop(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

async fn inline_relay(mut front: DuplexStream, mut back: DuplexStream) {
    let limits = Limits::default();
    let (mut req, mut res, mut out) = (
        Vec::with_capacity(8192),
        Vec::with_capacity(8192),
        Vec::with_capacity(8192),
    );
    let (mut rq, mut rs) = (Head::default(), Head::default());
    loop {
        while !rq.parse_request(&req, &limits).unwrap() {
            if front.read_buf(&mut req).await.unwrap_or(0) == 0 {
                return;
            }
        }
        let framing = request_framing(&rq, &req).unwrap();
        assert_eq!(framing.body, Body::Empty);
        out.clear();
        encode::request_line(&mut out, rq.method(&req), rq.target(&req), rq.version);
        for f in rq.fields.iter().filter(|f| !hop_by_hop(f.name.of(&req))) {
            encode::field(&mut out, f.name.of(&req), f.value.of(&req));
        }
        encode::end_head(&mut out);
        back.write_all(&out).await.unwrap();

        while !rs.parse_response(&res, &limits).unwrap() {
            back.read_buf(&mut res).await.unwrap();
        }
        let framing = response_framing(&rs, &res, rq.method(&req), false).unwrap();
        let Body::Length(n) = framing.body else {
            panic!("nginx sends a length")
        };
        out.clear();
        let reason = match rs.line {
            trustmesh_h1::StartLine::Response { reason, .. } => reason.of(&res),
            _ => unreachable!(),
        };
        encode::status_line(&mut out, rs.version, rs.status(), reason);
        for f in rs.fields.iter().filter(|f| !hop_by_hop(f.name.of(&res))) {
            encode::field(&mut out, f.name.of(&res), f.value.of(&res));
        }
        encode::end_head(&mut out);
        let end = rs.len + n as usize;
        while res.len() < end {
            back.read_buf(&mut res).await.unwrap();
        }
        out.extend_from_slice(&res[rs.len..end]);
        front.write_all(&out).await.unwrap();
        res.drain(..end);
        // Only now: `rq`'s spans point into `req` until the response is framed.
        req.drain(..rq.len);
    }
}

/// The two ends and a relay of `kind` between them, on `rt`: the client's end.
fn setup(rt: &tokio::runtime::Runtime, kind: &str) -> DuplexStream {
    rt.block_on(async {
        let (client, front) = tokio::io::duplex(64 * 1024);
        let (back, app_end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(app(app_end));
        match kind {
            "hyper" => hyper_relay(front, back),
            "inline" => drop(tokio::spawn(inline_relay(front, back))),
            // Bytes copied as they come: what the streams, the client and the app cost alone.
            _ => drop(tokio::spawn(async move {
                let (mut front, mut back) = (front, back);
                let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
            })),
        }
        client
    })
}

const KINDS: [(&str, &str); 3] = [
    ("hyper", "hyper server + client"),
    ("inline", "trustmesh-h1 inline"),
    ("copy", "bytes copied (baseline)"),
];

fn relays(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay one request");
    for (kind, name) in KINDS {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut client = setup(&rt, kind);
        let mut buf = Vec::with_capacity(8192);
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(exchange(&mut client, &mut buf)))
        });
    }
    g.finish();
}

/// `RELAY_ONLY=<hyper|inline|copy>:<n>` runs n exchanges through one relay and nothing else,
/// for counting instructions: run it under `valgrind --tool=callgrind` with two values of n
/// and divide the difference by theirs (this machine has no instruction counter for `perf`).
fn main() {
    if let Ok(only) = std::env::var("RELAY_ONLY") {
        let (kind, n) = only.split_once(':').expect("RELAY_ONLY=<kind>:<n>");
        let n: usize = n.parse().expect("a count");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut client = setup(&rt, kind);
        let mut buf = Vec::with_capacity(8192);
        rt.block_on(async {
            for _ in 0..n {
                exchange(&mut client, &mut buf).await;
            }
        });
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    relays(&mut c);
    c.final_summary();
}
