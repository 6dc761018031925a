//! The crate next to hyper, the HTTP/1 parser the sidecar runs today, on the same bytes: every
//! request this crate accepts, hyper's server accepts as the same request (method, target,
//! fields, body), and every response from an app it accepts, hyper's client reads as the same
//! response. Where hyper accepts and this crate refuses, the case is listed ([`STRICTER`],
//! [`STRICTER_RESPONSES`]) with the reason; the lists are checked both ways, so a change on
//! either side shows up here.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustmesh_h1::{request_framing, Body, Chunked, Head, Limits, Target};

/// Fields with lower-case names, sorted.
type Fields = Vec<(String, Vec<u8>)>;

/// A request as a parser understood it: method, target, fields, body.
type Seen = (String, String, Fields, Vec<u8>);

const CASES: &[(&str, &[u8])] = &[
    ("get", b"GET /a?b=c HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n"),
    ("http10", b"GET / HTTP/1.0\r\n\r\n"),
    ("absolute form", b"GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("asterisk", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("length", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"),
    (
        "equal lengths",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    ),
    ("length list", b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"),
    (
        "chunked",
        b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n3\r\n abc\r\n0\r\n\r\n",
    ),
    (
        "chunked with trailers",
        b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n",
    ),
    ("empty value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n"),
    ("obs-text value", b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n"),
    ("percent path", b"GET /%2e%2E/a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("brace path", b"GET /{a}|b^ HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("non-ascii path", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("backslash path", b"GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("absolute without a path", b"GET http://a?b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("absolute, upper-case scheme", b"GET HTTP://a:80/b HTTP/1.1\r\nHost: a\r\n\r\n"),
    // Refused by both.
    ("less-than in a path", b"GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("neither path nor URI", b"GET httpZ//a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
    ("http/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
    ("different lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("signed length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"),
    ("gzip coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("http10 chunked", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("chunk size 0x", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk data too long", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n"),
    ("chunk bare LF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
    ("nul in value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
    // Accepted by hyper, refused here (each one in STRICTER).
    ("quote path", b"GET /\"a\" HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("host with a bad port", b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n"),
    ("CL.TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE.CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n"),
    ("gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("bare LF head", b"GET / HTTP/1.1\nHost: a\n\n"),
    ("no host", b"GET / HTTP/1.1\r\n\r\n"),
    ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("host with a path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    ("chunk size space", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    ("17 digit chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n"),
    ("trailer bare LF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n\r\n"),
];

/// Requests hyper takes that this crate refuses, and why that is the safer answer.
const STRICTER: &[(&str, &str)] = &[
    (
        "quote path",
        "hyper refuses `\"` in a query and takes it in a path; one rule for both",
    ),
    (
        "fragment",
        "hyper drops a fragment, an app behind us may not: two paths for one request",
    ),
    ("host with a bad port", "a Host that is not an authority"),
    (
        "CL.TE",
        "both lengths: hyper uses Transfer-Encoding, a parser behind it may use Content-Length",
    ),
    ("TE.CL", "both lengths, in the other order"),
    (
        "gzip, chunked",
        "a transfer coding the app may not decode the way we forward it (RFC 9112 §6.1: 501)",
    ),
    (
        "bare LF head",
        "a bare LF ends a line for hyper, not for every parser",
    ),
    (
        "no host",
        "RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400",
    ),
    (
        "two hosts",
        "RFC 9112 §3.2: two Hosts are a 400; which one would policy match?",
    ),
    (
        "host with a path",
        "a Host that is not an authority could slip past the `hosts` match",
    ),
    (
        "chunk size space",
        "whitespace after a size is only allowed before an extension",
    ),
    (
        "17 digit chunk size",
        "sizes longer than 64 bits wrap in some parsers",
    ),
    ("trailer bare LF", "a bare LF in the trailer section"),
];

fn ours(raw: &[u8]) -> Option<Seen> {
    let mut head = Head::default();
    if head.parse_request(raw, &Limits::default()) != Ok(true) {
        return None;
    }
    let framing = request_framing(&head, raw).ok()?;
    let body = body_of(framing.body, &raw[head.len..])?;
    let mut fields = fields_of(&head, raw);
    // hyper's server keeps one of several equal Content-Length fields (its client keeps them
    // all); so will a relay writing the head.
    fields.dedup_by(|a, b| a.0 == "content-length" && a == b);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Some((
        text(head.method(raw)),
        canonical(framing.target, &head, raw),
        fields,
        body,
    ))
}

/// The body the framing says `rest` starts with, if all of it is there.
fn body_of(framing: Body, rest: &[u8]) -> Option<Vec<u8>> {
    Some(match framing {
        Body::Empty => Vec::new(),
        Body::Length(n) => rest.get(..n as usize)?.to_vec(),
        Body::Chunked => {
            let mut data = Vec::new();
            Chunked::default().decode_all(rest, &mut data).ok()??;
            data
        }
        Body::UntilClose => rest.to_vec(),
        Body::Tunnel => unreachable!("no case asks for an upgrade"),
    })
}

/// The head's fields with lower-case names, sorted (as hyper's `HeaderMap` lists them).
fn fields_of(head: &Head, raw: &[u8]) -> Fields {
    let mut fields: Fields = head
        .fields
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(f.name.of(raw)).to_lowercase(),
                f.value.of(raw).to_vec(),
            )
        })
        .collect();
    fields.sort();
    fields
}

fn sorted(headers: &http::HeaderMap) -> Fields {
    let mut fields: Fields = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    fields.sort();
    fields
}

/// Each case read here and by hyper: the same where both accept; the names of those only
/// hyper accepts, which must be `stricter`'s.
fn compare<T: PartialEq + std::fmt::Debug>(
    results: Vec<(&str, Option<T>, Option<T>)>,
    stricter: &[(&str, &str)],
) {
    let mut only_hyper = Vec::new();
    for (name, ours, theirs) in results {
        match (&ours, &theirs) {
            (Some(o), Some(h)) => assert_eq!(o, h, "{name}: read differently"),
            (Some(_), None) => panic!("{name}: accepted here, refused by hyper"),
            (None, Some(_)) => only_hyper.push(name),
            (None, None) => {}
        }
    }
    let listed: Vec<&str> = stricter.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        only_hyper, listed,
        "what hyper accepts and this crate refuses"
    );
}

/// The target as hyper's `Uri` prints it: an absolute URI's scheme in lower case and its
/// empty path as `/`.
fn canonical(target: Target, head: &Head, raw: &[u8]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match target {
        Target::Absolute {
            https,
            authority,
            path_and_query,
        } => {
            let pq = text(path_and_query.of(raw));
            let slash = if pq.starts_with('/') { "" } else { "/" };
            let scheme = if https { "https" } else { "http" };
            format!("{scheme}://{}{slash}{pq}", text(authority.of(raw)))
        }
        _ => text(head.target(raw)),
    }
}

/// What hyper's server hands its service for `raw`, or `None` if it refuses the request (or
/// its body).
async fn hypers(name: &str, raw: &'static [u8]) -> Option<Seen> {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Seen>>();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let method = req.method().to_string();
            let target = req.uri().to_string();
            let fields = sorted(req.headers());
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec());
            let _ = tx.send(body.ok().map(|body| (method, target, fields, body)));
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        }
    });
    let conn = tokio::spawn(
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service),
    );
    client.write_all(raw).await.unwrap();
    let seen = tokio::select! {
        biased;
        got = rx.recv() => got.flatten(),
        // A refused head: hyper answers (400, 431, 501, ...) and closes. An HTTP/1.0 request
        // is answered and closed too: what the service saw decides.
        _ = async { let mut sink = Vec::new(); let _ = client.read_to_end(&mut sink).await; } => {
            rx.try_recv().ok().flatten()
        }
        _ = tokio::time::sleep(Duration::from_secs(5)) => panic!("{name}: hyper neither read nor refused the request"),
    };
    conn.abort();
    seen
}

#[tokio::test]
async fn what_this_crate_accepts_hyper_reads_the_same_way() {
    let mut results = Vec::new();
    for &(name, raw) in CASES {
        results.push((name, ours(raw), hypers(name, raw).await));
    }
    compare(results, STRICTER);
}

/// A response as a parser understood it: status, fields (lower-case names, sorted), body.
type SeenResponse = (u16, Fields, Vec<u8>);

const RESPONSES: &[(&str, &str, &[u8])] = &[
    ("length", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    ("chunked", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("until close", "GET", b"HTTP/1.1 200 OK\r\nServer: s\r\n\r\nhello, until the end"),
    ("http10 until close", "GET", b"HTTP/1.0 200 OK\r\n\r\nhello"),
    ("no reason", "GET", b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"),
    ("204", "GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("304 with a length", "GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 615\r\n\r\n"),
    ("head", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 615\r\n\r\n"),
    (
        "repeated equal lengths",
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    ),
    // Refused by both.
    ("status 000", "GET", b"HTTP/1.1 000 OK\r\nContent-Length: 0\r\n\r\n"),
    ("different lengths", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("obs-fold", "GET", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
    ("space before colon", "GET", b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello"),
    ("http10 chunked", "GET", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad chunk", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    // Accepted by hyper, refused here (each one in STRICTER_RESPONSES).
    ("CL.TE", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("gzip coding", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
    (
        "chunked with an empty element",
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    ("bare LF head", "GET", b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"),
];

/// Responses hyper's client takes that this crate refuses.
const STRICTER_RESPONSES: &[(&str, &str)] = &[
    (
        "CL.TE",
        "both lengths: response splitting toward the client if a parser picks the other",
    ),
    (
        "gzip coding",
        "a body framed by a transfer coding we would not decode",
    ),
    (
        "chunked with an empty element",
        "hyper reads `chunked,` as not chunked, to the close",
    ),
    (
        "bare LF head",
        "a bare LF ends a line for hyper, not for every client",
    ),
];

fn our_response(method: &str, raw: &[u8]) -> Option<SeenResponse> {
    let mut head = Head::default();
    if head.parse_response(raw, &Limits::default()) != Ok(true) {
        return None;
    }
    let framing = trustmesh_h1::response_framing(&head, raw, method.as_bytes(), false).ok()?;
    let body = body_of(framing.body, &raw[head.len..])?;
    Some((head.status(), fields_of(&head, raw), body))
}

/// What hyper's client makes of `raw` as the answer to a `method` request; the app closes
/// after sending it.
async fn hypers_response(name: &str, method: &str, raw: &'static [u8]) -> Option<SeenResponse> {
    let (client, mut app) = tokio::io::duplex(64 * 1024);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(TokioIo::new(client))
    .await
    else {
        panic!("{name}: handshake");
    };
    let conn = tokio::spawn(conn);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let _ = app.read(&mut buf).await;
        let _ = app.write_all(raw).await;
        let _ = app.shutdown().await;
        // Keep the app's end until the client is done with it.
        let _ = app.read(&mut buf).await;
    });
    let req = hyper::Request::builder()
        .method(method)
        .uri("/")
        .header("host", "a")
        .body(http_body_util::Empty::new())
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        let res = sender.send_request(req).await.ok()?;
        let status = res.status().as_u16();
        let fields = sorted(res.headers());
        let body = res.into_body().collect().await.ok()?.to_bytes().to_vec();
        Some((status, fields, body))
    })
    .await
    .unwrap_or_else(|_| panic!("{name}: hyper neither read nor refused the response"));
    conn.abort();
    seen
}

#[tokio::test]
async fn what_this_crate_accepts_from_an_app_hyper_reads_the_same_way() {
    let mut results = Vec::new();
    for &(name, method, raw) in RESPONSES {
        results.push((
            name,
            our_response(method, raw),
            hypers_response(name, method, raw).await,
        ));
    }
    compare(results, STRICTER_RESPONSES);
}
