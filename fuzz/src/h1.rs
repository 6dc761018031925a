//! The HTTP/1 framing crate against the tokenizer hyper runs, and against itself.

use trustmesh_h1::{encode, request_framing, response_framing, Body, Chunked, Error, Head, Limits};

/// First byte: bit 0 picks request or response, the rest is the piece size for feeding the
/// body. Then a head and whatever follows it. Must hold:
/// - whatever this crate accepts, httparse (hyper's tokenizer, lenient defaults) accepts with
///   the same length, start line and fields: we are only ever stricter;
/// - a prefix of an accepted head is "incomplete", never an error or a different head;
/// - the framing agrees with the fields it came from;
/// - the head written back by `encode` parses to the same head and framing;
/// - a chunked body decodes to the same data, trailers and end in any piece size, and the
///   data re-chunked canonically decodes to itself.
pub fn h1(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let is_request = selector & 1 == 0;
    let piece = usize::from(selector >> 1).max(1);
    let limits = Limits::default();
    let mut head = Head::default();
    let parsed = if is_request {
        head.parse_request(input, &limits)
    } else {
        head.parse_response(input, &limits)
    };
    if parsed != Ok(true) {
        return;
    }
    agrees_with_httparse(&head, input, is_request);
    for cut in [head.len / 2, head.len - 1] {
        let mut again = Head::default();
        let partial = if is_request {
            again.parse_request(&input[..cut], &limits)
        } else {
            again.parse_response(&input[..cut], &limits)
        };
        assert_eq!(
            partial,
            Ok(false),
            "a prefix of an accepted head, cut at {cut}"
        );
    }
    let (method, upgrade) = (b"GET".as_slice(), false);
    let framing = if is_request {
        request_framing(&head, input)
    } else {
        response_framing(&head, input, method, upgrade)
    };
    let Ok(framing) = framing else {
        return;
    };
    framing_agrees_with_fields(&head, input, framing.body);
    round_trips(&head, input, is_request, framing);
    if framing.body == Body::Chunked {
        chunked_in_pieces(&input[head.len..], piece);
    }
}

fn agrees_with_httparse(head: &Head, input: &[u8], is_request: bool) {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let (len, fields) = if is_request {
        let mut req = httparse::Request::new(&mut slots);
        let Ok(httparse::Status::Complete(len)) = req.parse(input) else {
            panic!("httparse refuses a request head this crate accepts");
        };
        assert_eq!(req.method.map(str::as_bytes), Some(head.method(input)));
        assert_eq!(req.path.map(str::as_bytes), Some(head.target(input)));
        (len, req.headers.len())
    } else {
        let mut res = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(len)) = res.parse(input) else {
            panic!("httparse refuses a response head this crate accepts");
        };
        assert_eq!(res.code, Some(head.status()));
        (len, res.headers.len())
    };
    assert_eq!(len, head.len);
    assert_eq!(fields, head.fields.len());
    for (theirs, ours) in slots.iter().zip(&head.fields) {
        assert_eq!(theirs.name.as_bytes(), ours.name.of(input));
        assert_eq!(theirs.value, ours.value.of(input));
    }
}

fn framing_agrees_with_fields(head: &Head, input: &[u8], body: Body) {
    let te = head.get_all(input, "transfer-encoding").count();
    let cl: Vec<&[u8]> = head.get_all(input, "content-length").collect();
    match body {
        Body::Chunked => assert!(te >= 1 && cl.is_empty()),
        Body::Length(n) => {
            assert_eq!(te, 0);
            for v in cl {
                for e in v.split(|&b| b == b',') {
                    let e = std::str::from_utf8(e).unwrap().trim_matches([' ', '\t']);
                    assert!(
                        e.is_empty() || e.parse::<u64>() == Ok(n),
                        "{e:?} is not {n}"
                    );
                }
            }
        }
        // A request without a body has no framing field; a response read to the close neither.
        Body::Empty if head.status() == 0 => assert!(te == 0 && cl.is_empty()),
        Body::UntilClose => assert!(te == 0 && cl.is_empty()),
        _ => {}
    }
}

fn round_trips(head: &Head, input: &[u8], is_request: bool, framing: trustmesh_h1::Framing) {
    let mut out = Vec::new();
    match head.line {
        trustmesh_h1::StartLine::Request { method, target } => {
            encode::request_line(&mut out, method.of(input), target.of(input), head.version)
        }
        trustmesh_h1::StartLine::Response { status, reason } => {
            encode::status_line(&mut out, head.version, status, reason.of(input))
        }
    }
    for f in &head.fields {
        encode::field(&mut out, f.name.of(input), f.value.of(input));
    }
    encode::end_head(&mut out);
    let mut again = Head::default();
    let parsed = if is_request {
        again.parse_request(&out, &Limits::default())
    } else {
        again.parse_response(&out, &Limits::default())
    };
    assert_eq!(parsed, Ok(true), "the written head parses");
    assert_eq!(again.len, out.len());
    assert_eq!(again.method(&out), head.method(input));
    assert_eq!(again.target(&out), head.target(input));
    assert_eq!(again.status(), head.status());
    let names = |h: &Head, b: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        h.fields
            .iter()
            .map(|f| (f.name.of(b).to_vec(), f.value.of(b).to_vec()))
            .collect()
    };
    assert_eq!(names(&again, &out), names(head, input));
    let framing_again = if is_request {
        request_framing(&again, &out)
    } else {
        response_framing(&again, &out, b"GET", false)
    };
    let framing_again = framing_again.expect("the written head frames the same");
    assert_eq!(framing_again.body, framing.body);
    assert_eq!(framing_again.keep_alive, framing.keep_alive);
}

type Decoded = Result<(Vec<u8>, Vec<u8>, usize), Error>;

fn decode(body: &[u8], piece: usize) -> Decoded {
    let mut d = Chunked::default();
    let mut data = Vec::new();
    let (mut at, mut available) = (0, piece.min(body.len()));
    loop {
        let p = d.feed(&body[at..available])?;
        assert!(p.consumed <= available - at && p.data.end <= p.consumed);
        data.extend_from_slice(&body[at..available][p.data]);
        at += p.consumed;
        if p.done {
            return Ok((data, d.trailers().to_vec(), at));
        }
        if at == available {
            if available == body.len() {
                return Err(Error::Chunk("the input ended"));
            }
            available = (available + piece).min(body.len());
        }
    }
}

fn chunked_in_pieces(body: &[u8], piece: usize) {
    let whole = decode(body, body.len().max(1));
    let pieces = decode(body, piece);
    let bytes = decode(body, 1);
    assert_eq!(whole, pieces, "piece size {piece}");
    assert_eq!(whole, bytes, "one byte at a time");
    let Ok((data, trailers, _)) = whole else {
        return;
    };
    let mut again = Vec::new();
    if !data.is_empty() {
        again.extend_from_slice(encode::chunk_header(data.len() as u64).as_ref());
        again.extend_from_slice(&data);
        again.extend_from_slice(b"\r\n");
    }
    again.extend_from_slice(encode::LAST_CHUNK);
    again.extend_from_slice(&trailers);
    again.extend_from_slice(b"\r\n");
    let (data2, trailers2, end) = decode(&again, piece).expect("re-chunked data decodes");
    assert_eq!((data2, trailers2, end), (data, trailers, again.len()));
}
