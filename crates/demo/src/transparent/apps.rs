//! The apps that call, run unmodified inside a namespace as an unprivileged user (uid 65534,
//! which the capture takes; the sidecars are uid 0, which it leaves alone): `curl` for single
//! requests, `getent` for a name lookup, and a few lines of Python's `http.client` for a
//! connection kept open across a certificate rotation. Nothing here knows a sidecar exists;
//! they call services by name, as the README tells a user to.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use crate::client::Outcome;
use crate::netns::Netns;

/// The unprivileged user the apps run as.
pub const APP_UID: &str = "65534";
/// Upper bound for one call, as `curl --max-time` and for our wait on it.
const CALL_LIMIT: Duration = Duration::from_secs(5);

/// `setpriv` arguments that drop to [`APP_UID`] before running the app.
const AS_APP: [&str; 6] = [
    "--reuid",
    APP_UID,
    "--regid",
    APP_UID,
    "--clear-groups",
    "--",
];

/// The call as the tour prints it: `[role] curl -s ...`, long header values cut short.
pub fn curl_line(role: &str, method: &str, url: &str, headers: &[(&str, &str)]) -> String {
    let mut line = format!("[{role}] curl -s");
    if method != "GET" {
        line.push_str(&format!(" -X {method}"));
    }
    for (k, v) in headers {
        let v = if v.len() > 24 { "…" } else { v };
        line.push_str(&format!(" -H '{k}: {v}'"));
    }
    line.push_str(&format!(" {url}"));
    line
}

/// One request with curl as the app in `ns`: the status and body, or what curl said when no
/// HTTP response came back.
pub async fn curl(ns: &Netns, method: &str, url: &str, headers: &[(&str, &str)]) -> Outcome {
    let mut cmd = ns.command("setpriv");
    cmd.args(AS_APP).args([
        "curl",
        "-q",
        "-sS",
        "-i",
        "--noproxy",
        "*",
        "--max-time",
        "5",
        "-X",
        method,
    ]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(url);
    let out = match run(cmd).await {
        Ok(out) => out,
        Err(e) => return Outcome::NoResponse(format!("{e:#}")),
    };
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Outcome::NoResponse(format!("curl: {}", why.trim_start_matches("curl: ")));
    }
    parse_response(&String::from_utf8_lossy(&out.stdout))
}

/// `curl -i` output: the status line's code and what follows the header block. A 503 the
/// sidecar answered itself says why in its `x-trustmesh-upstream-error` header; that header is
/// kept as the body's first line so the tour can show it.
fn parse_response(text: &str) -> Outcome {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let reason = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-trustmesh-upstream-error")
            .then(|| v.trim().to_string())
    });
    let body = match reason {
        Some(r) => format!("{r}\n{body}"),
        None => body.to_string(),
    };
    Outcome::Response { status, body }
}

/// The IPv4 addresses `name` resolves to for the app in `ns` (`getent ahostsv4`, which asks
/// the namespace's resolver, as any libc program does).
pub async fn resolve(ns: &Netns, name: &str) -> Result<Vec<String>, String> {
    let mut cmd = ns.command("setpriv");
    cmd.args(AS_APP).args(["getent", "ahostsv4", name]);
    let out = run(cmd).await.map_err(|e| format!("{e:#}"))?;
    if !out.status.success() {
        return Err(format!(
            "getent exited {} (name not found)",
            out.status.code().unwrap_or(-1)
        ));
    }
    let mut addrs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    addrs.dedup();
    Ok(addrs)
}

async fn run(mut cmd: tokio::process::Command) -> anyhow::Result<std::process::Output> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(CALL_LIMIT + Duration::from_secs(2), cmd.output())
        .await
        .context("timed out")?
        .context("could not run it")
}

/// A Python client that keeps one HTTP/1.1 connection to `host:port` and sends a GET for each
/// path written to its stdin; for each it prints the status, the local port of its connection
/// (so the tour can tell the connection was the same) and the body.
const KEEP_ALIVE_CLIENT: &str = r#"
import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
for line in sys.stdin:
    try:
        conn.request("GET", line.strip())
        port = conn.sock.getsockname()[1]
        r = conn.getresponse()
        body = r.read().decode(errors="replace").replace("\n", " ")
        print(r.status, port, body, flush=True)
    except Exception as e:
        print(0, 0, repr(e), flush=True)
"#;

/// The system's Python: the app runs as uid 65534, which cannot reach an interpreter under
/// root's home (a pyenv shim first on root's PATH, say).
pub fn python() -> &'static str {
    const SYSTEM: &str = "/usr/bin/python3";
    if std::path::Path::new(SYSTEM).is_file() {
        SYSTEM
    } else {
        "python3"
    }
}

/// The kept-alive client, running as the app in its namespace.
pub struct KeptConnection {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Option<ChildStderr>,
}

/// What one request on the kept connection gave.
pub struct Reply {
    pub outcome: Outcome,
    /// The client's local port: the same port means the same connection.
    pub local_port: u16,
}

impl KeptConnection {
    pub fn open(ns: &Netns, host: &str, port: u16) -> anyhow::Result<KeptConnection> {
        let mut cmd = ns.command("setpriv");
        cmd.args(AS_APP)
            .args([python(), "-c", KEEP_ALIVE_CLIENT, host, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting the Python client")?;
        let stdin = child.stdin.take().context("the client's stdin")?;
        let stdout = child.stdout.take().context("the client's stdout")?;
        let stderr = child.stderr.take();
        Ok(KeptConnection {
            _child: child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            stderr,
        })
    }

    /// What the client said on stderr before it exited (its last line), if anything.
    async fn last_words(&mut self) -> String {
        let Some(mut err) = self.stderr.take() else {
            return String::new();
        };
        let mut text = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), err.read_to_string(&mut text)).await;
        text.lines().last().unwrap_or("").trim().to_string()
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let exchange = async {
            self.stdin.write_all(format!("{path}\n").as_bytes()).await?;
            self.stdin.flush().await?;
            self.lines.next_line().await?.context("the client exited")
        };
        let line = match tokio::time::timeout(CALL_LIMIT + Duration::from_secs(1), exchange).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                let said = self.last_words().await;
                return no_reply(if said.is_empty() {
                    format!("{e:#}")
                } else {
                    format!("{e:#}: {said}")
                });
            }
            Err(_) => return no_reply("timed out".into()),
        };
        let mut parts = line.splitn(3, ' ');
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let local_port = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = parts.next().unwrap_or("").to_string();
        Reply {
            outcome: if status == 0 {
                Outcome::NoResponse(body)
            } else {
                Outcome::Response { status, body }
            },
            local_port,
        }
    }
}

fn no_reply(why: String) -> Reply {
    Reply {
        outcome: Outcome::NoResponse(why),
        local_port: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn curl_output_gives_status_body_and_the_sidecars_reason() {
        let o =
            parse_response("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\":1}");
        assert_eq!(o.status(), Some(200));
        assert_eq!(o.body(), "{\"a\":1}");
        let o = parse_response(
            "HTTP/1.1 503 Service Unavailable\r\nX-Trustmesh-Upstream-Error: TLS error\r\n\r\nupstream connect error",
        );
        assert_eq!(o.status(), Some(503));
        assert_eq!(o.body(), "TLS error\nupstream connect error");
    }
}
