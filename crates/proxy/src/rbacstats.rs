//! The counters Envoy's RBAC filters keep, under Envoy's names, so an operator's
//! `curl localhost:15000/stats | grep rbac` finds what it finds on an Istio sidecar.
//!
//! Names (Envoy's RBAC filter docs, "Statistics"): the HTTP filter counts in
//! `http.<stat_prefix>.rbac.`, where the stat prefix is the HTTP connection manager's; Istio
//! names an inbound listener's `inbound_0.0.0.0_<port>` (the dry-run task's metric
//! `envoy_http_inbound_0_0_0_0_80_rbac`), `<port>` being the workload port. The network filter
//! counts in `<stat_prefix>rbac.` with Istio's prefix `tcp.` (`RBACTCPFilterStatPrefix`), one
//! scope for every TCP port. Counters: `allowed`, `denied`, and the shadow engine's
//! `shadow_allowed` / `shadow_denied` under its `shadow_rules_stat_prefix`, which Istio sets to
//! `istio_dry_run_allow_` or `istio_dry_run_deny_` (`crate::authz`'s shadow results).
//!
//! One difference, on purpose: Envoy counts `allowed` in every RBAC filter a request passes
//! (Istio installs one per action), so one request can count twice; here each enforced
//! decision counts once, so the counters add up to the requests and connections decided.
//!
//! Prometheus (`/stats/prometheus`): Envoy's naming (`envoy_` + the name with every character
//! outside `[a-zA-Z0-9_]` made `_`) after the tag extraction of Istio's bootstrap
//! (`authz_enforce_result` from `rbac.(allowed|denied)`, `authz_dry_run_action` from
//! `.istio_dry_run_(allow|deny)_`, `authz_dry_run_result` from `.shadow_(allowed|denied)`), so
//! the dry-run task's query `envoy_http_inbound_0_0_0_0_80_rbac{authz_dry_run_result="denied"}`
//! works unchanged.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

/// One RBAC filter's scope: the HTTP filter of an inbound port, or the network filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Http(u16),
    Tcp,
}

impl Scope {
    /// The stat name prefix up to and including `rbac.`.
    fn prefix(self) -> String {
        match self {
            Scope::Http(port) => format!("http.inbound_0.0.0.0_{port}.rbac."),
            Scope::Tcp => "tcp.rbac.".to_string(),
        }
    }
}

/// Which shadow engine: Istio's dry-run DENY or ALLOW policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Deny,
    Allow,
}

impl Engine {
    /// Istio's `shadow_rules_stat_prefix` for the engine.
    pub fn stat_prefix(self) -> &'static str {
        match self {
            Engine::Deny => "istio_dry_run_deny_",
            Engine::Allow => "istio_dry_run_allow_",
        }
    }
}

#[derive(Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    /// [deny engine, allow engine] × [shadow_allowed, shadow_denied].
    shadow: [[AtomicU64; 2]; 2],
    /// Whether each shadow engine has reported (Envoy has its counters only where it exists).
    engines: [AtomicBool; 2],
}

/// Every scope's counters; a request takes a read lock and increments atomics.
#[derive(Default)]
pub struct RbacStats {
    scopes: RwLock<BTreeMap<Scope, Counters>>,
}

/// One stat: its Envoy name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub name: String,
    pub value: u64,
}

impl RbacStats {
    /// Runs `f` on the scope's counters: under the read lock once the scope exists (no
    /// allocation, no reference count touched), creating it on first use.
    fn with(&self, scope: Scope, f: impl Fn(&Counters)) {
        if let Some(c) = self
            .scopes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&scope)
        {
            return f(c);
        }
        let mut w = self.scopes.write().unwrap_or_else(|e| e.into_inner());
        f(w.entry(scope).or_default());
    }

    /// An enforced decision: `allowed` or `denied`.
    pub fn enforced(&self, scope: Scope, allowed: bool) {
        self.with(scope, |c| {
            let n = if allowed { &c.allowed } else { &c.denied };
            n.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// A shadow engine's result.
    pub fn shadow(&self, scope: Scope, engine: Engine, allowed: bool) {
        let e = engine as usize;
        self.with(scope, |c| {
            c.engines[e].store(true, Ordering::Relaxed);
            c.shadow[e][usize::from(!allowed)].fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Every stat, sorted by name (Envoy's `/stats` order).
    pub fn all(&self) -> Vec<Stat> {
        let mut out = Vec::new();
        for (scope, c) in self.scopes.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let p = scope.prefix();
            let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
            out.push(Stat {
                name: format!("{p}allowed"),
                value: ld(&c.allowed),
            });
            out.push(Stat {
                name: format!("{p}denied"),
                value: ld(&c.denied),
            });
            for engine in [Engine::Deny, Engine::Allow] {
                let e = engine as usize;
                if !c.engines[e].load(Ordering::Relaxed) {
                    continue;
                }
                for (i, result) in ["shadow_allowed", "shadow_denied"].iter().enumerate() {
                    out.push(Stat {
                        name: format!("{p}{}{result}", engine.stat_prefix()),
                        value: ld(&c.shadow[e][i]),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The stats in Prometheus text form, as Istio's sidecar exposes them (module docs).
    pub fn render_prometheus(&self, out: &mut String) {
        let mut families: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for s in self.all() {
            let (name, labels) = istio_tags(&s.name);
            families
                .entry(prometheus_name(&name))
                .or_default()
                .push((labels, s.value));
        }
        for (name, samples) in families {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
}

/// Istio's bootstrap tag extraction for the RBAC names: the stat name left and its labels.
fn istio_tags(name: &str) -> (String, String) {
    let mut labels = Vec::new();
    let mut rest = name.to_string();
    for (tag, prefix, values) in [
        (
            "authz_dry_run_action",
            ".istio_dry_run_",
            ["allow_", "deny_"],
        ),
        ("authz_dry_run_result", ".shadow_", ["allowed", "denied"]),
    ] {
        for v in values {
            let needle = format!("{prefix}{v}");
            if let Some(at) = rest.find(&needle) {
                rest.replace_range(at..at + needle.len(), "");
                // After the action is taken out, the result follows `rbac` directly.
                if tag == "authz_dry_run_action" {
                    rest.insert(at, '.');
                }
                labels.push(format!("{tag}=\"{}\"", v.trim_end_matches('_')));
                break;
            }
        }
    }
    for v in ["allowed", "denied"] {
        if let Some(stem) = rest.strip_suffix(&format!("rbac.{v}")) {
            rest = format!("{stem}rbac");
            labels.push(format!("authz_enforce_result=\"{v}\""));
        }
    }
    (rest.trim_end_matches('.').to_string(), labels.join(","))
}

/// Envoy's Prometheus name: `envoy_` and the stat name with every other character made `_`.
pub fn prometheus_name(stat: &str) -> String {
    let mut s = String::with_capacity(stat.len() + 6);
    s.push_str("envoy_");
    s.extend(stat.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_envoys_and_istios() {
        let s = RbacStats::default();
        s.enforced(Scope::Http(9080), true);
        s.enforced(Scope::Http(9080), true);
        s.enforced(Scope::Http(9080), false);
        s.shadow(Scope::Http(9080), Engine::Deny, false);
        s.enforced(Scope::Tcp, false);
        let all: Vec<(String, u64)> = s.all().into_iter().map(|s| (s.name, s.value)).collect();
        let want = [
            ("http.inbound_0.0.0.0_9080.rbac.allowed", 2),
            ("http.inbound_0.0.0.0_9080.rbac.denied", 1),
            (
                "http.inbound_0.0.0.0_9080.rbac.istio_dry_run_deny_shadow_allowed",
                0,
            ),
            (
                "http.inbound_0.0.0.0_9080.rbac.istio_dry_run_deny_shadow_denied",
                1,
            ),
            ("tcp.rbac.allowed", 0),
            ("tcp.rbac.denied", 1),
        ]
        .map(|(n, v)| (n.to_string(), v));
        assert_eq!(all, want);
    }

    #[test]
    fn prometheus_follows_istios_tags() {
        let s = RbacStats::default();
        s.enforced(Scope::Http(80), true);
        s.shadow(Scope::Http(80), Engine::Deny, false);
        s.shadow(Scope::Http(80), Engine::Allow, true);
        let mut out = String::new();
        s.render_prometheus(&mut out);
        for line in [
            "# TYPE envoy_http_inbound_0_0_0_0_80_rbac counter",
            "envoy_http_inbound_0_0_0_0_80_rbac{authz_enforce_result=\"allowed\"} 1",
            "envoy_http_inbound_0_0_0_0_80_rbac{authz_enforce_result=\"denied\"} 0",
            "envoy_http_inbound_0_0_0_0_80_rbac{authz_dry_run_action=\"deny\",authz_dry_run_result=\"denied\"} 1",
            "envoy_http_inbound_0_0_0_0_80_rbac{authz_dry_run_action=\"allow\",authz_dry_run_result=\"allowed\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        assert_eq!(out.matches("# TYPE").count(), 1, "{out}");
        assert_eq!(prometheus_name("cluster.a-b|c"), "envoy_cluster_a_b_c");
    }
}
