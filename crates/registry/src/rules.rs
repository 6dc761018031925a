//! DestinationRules: checked, their hosts resolved, and merged the way Istio merges rules for
//! the same host in the same namespace, into the [`DestinationRule`]s the TLS decision reads.
//!
//! From istio/istio: a short host is relative to the rule's namespace
//! (`ResolveShortnameToFQDN`); several rules for one host in one namespace (with the same
//! workload selector) are merged — the first one's `trafficPolicy` wins, subsets are joined and
//! a repeated subset name is dropped (`mergeDestinationRule`, pilot/pkg/model/destination_rule.go,
//! oldest first). Checks follow `ValidateDestinationRule`: a host, subset names that are DNS
//! labels and unique, `portLevelSettings[].port.number` present and unique, and `tls` as
//! `validateTLS` has it (MUTUAL needs a client certificate and key, ISTIO_MUTUAL takes no
//! certificate files). `credentialName` names a Kubernetes Secret, which trustmesh cannot read.
//!
//! A rule with an error, whose host is still readable, is not dropped: it becomes a stand-in
//! that makes every connection to that host fail (see [`crate::tls`]) — the rule said how to
//! protect that traffic, and neither plaintext nor a guess is what was asked for.

use std::collections::BTreeMap;

use trustmesh_policy::{Location, Notice, Problem};

use crate::crd::{
    ClientTlsSpec, ConnectionPoolSpec, DestinationRuleSpec, H2Upgrade, SimpleLb, TlsModeSpec,
    TrafficPolicySpec,
};
use crate::parse::{BrokenRule, Resource};

/// A DestinationRule as the registry applies it (possibly several merged).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRule {
    pub name: String,
    pub namespace: String,
    /// The host, resolved against the namespace and lower-cased.
    pub host: String,
    /// Client workloads it applies to (its own namespace only); `None`: every client.
    pub workload_selector: Option<BTreeMap<String, String>>,
    pub tls: Option<ClientTls>,
    pub load_balancer: Option<SimpleLb>,
    /// `connectionPool.http`'s choice of the HTTP version sent upstream.
    pub http: Option<HttpPool>,
    pub port_level: Vec<PortPolicy>,
    pub subsets: Vec<Subset>,
    /// Read but not enforced.
    pub export_to: Vec<String>,
    /// Names of later rules merged into this one.
    pub merged: Vec<String>,
    /// Why this rule could not be read: every connection it governs is refused.
    pub broken: Option<String>,
    #[serde(skip)]
    pub source: Location,
    #[serde(skip)]
    pub(crate) created: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortPolicy {
    pub port: u16,
    pub tls: Option<ClientTls>,
    pub load_balancer: Option<SimpleLb>,
    /// Replaces the rule's own wholesale, as Istio applies port-level settings: a port entry
    /// without `connectionPool` has the defaults, not the rule's.
    pub http: Option<HttpPool>,
}

/// The settings a DestinationRule gives one port: its `portLevelSettings` entry for the port
/// when it has one, else the rule's own (see [`DestinationRule::for_port`]).
#[derive(Debug, Clone, Copy)]
pub struct PortSettings<'r> {
    pub tls: Option<&'r ClientTls>,
    pub load_balancer: Option<SimpleLb>,
    pub http: Option<HttpPool>,
    /// Whether a port-level entry gave them.
    pub port_level: bool,
}

impl DestinationRule {
    /// What the rule says for `port`. A port-level entry replaces the rule's settings
    /// wholesale, as istio/api documents ("default values will be applied to fields omitted in
    /// port-level traffic policies", pilot's `GetPortLevelTrafficPolicy`): a field it leaves
    /// out has the default, never the rule's value.
    pub fn for_port(&self, port: u16) -> PortSettings<'_> {
        match self.port_level.iter().find(|p| p.port == port) {
            Some(p) => PortSettings {
                tls: p.tls.as_ref(),
                load_balancer: p.load_balancer,
                http: p.http,
                port_level: true,
            },
            None => PortSettings {
                tls: self.tls.as_ref(),
                load_balancer: self.load_balancer,
                http: self.http,
                port_level: false,
            },
        }
    }
}

/// What a DestinationRule's `connectionPool.http` says about the HTTP version sent upstream
/// (the decision is [`crate::upstream_http`]'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPool {
    pub h2_upgrade_policy: H2Upgrade,
    /// Send the version the app used.
    pub use_client_protocol: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// `ClientTLSSettings`; file paths are carried as written, the proxy reads them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    pub mode: TlsSetting,
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub ca_crl: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub sni: Option<String>,
    pub insecure_skip_verify: bool,
}

/// `ClientTLSSettings.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TlsSetting {
    #[serde(rename = "DISABLE")]
    Disable,
    #[serde(rename = "SIMPLE")]
    Simple,
    #[serde(rename = "MUTUAL")]
    Mutual,
    #[serde(rename = "ISTIO_MUTUAL")]
    IstioMutual,
}

impl TlsSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsSetting::Disable => "DISABLE",
            TlsSetting::Simple => "SIMPLE",
            TlsSetting::Mutual => "MUTUAL",
            TlsSetting::IstioMutual => "ISTIO_MUTUAL",
        }
    }
}

/// Checks and resolves one rule; a rule with an error comes back as a broken stand-in, or
/// `None` when not even its host can be read.
pub fn compile(
    r: &Resource<DestinationRuleSpec>,
    domain: &str,
    problems: &mut Vec<Problem>,
    notices: &mut Vec<Notice>,
) -> Option<DestinationRule> {
    let before = problems.len();
    let spec = &r.spec;
    let at = r.location.at("spec");
    if spec.host.is_empty() {
        problems.push(
            Problem::new(at.at("host"), "host is required")
                .hint("name the service the rule is for, e.g. reviews or httpbin.org"),
        );
        return None;
    }
    if let Some(why) = crate::host::invalid(&spec.host) {
        problems.push(
            Problem::new(
                at.at("host"),
                format!("invalid host \"{}\": {why}", spec.host),
            )
            .hint("a service host, a short name, or a wildcard like *.example.com"),
        );
        return None;
    }
    let host = crate::host::resolve_short(&spec.host, &r.namespace, domain);
    let mut rule = DestinationRule {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        host,
        workload_selector: spec
            .workload_selector
            .as_ref()
            .map(|s| s.match_labels.clone()),
        tls: None,
        load_balancer: None,
        http: None,
        port_level: Vec::new(),
        subsets: Vec::new(),
        export_to: spec.export_to.clone(),
        merged: Vec::new(),
        broken: None,
        source: r.location.clone(),
        created: r.created.clone(),
    };
    let mut ignored = Vec::new();
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(
            tp,
            &at.at("trafficPolicy"),
            &mut rule,
            &mut ignored,
            problems,
        );
    }
    let mut names = std::collections::HashSet::new();
    for (i, s) in spec.subsets.iter().enumerate() {
        let sat = at.at(format!("subsets[{i}]"));
        if s.name.is_empty() || !names.insert(s.name.clone()) {
            problems.push(
                Problem::new(
                    sat.at("name"),
                    format!("subset name \"{}\" is empty or repeated", s.name),
                )
                .hint("give each subset its own name"),
            );
        }
        if s.traffic_policy.is_some() {
            ignored.push(sat.at("trafficPolicy").field);
        }
        rule.subsets.push(Subset {
            name: s.name.clone(),
            labels: s.labels.clone(),
        });
    }
    if !ignored.is_empty() {
        notices.push(Notice {
            location: r.location.clone(),
            message: format!(
                "accepted and ignored (trustmesh does not act on them): {}",
                ignored.join(", ")
            ),
        });
    }
    if spec.export_to.iter().any(|e| e != "*") {
        notices.push(Notice {
            location: at.at("exportTo"),
            message:
                "exportTo is read but not enforced: the rule applies to clients in every namespace"
                    .into(),
        });
    }
    if let Some(first) = problems[before..].iter().find(|p| !p.warning) {
        rule.broken = Some(first.to_string());
    }
    Some(rule)
}

fn traffic_policy(
    tp: &TrafficPolicySpec,
    at: &Location,
    rule: &mut DestinationRule,
    ignored: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) {
    rule.http = connection_pool(
        tp.connection_pool.as_ref(),
        &at.at("connectionPool"),
        ignored,
    );
    for (name, v) in [
        ("outlierDetection", &tp.outlier_detection),
        ("tunnel", &tp.tunnel),
        ("proxyProtocol", &tp.proxy_protocol),
        ("retryBudget", &tp.retry_budget),
    ] {
        if v.is_some() {
            ignored.push(at.at(name).field);
        }
    }
    rule.load_balancer = load_balancer(tp.load_balancer.as_ref(), &at.at("loadBalancer"), ignored);
    rule.tls = tp
        .tls
        .as_ref()
        .map(|t| client_tls(t, &at.at("tls"), problems));
    let mut ports = std::collections::HashSet::new();
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let pat = at.at(format!("portLevelSettings[{i}]"));
        let number = p.port.as_ref().map_or(0, |s| s.number);
        let port = match u16::try_from(number) {
            Ok(n) if n > 0 => n,
            _ => {
                problems.push(
                    Problem::new(
                        pat.at("port.number"),
                        format!("port {number} is not between 1 and 65535"),
                    )
                    .hint("port-level settings need the service port's number"),
                );
                continue;
            }
        };
        if !ports.insert(port) {
            problems.push(
                Problem::new(
                    pat.at("port.number"),
                    format!("port {port} has settings already"),
                )
                .hint("give each port one entry"),
            );
        }
        if p.outlier_detection.is_some() {
            ignored.push(pat.at("outlierDetection").field);
        }
        rule.port_level.push(PortPolicy {
            port,
            tls: p
                .tls
                .as_ref()
                .map(|t| client_tls(t, &pat.at("tls"), problems)),
            load_balancer: load_balancer(
                p.load_balancer.as_ref(),
                &pat.at("loadBalancer"),
                ignored,
            ),
            http: connection_pool(
                p.connection_pool.as_ref(),
                &pat.at("connectionPool"),
                ignored,
            ),
        });
    }
}

fn load_balancer(
    lb: Option<&crate::crd::LoadBalancerSpec>,
    at: &Location,
    ignored: &mut Vec<String>,
) -> Option<SimpleLb> {
    let lb = lb?;
    for (name, v) in [
        ("consistentHash", &lb.consistent_hash),
        ("localityLbSetting", &lb.locality_lb_setting),
        ("zoneAwareLbSetting", &lb.zone_aware_lb_setting),
        ("warmupDurationSecs", &lb.warmup_duration_secs),
        ("warmup", &lb.warmup),
    ] {
        if v.is_some() {
            ignored.push(at.at(name).field);
        }
    }
    lb.simple
}

/// The protocol choice of `connectionPool.http`; every limit beside it is listed as ignored.
fn connection_pool(
    pool: Option<&ConnectionPoolSpec>,
    at: &Location,
    ignored: &mut Vec<String>,
) -> Option<HttpPool> {
    let pool = pool?;
    if pool.tcp.is_some() {
        ignored.push(at.at("tcp").field);
    }
    let http = pool.http.as_ref()?;
    let at = at.at("http");
    for (name, v) in [
        ("http1MaxPendingRequests", &http.http1_max_pending_requests),
        ("http2MaxRequests", &http.http2_max_requests),
        (
            "maxRequestsPerConnection",
            &http.max_requests_per_connection,
        ),
        ("maxRetries", &http.max_retries),
        ("idleTimeout", &http.idle_timeout),
        ("maxConcurrentStreams", &http.max_concurrent_streams),
        ("http2KeepAlive", &http.http2_keep_alive),
    ] {
        if v.is_some() {
            ignored.push(at.at(name).field);
        }
    }
    Some(HttpPool {
        h2_upgrade_policy: http.h2_upgrade_policy,
        use_client_protocol: http.use_client_protocol,
    })
}

fn client_tls(t: &ClientTlsSpec, at: &Location, problems: &mut Vec<Problem>) -> ClientTls {
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    let mode = match t.mode {
        TlsModeSpec::Disable => TlsSetting::Disable,
        TlsModeSpec::Simple => TlsSetting::Simple,
        TlsModeSpec::Mutual => TlsSetting::Mutual,
        TlsModeSpec::IstioMutual => TlsSetting::IstioMutual,
    };
    if !t.credential_name.is_empty() {
        problems.push(
            Problem::new(at.at("credentialName"), "credentialName is not supported: it names a Kubernetes Secret, and trustmesh reads no Kubernetes API")
                .hint("give the files instead: clientCertificate, privateKey, caCertificates"),
        );
    }
    match mode {
        TlsSetting::Mutual if t.credential_name.is_empty() => {
            for (field, v) in [
                ("clientCertificate", &t.client_certificate),
                ("privateKey", &t.private_key),
            ] {
                if v.is_empty() {
                    problems.push(
                        Problem::new(at.at(field), format!("{field} is required for MUTUAL"))
                            .hint("give the path of the client certificate and its key"),
                    );
                }
            }
        }
        TlsSetting::IstioMutual => {
            for (field, v) in [
                ("clientCertificate", &t.client_certificate),
                ("privateKey", &t.private_key),
                ("caCertificates", &t.ca_certificates),
            ] {
                if !v.is_empty() {
                    problems.push(Problem::new(at.at(field), format!("{field} cannot be given with ISTIO_MUTUAL")).hint("ISTIO_MUTUAL uses the workload's own certificate; use MUTUAL for your own files"));
                }
            }
        }
        _ => {}
    }
    ClientTls {
        mode,
        client_certificate: some(&t.client_certificate),
        private_key: some(&t.private_key),
        ca_certificates: some(&t.ca_certificates),
        ca_crl: some(&t.ca_crl),
        subject_alt_names: t.subject_alt_names.clone(),
        sni: some(&t.sni),
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
    }
}

/// The stand-in for a rule that could not be parsed at all, when its host is readable.
pub fn stand_in(b: &BrokenRule, reason: &str, domain: &str) -> Option<DestinationRule> {
    let host = b
        .host
        .as_deref()
        .filter(|h| crate::host::invalid(h).is_none())?;
    Some(DestinationRule {
        name: b.name.clone(),
        namespace: b.namespace.clone(),
        host: crate::host::resolve_short(host, &b.namespace, domain),
        workload_selector: None,
        tls: None,
        load_balancer: None,
        http: None,
        port_level: Vec::new(),
        subsets: Vec::new(),
        export_to: Vec::new(),
        merged: Vec::new(),
        broken: Some(reason.to_string()),
        source: b.location.clone(),
        created: None,
    })
}

/// Merges rules for the same host, namespace and selector, oldest first (Istio's
/// `mergeDestinationRule`). A broken rule in a group breaks the merged rule.
pub fn merge(mut rules: Vec<DestinationRule>, problems: &mut Vec<Problem>) -> Vec<DestinationRule> {
    rules.sort_by(|a, b| (a.created.is_none(), &a.created).cmp(&(b.created.is_none(), &b.created)));
    let mut out: Vec<DestinationRule> = Vec::new();
    for r in rules {
        let same = out.iter_mut().find(|m| {
            m.namespace == r.namespace
                && m.host == r.host
                && m.workload_selector == r.workload_selector
        });
        let Some(m) = same else {
            out.push(r);
            continue;
        };
        m.merged.push(r.name.clone());
        if m.broken.is_none() {
            m.broken = r.broken.clone();
        }
        if m.tls.is_none()
            && m.load_balancer.is_none()
            && m.http.is_none()
            && m.port_level.is_empty()
        {
            m.tls = r.tls;
            m.load_balancer = r.load_balancer;
            m.http = r.http;
            m.port_level = r.port_level;
        }
        for s in r.subsets {
            if m.subsets.iter().any(|x| x.name == s.name) {
                problems.push(
                    Problem::new(r.source.at("spec.subsets"), format!("subset \"{}\" is also defined by DestinationRule {}/{} for the same host; this one is dropped", s.name, m.namespace, m.name))
                        .hint("Istio merges rules for one host and keeps the first subset of a name")
                        .warning(),
                );
            } else {
                m.subsets.push(s);
            }
        }
    }
    out
}
