//! Durations as the CA server's flags and the agent's config take them (`90s`, `15m`, `24h`, `7d`,
//! or bare seconds). Printing them as Istio does (`3h0m0s`) is `trustmesh_ca::duration::format_go`.

use std::time::Duration;

use trustmesh_ca::duration::format_go;

/// Parses `N` (seconds) or `N` followed by one unit of `s`, `m`, `h`, `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 90s, 15m, 24h or 7d"))?;
    let secs = n
        .checked_mul(mult)
        .ok_or_else(|| format!("duration {s:?} is too large"))?;
    if secs == 0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs(secs))
}

/// Like [`parse_duration`], but also accepts zero (`0`, `0s`, `0m`, ...), for settings where zero
/// means "off".
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t.strip_suffix(['s', 'm', 'h', 'd']).unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b == b'0') {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// The lifetime a certificate request gets, with Istio's semantics: zero or negative means the
/// default; above the maximum is an error (istiod answers "requested TTL ... is greater than the
/// max allowed TTL ..." with INVALID_ARGUMENT rather than silently clipping, and so do we).
pub fn granted(requested_secs: i64, default: Duration, max: Duration) -> Result<Duration, String> {
    if requested_secs <= 0 {
        return Ok(default);
    }
    let requested = Duration::from_secs(requested_secs as u64);
    if requested > max {
        return Err(format!(
            "requested TTL {} is greater than the max allowed TTL {}",
            format_go(requested),
            format_go(max)
        ));
    }
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn zero_is_accepted_where_it_means_off() {
        for s in ["0", "0s", "0m", " 00h "] {
            assert_eq!(parse_duration_or_zero(s).unwrap(), Duration::ZERO, "{s}");
        }
        assert_eq!(
            parse_duration_or_zero("5m").unwrap(),
            Duration::from_secs(300)
        );
        assert!(parse_duration_or_zero("s").is_err());
        assert!(parse_duration_or_zero("-0").is_err());
        assert!(parse_duration_or_zero("1w").is_err());
    }
}
