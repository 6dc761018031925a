//! The lifetime a certificate request is granted. Durations in flags and config files are
//! parsed by `trustmesh_config::Duration`; printing them as Istio does (`3h0m0s`) is
//! `trustmesh_config::format_go`.

use std::time::Duration;

use trustmesh_config::format_go;

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
    fn default_within_max_and_istio_refusal() {
        let (day, hour) = (Duration::from_secs(86_400), Duration::from_secs(3600));
        assert_eq!(granted(0, hour, day).unwrap(), hour);
        assert_eq!(granted(-5, hour, day).unwrap(), hour);
        assert_eq!(granted(60, hour, day).unwrap(), Duration::from_secs(60));
        assert_eq!(
            granted(2 * 86_400, hour, day).unwrap_err(),
            "requested TTL 48h0m0s is greater than the max allowed TTL 24h0m0s"
        );
    }
}
