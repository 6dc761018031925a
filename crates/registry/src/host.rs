//! Host names as Istio treats them: case-insensitive DNS names, possibly with a leading
//! wildcard (`*.example.com`), short names in a DestinationRule resolved against its namespace,
//! and "most specific wildcard wins" matching.
//!
//! Facts from istio/istio: `ResolveShortnameToFQDN` (pkg/config/model.go) expands only a name
//! without dots (`reviews` in namespace `bookinfo` → `reviews.bookinfo.svc.<domain>`; `*` and
//! IP addresses stay as written); `MostSpecificHostMatch` (pilot/pkg/model) prefers an exact
//! host, then the longest wildcard that covers the name; `ValidateWildcardDomain`
//! (pkg/config/validation) allows `*` only as, or at the start of, the first label.

/// Lower-cased, without a trailing dot: the form every index is keyed by.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Istio's `ResolveShortnameToFQDN`: a name without dots is relative to `namespace`.
pub fn resolve_short(host: &str, namespace: &str, domain: &str) -> String {
    if host == "*" || host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
        return normalize(host);
    }
    normalize(&format!("{host}.{namespace}.svc.{domain}"))
}

/// Whether `pattern` (a host as written in configuration, normalized) covers `name` (a
/// normalized host, possibly itself a wildcard such as a ServiceEntry's `*.example.com`).
pub fn covers(pattern: &str, name: &str) -> bool {
    if pattern == name || pattern == "*" {
        return true;
    }
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // `*.example.com` covers `a.example.com` and `*.b.example.com`, not `example.com`;
    // `*foo.com` covers `barfoo.com`. A wildcard name is covered only by a wider wildcard.
    match name.strip_prefix('*') {
        Some(rest) => rest.ends_with(suffix) && rest.len() > suffix.len(),
        None => name.ends_with(suffix) && name.len() > suffix.len(),
    }
}

/// The wildcard keys to try for `name`, most specific first: `a.b.c` gives `*.b.c`, `*.c`, `*`.
/// Used by the hash indexes (DNS names, DestinationRule hosts) so a lookup costs one probe per
/// label, not a scan.
pub fn wildcard_keys(name: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = Some(name);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.split_once('.') {
            Some((_, tail)) => {
                rest = Some(tail);
                Some(format!("*.{tail}"))
            }
            None => {
                rest = None;
                Some("*".to_string())
            }
        }
    })
}

/// Why `host` is not a valid ServiceEntry or DestinationRule host, if it is not
/// (`ValidateWildcardDomain`: labels of letters, digits and `-`, at most 63 characters each,
/// 255 in all; a `*` only as, or at the start of, the first label).
pub fn invalid(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("must not be empty".into());
    }
    if host.len() > 255 {
        return Some("is longer than 255 characters".into());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    for (i, label) in name.split('.').enumerate() {
        let label = if i == 0 {
            label.strip_prefix('*').unwrap_or(label)
        } else {
            label
        };
        if i == 0 && label.is_empty() && name.starts_with('*') {
            continue;
        }
        if label.is_empty() {
            return Some("has an empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > 63 {
            return Some(format!("label \"{label}\" is longer than 63 characters"));
        }
        if label.contains('*') {
            return Some("a `*` may only start the first label (`*.example.com`)".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Some(format!(
                "label \"{label}\" must be letters, digits and `-`, not starting or ending with `-`"
            ));
        }
    }
    None
}

/// The parts of a Kubernetes-style service name `<name>.<namespace>.svc.<domain>`, if `host`
/// is one. Istio's DNS proxy answers the short forms of exactly these names.
pub fn kube_parts<'a>(host: &'a str, domain: &str) -> Option<(&'a str, &'a str)> {
    let head = host.strip_suffix(domain)?.strip_suffix(".svc.")?;
    let (name, namespace) = head.split_once('.')?;
    if name.is_empty() || namespace.is_empty() || namespace.contains('.') || name == "*" {
        return None;
    }
    Some((name, namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_like_istio() {
        let r = |h: &str| resolve_short(h, "bookinfo", "cluster.local");
        assert_eq!(r("reviews"), "reviews.bookinfo.svc.cluster.local");
        assert_eq!(r("Reviews"), "reviews.bookinfo.svc.cluster.local");
        assert_eq!(r("reviews.prod"), "reviews.prod");
        assert_eq!(r("*"), "*");
        assert_eq!(r("*.example.com"), "*.example.com");
        assert_eq!(r("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn wildcards_cover_names_and_narrower_wildcards() {
        assert!(covers("*.example.com", "a.example.com"));
        assert!(covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("*.example.com", "*.a.example.com"));
        assert!(!covers("*.a.example.com", "*.example.com"));
        assert!(covers("*", "*.example.com"));
        assert!(covers("*foo.com", "barfoo.com"));
        assert!(!covers("a.example.com", "b.example.com"));
        let keys: Vec<String> = wildcard_keys("a.b.c").collect();
        assert_eq!(keys, ["*.b.c", "*.c", "*"]);
    }

    #[test]
    fn host_validation() {
        for ok in ["httpbin.org", "*.example.com", "*", "a-b.c_d.e", "x.local."] {
            assert_eq!(invalid(ok), None, "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.*.b", "-a.b", "a b.c"] {
            assert!(invalid(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn kube_style_names() {
        let d = "cluster.local";
        assert_eq!(
            kube_parts("reviews.bookinfo.svc.cluster.local", d),
            Some(("reviews", "bookinfo"))
        );
        assert_eq!(kube_parts("reviews.svc.cluster.local", d), None);
        assert_eq!(kube_parts("a.b.c.svc.cluster.local", d), None);
        assert_eq!(kube_parts("httpbin.org", d), None);
    }
}
