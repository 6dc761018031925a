//! Principal values as a policy writes them, expanded over the mesh's trust domains before
//! they are matched (a leaf: the clause compiler and the CLI's explanations use it).

use crate::mesh::{MeshConfig, CLUSTER_LOCAL};

/// Trust-domain alias expansion (Istio "Security concepts", trust domain migration): a
/// principal `td/ns/x/sa/y` whose `td` is the local domain, an alias, or `cluster.local` also
/// matches the same `ns/x/sa/y` in every one of those domains. A `*suffix` trust domain that
/// covers some of them stays as written for those (the suffix match already covers them) and is
/// rewritten for the others. Principals not in that exact five-part form, or with a bare `*`
/// trust domain, are left alone.
pub fn expand_principal(p: &str, mesh: &MeshConfig) -> Vec<String> {
    let parts: Vec<&str> = p.split('/').collect();
    if parts.len() != 5 || parts[0] == "*" {
        return vec![p.to_string()];
    }
    let td = parts[0];
    let covers = |d: &str| match td.strip_prefix('*') {
        Some(suffix) => d.ends_with(suffix),
        None => d == td,
    };
    if td != CLUSTER_LOCAL && !mesh.trust_domains().any(covers) {
        return vec![p.to_string()];
    }
    let rest = &p[td.len()..];
    let mut out: Vec<String> = Vec::new();
    for d in mesh.trust_domains() {
        let s = if covers(d) {
            p.to_string()
        } else {
            format!("{d}{rest}")
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

pub(super) fn expand_all(ps: &[String], mesh: &MeshConfig) -> Vec<String> {
    ps.iter().flat_map(|p| expand_principal(p, mesh)).collect()
}
