//! Where a redirected connection was going. A `REDIRECT` rule rewrites the destination to the
//! sidecar's port; conntrack remembers the original, and Linux hands it back through
//! `getsockopt(SO_ORIGINAL_DST)` (`SOL_IP`, for IPv4) or `IP6T_SO_ORIGINAL_DST` (`SOL_IPV6`,
//! for IPv6) on the accepted socket. Both options are number 80 (`linux/netfilter_ipv4.h`,
//! `linux/netfilter_ipv6/ip6_tables.h`); libc does not export them for every target, so they
//! are named here.
//!
//! The level follows the connection, not the listener: an IPv4 client accepted on a
//! dual-stack `[::]` listener has an IPv4-mapped local address and an IPv4 conntrack entry, so
//! it is asked at `SOL_IP`. std and libc only, so the sidecar can take this module (and this
//! crate) without anything else.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, RawFd};

/// `SO_ORIGINAL_DST` at `SOL_IP`.
const SO_ORIGINAL_DST: libc::c_int = 80;
/// `IP6T_SO_ORIGINAL_DST` at `SOL_IPV6`.
const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;

/// The destination the client asked for before a `REDIRECT` rule sent it to us; for std's and
/// tokio's `TcpStream` alike (both are `AsFd`). Fails with `ENOENT` for a connection that was
/// not redirected (or not tracked), `ENOPROTOOPT` when conntrack is not loaded.
pub fn original_dst<S: AsFd>(socket: &S) -> io::Result<SocketAddr> {
    original_dst_fd(socket.as_fd().as_raw_fd())
}

/// [`original_dst`] for a raw descriptor (an accepted TCP socket).
pub fn original_dst_fd(fd: RawFd) -> io::Result<SocketAddr> {
    if asks_ipv4(fd)? {
        ipv4(fd)
    } else {
        ipv6(fd)
    }
}

/// Whether the connection is IPv4: an `AF_INET` socket, or an `AF_INET6` one whose local
/// address is IPv4-mapped.
fn asks_ipv4(fd: RawFd) -> io::Result<bool> {
    // SAFETY: sockaddr_storage is plain data, valid zeroed; getsockname writes at most `len`
    // bytes into it and we read only the variant its family names.
    unsafe {
        let mut ss: libc::sockaddr_storage = mem::zeroed();
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        match ss.ss_family as libc::c_int {
            libc::AF_INET => Ok(true),
            libc::AF_INET6 => {
                let sin6 = &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                let addr = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Ok(addr.to_ipv4_mapped().is_some())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an IP socket: only TCP connections over IPv4 or IPv6 have an original \
                 destination",
            )),
        }
    }
}

fn ipv4(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_in is plain data; the kernel fills at most `len` bytes of it.
    let sin: libc::sockaddr_in = unsafe { getsockopt(fd, libc::SOL_IP, SO_ORIGINAL_DST)? };
    Ok(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    )))
}

fn ipv6(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_in6 is plain data; the kernel fills at most `len` bytes of it.
    let sin6: libc::sockaddr_in6 = unsafe { getsockopt(fd, libc::SOL_IPV6, IP6T_SO_ORIGINAL_DST)? };
    Ok(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(sin6.sin6_addr.s6_addr),
        u16::from_be(sin6.sin6_port),
        sin6.sin6_flowinfo,
        sin6.sin6_scope_id,
    )))
}

/// # Safety
/// `T` must be plain data for which all-zero bytes are a valid value.
unsafe fn getsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    let mut value: T = mem::zeroed();
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    if libc::getsockopt(fd, level, name, (&mut value as *mut T).cast(), &mut len) != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
