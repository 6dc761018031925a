//! What a verified token adds to the forwarded request: `outputPayloadToHeader` and
//! `outputClaimToHeaders`.
//!
//! Header names are validated when the rule is compiled, so a typo is a configuration error
//! instead of a silently missing header. Claim values follow Envoy's `claim_to_headers`:
//! strings, numbers and booleans are copied, a list of those is joined with `,`, nested claims
//! are addressed with dots (`a.b`), and anything else (objects, missing claims) adds no header.

use super::rule::JwtRule;
use super::{AuthInfo, JwtConfigError};
use hyper::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

pub(crate) struct Outputs {
    payload: Option<HeaderName>,
    claims: Vec<(HeaderName, String)>,
}

impl Outputs {
    pub(crate) fn compile(index: usize, rule: &JwtRule) -> Result<Outputs, JwtConfigError> {
        let name = |text: &str| {
            HeaderName::from_bytes(text.trim().to_ascii_lowercase().as_bytes()).map_err(|_| {
                JwtConfigError::InvalidHeaderName {
                    index,
                    name: text.to_string(),
                }
            })
        };
        Ok(Outputs {
            payload: rule
                .output_payload_to_header
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(name)
                .transpose()?,
            claims: rule
                .output_claim_to_headers
                .iter()
                .map(|c| Ok((name(&c.header)?, c.claim.clone())))
                .collect::<Result<_, JwtConfigError>>()?,
        })
    }

    pub(crate) fn apply(&self, info: &AuthInfo, headers: &mut HeaderMap) {
        if let Some(name) = &self.payload {
            if let Some(payload) = info.raw_token.split('.').nth(1) {
                if let Ok(value) = HeaderValue::from_str(payload) {
                    headers.insert(name.clone(), value);
                }
            }
        }
        for (name, claim) in &self.claims {
            match claim_value(&info.claims, claim).and_then(|v| HeaderValue::from_str(&v).ok()) {
                Some(value) => {
                    headers.insert(name.clone(), value);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
    }

    pub(crate) fn remove_all(&self, headers: &mut HeaderMap) {
        for name in self
            .payload
            .iter()
            .chain(self.claims.iter().map(|(n, _)| n))
        {
            headers.remove(name);
        }
    }
}

/// The header text for claim `path` (dotted for nested objects), if it is representable.
pub(crate) fn claim_value(claims: &Value, path: &str) -> Option<String> {
    let mut current = claims;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    scalar(current).or_else(|| {
        let items = current.as_array()?;
        let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
        parts.map(|p| p.join(","))
    })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_values_follow_envoy() {
        let claims = json!({"sub": "alice", "n": 7, "ok": true, "groups": ["a", "b"],
                            "nested": {"team": "blue"}, "obj": {"x": 1}});
        assert_eq!(claim_value(&claims, "sub").as_deref(), Some("alice"));
        assert_eq!(claim_value(&claims, "n").as_deref(), Some("7"));
        assert_eq!(claim_value(&claims, "ok").as_deref(), Some("true"));
        assert_eq!(claim_value(&claims, "groups").as_deref(), Some("a,b"));
        assert_eq!(claim_value(&claims, "nested.team").as_deref(), Some("blue"));
        assert_eq!(claim_value(&claims, "obj"), None);
        assert_eq!(claim_value(&claims, "missing"), None);
    }
}
