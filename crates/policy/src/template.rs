//! `paths` entries with `{*}` / `{**}`: Istio hands them to Envoy's `uri_template` matcher
//! (`{*}` becomes `*`, `{**}` becomes `**`), so they are matched here the way that matcher's
//! regular expression does, not the way the template syntax might suggest:
//!
//! - the template is `/` followed by segments joined by `/`; a trailing `/` is an empty last
//!   segment that must be matched too;
//! - `{*}` is one or more path characters (RFC 3986 `pchar` without `*` and `=`), never `/`;
//! - `{**}` is zero or more path characters *or* `/`. So `/foo/{**}` matches `/foo/` and
//!   `/foo/a/b` but not `/foo`, and `/store/{**}/cart` matches `/store//cart` and
//!   `/store/a/b/cart` but not `/store/cart` (Istio's `tests/integration/security/authz_test.go`,
//!   `TestAuthz_PathTemplating`, asserts exactly these);
//! - literal segments may follow `{**}`, another operator may not.
//!
//! Validation is Istio's `CheckValidPathTemplate` (`pkg/config/security/security.go`) plus what
//! Envoy's parser (`uri_template_internal.cc`) would refuse after Istio accepted it: a template
//! must start with `/`, and its literals must be Envoy path characters (Istio's list also allows
//! `=`, and it trims repeated trailing slashes; Envoy rejects both, which in Istio means a
//! rejected listener instead of a policy).

/// Envoy's `kLiteral`: unreserved, `%`, sub-delims without `*` and `=`, `:` and `@`.
#[inline]
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@".contains(&b)
}

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Lit(Box<str>),
    /// `{*}`
    One,
    /// `{**}`
    Many,
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segs: Vec<Seg>,
}

/// Whether a `paths` value is a template (Istio's `ContainsPathTemplate`).
pub fn is_template(v: &str) -> bool {
    v.contains("{*}") || v.contains("{**}")
}

/// Why a `paths` value cannot be used, if it cannot. Applies to every value: braces outside
/// `{*}`/`{**}` are refused even in a plain path, as Istio does.
pub fn path_error(v: &str) -> Option<String> {
    let template = is_template(v);
    if !template {
        return v
            .contains(['{', '}'])
            .then(|| "`{` and `}` are only allowed as the `{*}` and `{**}` operators".into());
    }
    let Some(body) = v.strip_prefix('/') else {
        return Some("a path template must start with `/`".into());
    };
    let segs: Vec<&str> = body.split('/').collect();
    let mut seen_many = false;
    for (i, s) in segs.iter().enumerate() {
        match *s {
            "{*}" | "{**}" if seen_many => {
                return Some(
                    "`{**}` must be the last operator: no `{*}` or `{**}` may follow it".into(),
                )
            }
            "{*}" => {}
            "{**}" => seen_many = true,
            "" if i + 1 == segs.len() => {} // one trailing `/`
            s if s.contains(['{', '}']) => {
                return Some(format!(
                    "segment {s:?}: an operator must be a whole segment, exactly `{{*}}` or `{{**}}`"
                ))
            }
            "" => return Some("empty segment (`//`) in a path template".into()),
            s if s.contains('*') => {
                return Some(format!(
                    "segment {s:?}: `*` is not allowed in a path template outside `{{*}}`/`{{**}}`"
                ))
            }
            s if !s.bytes().all(is_path_char) => {
                return Some(format!(
                    "segment {s:?} has characters Envoy's uri_template does not accept (allowed: letters, digits and -._~%!$&'()+,;:@)"
                ))
            }
            _ => {}
        }
    }
    None
}

impl PathTemplate {
    /// Compiles a value for which [`is_template`] holds; validity is [`path_error`]'s job.
    pub fn compile(v: &str) -> PathTemplate {
        let body = v.strip_prefix('/').unwrap_or(v);
        let segs = body
            .split('/')
            .map(|s| match s {
                "{*}" => Seg::One,
                "{**}" => Seg::Many,
                l => Seg::Lit(l.into()),
            })
            .collect();
        PathTemplate { segs }
    }

    /// The literal text every matching path starts with: `/` and the literal segments before
    /// the first operator, each followed by `/`. Used to index rules.
    pub fn literal_prefix(&self) -> String {
        let mut p = String::from("/");
        for (i, s) in self.segs.iter().enumerate() {
            match s {
                Seg::Lit(l) if i + 1 < self.segs.len() => {
                    p.push_str(l);
                    p.push('/');
                }
                _ => break,
            }
        }
        p
    }

    /// Matches a path that has no query string or fragment.
    pub fn matches(&self, path: &str) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        for (i, seg) in self.segs.iter().enumerate() {
            if i > 0 {
                match rest.strip_prefix('/') {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            match seg {
                Seg::Lit(l) => match rest.strip_prefix(&**l) {
                    Some(r) => rest = r,
                    None => return false,
                },
                Seg::One => {
                    let n = rest.bytes().take_while(|&b| is_path_char(b)).count();
                    if n == 0 {
                        return false;
                    }
                    rest = &rest[n..];
                }
                Seg::Many => return self.matches_tail(i + 1, rest),
            }
        }
        rest.is_empty()
    }

    /// After `{**}`: only literal segments follow (validation), so the rest of the path must
    /// end with `/` + those literals joined by `/`, and what precedes them must be path
    /// characters or `/`.
    fn matches_tail(&self, from: usize, rest: &str) -> bool {
        let mut tail = String::new();
        for s in &self.segs[from..] {
            tail.push('/');
            match s {
                Seg::Lit(l) => tail.push_str(l),
                // Not a valid template; match nothing rather than guess.
                Seg::One | Seg::Many => return false,
            }
        }
        rest.strip_suffix(tail.as_str())
            .is_some_and(|glob| glob.bytes().all(|b| b == b'/' || is_path_char(b)))
    }
}

impl std::fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.segs {
            match s {
                Seg::Lit(l) => write!(f, "/{l}")?,
                Seg::One => f.write_str("/{*}")?,
                Seg::Many => f.write_str("/{**}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
