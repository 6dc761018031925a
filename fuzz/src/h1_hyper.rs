//! The HTTP/1 framing crate next to hyper's server, the parser the sidecar runs today, on the
//! same request bytes (the table of known cases is `crates/h1/tests/against_hyper.rs`; this
//! explores around it).

use std::cell::RefCell;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustmesh_h1::{request_framing, Body, Chunked, Head, Limits, Target};

/// Method, target, fields (lower-case names, sorted, one of equal Content-Lengths), body.
type Seen = (Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
    );
}

/// The input is a request and what follows it. Must hold: a request this crate accepts
/// (head, framing and a body held whole), hyper's server accepts too, as the same request.
/// A request hyper accepts and this crate refuses is expected (the crate is stricter).
pub fn h1_hyper(data: &[u8]) {
    let Some(ours) = ours(data) else {
        return;
    };
    let theirs = RUNTIME.with(|rt| rt.borrow().block_on(hypers(data.to_vec())));
    let Some(theirs) = theirs else {
        panic!("accepted here, refused by hyper: {ours:?}");
    };
    assert_eq!(ours, theirs, "read differently");
}

fn ours(raw: &[u8]) -> Option<Seen> {
    let mut head = Head::default();
    if head.parse_request(raw, &Limits::default()) != Ok(true) {
        return None;
    }
    let framing = request_framing(&head, raw).ok()?;
    let rest = &raw[head.len..];
    let body = match framing.body {
        Body::Empty => Vec::new(),
        Body::Length(n) => rest.get(..usize::try_from(n).ok()?)?.to_vec(),
        Body::Chunked => {
            let mut data = Vec::new();
            Chunked::default().decode_all(rest, &mut data).ok()??;
            data
        }
        Body::UntilClose | Body::Tunnel => unreachable!("not a request's framing"),
    };
    // An upgrade or CONNECT hands the connection to its service: not compared.
    if framing.upgrade {
        return None;
    }
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = head
        .fields
        .iter()
        .map(|f| {
            (
                f.name.of(raw).to_ascii_lowercase(),
                f.value.of(raw).to_vec(),
            )
        })
        .collect();
    fields.sort();
    fields.dedup_by(|a, b| a.0 == b"content-length" && a == b);
    Some((
        head.method(raw).to_vec(),
        canonical(framing.target, &head, raw),
        fields,
        body,
    ))
}

/// The target as hyper's `Uri` prints it: an absolute URI's scheme in lower case and its
/// empty path as `/`.
fn canonical(target: Target, head: &Head, raw: &[u8]) -> Vec<u8> {
    let Target::Absolute {
        https,
        authority,
        path_and_query,
    } = target
    else {
        return head.target(raw).to_vec();
    };
    let mut out = if https {
        b"https://".to_vec()
    } else {
        b"http://".to_vec()
    };
    out.extend_from_slice(authority.of(raw));
    if path_and_query.of(raw).first() != Some(&b'/') {
        out.push(b'/');
    }
    out.extend_from_slice(path_and_query.of(raw));
    out
}

async fn hypers(raw: Vec<u8>) -> Option<Seen> {
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Seen>>();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let method = req.method().as_str().as_bytes().to_vec();
            let target = req.uri().to_string().into_bytes();
            let mut fields: Vec<(Vec<u8>, Vec<u8>)> = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            fields.sort();
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
    let _ = client.write_all(&raw).await;
    let seen = tokio::select! {
        biased;
        got = rx.recv() => got.flatten(),
        // Refused: hyper answers and closes. Or answered and closed (HTTP/1.0): what the
        // service saw decides.
        _ = async { let mut sink = Vec::new(); let _ = client.read_to_end(&mut sink).await; } => {
            rx.try_recv().ok().flatten()
        }
        _ = tokio::time::sleep(Duration::from_secs(2)) => {
            panic!("hyper neither read nor refused a request this crate accepts")
        }
    };
    conn.abort();
    seen
}
