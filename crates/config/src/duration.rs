//! Durations as Go (and so Istio) spells them.
//!
//! The grammar is Go's `time.ParseDuration`, which Istio's config and CRD fields accept: one or
//! more `<number><unit>` groups, where the number may have a fraction (`1.5h`, `.5s`) and the
//! unit is `ns`, `us` (or `µs`), `ms`, `s`, `m` or `h`; `0` alone is zero. Protobuf's JSON form
//! (`1.5s`, `0.000000001s`) is a subset, so whatever Istio loads from a `google.protobuf.Duration`
//! field loads here. Two things differ from Go on purpose: a negative duration is refused (no
//! trustmesh setting means anything with one), and so is a value above Go's maximum of
//! 2562047h47m16.854775807s, as Go does, with an error naming the text rather than a wrap.
//!
//! Formatting is Go's `Duration.String` (`1h30m0s`, `1.5s`, `500ms`), so messages read exactly
//! like the Istio ones operators search for.

use std::fmt;
use std::str::FromStr;

/// Go's largest duration: `math.MaxInt64` nanoseconds.
const MAX_NANOS: u64 = i64::MAX as u64;
/// Go's intermediate bound while parsing (`1<<63`).
const BOUND: u64 = 1 << 63;
const EXAMPLES: &str = "expected e.g. 500ms, 90s, 1h30m";

/// A non-negative span of time written the way Go and Istio write it. Deserializes from a
/// string (`"90s"`), serializes to Go's format (`"1m30s"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// A duration that could not be parsed; its message names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} ({EXAMPLES})")]
pub struct DurationError {
    text: String,
    reason: String,
}

impl DurationError {
    fn new(text: &str, reason: impl Into<String>) -> DurationError {
        DurationError {
            text: text.to_string(),
            reason: reason.into(),
        }
    }

    /// The text that was refused.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Why, without the text: `missing unit`, `unknown unit "x"`, ...
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Duration {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Duration {
        Duration(std::time::Duration::from_millis(millis))
    }

    /// The standard library value.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Parses Go's grammar (see the module docs).
    pub fn parse(text: &str) -> Result<Duration, DurationError> {
        parse_go(text).map(|n| Duration(std::time::Duration::from_nanos(n)))
    }

    /// Parses and applies Istio's `ValidateDuration` (at least 1ms, whole milliseconds), which
    /// Istio's validation applies to RequestAuthentication `jwtRules[].timeout`.
    pub fn parse_millis(text: &str) -> Result<Duration, DurationError> {
        let d = Duration::parse(text)?;
        if d.0 < std::time::Duration::from_millis(1) {
            return Err(DurationError::new(text, "must be at least 1ms"));
        }
        if d.0.subsec_nanos() % 1_000_000 != 0 {
            return Err(DurationError::new(
                text,
                "only whole milliseconds are supported",
            ));
        }
        Ok(d)
    }

    /// The shortest Go spelling, for messages that suggest one: `168h` rather than `168h0m0s`.
    pub fn spelling(self) -> String {
        let n = self.0.as_nanos();
        if n < 1_000_000_000 {
            return format_nanos(n);
        }
        let secs = n / 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let frac = fraction(n % 1_000_000_000, 9);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if s > 0 || !frac.is_empty() {
            out.push_str(&format!("{s}{frac}s"));
        }
        out
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Duration {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> std::time::Duration {
        d.0
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Duration, DurationError> {
        Duration::parse(s)
    }
}

/// Go's `Duration.String`: `1h30m0s`, `1.5s`, `500ms`, `0s`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go(self.0))
    }
}

/// Go's `Duration.String` for a standard duration: `2160h0m0s`, `1m30s`, `1.5s`, `500ms`, `0s`.
pub fn format_go(d: std::time::Duration) -> String {
    let n = d.as_nanos();
    if n < 1_000_000_000 {
        return format_nanos(n);
    }
    let secs = n / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = fraction(n % 1_000_000_000, 9);
    if h > 0 {
        format!("{h}h{m}m{s}{frac}s")
    } else if m > 0 {
        format!("{m}m{s}{frac}s")
    } else {
        format!("{s}{frac}s")
    }
}

/// Below a second Go switches to the largest unit under it: `1.5ms`, `20µs`, `7ns`.
fn format_nanos(n: u128) -> String {
    let (per, digits, unit) = match n {
        0 => return "0s".into(),
        1..=999 => (1, 0, "ns"),
        1_000..=999_999 => (1_000, 3, "µs"),
        _ => (1_000_000, 6, "ms"),
    };
    format!("{}{}{unit}", n / per, fraction(n % per, digits))
}

/// `.5` for 500 of 3 digits; empty when zero. Trailing zeros are dropped, as Go does.
fn fraction(rem: u128, digits: usize) -> String {
    if rem == 0 {
        return String::new();
    }
    let s = format!(".{rem:0digits$}");
    s.trim_end_matches('0').to_string()
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        // Go accepts the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Go's `time.ParseDuration`, step for step, in nanoseconds; a leading `-` is refused.
fn parse_go(text: &str) -> Result<u64, DurationError> {
    let err = |reason: &str| DurationError::new(text, reason);
    let mut s = text;
    if s.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(err("expected a number"));
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let mut v = leading_int(&s[..int_len]).ok_or_else(|| err("too large"))?;
        s = &s[int_len..];
        let (mut f, mut scale, mut frac_len) = (0, 1.0, 0);
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            frac_len = s.bytes().take_while(u8::is_ascii_digit).count();
            (f, scale) = leading_fraction(&s[..frac_len]);
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(err("expected a number"));
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit = &s[..unit_len];
        if unit.is_empty() {
            return Err(err("missing unit"));
        }
        let per = unit_nanos(unit).ok_or_else(|| err(&format!("unknown unit {unit:?}")))?;
        s = &s[unit_len..];
        if v > BOUND / per {
            return Err(err("too large"));
        }
        v *= per;
        if f > 0 {
            // Go converts the fraction through float64; doing the same keeps results identical.
            v += (f as f64 * (per as f64 / scale)) as u64;
            if v > BOUND {
                return Err(err("too large"));
            }
        }
        total = total
            .checked_add(v)
            .filter(|t| *t <= BOUND)
            .ok_or_else(|| err("too large"))?;
    }
    if total > MAX_NANOS {
        return Err(err("too large"));
    }
    Ok(total)
}

/// Go's `leadingInt`: `None` when the digits exceed `1<<63`.
fn leading_int(digits: &str) -> Option<u64> {
    let mut x: u64 = 0;
    for c in digits.bytes() {
        if x > BOUND / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > BOUND {
            return None;
        }
    }
    Some(x)
}

/// Go's `leadingFraction`: digits past what fits are dropped, not an error.
fn leading_fraction(digits: &str) -> (u64, f64) {
    let (mut x, mut scale): (u64, f64) = (0, 1.0);
    for c in digits.bytes() {
        if x > (BOUND - 1) / 10 {
            break;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > BOUND {
            break;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale)
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a duration such as 500ms, 90s or 1h30m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            // YAML reads a bare `0` as a number; `0` alone is a valid duration.
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                match v {
                    0 => Ok(Duration::ZERO),
                    _ => Err(E::custom(DurationError::new(
                        &v.to_string(),
                        "missing unit",
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(DurationError::new(
                        &v.to_string(),
                        "negative durations are not allowed",
                    ))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(DurationError::new(
                    &v.to_string(),
                    "missing unit",
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration in a field or flag that used to accept more than Go's grammar: bare seconds
/// (`90`) and day units (`7d`, `1d12h`). Both still parse, marked as legacy so the caller can
/// record a deprecation naming the Go spelling ([`crate::Deprecations::value`],
/// [`crate::Deprecations::flag`]). Surrounding whitespace is ignored, as the old parsers did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyDuration {
    pub value: Duration,
    /// The text as given (trimmed).
    pub given: String,
    /// Whether `given` is an old spelling that Go's grammar refuses.
    pub legacy: bool,
}

impl LegacyDuration {
    pub fn parse(text: &str) -> Result<LegacyDuration, DurationError> {
        let given = text.trim();
        let strict = Duration::parse(given);
        let (value, legacy) = match strict {
            Ok(d) => (d, false),
            Err(e) => match old_grammar(given) {
                Some(secs) if secs <= MAX_NANOS / 1_000_000_000 => {
                    (Duration::from_secs(secs), true)
                }
                Some(_) => return Err(DurationError::new(given, "too large")),
                None => return Err(e),
            },
        };
        Ok(LegacyDuration {
            value,
            given: given.to_string(),
            legacy,
        })
    }

    /// The standard library value.
    pub fn get(&self) -> std::time::Duration {
        self.value.get()
    }
}

/// The grammar the CA flags and the agent took before: bare seconds, or `<integer><unit>`
/// groups with units `s`, `m`, `h` and `d` (a day is 24h). In whole seconds.
fn old_grammar(s: &str) -> Option<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let mut total: u64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        let per = match rest[digits..].chars().next()? {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        rest = &rest[digits + 1..];
        total = total.checked_add(n.checked_mul(per)?)?;
    }
    Some(total)
}

impl<'de> serde::Deserialize<'de> for LegacyDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LegacyDuration, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LegacyDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a duration such as 500ms, 90s or 1h30m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LegacyDuration, E> {
                LegacyDuration::parse(v).map_err(E::custom)
            }
            // Bare seconds, as the old spelling allowed: `ttl: 90`.
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LegacyDuration, E> {
                LegacyDuration::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LegacyDuration, E> {
                LegacyDuration::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;
