//! A real Kubernetes API server for the cluster tests (tier 2): etcd and kube-apiserver started
//! from the binaries named by `TRUSTMESH_ETCD` and `TRUSTMESH_KUBE_APISERVER` (built by the
//! person running the tests — never by this repository), on loopback ports, with an admin
//! token, a service-account signing key and a kubeconfig for `kubectl` and `trustmesh`. No
//! controller manager, scheduler or kubelet runs: pods are given their status by the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use trustmesh_testkit::net::{free_port, wait_for};
use trustmesh_testkit::process::{Log, Proc};
use trustmesh_testkit::tools::openssl;

/// Where Service cluster IPs come from: the benchmarking range, as every network test here.
pub const SERVICE_CIDR: &str = "198.19.210.0/24";
const ADMIN_TOKEN: &str = "trustmesh-test-admin-token";
/// The cluster's service-account token issuer (and default audience).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The binaries, or why the tests skip.
pub fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let get = |var: &str| -> Result<PathBuf, String> {
        let p = std::env::var_os(var).ok_or_else(|| format!("{var} is not set"))?;
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{var}={} is not a file", p.display());
        Ok(p)
    };
    let found = (get("TRUSTMESH_ETCD")?, get("TRUSTMESH_KUBE_APISERVER")?);
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    assert!(
        kubectl.is_ok_and(|o| o.status.success()),
        "kubectl is needed with TRUSTMESH_KUBE_APISERVER"
    );
    Ok(found)
}

/// etcd and an API server; dropped in field order, the API server first (it hangs when its
/// etcd goes away under it).
pub struct Cluster {
    pub apiserver: Proc,
    pub apiserver_log: Log,
    pub etcd: Proc,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
}

impl Cluster {
    pub fn start(dir: &Path, etcd_bin: &Path, apiserver_bin: &Path) -> Cluster {
        let dir = dir.join("cluster");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let (client, peer) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let (etcd, _etcd_log) = Proc::start_logged(Command::new(etcd_bin).args([
            "--data-dir",
            dir.join("etcd").to_str().unwrap(),
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
            "--log-level",
            "warn",
        ]));
        wait_for("etcd", Duration::from_secs(30), || {
            let out = Command::new("curl")
                .args(["-sf", &format!("{etcd_url}/health")])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("true")
                .then_some(())
        });
        // The service-account key pair (tokens from `kubectl create token` are signed by it).
        openssl(
            &dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "sa.key",
            ],
        );
        openssl(&dir, &["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )
        .unwrap();
        let port = free_port();
        let s = |p: PathBuf| p.to_str().unwrap().to_string();
        let (apiserver, apiserver_log) = Proc::start_logged(Command::new(apiserver_bin).args([
            &format!("--etcd-servers={etcd_url}"),
            &format!("--secure-port={port}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--cert-dir={}", s(dir.join("certs"))),
            &format!("--token-auth-file={}", s(dir.join("tokens.csv"))),
            &format!("--service-account-issuer={ISSUER}"),
            &format!("--service-account-key-file={}", s(dir.join("sa.pub"))),
            &format!(
                "--service-account-signing-key-file={}",
                s(dir.join("sa.key"))
            ),
            &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=RBAC",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ]));
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{ name: test, cluster: {{ server: \"https://127.0.0.1:{port}\", \
                 certificate-authority: \"{ca}\" }} }}]\n\
                 users: [{{ name: admin, user: {{ token: {ADMIN_TOKEN} }} }}]\n\
                 contexts: [{{ name: test, context: {{ cluster: test, user: admin }} }}]\n\
                 current-context: test\n",
                ca = s(dir.join("certs/apiserver.crt")),
            ),
        )
        .unwrap();
        let mut cluster = Cluster {
            apiserver,
            apiserver_log,
            etcd,
            kubeconfig,
            dir,
        };
        wait_for(
            "the API server to be ready",
            Duration::from_secs(90),
            || {
                assert!(
                    cluster.apiserver.running(),
                    "kube-apiserver exited:\n{}",
                    cluster.apiserver_log.text()
                );
                let out = Command::new("curl")
                    .args([
                        "-sk",
                        "-H",
                        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
                        &format!("https://127.0.0.1:{port}/readyz"),
                    ])
                    .output()
                    .ok()?;
                (String::from_utf8_lossy(&out.stdout).trim() == "ok").then_some(())
            },
        );
        // The default namespace's ServiceAccount admission needs no controller for what the
        // tests create, but namespaces must exist before objects in them.
        cluster
    }

    /// `kubectl <args>` against this cluster; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.client().run(args)
    }

    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_output(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        self.client().output(args, stdin)
    }

    /// A kubectl for this cluster that another thread can hold.
    pub fn client(&self) -> Kubectl {
        Kubectl(self.kubeconfig.clone())
    }

    /// A pod that no kubelet runs, on `node` (no scheduler either), given the status a kubelet
    /// would report: running and ready at `ip`.
    pub fn running_pod(&self, ns: &str, name: &str, sa: &str, labels: &str, ip: &str, node: &str) {
        self.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{ name: {name}, namespace: {ns}, labels: {labels} }}\n\
             spec:\n  serviceAccountName: {sa}\n  nodeName: {node}\n  containers:\n  - name: app\n    image: app\n    \
             ports: [{{ name: web, containerPort: 8080 }}]\n"
        ));
        let status = format!(
            "{{\"status\":{{\"phase\":\"Running\",\"podIP\":\"{ip}\",\"podIPs\":[{{\"ip\":\"{ip}\"}}],\
             \"conditions\":[{{\"type\":\"Ready\",\"status\":\"True\"}}]}}}}"
        );
        self.kubectl(&[
            "patch",
            "pod",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }
}

impl Cluster {
    /// `kubectl create token` for `ns/sa` with `audience`.
    pub fn token(&self, ns: &str, sa: &str, audience: &str) -> String {
        self.kubectl(&["create", "token", sa, "-n", ns, "--audience", audience])
            .trim()
            .to_string()
    }

    /// The roots published in `ns` (`istio-ca-root-cert`), once there.
    pub fn published_roots(&self, ns: &str) -> Option<String> {
        let out = self.kubectl_output(
            &[
                "get",
                "configmap",
                "istio-ca-root-cert",
                "-n",
                ns,
                "-o",
                "jsonpath={.data.root-cert\\.pem}",
            ],
            None,
        );
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    }
}

/// Runs a future to completion from inside the blocking closures `wait_for` takes.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// `kubectl --kubeconfig <file>`.
#[derive(Clone)]
pub struct Kubectl(pub PathBuf);

impl Kubectl {
    /// `kubectl <args>`; panics with its output when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args, None);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn output(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.0)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }
}

/// A fresh cluster in a temporary directory, or `None` (after a SKIP line naming `what`) when
/// the binaries are not given.
pub fn start_or_skip(what: &str) -> Option<(tempfile::TempDir, Cluster)> {
    let (etcd, apiserver) = match binaries() {
        Ok(b) => b,
        Err(why) => {
            eprintln!(
                "SKIP {what}: {why} (set TRUSTMESH_ETCD and TRUSTMESH_KUBE_APISERVER to etcd and \
                 kube-apiserver binaries)"
            );
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), &etcd, &apiserver);
    Some((dir, cluster))
}

/// The URI SANs of the first certificate in `pem`.
pub fn leaf_uris(pem: &str) -> Vec<String> {
    let chain = trustmesh_identity::pem::certs_from_pem(pem.as_bytes()).expect("a PEM certificate");
    trustmesh_testkit::pki::uri_sans(&chain[0])
}
