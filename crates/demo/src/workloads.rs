//! Who is in the demo: five workloads in two trust domains with different roots. Both ways of
//! running the quickstart (sidecars with explicit listeners on loopback, or transparent
//! sidecars in network namespaces) use these same identities, so the tour tells the same story.

pub const TD_A: &str = "team-a.gke.local";
pub const TD_B: &str = "team-b.eks.local";
/// Lifetime of the reviews certificate: short, so the tour sees the agent rotate it.
pub const REVIEWS_TTL_SECS: u64 = 20;

/// One workload of the demo.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub trust_domain: &'static str,
    pub namespace: &'static str,
    pub service_account: &'static str,
}

impl Workload {
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

pub const FRONTEND: Workload = Workload {
    name: "frontend",
    trust_domain: TD_A,
    namespace: "bookinfo",
    service_account: "frontend",
};
pub const REVIEWS: Workload = Workload {
    name: "reviews",
    trust_domain: TD_A,
    namespace: "bookinfo",
    service_account: "reviews",
};
pub const RATINGS: Workload = Workload {
    name: "ratings",
    trust_domain: TD_A,
    namespace: "bookinfo",
    service_account: "ratings",
};
pub const PAYROLL: Workload = Workload {
    name: "payroll",
    trust_domain: TD_A,
    namespace: "finance",
    service_account: "payroll",
};
pub const ANALYTICS: Workload = Workload {
    name: "analytics",
    trust_domain: TD_B,
    namespace: "analytics",
    service_account: "reporter",
};

pub const ALL: [&Workload; 5] = [&FRONTEND, &REVIEWS, &RATINGS, &PAYROLL, &ANALYTICS];
