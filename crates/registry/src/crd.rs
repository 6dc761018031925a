//! Serde mirror of the `networking.istio.io` kinds the registry reads — WorkloadEntry,
//! ServiceEntry, DestinationRule — with Istio's YAML spelling (camelCase, enum names in capitals),
//! so files written for Istio load unchanged.
//!
//! Fields are checked the way the policy crate checks security resources: an unknown field is a
//! problem naming its path, because a typo in `tls` or `addresses` would silently change where
//! and how traffic goes. The exceptions are parts of a DestinationRule trustmesh does not act on
//! (`connectionPool`, `outlierDetection`, most of `loadBalancer`, ...): they are kept as raw
//! values so real configurations load, and the registry says once per resource that it ignores
//! them. Field names and enum values follow istio/api `networking/v1alpha3/*.proto`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// A value of a field trustmesh accepts but does not act on.
pub type Ignored = Option<serde_yaml::Value>;

/// `WorkloadEntry.spec`, also the shape of a ServiceEntry's inline `endpoints[]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub locality: String,
    #[serde(default)]
    pub weight: u32,
    #[serde(default)]
    pub service_account: String,
}

/// `ServiceEntry.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePortSpec>,
    #[serde(default)]
    pub location: LocationSpec,
    #[serde(default)]
    pub resolution: ResolutionSpec,
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntrySpec>,
    #[serde(default)]
    pub workload_selector: Option<SelectorSpec>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// `ServicePort`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePortSpec {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub target_port: u32,
}

/// `ServiceEntry.location`; MESH_EXTERNAL is Istio's default (enum value 0).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum LocationSpec {
    #[default]
    #[serde(rename = "MESH_EXTERNAL")]
    MeshExternal,
    #[serde(rename = "MESH_INTERNAL")]
    MeshInternal,
}

/// `ServiceEntry.resolution`; NONE is Istio's default (enum value 0).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum ResolutionSpec {
    #[default]
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "STATIC")]
    Static,
    #[serde(rename = "DNS")]
    Dns,
    #[serde(rename = "DNS_ROUND_ROBIN")]
    DnsRoundRobin,
    #[serde(rename = "DYNAMIC_DNS")]
    DynamicDns,
}

/// `workloadSelector` of a ServiceEntry (`labels`) or a DestinationRule (`matchLabels`): the
/// two kinds spell it differently in istio/api, and each is read with its own spelling.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorSpec {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchLabelsSpec {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `DestinationRule.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicySpec>,
    #[serde(default)]
    pub subsets: Vec<SubsetSpec>,
    #[serde(default)]
    pub export_to: Vec<String>,
    #[serde(default)]
    pub workload_selector: Option<MatchLabelsSpec>,
}

/// `TrafficPolicy`: `tls`, `portLevelSettings`, `loadBalancer.simple` and the protocol choice of
/// `connectionPool.http` are acted on; the rest is accepted and ignored (see the module docs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSpec>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSpec>,
    #[serde(default)]
    pub outlier_detection: Ignored,
    #[serde(default)]
    pub tls: Option<ClientTlsSpec>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicySpec>,
    #[serde(default)]
    pub tunnel: Ignored,
    #[serde(default)]
    pub proxy_protocol: Ignored,
    #[serde(default)]
    pub retry_budget: Ignored,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortTrafficPolicySpec {
    #[serde(default)]
    pub port: Option<PortSelectorSpec>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSpec>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSpec>,
    #[serde(default)]
    pub outlier_detection: Ignored,
    #[serde(default)]
    pub tls: Option<ClientTlsSpec>,
}

/// `ConnectionPoolSettings`. Of `http`, the two fields that choose the HTTP version sent
/// upstream are acted on; the limits, timeouts and keepalives are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionPoolSpec {
    #[serde(default)]
    pub tcp: Ignored,
    #[serde(default)]
    pub http: Option<HttpSettingsSpec>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSettingsSpec {
    #[serde(default)]
    pub http1_max_pending_requests: Ignored,
    #[serde(default)]
    pub http2_max_requests: Ignored,
    #[serde(default)]
    pub max_requests_per_connection: Ignored,
    #[serde(default)]
    pub max_retries: Ignored,
    #[serde(default)]
    pub idle_timeout: Ignored,
    #[serde(default)]
    pub h2_upgrade_policy: H2Upgrade,
    #[serde(default)]
    pub use_client_protocol: bool,
    #[serde(default)]
    pub max_concurrent_streams: Ignored,
    #[serde(default)]
    pub http2_keep_alive: Ignored,
}

/// `HTTPSettings.H2UpgradePolicy`: `DEFAULT` leaves it to `meshConfig.h2UpgradePolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub enum H2Upgrade {
    #[default]
    #[serde(rename = "DEFAULT")]
    Default,
    #[serde(rename = "DO_NOT_UPGRADE")]
    DoNotUpgrade,
    #[serde(rename = "UPGRADE")]
    Upgrade,
}

impl<'de> Deserialize<'de> for H2Upgrade {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "DEFAULT" => H2Upgrade::Default,
            "DO_NOT_UPGRADE" => H2Upgrade::DoNotUpgrade,
            "UPGRADE" => H2Upgrade::Upgrade,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown h2UpgradePolicy value \"{other}\", expected one of \
                     DEFAULT, DO_NOT_UPGRADE, UPGRADE"
                )))
            }
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSelectorSpec {
    #[serde(default)]
    pub number: u32,
}

/// `LoadBalancerSettings`: `simple` is kept; the other ways to balance are accepted, ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    #[serde(default)]
    pub consistent_hash: Ignored,
    #[serde(default)]
    pub locality_lb_setting: Ignored,
    #[serde(default)]
    pub zone_aware_lb_setting: Ignored,
    #[serde(default)]
    pub warmup_duration_secs: Ignored,
    #[serde(default)]
    pub warmup: Ignored,
}

/// `LoadBalancerSettings.SimpleLB`. `LEAST_CONN` is Istio's deprecated spelling of
/// `LEAST_REQUEST` and is read as it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SimpleLb {
    #[serde(rename = "UNSPECIFIED")]
    Unspecified,
    #[serde(rename = "LEAST_REQUEST")]
    LeastRequest,
    #[serde(rename = "RANDOM")]
    Random,
    #[serde(rename = "PASSTHROUGH")]
    Passthrough,
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
}

impl SimpleLb {
    pub fn as_str(self) -> &'static str {
        match self {
            SimpleLb::Unspecified => "UNSPECIFIED",
            SimpleLb::LeastRequest => "LEAST_REQUEST",
            SimpleLb::Random => "RANDOM",
            SimpleLb::Passthrough => "PASSTHROUGH",
            SimpleLb::RoundRobin => "ROUND_ROBIN",
        }
    }
}

impl<'de> Deserialize<'de> for SimpleLb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "UNSPECIFIED" => SimpleLb::Unspecified,
            "LEAST_REQUEST" | "LEAST_CONN" => SimpleLb::LeastRequest,
            "RANDOM" => SimpleLb::Random,
            "PASSTHROUGH" => SimpleLb::Passthrough,
            "ROUND_ROBIN" => SimpleLb::RoundRobin,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown loadBalancer.simple value \"{other}\", expected one of \
                     ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH, UNSPECIFIED"
                )))
            }
        })
    }
}

/// `ClientTLSSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientTlsSpec {
    #[serde(default)]
    pub mode: TlsModeSpec,
    #[serde(default)]
    pub client_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
    #[serde(default)]
    pub credential_name: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub sni: String,
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default)]
    pub ca_crl: String,
}

/// `ClientTLSSettings.TLSmode`; DISABLE is the proto default (value 0).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum TlsModeSpec {
    #[default]
    #[serde(rename = "DISABLE")]
    Disable,
    #[serde(rename = "SIMPLE")]
    Simple,
    #[serde(rename = "MUTUAL")]
    Mutual,
    #[serde(rename = "ISTIO_MUTUAL")]
    IstioMutual,
}

/// `Subset`: its name and labels are kept. A subset's own `trafficPolicy` only applies when a
/// route picks the subset (a VirtualService), which trustmesh does not read: accepted, ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubsetSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Ignored,
}
