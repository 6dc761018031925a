//! What parsing a head costs with this crate, next to the same step as hyper takes it
//! (httparse, then a `HeaderMap` of parsed names and shared values: hyper's `Server::parse` /
//! `Client::parse` without the rest of its dispatcher). Heads as the bench's wrk and nginx
//! send them, and a browser-like request with more fields.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::header::{HeaderName, HeaderValue};
use trustmesh_h1::{request_framing, response_framing, Chunked, Head, Limits};

const WRK: &[u8] = b"GET / HTTP/1.1\r\nHost: 198.18.42.2:18080\r\n\r\n";
const BROWSER: &[u8] = b"GET /api/v1/items?page=2&sort=name HTTP/1.1\r\nHost: reviews.bookinfo.svc.cluster.local:9080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nAuthorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJ0ZXN0In0.c2lnbmF0dXJl\r\nX-Request-Id: 5f1c0a7e-8d6b-4f0e-9a51-2b7d3c9e1f42\r\nConnection: keep-alive\r\nCookie: session=abc123; theme=dark\r\n\r\n";
const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 21:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 615\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"674c3b40-267\"\r\nAccept-Ranges: bytes\r\n\r\n";

/// hyper's per-head work: tokenize, then one `HeaderMap` entry per field (the name parsed
/// into a `HeaderName`, the value a shared slice of the read buffer).
fn hyper_like(buf: &bytes::Bytes, request: bool) -> http::HeaderMap {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let fields: &[httparse::Header<'_>] = if request {
        let mut req = httparse::Request::new(&mut slots);
        assert!(req.parse(buf).unwrap().is_complete());
        let n = req.headers.len();
        &slots[..n]
    } else {
        let mut res = httparse::Response::new(&mut slots);
        assert!(res.parse(buf).unwrap().is_complete());
        let n = res.headers.len();
        &slots[..n]
    };
    let mut map = http::HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).unwrap();
        let at = f.value.as_ptr() as usize - buf.as_ptr() as usize;
        let value = HeaderValue::from_maybe_shared(buf.slice(at..at + f.value.len())).unwrap();
        map.append(name, value);
    }
    map
}

fn heads(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, raw, request) in [
        ("wrk", WRK, true),
        ("browser", BROWSER, true),
        ("nginx", NGINX, false),
    ] {
        let mut g = c.benchmark_group(format!("head/{name}"));
        let mut head = Head::default();
        g.bench_function("trustmesh-h1", |b| {
            b.iter(|| {
                let buf = black_box(raw);
                if request {
                    assert!(head.parse_request(buf, &limits).unwrap());
                    black_box(request_framing(&head, buf).unwrap());
                } else {
                    assert!(head.parse_response(buf, &limits).unwrap());
                    black_box(response_framing(&head, buf, b"GET", false).unwrap());
                }
            })
        });
        let shared = bytes::Bytes::from_static(raw);
        g.bench_function("httparse+HeaderMap", |b| {
            b.iter(|| black_box(hyper_like(black_box(&shared), request)))
        });
        g.finish();
    }
}

fn chunked(c: &mut Criterion) {
    // 64 KiB of data in 4 KiB chunks, as a streaming upload sends it.
    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"1000\r\n");
        body.extend_from_slice(&[b'x'; 4096]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("chunked");
    g.throughput(criterion::Throughput::Bytes(body.len() as u64));
    let mut data = Vec::with_capacity(body.len());
    g.bench_function("decode 64 KiB in 4 KiB chunks", |b| {
        b.iter(|| {
            data.clear();
            let end = Chunked::default().decode_all(&body, &mut data).unwrap();
            assert_eq!((end, data.len()), (Some(body.len()), 16 * 4096));
        })
    });
    g.finish();
}

criterion_group!(benches, heads, chunked);
criterion_main!(benches);
