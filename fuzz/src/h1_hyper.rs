//! The HTTP/1 framing crate next to hyper, the parser the sidecar runs today, on the same
//! bytes: requests against hyper's server, an app's responses against hyper's client (the
//! table of known cases is `crates/h1/tests/against_hyper.rs`; these explore around it).

use std::cell::RefCell;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustmesh_h1::{request_framing, response_framing, Body, Chunked, Head, Limits, Target};

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
    // An upgrade or CONNECT hands the connection to its service: not compared.
    if framing.upgrade {
        return None;
    }
    let body = body_of(framing.body, &raw[head.len..])?;
    let mut fields = fields_of(&head, raw);
    // hyper's server keeps one of several equal Content-Lengths (its client keeps them all).
    fields.dedup_by(|a, b| a.0 == b"content-length" && a == b);
    Some((
        head.method(raw).to_vec(),
        canonical(framing.target, &head, raw),
        fields,
        body,
    ))
}

/// The body the framing says `rest` starts with, if all of it is there.
fn body_of(framing: Body, rest: &[u8]) -> Option<Vec<u8>> {
    Some(match framing {
        Body::Empty => Vec::new(),
        Body::Length(n) => rest.get(..usize::try_from(n).ok()?)?.to_vec(),
        Body::Chunked => {
            let mut data = Vec::new();
            Chunked::default().decode_all(rest, &mut data).ok()??;
            data
        }
        Body::UntilClose => rest.to_vec(),
        Body::Tunnel => return None,
    })
}

/// Lower-case names, sorted.
fn fields_of(head: &Head, raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
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
    fields
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

/// hyper's fields, as [`fields_of`] lists ours.
fn sorted(headers: &http::HeaderMap) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    fields.sort();
    fields
}

/// Status, fields, body.
type SeenResponse = (u16, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);

/// The first byte picks the request's method (GET, HEAD, POST); the rest is what the app
/// answers before it closes. Must hold: a response this crate accepts, hyper's client (what
/// the sidecar reads its app's answers with today) accepts as the same status, fields and
/// body.
pub fn h1_hyper_response(data: &[u8]) {
    let Some((&selector, raw)) = data.split_first() else {
        return;
    };
    let method = ["GET", "HEAD", "POST"][usize::from(selector % 3)];
    let Some(ours) = our_response(method, raw) else {
        return;
    };
    let theirs = RUNTIME.with(|rt| rt.borrow().block_on(hypers_response(method, raw.to_vec())));
    let Some(theirs) = theirs else {
        panic!("accepted here, refused by hyper: {ours:?}");
    };
    assert_eq!(ours, theirs, "read differently");
}

fn our_response(method: &str, raw: &[u8]) -> Option<SeenResponse> {
    let mut head = Head::default();
    if head.parse_response(raw, &Limits::default()) != Ok(true) {
        return None;
    }
    let framing = response_framing(&head, raw, method.as_bytes(), false).ok()?;
    // hyper's client reads past an interim response to the final one: not compared.
    if framing.interim {
        return None;
    }
    let body = body_of(framing.body, &raw[head.len..])?;
    Some((head.status(), fields_of(&head, raw), body))
}

async fn hypers_response(method: &str, raw: Vec<u8>) -> Option<SeenResponse> {
    let (client, mut app) = tokio::io::duplex(256 * 1024);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Empty<bytes::Bytes>,
    >(TokioIo::new(client))
    .await
    .ok()?;
    let conn = tokio::spawn(conn);
    let app = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let _ = app.read(&mut buf).await;
        let _ = app.write_all(&raw).await;
        let _ = app.shutdown().await;
        let _ = app.read(&mut buf).await;
    });
    let req = hyper::Request::builder()
        .method(method)
        .uri("/")
        .header("host", "a")
        .body(http_body_util::Empty::new())
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(2), async {
        let res = sender.send_request(req).await.ok()?;
        let status = res.status().as_u16();
        let fields = sorted(res.headers());
        let body = res.into_body().collect().await.ok()?.to_bytes().to_vec();
        Some((status, fields, body))
    })
    .await
    .expect("hyper neither read nor refused a response this crate accepts");
    conn.abort();
    app.abort();
    seen
}
