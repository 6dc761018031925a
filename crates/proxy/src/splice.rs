//! Relaying between two plain TCP sockets without the bytes entering the process: Linux's
//! splice(2), socket → pipe → socket, the kernel moving page references instead of copying
//! the data out to user space and back in.
//!
//! Only where neither side is TLS: a captured connection to a destination outside the mesh
//! (passthrough, or an endpoint without a sidecar) and plaintext accepted on an inbound port.
//! Everything between sidecars is encrypted in user space, so it cannot go this way.
//!
//! A pipe is held only while bytes are in it: each direction takes one from a small pool of
//! the thread it runs on, fills it from the source, empties it into the destination and gives
//! it back, so a relayed connection that is idle holds no pipe (two file descriptors each),
//! and 10,000 idle relays do not hold 40,000 descriptors more.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes one splice moves at most, and the capacity asked for each pipe: four times Linux's
/// default of 64 KiB, so a GB takes fewer splices (`benches/relay.rs`). The kernel refuses it
/// once the user's pipes pass `/proc/sys/fs/pipe-user-pages-soft` (unless privileged); the
/// pipe then keeps the size it got, and its bursts are smaller.
const CHUNK: usize = 256 * 1024;
/// Empty pipes a thread keeps for the next burst; more are closed when given back.
const POOL: usize = 32;

/// Both ends of a pipe; empty whenever it is in the pool.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
            return Ok(p);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a pipe of ours. Best effort: a refusal leaves the default size (above).
        unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
        // SAFETY: pipe2 succeeded, so both are open descriptors nothing else owns.
        Ok(unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    /// Back to the pool; only an empty pipe may be given back.
    fn give_back(self) {
        PIPES.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOL {
                pool.push(self);
            }
        });
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain descriptors, no offsets (both are a socket or a pipe).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves everything `from` sends to `to` until `from` ends (then `to`'s writing side is shut,
/// as a copy does), calling `moved` after each burst that arrived. Returns the bytes moved.
pub async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    mut moved: impl FnMut(usize),
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        // The pipe is taken once there is something to read, so a quiet connection holds none.
        from.readable().await?;
        let pipe = Pipe::take()?;
        let n = match from.try_io(Interest::READABLE, || {
            splice(from.as_raw_fd(), pipe.write.as_raw_fd(), CHUNK)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipe.give_back();
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            pipe.give_back();
            // SAFETY: a socket the caller holds open.
            if unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) } != 0 {
                let e = io::Error::last_os_error();
                // The other side already went away: nothing left to tell it.
                if e.kind() != io::ErrorKind::NotConnected {
                    return Err(e);
                }
            }
            return Ok(total);
        }
        moved(n);
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // A pipe still holding bytes is closed here, never pooled.
                Err(e) => return Err(e),
            }
        }
        pipe.give_back();
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn moves_every_byte_in_order_and_passes_the_end_on() {
        let (mut client, from) = pair().await;
        let (to, mut server) = pair().await;
        // More than a pipe holds and not a multiple of it, so bursts are cut and resumed.
        let data: Vec<u8> = (0..(3 * CHUNK + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut bursts = 0;
        let relay = async { one_way(&from, &to, |_| bursts += 1).await.unwrap() };
        let mut got = Vec::new();
        let reader = server.read_to_end(&mut got);
        let (moved, read) = tokio::join!(relay, reader);
        read.unwrap();
        assert_eq!(moved, data.len() as u64);
        assert_eq!(
            got, data,
            "the bytes arrive whole and in order, then the end"
        );
        assert!(
            bursts >= 4,
            "a pipe holds at most {CHUNK} bytes: {bursts} bursts"
        );
        writer.await.unwrap();
        // The pipes went back to this thread's pool, empty.
        assert!(PIPES.with(|p| !p.borrow().is_empty()));
    }
}
