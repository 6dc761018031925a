//! Without a REDIRECT rule (tier 1 runs as anyone, in the host's namespace) a connection has
//! no other destination than its own: the kernel answers with that (conntrack tracks it) or
//! with ENOENT / ENOPROTOOPT (not tracked, or conntrack not loaded). The redirected cases run
//! in `trustmesh/tests/capture_e2e.rs`, in network namespaces of their own.

use super::*;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;

fn untracked_or_self(got: io::Result<SocketAddr>, local: SocketAddr) {
    match got {
        Ok(addr) => assert_eq!(addr, local),
        Err(e) => assert!(
            matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENOPROTOOPT)
            ),
            "{e}"
        ),
    }
}

fn accepted(bind: &str) -> Option<(TcpStream, SocketAddr)> {
    let listener = TcpListener::bind(bind).ok()?;
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let local = server.local_addr().unwrap();
    Some((server, local))
}

#[test]
fn an_ipv4_connection_that_was_not_redirected() {
    let (server, local) = accepted("127.0.0.1:0").unwrap();
    untracked_or_self(original_dst(&server), local);
    untracked_or_self(original_dst_fd(server.as_raw_fd()), local);
}

#[test]
fn an_ipv6_connection_that_was_not_redirected() {
    // Hosts without IPv6 have nothing to check here.
    if let Some((server, local)) = accepted("[::1]:0") {
        untracked_or_self(original_dst(&server), local);
    }
}

#[test]
fn an_ipv4_client_on_a_dual_stack_listener_is_asked_at_the_ipv4_level() {
    let Ok(listener) = TcpListener::bind("[::]:0") else {
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    assert!(asks_ipv4(server.as_raw_fd()).unwrap());
    let local = match server.local_addr().unwrap() {
        SocketAddr::V6(v6) => SocketAddr::from((v6.ip().to_ipv4_mapped().unwrap(), v6.port())),
        v4 => v4,
    };
    untracked_or_self(original_dst(&server), local);
}

#[tokio::test]
async fn a_tokio_stream_works_the_same() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    untracked_or_self(original_dst(&server), server.local_addr().unwrap());
}

#[test]
fn a_socket_that_is_not_ip_is_refused_in_words() {
    let (a, _b) = UnixStream::pair().unwrap();
    let e = original_dst(&a).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("not an IP socket"));
}
