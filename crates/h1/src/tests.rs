//! The rules of the crate's doc, one case each, with the request-smuggling shapes that made
//! them rules (CL.TE, TE.CL, TE.TE obfuscations, bare line endings, chunk-size tricks).

use crate::encode::{self, chunk_header};
use crate::{request_framing, response_framing, Body, Chunked, Error, Head, Limits, Version};

fn request(raw: &[u8]) -> Result<(Head, crate::Framing), Error> {
    let mut head = Head::default();
    assert!(
        head.parse_request(raw, &Limits::default())?,
        "incomplete: {raw:?}"
    );
    let framing = request_framing(&head, raw)?;
    Ok((head, framing))
}

fn request_err(raw: &str) -> Error {
    request(raw.as_bytes()).expect_err(raw)
}

fn response(raw: &str, method: &str, upgrade: bool) -> Result<crate::Framing, Error> {
    let mut head = Head::default();
    assert!(head.parse_response(raw.as_bytes(), &Limits::default())?);
    response_framing(&head, raw.as_bytes(), method.as_bytes(), upgrade)
}

#[test]
fn a_plain_request_is_parsed_in_place() {
    let raw =
        b"GET /a?b=c HTTP/1.1\r\nHost: svc.ns:8080\r\nUser-Agent: wrk\r\nX-Empty:\r\n\r\nrest";
    let (head, framing) = request(raw).unwrap();
    assert_eq!(head.len, raw.len() - 4);
    assert_eq!(head.method(raw), b"GET");
    assert_eq!(head.target(raw), b"/a?b=c");
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.get(raw, "user-agent"), Some(&b"wrk"[..]));
    assert_eq!(head.get(raw, "x-empty"), Some(&b""[..]));
    assert_eq!(head.get(raw, "missing"), None);
    assert_eq!(framing.body, Body::Empty);
    assert!(framing.keep_alive);
    assert!(!framing.upgrade && !framing.expect_continue);
    assert_eq!(framing.host.unwrap().of(raw), b"svc.ns:8080");
}

#[test]
fn a_head_in_pieces_is_incomplete_until_its_blank_line() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut head = Head::default();
    for end in 0..raw.len() {
        assert_eq!(
            head.parse_request(&raw[..end], &Limits::default()),
            Ok(false),
            "{end}"
        );
    }
    assert_eq!(head.parse_request(raw, &Limits::default()), Ok(true));
    // The head is reused: a second parse replaces the fields, it does not add to them.
    assert_eq!(head.parse_request(raw, &Limits::default()), Ok(true));
    assert_eq!(head.fields.len(), 1);
}

#[test]
fn limits_bound_the_head() {
    let limits = Limits {
        max_head_bytes: 64,
        max_fields: 2,
    };
    let mut head = Head::default();
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(80));
    assert_eq!(
        head.parse_request(long.as_bytes(), &limits),
        Err(Error::HeadTooLarge)
    );
    let many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_eq!(head.parse_request(many, &limits), Err(Error::TooManyFields));
    assert_eq!(Error::TooManyFields.status(), 431);
}

#[test]
fn every_line_ends_in_crlf() {
    for raw in [
        "GET / HTTP/1.1\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\n",
        "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(request_err(raw), Error::BareLineEnding, "{raw:?}");
    }
    // A CR not followed by LF is the tokenizer's error.
    assert!(matches!(
        request_err("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"),
        Error::Malformed(_)
    ));
}

#[test]
fn the_tokenizer_refuses_what_parsers_read_differently() {
    for raw in [
        // whitespace before the colon (RFC 9112 §5.1)
        "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        // obs-fold
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        // two spaces in the request line
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        // a NUL in a value, a space in a name
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX Y: a\r\n\r\n",
    ] {
        assert!(matches!(request_err(raw), Error::Malformed(_)), "{raw:?}");
    }
    assert_eq!(
        request_err("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        Error::Version
    );
    assert_eq!(Error::Version.status(), 505);
}

#[test]
fn transfer_encoding_is_exactly_chunked() {
    let (_, f) =
        request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
    assert_eq!(f.body, Body::Chunked);
    for te in [
        // Empty elements: the RFC ignores them, hyper takes the last one for the coding.
        ", chunked ,",
        "chunked,",
        "gzip, chunked",
        "chunked, identity",
        "xchunked",
        "chunked;q=1",
        "identity",
        "",
        "\"chunked\"",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(
            request_err(&raw),
            Error::UnsupportedTransferCoding,
            "{te:?}"
        );
    }
    // Twice chunked, in two fields.
    let raw = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(request_err(raw), Error::UnsupportedTransferCoding);
    assert_eq!(Error::UnsupportedTransferCoding.status(), 501);
}

#[test]
fn length_and_transfer_encoding_together_are_refused() {
    // CL.TE and TE.CL: which one wins depends on the parser, so neither does.
    for raw in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n",
    ] {
        assert_eq!(request_err(raw), Error::LengthAndTransferEncoding);
    }
    let raw = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(request_err(raw), Error::TransferEncodingInHttp10);
}

#[test]
fn content_length_is_digits_that_agree() {
    let (_, f) = request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!(f.body, Body::Length(5));
    let (_, f) =
        request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
    assert_eq!(
        f.body,
        Body::Length(5),
        "repeated equal fields are one length"
    );
    let (_, f) =
        request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n")
            .unwrap();
    assert_eq!(f.body, Body::Length(u64::MAX));
    for cl in [
        "5, 5",
        "5, 6",
        "+5",
        "-5",
        "0x5",
        "5 5",
        "",
        ",",
        "18446744073709551616",
        "５",
    ] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n");
        assert_eq!(request_err(&raw), Error::ContentLength, "{cl:?}");
    }
    let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 05\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(
        request_err(raw),
        Error::ContentLength,
        "equal numbers, different text"
    );
    let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
    assert_eq!(request_err(raw), Error::ContentLength);
    let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length:\r\n\r\n";
    assert_eq!(
        request_err(raw),
        Error::ContentLength,
        "an empty second value"
    );
}

#[test]
fn an_http11_request_has_exactly_one_valid_host() {
    assert_eq!(request_err("GET / HTTP/1.1\r\n\r\n"), Error::Host);
    assert_eq!(
        request_err("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        Error::Host
    );
    for host in [
        "a b", "a/b", "a@b", "a?b", "a#b", "a\\b", "a%41", "a:", "a:b", "a:123456", "[::1",
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(request_err(&raw), Error::Host, "{host:?}");
    }
    for host in ["[::1]:80", "svc.ns.svc.cluster.local", "a-b_c~d", ""] {
        let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert!(request(raw.as_bytes()).is_ok(), "{host:?}");
    }
    // HTTP/1.0 may leave it out, and closes unless told to keep the connection.
    let (_, f) = request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(f.host.is_none() && !f.keep_alive);
    let (_, f) = request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
    assert!(f.keep_alive);
}

#[test]
fn connection_options_upgrade_and_expect() {
    let (_, f) =
        request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n").unwrap();
    assert!(!f.keep_alive, "close wins");
    let (_, f) = request(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    assert!(f.upgrade);
    let (_, f) = request(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(
        !f.upgrade,
        "Upgrade without the connection option is not an upgrade"
    );
    let (_, f) = request(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").unwrap();
    assert!(f.upgrade);
    let (_, f) =
        request(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap();
    assert!(f.expect_continue);
    let (_, f) = request(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(!f.expect_continue, "HTTP/1.0 ignores it (RFC 9110 §10.1.1)");
}

#[test]
fn response_bodies_follow_the_request_and_status() {
    let ok = response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "GET", false).unwrap();
    assert_eq!((ok.body, ok.keep_alive), (Body::Length(3), true));
    let head = response(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        "HEAD",
        false,
    )
    .unwrap();
    assert_eq!(head.body, Body::Empty);
    for status in ["204 No Content", "304 Not Modified"] {
        let raw = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            response(&raw, "GET", false).unwrap().body,
            Body::Empty,
            "{status}"
        );
    }
    let close = response("HTTP/1.1 200 OK\r\n\r\n", "GET", false).unwrap();
    assert_eq!((close.body, close.keep_alive), (Body::UntilClose, false));
    let chunked = response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET",
        false,
    );
    assert_eq!(chunked.unwrap().body, Body::Chunked);
    let interim = response("HTTP/1.1 100 Continue\r\n\r\n", "PUT", false).unwrap();
    assert!(interim.interim && interim.body == Body::Empty);
    let switch = response(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "GET",
        true,
    );
    assert_eq!(switch.unwrap().body, Body::Tunnel);
    let stray = response("HTTP/1.1 101 Switching Protocols\r\n\r\n", "GET", false);
    assert!(matches!(stray, Err(Error::Malformed(_))));
    let tunnel = response(
        "HTTP/1.1 200 Connection established\r\n\r\n",
        "CONNECT",
        true,
    )
    .unwrap();
    assert_eq!(tunnel.body, Body::Tunnel);
    // The same framing rules as requests, for what the app sends back.
    let both = response(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET",
        false,
    );
    assert_eq!(both, Err(Error::LengthAndTransferEncoding));
    let http10 = response("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", "GET", false).unwrap();
    assert!(!http10.keep_alive);
}

#[test]
fn a_status_means_something() {
    for status in ["000", "099", "600", "999"] {
        let raw = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        assert!(
            matches!(response(&raw, "GET", false), Err(Error::Malformed(_))),
            "{status}"
        );
    }
}

#[test]
fn a_response_without_a_reason_phrase_parses() {
    let raw = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
    let mut head = Head::default();
    assert_eq!(head.parse_response(raw, &Limits::default()), Ok(true));
    assert_eq!(head.status(), 200);
    assert!(matches!(head.line, crate::StartLine::Response { reason, .. } if reason.is_empty()));
}

/// Decodes `body` fed in pieces of `step` bytes; the data, the trailers and where it ended.
fn decode(body: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>, usize), Error> {
    let mut d = Chunked::default();
    let mut data = Vec::new();
    let mut at = 0;
    let mut available = step.min(body.len());
    loop {
        let p = d.feed(&body[at..available])?;
        data.extend_from_slice(&body[at..available][p.data.clone()]);
        at += p.consumed;
        if p.done {
            return Ok((data, d.trailers().to_vec(), at));
        }
        if at == available {
            if available == body.len() {
                return Err(Error::Chunk("ended early"));
            }
            available = (available + step).min(body.len());
        }
    }
}

#[test]
fn a_chunked_body_decodes_the_same_in_any_pieces() {
    let body = b"5;ext=1;q=\"a;b\\\"c\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\nY:\r\n\r\nNEXT";
    let want_data = b"helloabcdefghijklmnopqrstuvwxyz".to_vec();
    for step in 1..=body.len() {
        let (data, trailers, end) = decode(body, step).unwrap();
        assert_eq!(data, want_data, "step {step}");
        assert_eq!(trailers, b"X-Sum: 1\r\nY:\r\n", "step {step}");
        assert_eq!(&body[end..], b"NEXT", "step {step}");
    }
}

#[test]
fn chunk_framing_that_parsers_read_differently_is_refused() {
    for body in [
        &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after the size
        b"5\r\nhello\n0\r\n\r\n",      // bare LF after the data
        b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than its size
        b"5\r\nhelloX\n0\r\n\r\n",     // another octet where the CR belongs
        b"0x5\r\nhello\r\n0\r\n\r\n",  // a 0x prefix
        b" 5\r\nhello\r\n0\r\n\r\n",   // leading whitespace
        b"5 \r\nhello\r\n0\r\n\r\n",   // trailing whitespace without an extension
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"10000000000000005\r\nhello\r\n0\r\n\r\n", // 17 digits: wraps in a 64-bit parser
        b"5;\r\nhello\r\n0\r\n\r\n",                // an extension without a name
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",            // LF inside an extension
        b"5;a=\"b\r\nhello\r\n0\r\n\r\n",           // an unterminated quoted value
        b"5;a b\r\nhello\r\n0\r\n\r\n",             // a second word without ';'
        b"5;a=b \r\nhello\r\n0\r\n\r\n",            // whitespace at the end of the line
        b"5\r\nhello\r\n0\r\nX : 1\r\n\r\n",        // a trailer with whitespace before the colon
        b"5\r\nhello\r\n0\r\nX: 1\r\n folded\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX: 1\n\r\n", // bare LF in the trailers
        b"5\r\nhello\r\n0\r\n\n",         // bare LF at the end
    ] {
        assert!(
            matches!(decode(body, body.len()), Err(Error::Chunk(_))),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let sixteen = b"000000000000000A\r\n0123456789\r\n0\r\n\r\n";
    assert_eq!(decode(sixteen, 7).unwrap().0, b"0123456789");
}

#[test]
fn chunk_metadata_is_bounded() {
    let mut d = Chunked::new(8);
    let ext = b"1;aaaaaaaaa=b\r\nx\r\n0\r\n\r\n";
    assert_eq!(d.feed(ext), Err(Error::ChunkMetadataTooLarge));
    let mut d = Chunked::new(8);
    let trailers = b"0\r\nXXXXXXXXX: 1\r\n\r\n";
    assert_eq!(d.feed(trailers), Err(Error::ChunkMetadataTooLarge));
    assert_eq!(Error::ChunkMetadataTooLarge.status(), 413);
}

#[test]
fn re_chunked_data_decodes_to_itself() {
    for len in [1u64, 9, 15, 16, 255, 4096, 1 << 20, u64::MAX] {
        let header = chunk_header(len);
        let text = std::str::from_utf8(header.as_ref()).unwrap();
        assert_eq!(u64::from_str_radix(text.trim_end(), 16).unwrap(), len);
        assert!(text.ends_with("\r\n"));
    }
    let mut body = Vec::new();
    for piece in [&b"abc"[..], b"defghijklmnopqrstu"] {
        body.extend_from_slice(chunk_header(piece.len() as u64).as_ref());
        body.extend_from_slice(piece);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(encode::END_CHUNKED);
    assert_eq!(decode(&body, 3).unwrap().0, b"abcdefghijklmnopqrstu");
}

#[test]
fn an_encoded_head_parses_back() {
    let mut out = Vec::new();
    encode::request_line(&mut out, b"POST", b"/x", Version::Http11);
    encode::field(&mut out, b"Host", b"a");
    encode::checked_field(
        &mut out,
        b"x-forwarded-client-cert",
        b"By=spiffe://td/ns/a/sa/b",
    )
    .unwrap();
    encode::end_head(&mut out);
    let (head, _) = request(&out).unwrap();
    assert_eq!(
        head.get(&out, "X-Forwarded-Client-Cert"),
        Some(&b"By=spiffe://td/ns/a/sa/b"[..])
    );
    // A value of the relay's own that would end the line is refused, not written.
    assert!(encode::checked_field(&mut out, b"x", b"a\r\nInjected: 1").is_err());
    assert!(encode::checked_field(&mut out, b"x y", b"a").is_err());
    let mut out = Vec::new();
    encode::status_line(&mut out, Version::Http10, 404, b"Not Found");
    assert_eq!(out, b"HTTP/1.0 404 Not Found\r\n");
}

#[test]
fn a_whole_body_decodes_at_once() {
    let body = b"3\r\nabc\r\n0\r\n\r\nNEXT";
    let mut data = Vec::new();
    assert_eq!(
        Chunked::default().decode_all(body, &mut data),
        Ok(Some(body.len() - 4))
    );
    assert_eq!(data, b"abc");
    let mut data = Vec::new();
    assert_eq!(
        Chunked::default().decode_all(&body[..9], &mut data),
        Ok(None)
    );
    assert_eq!(data, b"abc", "the data before the end of the input");
}

#[test]
fn each_target_form_in_its_place() {
    let form = |method: &str, target: &str| {
        let raw = format!("{method} {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        request(raw.as_bytes()).map(|(_, f)| f.target)
    };
    assert_eq!(form("GET", "/a/b?c=d&e"), Ok(crate::Target::Origin));
    assert_eq!(
        form("GET", "/{x}|y^z[0]\\w"),
        Ok(crate::Target::Origin),
        "what clients send unencoded"
    );
    assert_eq!(form("OPTIONS", "*"), Ok(crate::Target::Asterisk));
    assert_eq!(form("CONNECT", "a:443"), Ok(crate::Target::Authority));
    assert_eq!(form("CONNECT", "[::1]:443"), Ok(crate::Target::Authority));
    let raw = b"GET https://[::1]:8443?q HTTP/1.1\r\nHost: a\r\n\r\n";
    let (_, f) = request(raw).unwrap();
    let crate::Target::Absolute {
        https,
        authority,
        path_and_query,
    } = f.target
    else {
        panic!("{:?}", f.target)
    };
    assert!(https);
    assert_eq!(
        (authority.of(raw), path_and_query.of(raw)),
        (&b"[::1]:8443"[..], &b"?q"[..])
    );
    for (method, target) in [
        ("GET", "*"),     // asterisk is OPTIONS' only
        ("CONNECT", "a"), // CONNECT names a port
        ("CONNECT", "/a"),
        ("GET", "a/b"),              // neither a path nor a URI
        ("GET", "ftp://a/b"),        // not http(s)
        ("GET", "http:///b"),        // no host
        ("GET", "http://u@a/b"),     // userinfo
        ("GET", "http://a:123456/"), // a port of six digits
        ("GET", "http://a:/"),       // an empty port
        ("GET", "/a#frag"),
        ("GET", "/a\"b"),
        ("GET", "/a`b"),
    ] {
        assert_eq!(
            form(method, target),
            Err(Error::Target),
            "{method} {target}"
        );
    }
    assert_eq!(Error::Target.status(), 400);
}
