//! Where forwarded queries go: the pod's own resolvers, read from `/etc/resolv.conf`.
//!
//! Istio's agent forwards what is not a mesh name to the `nameserver` entries of the pod's
//! resolv.conf on port 53, in order, and keeps its `search` list (`pkg/dns/client/dns.go`,
//! `NewLocalDNSServer`); so do we. The file is read as glibc reads it (resolv.conf(5)): a line
//! starting with `#` or `;` is a comment, `search` and `domain` replace each other (the last one
//! wins), and a `nameserver` line whose address cannot be used is skipped with a warning, not a
//! failure, since the workload's own resolver skips it too. A file with no usable nameserver is
//! an error: every forwarded query would fail.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The port of every `nameserver` in resolv.conf.
pub const DNS_PORT: u16 = 53;
/// The file the workload's resolver reads.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The resolvers to forward to, in the order they are tried, and the search domains the
/// workload's resolver appends (used to recognise `<mesh name>.<search domain>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    pub servers: Vec<SocketAddr>,
    /// Lowercase, without the trailing dot.
    pub search: Vec<String>,
}

/// Why resolv.conf gave no upstream.
#[derive(Debug, thiserror::Error)]
pub enum ResolvError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{} names no usable nameserver, so no query could be forwarded", file.display())]
    NoNameserver { file: PathBuf },
}

impl Upstreams {
    /// These servers, no search domains.
    pub fn new(servers: Vec<SocketAddr>) -> Upstreams {
        Upstreams {
            servers,
            search: Vec::new(),
        }
    }

    /// The same servers with these search domains (any case, trailing dot optional).
    pub fn with_search<S: AsRef<str>>(mut self, domains: &[S]) -> Upstreams {
        self.search = domains.iter().filter_map(|d| domain(d.as_ref())).collect();
        self
    }

    /// The pod's resolvers: [`RESOLV_CONF`].
    pub fn system() -> Result<Upstreams, ResolvError> {
        Upstreams::from_resolv_conf(Path::new(RESOLV_CONF))
    }

    /// Reads `file` in resolv.conf format.
    pub fn from_resolv_conf(file: &Path) -> Result<Upstreams, ResolvError> {
        let text = std::fs::read_to_string(file).map_err(|source| ResolvError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Upstreams::parse(&text, file)
    }

    /// Parses resolv.conf text; `file` names it in warnings and errors.
    pub fn parse(text: &str, file: &Path) -> Result<Upstreams, ResolvError> {
        let mut servers = Vec::new();
        let mut search = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with(['#', ';']) {
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => match words.next().map(str::parse::<IpAddr>) {
                    Some(Ok(ip)) => servers.push(SocketAddr::new(ip, DNS_PORT)),
                    _ => tracing::warn!(
                        file = %file.display(),
                        line = n + 1,
                        "skipping a nameserver line without an address this proxy can use \
                         (an IP address without a zone)"
                    ),
                },
                Some("search") => search = words.filter_map(domain).collect(),
                Some("domain") => search = words.next().and_then(domain).into_iter().collect(),
                _ => {}
            }
        }
        if servers.is_empty() {
            return Err(ResolvError::NoNameserver {
                file: file.to_path_buf(),
            });
        }
        Ok(Upstreams { servers, search })
    }
}

/// A search domain as compared with query names; the root (`.`) is no search domain.
fn domain(text: &str) -> Option<String> {
    let d = text.trim_end_matches('.').to_ascii_lowercase();
    (!d.is_empty()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Upstreams, ResolvError> {
        Upstreams::parse(text, Path::new("resolv.conf"))
    }

    #[test]
    fn reads_a_kubernetes_pod_resolv_conf() {
        let u = parse(
            "# written by the kubelet\n\
             search bookinfo.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\n\
             options ndots:5\n",
        )
        .unwrap();
        assert_eq!(u.servers, vec!["10.96.0.10:53".parse().unwrap()]);
        assert_eq!(
            u.search,
            [
                "bookinfo.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
    }

    #[test]
    fn keeps_nameservers_in_order_and_skips_unusable_ones() {
        let u = parse(
            "nameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver\n; nameserver 10.9.9.9\n\
             nameserver ::1\n",
        )
        .unwrap();
        assert_eq!(
            u.servers,
            vec!["10.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }

    #[test]
    fn the_last_search_or_domain_line_wins() {
        let u = parse("search a.example b.example\ndomain Corp.Example.\nnameserver 10.0.0.1\n")
            .unwrap();
        assert_eq!(u.search, ["corp.example"]);
        let u = parse("domain corp.example\nsearch a.example .\nnameserver 10.0.0.1\n").unwrap();
        assert_eq!(u.search, ["a.example"]);
    }

    #[test]
    fn no_usable_nameserver_is_an_error_naming_the_file() {
        let err = parse("search example.com\nnameserver not-an-ip\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "resolv.conf names no usable nameserver, so no query could be forwarded"
        );
        let err = Upstreams::from_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/resolv.conf: "),
            "{err}"
        );
    }
}
