//! The command operators trustmesh knows and the value of each for one record (`None`:
//! unset, Envoy's `-`); `format` parses text into them.

use crate::accesslog::record::AccessLog;

/// A request attribute `%REQ(...)%` can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Field {
    Method,
    Path,
    Authority,
    RequestId,
    /// Index into [`Needs::request_headers`].
    Header(usize),
    /// A pseudo-header trustmesh does not record (`:scheme`): always unset.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    StartTime,
    Req(Field, Option<Field>),
    Resp(usize, Option<usize>),
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    ConnectionTerminationDetails,
    UpstreamTransportFailureReason,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    DownstreamRemoteAddress { port: bool },
    DownstreamLocalAddress { port: bool },
    DownstreamPeerUriSan,
    RequestedServerName,
    RouteName,
    Protocol,
    DynamicMetadata(String, Option<String>),
}

pub(super) fn value(op: &Op, r: &AccessLog) -> Option<String> {
    fn s<T: AsRef<str>>(v: &Option<T>) -> Option<String> {
        v.as_ref().map(|v| v.as_ref().to_string())
    }
    match op {
        Op::StartTime => Some(start_time(&r.time.text())),
        Op::Req(a, b) => req(a, r).or_else(|| b.as_ref().and_then(|b| req(b, r))),
        Op::Resp(a, b) => captured(&r.response_headers, *a)
            .or_else(|| b.and_then(|b| captured(&r.response_headers, b))),
        Op::ResponseCode => Some(r.status.unwrap_or(0).to_string()),
        Op::ResponseFlags => r.response_flags.map(str::to_string),
        Op::ResponseCodeDetails => s(&r.response_code_details),
        Op::ConnectionTerminationDetails => s(&r.connection_termination_details),
        Op::UpstreamTransportFailureReason | Op::UpstreamLocalAddress => None,
        Op::BytesReceived => Some(r.bytes_received.unwrap_or(0).to_string()),
        Op::BytesSent => Some(r.bytes_sent.unwrap_or(0).to_string()),
        Op::Duration => Some(r.duration_ms.to_string()),
        Op::UpstreamHost => non_empty(&r.destination_address),
        Op::UpstreamCluster => s(&r.upstream_cluster).or_else(|| {
            // Istio names an inbound cluster `inbound|<port>||`.
            (r.direction == "inbound")
                .then(|| port_of(&r.destination_address))
                .flatten()
                .map(|p| format!("inbound|{p}||"))
        }),
        Op::DownstreamRemoteAddress { port } => address(&r.source_address, *port),
        Op::DownstreamLocalAddress { port } => {
            r.local_address.as_deref().and_then(|a| address(a, *port))
        }
        Op::DownstreamPeerUriSan => s(&r.source_principal),
        Op::RequestedServerName => s(&r.requested_server_name),
        // Istio's inbound HTTP route is named `default`; TCP has no route.
        Op::RouteName => {
            (r.direction == "inbound" && r.protocol == "http").then(|| "default".to_string())
        }
        Op::Protocol => r.http_version.map(str::to_string),
        Op::DynamicMetadata(ns, key) => metadata(r, ns, key.as_deref()),
    }
}

fn req(f: &Field, r: &AccessLog) -> Option<String> {
    match f {
        Field::Method => r.method.as_ref().map(|m| m.to_string()),
        Field::Path => r.path.clone(),
        Field::Authority => r.authority.clone(),
        Field::RequestId => r.request_id.clone(),
        Field::Header(i) => captured(&r.request_headers, *i),
        Field::Unknown => None,
    }
}

fn captured(list: &[Option<String>], i: usize) -> Option<String> {
    list.get(i).cloned().flatten()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn port_of(addr: &str) -> Option<&str> {
    addr.rsplit_once(':').map(|(_, p)| p)
}

fn address(addr: &str, with_port: bool) -> Option<String> {
    if addr.is_empty() {
        return None;
    }
    if with_port {
        return Some(addr.to_string());
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

/// Envoy's default `%START_TIME%`: `2020-11-25T21:26:18.409Z` (milliseconds), from the
/// record's RFC 3339 time (whose fraction has its trailing zeros trimmed).
pub(super) fn start_time(t: &str) -> String {
    let Some(body) = t.strip_suffix('Z') else {
        return t.to_string();
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    let mut ms: String = frac.chars().take(3).collect();
    while ms.len() < 3 {
        ms.push('0');
    }
    format!("{whole}.{ms}Z")
}

/// The RBAC filters' and `envoy.common`'s dynamic metadata (module docs of `format`).
fn metadata(r: &AccessLog, ns: &str, key: Option<&str>) -> Option<String> {
    let rbac_ns = if r.protocol == "http" {
        "envoy.filters.http.rbac"
    } else {
        "envoy.filters.network.rbac"
    };
    let mut entries: Vec<(&str, serde_json::Value)> = Vec::new();
    if ns == "envoy.common" && r.access_log_hint {
        entries.push(("access_log_hint", serde_json::Value::Bool(true)));
    } else if ns == rbac_ns {
        for (k, v) in r.shadow_fields() {
            entries.push((k, serde_json::Value::String(v.to_string())));
        }
    }
    match key {
        Some(k) => entries
            .into_iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
        None if entries.is_empty() => None,
        None => Some(
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
            .to_string(),
        ),
    }
}
