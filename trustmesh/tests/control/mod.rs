//! The control plane's end-to-end harness (tier 2): a CA folder made with `trustmesh ca init`,
//! `trustmesh control` processes on the ports a test picks (so one can be killed and started
//! again on the same port), sidecars with `controlPlane:` and no policy or mesh files, and an
//! xDS client of our own xDS crate for what only a client can ask (another namespace,
//! another workload's labels, ztunnel's types).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trustmesh_testkit::http::{blocking_get, http_backend, metric};
use trustmesh_testkit::net::{free_port, wait_for};
use trustmesh_testkit::process::{Log, Proc};
use trustmesh_testkit::tools::run_ok;

pub const TD: &str = "cluster.local";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trustmesh"))
}

/// A mesh's files: `ca/` (a root CA), `config/` (the Istio YAML the control plane serves),
/// and one SVID folder per workload.
pub struct Mesh {
    pub dir: PathBuf,
}

impl Mesh {
    pub fn new(dir: &Path) -> Mesh {
        ca_init(&dir.join("ca"), TD);
        std::fs::create_dir_all(dir.join("config")).unwrap();
        Mesh {
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("ca/root-cert.pem")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// Issues `spiffe://cluster.local/ns/<ns>/sa/<sa>` into `<dir>/<ns>-<sa>/`; returns it.
    pub fn svid(&self, ns: &str, sa: &str) -> PathBuf {
        let out = self.dir.join(format!("{ns}-{sa}"));
        run_ok(Command::new(bin()).args([
            "ca",
            "issue",
            "--ca",
            self.ca().to_str().unwrap(),
            "--spiffe-id",
            &format!("spiffe://{TD}/ns/{ns}/sa/{sa}"),
            "--out",
            out.to_str().unwrap(),
        ]));
        out
    }

    /// Writes `yaml` as `config/<file>` the way config management does: a new file renamed
    /// into place.
    pub fn write(&self, file: &str, yaml: &str) {
        let tmp = self.config().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.config().join(file)).unwrap();
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.config().join(file)).unwrap();
    }
}

/// `trustmesh ca init` of a root CA for `td` into `out`.
pub fn ca_init(out: &Path, td: &str) {
    run_ok(Command::new(bin()).args([
        "ca",
        "init",
        "--trust-domain",
        td,
        "--out",
        out.to_str().unwrap(),
    ]));
}

/// A running `trustmesh control`.
pub struct Control {
    pub proc: Proc,
    pub log: Log,
    pub grpc: SocketAddr,
    pub monitoring: SocketAddr,
}

impl Control {
    /// Starts `trustmesh control` for `mesh` on `grpc` (port 0: any) with `extra` flags.
    pub fn start(mesh: &Mesh, grpc: u16, name: &str, extra: &[&str]) -> Control {
        let listen = format!("127.0.0.1:{grpc}");
        let mut args = vec![
            "control",
            "--ca",
            mesh.ca().to_str().unwrap().to_string().leak(),
            "--listen",
            listen.as_str().to_string().leak(),
            "--monitoring-listen",
            "127.0.0.1:0",
            "--config-dir",
            mesh.config().to_str().unwrap().to_string().leak(),
            "--name",
            name.to_string().leak(),
        ];
        args.extend_from_slice(extra);
        Control::spawn(&args)
    }

    /// Starts `trustmesh <args>` (a `control` command line) and reads its ports.
    pub fn spawn(args: &[&str]) -> Control {
        let (mut proc, log) = Proc::start_logged(Command::new(bin()).args(args));
        let grpc = proc
            .wait_line("listening grpc=", Duration::from_secs(30))
            .parse()
            .unwrap();
        let monitoring = proc
            .wait_line("listening monitoring=", Duration::from_secs(10))
            .parse()
            .unwrap();
        Control {
            proc,
            log,
            grpc,
            monitoring,
        }
    }

    /// `/debug/syncz` as `trustmesh proxy-status --json` prints it (whatever its exit code:
    /// it is 1 while a sidecar is out of sync).
    pub fn syncz(&self) -> serde_json::Value {
        proxy_status(&[self]).1[0].clone()
    }

    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://{}/metrics", self.monitoring)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `trustmesh proxy-status --json` against every replica: (exit code, the documents).
pub fn proxy_status(controls: &[&Control]) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(bin());
    cmd.arg("proxy-status").args(["-o", "json"]);
    for c in controls {
        cmd.arg("--control").arg(c.monitoring.to_string());
    }
    let out = cmd.output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

/// The proxies one replica reports, by identity.
pub fn proxies(doc: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    doc["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (p["identity"].as_str().unwrap_or("").to_string(), p.clone()))
        .collect()
}

/// A sidecar config that takes everything but its certificate from the control plane(s).
pub fn sidecar_yaml(
    ns: &str,
    sa: &str,
    svid: &Path,
    controls: &[SocketAddr],
    root: &Path,
    listeners: &str,
    admin: u16,
) -> String {
    let addresses: Vec<String> = controls.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "workload:\n  namespace: {ns}\n  serviceAccount: {sa}\n  labels: {{ app: {sa} }}\n\
         certs:\n  key: {key}\n  certChain: {chain}\n\
         controlPlane:\n  addresses: [{addresses}]\n  rootCert: {root}\n  initialFetchTimeout: 20s\n\
         {listeners}\
         admin:\n  address: \"127.0.0.1:{admin}\"\n\
         reloadPoll: 200ms\n",
        key = svid.join("key.pem").display(),
        chain = svid.join("cert-chain.pem").display(),
        addresses = addresses.join(", "),
        root = root.display(),
    )
}

/// What our own xDS client received on one stream, or how the stream was refused.
#[derive(Default)]
pub struct Seen {
    pub names: BTreeMap<String, Vec<String>>,
    pub lost: Vec<String>,
}

struct Recorder(Arc<Mutex<Seen>>);

impl trustmesh_xds::client::Handler for Recorder {
    fn apply(
        &mut self,
        type_url: &str,
        updated: Vec<trustmesh_xds::pb::Resource>,
        _removed: Vec<String>,
    ) -> Result<(), String> {
        let mut s = self.0.lock().unwrap();
        let names = s.names.entry(type_url.to_string()).or_default();
        names.extend(updated.into_iter().map(|r| r.name));
        Ok(())
    }
    fn held(&self, _: &str) -> std::collections::HashMap<String, String> {
        Default::default()
    }
    fn connection(&mut self, state: trustmesh_xds::client::Connection<'_>) {
        if let trustmesh_xds::client::Connection::Lost { why, .. } = state {
            self.0.lock().unwrap().lost.push(why.to_string());
        }
    }
}

/// Connects to `control` as the SVID in `svid`, claiming `namespace` and `labels`, subscribed
/// to `types`; returns what arrived (or why it was refused) after `wait`.
pub async fn xds_as(
    control: SocketAddr,
    root: &Path,
    svid: &Path,
    namespace: &str,
    labels: &[(&str, &str)],
    types: &[&str],
    wait: Duration,
) -> Seen {
    let chain = std::fs::read_to_string(svid.join("cert-chain.pem")).unwrap();
    let key = std::fs::read_to_string(svid.join("key.pem")).unwrap();
    let creds = trustmesh_xds::client::Credentials {
        client_cert: Some((chain, key)),
        bearer_token: None,
    };
    xds_with(control, root, creds, namespace, labels, types, wait).await
}

/// [`xds_as`] with any credentials (a bearer token at bootstrap).
pub async fn xds_with(
    control: SocketAddr,
    root: &Path,
    creds: trustmesh_xds::client::Credentials,
    namespace: &str,
    labels: &[(&str, &str)],
    types: &[&str],
    wait: Duration,
) -> Seen {
    use prost_types::value::Kind;
    let s = |v: &str| prost_types::Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let label_struct = prost_types::Struct {
        fields: labels.iter().map(|(k, v)| (k.to_string(), s(v))).collect(),
    };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("NAMESPACE".to_string(), s(namespace));
    fields.insert(
        "LABELS".to_string(),
        prost_types::Value {
            kind: Some(Kind::StructValue(label_struct)),
        },
    );
    let opts = trustmesh_xds::client::Options {
        servers: vec![format!("https://{control}")],
        root_pem: std::fs::read(root).unwrap(),
        server_name: "istiod.istio-system.svc".into(),
        credentials: Arc::new(move || creds.clone()),
        node: trustmesh_xds::core::Node {
            id: "test~~probe".into(),
            metadata: Some(prost_types::Struct {
                fields: fields.into_iter().collect(),
            }),
            ..Default::default()
        },
        types: types.iter().map(|t| t.to_string()).collect(),
        backoff_min: Duration::from_secs(5),
        backoff_max: Duration::from_secs(5),
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let task = tokio::spawn(trustmesh_xds::client::run(
        opts,
        Arc::new(Mutex::new(Recorder(seen.clone()))),
    ));
    tokio::time::sleep(wait).await;
    task.abort();
    let s = std::mem::take(&mut *seen.lock().unwrap());
    s
}

pub fn free() -> u16 {
    free_port()
}

/// A server sidecar (foo/server, HTTP in front of the kit's HTTP backend) and a client sidecar
/// (foo/client, an outbound listener to the server expecting its identity), killed on drop.
pub struct Pair {
    _server: trustmesh_testkit::process::Proc,
    _client: trustmesh_testkit::process::Proc,
    /// The client's outbound port: requests through it cross both sidecars.
    pub out: u16,
    pub server_admin: u16,
}

pub fn start_pair(mesh: &Mesh, controls: &[std::net::SocketAddr]) -> Pair {
    start_pair_with(mesh, controls, mesh.svid("foo", "server"))
}

/// [`start_pair`] with the server's certificate files in `server_svid` (an agent's output).
pub fn start_pair_with(
    mesh: &Mesh,
    controls: &[std::net::SocketAddr],
    server_svid: std::path::PathBuf,
) -> Pair {
    let backend = backend_blocking();
    let (inb, out, sa, ca) = (free(), free(), free(), free());
    let client_svid = mesh.svid("foo", "client");
    let server_yaml = sidecar_yaml(
        "foo",
        "server",
        &server_svid,
        controls,
        &mesh.root(),
        &format!("inbound:\n  - {{ port: {inb}, targetPort: {backend}, protocol: http }}\n"),
        sa,
    );
    let client_yaml = sidecar_yaml(
        "foo",
        "client",
        &client_svid,
        controls,
        &mesh.root(),
        &format!(
            "outbound:\n  - {{ port: {out}, peer: \"127.0.0.1:{inb}\", peerIdentity: \
             \"spiffe://{TD}/ns/foo/sa/server\", protocol: http }}\n"
        ),
        ca,
    );
    let server = start_proxy(mesh, "server", &server_yaml, sa);
    let client = start_proxy(mesh, "client", &client_yaml, ca);
    Pair {
        _server: server,
        _client: client,
        out,
        server_admin: sa,
    }
}

pub fn backend_blocking() -> u16 {
    // The kit's HTTP backend runs on a runtime of its own thread for the whole test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            tx.send(http_backend("server").await).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

pub fn start_proxy(
    mesh: &Mesh,
    name: &str,
    yaml: &str,
    admin: u16,
) -> trustmesh_testkit::process::Proc {
    let cfg = mesh.dir.join(format!("{name}.yaml"));
    std::fs::write(&cfg, yaml).unwrap();
    let mut p = trustmesh_testkit::process::Proc::start(std::process::Command::new(bin()).args([
        "proxy",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    wait_for(
        &format!("sidecar {name} ready"),
        Duration::from_secs(25),
        || {
            assert!(p.running(), "sidecar {name} exited");
            (status(admin, "/healthz/ready") == 200).then_some(())
        },
    );
    p
}

/// The status of `GET path` on 127.0.0.1:`port` (0 when nothing answered).
pub fn status(port: u16, path: &str) -> u16 {
    blocking_get(([127, 0, 0, 1], port).into(), path).map_or(0, |(s, _)| s)
}

/// A sample of the sidecar's `/metrics` on admin port `admin`.
pub fn sidecar_metric(admin: u16, name: &str) -> Option<u64> {
    let (_, text) = blocking_get(([127, 0, 0, 1], admin).into(), "/metrics")?;
    metric(&text, name)
}

pub fn in_sync(c: &Control, identities: &[&str]) -> bool {
    let doc = c.syncz();
    let p = proxies(&doc);
    identities.iter().all(|id| {
        p.get(&format!("spiffe://{TD}/ns/foo/sa/{id}"))
            .is_some_and(|x| x["inSync"].as_bool() == Some(true))
    })
}
