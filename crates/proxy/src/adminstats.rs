//! The admin's Envoy-compatible read side: `/stats` (text, `?format=json`,
//! `?filter=<regex>`, `?usedonly`) and `/stats/prometheus`, as Envoy's admin serves them
//! (admin docs: text is `name: value` per line sorted by name; JSON is
//! `{"stats":[{"name":…,"value":…}]}`; `filter` is a regular expression the name must
//! contain a match of; `usedonly` keeps the stats that were written, which for these counters
//! means non-zero). The filter comes from whoever can reach the admin port, so its compiled
//! size is bounded ([`FILTER_SIZE_LIMIT`]) and its length too.

use crate::metrics::Metrics;
use crate::rbacstats::Stat;

/// Bytes a compiled `?filter=` may take; beyond it the request is refused.
pub const FILTER_SIZE_LIMIT: usize = 1 << 20;
/// Characters a `?filter=` may have.
pub const FILTER_MAX_LEN: usize = 1024;

/// One `/stats` answer: content type and body, or a sentence for a `400`.
pub fn stats(metrics: &Metrics, query: Option<&str>) -> Result<(&'static str, String), String> {
    let mut json = false;
    let mut used_only = false;
    let mut filter = None;
    for (k, v) in form(query.unwrap_or("")) {
        match k.as_str() {
            "format" if v == "json" => json = true,
            "format" if v == "text" => {}
            "format" if v == "prometheus" => {
                return Ok(("text/plain; version=0.0.4", prometheus(metrics, 0)));
            }
            "format" => {
                return Err(format!(
                    "unknown format {v:?}; the formats are text, json and prometheus"
                ))
            }
            "usedonly" => used_only = true,
            "filter" => {
                if v.chars().count() > FILTER_MAX_LEN {
                    return Err(format!(
                        "the filter is longer than {FILTER_MAX_LEN} characters"
                    ));
                }
                let re = regex::RegexBuilder::new(&v)
                    .size_limit(FILTER_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("the filter is not a usable regular expression: {e}"))?;
                filter = Some(re);
            }
            _ => {}
        }
    }
    let stats: Vec<Stat> = metrics
        .rbac
        .all()
        .into_iter()
        .filter(|s| !used_only || s.value > 0)
        .filter(|s| filter.as_ref().is_none_or(|re| re.is_match(&s.name)))
        .collect();
    if json {
        let list: Vec<serde_json::Value> = stats
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "value": s.value}))
            .collect();
        let body =
            serde_json::to_string_pretty(&serde_json::json!({ "stats": list })).unwrap_or_default();
        return Ok(("application/json", body));
    }
    let mut body = String::new();
    for s in stats {
        body.push_str(&format!("{}: {}\n", s.name, s.value));
    }
    Ok(("text/plain", body))
}

/// `/stats/prometheus`: everything `/metrics` serves, then the Envoy stats with Envoy's
/// Prometheus names (`crate::rbacstats`).
pub fn prometheus(metrics: &Metrics, now_unix: i64) -> String {
    let mut out = metrics.render(now_unix);
    metrics.rbac.render_prometheus(&mut out);
    out
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded (`+` is a space).
pub fn form(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (c, None) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbacstats::{Engine, Scope};

    fn metrics() -> Metrics {
        let m = Metrics::default();
        m.rbac.enforced(Scope::Http(8080), true);
        m.rbac.enforced(Scope::Http(8080), true);
        m.rbac.shadow(Scope::Http(8080), Engine::Deny, false);
        m
    }

    #[test]
    fn text_json_filter_and_usedonly() {
        let m = metrics();
        let (ct, text) = stats(&m, None).unwrap();
        assert_eq!(ct, "text/plain");
        assert_eq!(
            text,
            "http.inbound_0.0.0.0_8080.rbac.allowed: 2\n\
             http.inbound_0.0.0.0_8080.rbac.denied: 0\n\
             http.inbound_0.0.0.0_8080.rbac.istio_dry_run_deny_shadow_allowed: 0\n\
             http.inbound_0.0.0.0_8080.rbac.istio_dry_run_deny_shadow_denied: 1\n"
        );
        let (_, used) = stats(&m, Some("usedonly")).unwrap();
        assert_eq!(used.lines().count(), 2, "{used}");
        let (_, f) = stats(&m, Some("filter=shadow_denied%24")).unwrap();
        assert_eq!(
            f,
            "http.inbound_0.0.0.0_8080.rbac.istio_dry_run_deny_shadow_denied: 1\n"
        );
        let (ct, j) = stats(&m, Some("format=json&filter=allowed")).unwrap();
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(
            v["stats"][0]["name"],
            "http.inbound_0.0.0.0_8080.rbac.allowed"
        );
        assert_eq!(v["stats"][0]["value"], 2);
        assert_eq!(v["stats"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn bad_filters_are_refused_in_words() {
        let m = metrics();
        assert!(stats(&m, Some("filter=("))
            .unwrap_err()
            .contains("regular expression"));
        // A huge repetition compiles past the size limit.
        assert!(stats(&m, Some("filter=a{1000}{1000}")).is_err());
        let long = format!("filter={}", "a".repeat(FILTER_MAX_LEN + 1));
        assert!(stats(&m, Some(&long)).unwrap_err().contains("longer"));
        assert!(stats(&m, Some("format=xml")).unwrap_err().contains("json"));
    }

    #[test]
    fn prometheus_has_both() {
        let p = prometheus(&metrics(), 0);
        assert!(p.contains("trustmesh_authz_decisions_total"), "{p}");
        assert!(p.contains(
            "envoy_http_inbound_0_0_0_0_8080_rbac{authz_dry_run_action=\"deny\",authz_dry_run_result=\"denied\"} 1"
        ));
    }

    #[test]
    fn forms_decode() {
        assert_eq!(
            form("a=b%2Fc&d=e+f&g&h=%zz"),
            [
                ("a".into(), "b/c".into()),
                ("d".into(), "e f".into()),
                ("g".into(), String::new()),
                ("h".into(), "%zz".into())
            ]
        );
    }
}
