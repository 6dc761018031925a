//! Durations as operators type them (`90s`, `30m`, `24h`, `7d`, `1h30m`) and as Istio prints
//! them (`2160h0m0s`), plus a short human form for remaining lifetimes (`23h59m`).

use std::time::Duration;

/// Parses `<number><unit>` groups, units `s`, `m`, `h`, `d` (a day is 24h: certificate
/// lifetimes are wall-clock spans, not calendar days). `0` alone is accepted as zero.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let bad = |why: &str| {
        format!("invalid duration {input:?}: {why} (expected e.g. 90s, 30m, 24h, 7d, 1h30m)")
    };
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit = rest.chars().next().ok_or_else(|| bad("missing unit"))?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        rest = &rest[unit.len_utf8()..];
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("too large"))?;
    }
    Ok(Duration::from_secs(total))
}

/// Go's `time.Duration` format for whole seconds (`2160h0m0s`, `1m30s`, `0s`), so error
/// messages read exactly like the Istio ones operators search for.
pub fn format_go(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Short human form with the two most significant units: `364d23h`, `23h59m`, `4m10s`, `59s`.
pub fn format_human(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_groups() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse("87600h").unwrap(), Duration::from_secs(87_600 * 3600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "h",
            "10",
            "10x",
            "1.5h",
            "-1h",
            "1h 30m",
            "99999999999999999999h",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.starts_with("invalid duration"), "{bad}: {err}");
        }
        assert!(parse("10x").unwrap_err().contains("unknown unit 'x'"));
        assert!(parse("10").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn formats_like_go_and_humans() {
        assert_eq!(format_go(Duration::from_secs(90 * 86_400)), "2160h0m0s");
        assert_eq!(format_go(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go(Duration::from_secs(3 * 3600)), "3h0m0s");
        assert_eq!(format_go(Duration::from_secs(5)), "5s");
        assert_eq!(format_go(Duration::ZERO), "0s");
        assert_eq!(format_human(Duration::from_secs(86_399)), "23h59m");
        assert_eq!(
            format_human(Duration::from_secs(365 * 86_400 - 1)),
            "364d23h"
        );
        assert_eq!(format_human(Duration::from_secs(250)), "4m10s");
    }
}
