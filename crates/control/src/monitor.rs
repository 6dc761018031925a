//! The control plane's HTTP port (istiod's monitoring port 15014): `/metrics` in Prometheus
//! text, `/debug/syncz` (every connected sidecar and whether it is in sync, which
//! `trustmesh proxy-status` prints), `/ready`.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::status::{short_type, syncz};
use crate::views::ControlPlane;

pub async fn serve(cp: Arc<ControlPlane>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let cp = cp.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let cp = cp.clone();
                async move { Ok::<_, Infallible>(answer(&cp, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(cp: &ControlPlane, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", metrics(cp)),
        "/debug/syncz" => {
            let w = cp.world();
            let doc = syncz(
                &cp.status,
                &cp.name,
                &w.version,
                w.generation,
                w.resource_count(),
                &cp.problems(),
            );
            (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&doc).unwrap_or_default(),
            )
        }
        "/ready" => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /debug/syncz, /ready\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", ctype.parse().expect("static header"));
    r
}

fn metrics(cp: &ControlPlane) -> String {
    let c = &cp.status.counters;
    let w = cp.world();
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    line(
        "pilot_xds",
        "gauge",
        "Connected xDS clients.",
        cp.status.connected() as u64,
    );
    line(
        "pilot_xds_pushes",
        "counter",
        "xDS responses sent.",
        c.pushes.load(Relaxed),
    );
    line(
        "pilot_xds_push_bytes",
        "counter",
        "Bytes of xDS responses sent.",
        c.push_bytes.load(Relaxed),
    );
    line(
        "pilot_xds_acks",
        "counter",
        "xDS responses acknowledged.",
        c.acks.load(Relaxed),
    );
    line(
        "pilot_total_xds_rejects",
        "counter",
        "xDS responses refused by clients (NACK).",
        c.nacks.load(Relaxed),
    );
    line(
        "trustmesh_control_refused_streams",
        "counter",
        "xDS streams refused at admission (authentication, namespace or labels).",
        c.refused_streams.load(Relaxed),
    );
    line(
        "trustmesh_control_config_generation",
        "gauge",
        "Configuration generation served.",
        w.generation,
    );
    line(
        "trustmesh_control_config_problems",
        "gauge",
        "Problems in the config source (the last good version of those files is served).",
        cp.problems().len() as u64,
    );
    let mut nacked: std::collections::BTreeMap<String, u64> = Default::default();
    for conn in cp.status.connections() {
        for (t, s) in conn.types {
            if s.nack.is_some() {
                *nacked.entry(short_type(&t).to_string()).or_default() += 1;
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP trustmesh_control_nacked_proxies Connected clients whose last answer for a type was a NACK.\n# TYPE trustmesh_control_nacked_proxies gauge"
    );
    for (t, n) in nacked {
        let _ = writeln!(out, "trustmesh_control_nacked_proxies{{type=\"{t}\"}} {n}");
    }
    out
}
