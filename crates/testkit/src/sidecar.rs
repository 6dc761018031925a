//! The sidecar's config file, written the one way both tiers need it: [`Cfg`] holds what a test
//! varies (workload, SVID files, bundles, mesh, listeners, admin port, extra top-level lines)
//! and renders the YAML a `trustmesh proxy` process or `trustmesh_proxy::start` reads. Policy
//! folders are written the way config management writes them: whole files, renamed into place.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use crate::pki::openssl::OpensslCa;
use crate::pki::write_pki;

pub struct Inbound {
    pub port: u16,
    pub target: u16,
    /// `http` or `tcp`; further keys of the listener may follow (`http, appProtocol: http2`).
    pub protocol: &'static str,
}

pub struct Outbound {
    pub port: u16,
    pub peer: u16,
    /// `peerIdentity: "..."` or `peerTrustDomain: ...`.
    pub expect: String,
}

pub struct Cfg<'a> {
    pub ns: &'a str,
    pub sa: &'a str,
    /// (cert-chain.pem, key.pem).
    pub cert: &'a (PathBuf, PathBuf),
    /// `trustBundles` entries: `<td>=<file>` or a directory.
    pub bundles: Vec<String>,
    /// The `mesh:` value: an inline map or a quoted file name.
    pub mesh: String,
    pub policy_dir: &'a Path,
    pub inbound: Vec<Inbound>,
    pub outbound: Vec<Outbound>,
    /// The admin port on 127.0.0.1; 0 lets the proxy pick one (in-process tests read it back
    /// from the bound addresses).
    pub admin: u16,
    /// Top-level lines appended as they are (`reloadPoll: 100ms\n`).
    pub extra: &'a str,
}

/// The SVID files a sidecar config names relative to itself, as [`write_pki`] writes them.
pub static BESIDE: LazyLock<(PathBuf, PathBuf)> =
    LazyLock::new(|| (PathBuf::from("cert-chain.pem"), PathBuf::from("key.pem")));

impl<'a> Cfg<'a> {
    /// Workload `ns/sa` (labelled `app: <sa>`) with the SVID `cert`, trusting `ca` for its
    /// trust domain (also the mesh's), policies from `pol`, no listeners yet.
    pub fn new(
        ns: &'a str,
        sa: &'a str,
        cert: &'a (PathBuf, PathBuf),
        ca: &OpensslCa,
        pol: &'a Path,
        admin: u16,
    ) -> Cfg<'a> {
        let bundle = format!("{}={}", ca.td, ca.root.display());
        Cfg::trusting(ns, sa, cert, &ca.td, vec![bundle], pol, admin)
    }

    /// [`Cfg::new`] in trust domain `td` with the `trustBundles` entries `bundles`.
    pub fn trusting(
        ns: &'a str,
        sa: &'a str,
        cert: &'a (PathBuf, PathBuf),
        td: &str,
        bundles: Vec<String>,
        pol: &'a Path,
        admin: u16,
    ) -> Cfg<'a> {
        Cfg {
            ns,
            sa,
            cert,
            bundles,
            mesh: format!("{{ trustDomain: {td} }}"),
            policy_dir: pol,
            inbound: vec![],
            outbound: vec![],
            admin,
            extra: "",
        }
    }

    /// Workload `foo/<sa>` whose files lie beside its config, as [`write_beside`] writes them:
    /// `cert-chain.pem`, `key.pem`, `root-cert.pem` (cluster.local) and `policies/`.
    pub fn beside(sa: &'a str) -> Cfg<'a> {
        Cfg {
            ns: "foo",
            sa,
            cert: &BESIDE,
            bundles: vec!["cluster.local=root-cert.pem".into()],
            mesh: "{ trustDomain: cluster.local }".into(),
            policy_dir: Path::new("policies"),
            inbound: vec![],
            outbound: vec![],
            admin: 0,
            extra: "",
        }
    }

    /// Workload `foo/app` with one plaintext-or-mTLS HTTP listener `inb` in front of `backend`,
    /// trusting `ca` for `cluster.local`, policies from `pol`.
    pub fn http_app(
        ca: &OpensslCa,
        cert: &'a (PathBuf, PathBuf),
        pol: &'a Path,
        inb: u16,
        backend: u16,
        admin: u16,
    ) -> Cfg<'a> {
        Cfg::new("foo", "app", cert, ca, pol, admin).inbound(inb, backend, "http")
    }

    /// Adds an inbound listener `port` in front of the app's `target`.
    pub fn inbound(mut self, port: u16, target: u16, protocol: &'static str) -> Cfg<'a> {
        self.inbound.push(Inbound {
            port,
            target,
            protocol,
        });
        self
    }

    /// Adds an outbound listener `port` calling the peer sidecar at `peer`, expecting `expect`.
    pub fn outbound(mut self, port: u16, peer: u16, expect: impl Into<String>) -> Cfg<'a> {
        self.outbound.push(Outbound {
            port,
            peer,
            expect: expect.into(),
        });
        self
    }

    /// Sets the extra top-level lines.
    pub fn extra(mut self, extra: &'a str) -> Cfg<'a> {
        self.extra = extra;
        self
    }

    pub fn yaml(&self) -> String {
        let mut y = format!(
            "workload:\n  namespace: {}\n  serviceAccount: {}\n  labels: {{ app: {} }}\n\
             certs:\n  key: {}\n  certChain: {}\n\
             trustBundles:\n",
            self.ns,
            self.sa,
            self.sa,
            self.cert.1.display(),
            self.cert.0.display()
        );
        for b in &self.bundles {
            y.push_str(&format!("  - \"{b}\"\n"));
        }
        y.push_str(&format!("mesh: {}\n", self.mesh));
        y.push_str(&format!("policyDir: {}\n", self.policy_dir.display()));
        let inbound = self.inbound.iter().map(|i| {
            format!(
                "{{ port: {}, targetPort: {}, protocol: {} }}",
                i.port, i.target, i.protocol
            )
        });
        list(&mut y, "inbound", inbound);
        let outbound = self.outbound.iter().map(|o| {
            format!(
                "{{ port: {}, peer: \"127.0.0.1:{}\", {} }}",
                o.port, o.peer, o.expect
            )
        });
        list(&mut y, "outbound", outbound);
        y.push_str(&format!(
            "admin:\n  address: \"127.0.0.1:{}\"\n",
            self.admin
        ));
        y.push_str(self.extra);
        y
    }
}

/// Appends the block list `key:` with `items` (`[]` when there are none).
fn list(y: &mut String, key: &str, items: impl Iterator<Item = String>) {
    y.push_str(&format!("{key}:\n"));
    let before = y.len();
    for item in items {
        y.push_str(&format!("  - {item}\n"));
    }
    if y.len() == before {
        y.push_str("  []\n");
    }
}

/// Writes a [`Cfg::beside`]-style sidecar into `dir`: the PKI for `spiffe://cluster.local/ns/
/// <ns>/sa/<sa>` unless `cert-chain.pem` is already there, an (empty) `policies` folder and
/// `proxy.yaml`; returns the config's path.
pub fn write_beside(dir: &Path, cfg: &Cfg) -> PathBuf {
    if !dir.join("cert-chain.pem").exists() {
        let id = format!("spiffe://cluster.local/ns/{}/sa/{}", cfg.ns, cfg.sa);
        write_pki(dir, &id);
    }
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, cfg.yaml()).unwrap();
    path
}

/// [`write_beside`] for `foo/<sa>` with the given inbound listeners (`port`, `targetPort`,
/// `protocol`) and `extra` top-level lines; the admin port is the proxy's pick.
pub fn write_proxy_config(
    dir: &Path,
    sa: &str,
    inbound: &[(u16, u16, &'static str)],
    extra: &str,
) -> PathBuf {
    let mut cfg = Cfg::beside(sa).extra(extra);
    for &(port, target, protocol) in inbound {
        cfg = cfg.inbound(port, target, protocol);
    }
    write_beside(dir, &cfg)
}

/// Creates `dir/name` for policy files; returns it.
pub fn policy_dir(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Writes `dir/file` then renames it into place, as config management tools do, so a watching
/// proxy never sees half a file.
pub fn write_policy(dir: &Path, file: &str, yaml: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}
