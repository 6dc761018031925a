//! The Prometheus text of Istio's families: label text is built here, at scrape time, never on
//! the request path. Each family's HELP and TYPE once, then its samples; histograms as
//! cumulative `_bucket{le=...}`, `_sum` and `_count`.

use std::fmt::Write;

use super::labels::{escape, lock, Reporter, Workload, BUCKETS, UNKNOWN};
use super::store::{Histogram, HttpSeries, Istio, Key, TcpSeries};

/// The 25 labels of one series, as Istio's stats filter fills them for each reporter.
fn labels(key: &Key, own: &Workload) -> String {
    let peer = &*key.peer.0;
    let (src, dst, src_principal, dst_principal) = match key.reporter {
        Reporter::Destination => (peer, own, &key.peer_principal.0, &key.own_principal.0),
        Reporter::Source => (own, peer, &key.own_principal.0, &key.peer_principal.0),
    };
    let service = &*key.service.0;
    // Inbound, a request with no host is labelled with our canonical service; the namespace
    // of the service is ours. Outbound, Istio takes the peer's namespace.
    let (host, name, svc_ns) = match key.reporter {
        Reporter::Destination if &*service.host == UNKNOWN => (
            &*own.canonical_service,
            &*own.canonical_service,
            &*own.namespace,
        ),
        Reporter::Destination => (&*service.host, &*service.name, &*own.namespace),
        Reporter::Source => (&*service.host, &*service.name, &*peer.namespace),
    };
    let grpc = key.grpc.map(|g| g.to_string()).unwrap_or_default();
    let code = key.code.to_string();
    let pairs: [(&str, &str); 25] = [
        (
            "reporter",
            match key.reporter {
                Reporter::Source => "source",
                Reporter::Destination => "destination",
            },
        ),
        ("source_workload", &src.name),
        ("source_workload_namespace", &src.namespace),
        ("source_principal", src_principal),
        ("source_app", &src.app),
        ("source_version", &src.version),
        ("source_canonical_service", &src.canonical_service),
        ("source_canonical_revision", &src.canonical_revision),
        ("source_cluster", &src.cluster),
        ("destination_workload", &dst.name),
        ("destination_workload_namespace", &dst.namespace),
        ("destination_principal", dst_principal),
        ("destination_app", &dst.app),
        ("destination_version", &dst.version),
        ("destination_service", host),
        ("destination_service_name", name),
        ("destination_service_namespace", svc_ns),
        ("destination_canonical_service", &dst.canonical_service),
        ("destination_canonical_revision", &dst.canonical_revision),
        ("destination_cluster", &dst.cluster),
        ("request_protocol", key.protocol.label()),
        ("response_code", &code),
        ("grpc_response_status", &grpc),
        ("response_flags", key.flags),
        ("connection_security_policy", key.security.label()),
    ];
    let mut out = String::with_capacity(1024);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out
}

/// A histogram family: name, help, and which of a series' histograms it shows.
type HistogramFamily = (&'static str, &'static str, fn(&HttpSeries) -> &Histogram);
/// A TCP counter family: name, help, and which of a series' counts it shows.
type CounterFamily = (&'static str, &'static str, fn(&TcpSeries) -> u64);

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (bound, n) in BUCKETS.iter().zip(h.counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

impl Istio {
    /// Istio's families (only those with samples), then trustmesh's readiness family and the
    /// overflow counter.
    pub fn render(&self, out: &mut String) {
        let own = self.own();
        let http: Vec<_> = lock(&self.http)
            .iter()
            .map(|(k, s)| (labels(k, &own), s.clone()))
            .collect();
        if !http.is_empty() {
            header(
                out,
                "istio_requests_total",
                "Requests handled (Istio standard metric).",
                "counter",
            );
            for (l, s) in &http {
                let _ = writeln!(out, "istio_requests_total{{{l}}} {}", s.requests);
            }
            let histograms: [HistogramFamily; 3] = [
                (
                    "istio_request_duration_milliseconds",
                    "Duration of requests in milliseconds (Istio standard metric).",
                    |s| &s.duration,
                ),
                (
                    "istio_request_bytes",
                    "Request sizes in bytes (Istio standard metric).",
                    |s| &s.request_bytes,
                ),
                (
                    "istio_response_bytes",
                    "Response sizes in bytes (Istio standard metric).",
                    |s| &s.response_bytes,
                ),
            ];
            for (name, help, pick) in histograms {
                header(out, name, help, "histogram");
                for (l, s) in &http {
                    histogram(out, name, l, pick(s));
                }
            }
        }
        let tcp: Vec<_> = lock(&self.tcp)
            .iter()
            .map(|(k, s)| (labels(k, &own), s.clone()))
            .collect();
        if !tcp.is_empty() {
            let counters: [CounterFamily; 4] = [
                (
                    "istio_tcp_sent_bytes_total",
                    "Bytes sent towards the client of TCP connections (Istio standard metric).",
                    |s| s.sent,
                ),
                (
                    "istio_tcp_received_bytes_total",
                    "Bytes received from the client of TCP connections (Istio standard metric).",
                    |s| s.received,
                ),
                (
                    "istio_tcp_connections_opened_total",
                    "TCP connections opened (Istio standard metric).",
                    |s| s.opened,
                ),
                (
                    "istio_tcp_connections_closed_total",
                    "TCP connections closed (Istio standard metric).",
                    |s| s.closed,
                ),
            ];
            for (name, help, pick) in counters {
                header(out, name, help, "counter");
                for (l, s) in &tcp {
                    let _ = writeln!(out, "{name}{{{l}}} {}", pick(s));
                }
            }
        }
        self.readiness.render(out, &own);
        header(
            out,
            "trustmesh_istio_metrics_overflow_total",
            "Istio metric samples dropped, or labels written as unknown, because a cardinality cap was reached.",
            "counter",
        );
        let _ = writeln!(
            out,
            "trustmesh_istio_metrics_overflow_total {}",
            self.overflow.load(std::sync::atomic::Ordering::Relaxed)
                + self
                    .readiness
                    .overflow
                    .load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}
