//! What relaying plain TCP costs the relaying thread: the copy through a buffer of ours
//! (`relay::relay`, tokio's bidirectional copy) next to splice (`relay::relay_tcp`), for a
//! 64 MiB stream over loopback.
//!
//! The time criterion reports is the CPU time of the relay's own thread (user + system, from
//! getrusage(RUSAGE_THREAD)), not wall time: the sender and the receiver run on threads of
//! their own, so the figure is what the sidecar spends per byte it relays, and the
//! throughput line reads as bytes relayed per CPU-second.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SIZE: usize = 64 * 1024 * 1024;

fn thread_cpu() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, u.as_mut_ptr());
        u.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// One stream of SIZE bytes from a sender, through the relay, to a receiver; the relay
/// thread's CPU time.
fn once(splice: bool) -> Duration {
    let (mut sender, proxy_a) = pair();
    let (proxy_b, mut receiver) = pair();
    let relay = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            proxy_a.set_nonblocking(true).unwrap();
            proxy_b.set_nonblocking(true).unwrap();
            let mut a = tokio::net::TcpStream::from_std(proxy_a).unwrap();
            let mut b = tokio::net::TcpStream::from_std(proxy_b).unwrap();
            let idle = Duration::from_secs(60);
            let never = std::future::pending();
            let before = thread_cpu();
            let moved = if splice {
                trustmesh_proxy::relay::relay_tcp(&mut a, &mut b, idle, never).await
            } else {
                trustmesh_proxy::relay::relay(&mut a, &mut b, idle, never).await
            };
            let spent = thread_cpu() - before;
            assert_eq!(moved.unwrap(), (SIZE as u64, 0));
            spent
        })
    });
    let receive = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        loop {
            match receiver.read(&mut buf).unwrap() {
                0 => break,
                n => got += n,
            }
        }
        assert_eq!(got, SIZE);
    });
    let chunk = vec![7u8; 256 * 1024];
    for _ in 0..SIZE / chunk.len() {
        sender.write_all(&chunk).unwrap();
    }
    sender.shutdown(std::net::Shutdown::Write).unwrap();
    receive.join().unwrap();
    drop(sender);
    relay.join().unwrap()
}

fn relay(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay_64MiB_thread_cpu");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    for (name, splice) in [("copy", false), ("splice", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| once(splice)).sum())
        });
    }
    g.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
