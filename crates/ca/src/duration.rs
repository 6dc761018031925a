//! A short human form for remaining lifetimes (`23h59m`). Parsing durations and printing them
//! as Go and Istio do (`2160h0m0s`) is `trustmesh_config::Duration` / `format_go`.

use std::time::Duration;

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
    fn formats_for_humans() {
        assert_eq!(format_human(Duration::from_secs(86_399)), "23h59m");
        assert_eq!(
            format_human(Duration::from_secs(365 * 86_400 - 1)),
            "364d23h"
        );
        assert_eq!(format_human(Duration::from_secs(250)), "4m10s");
        assert_eq!(format_human(Duration::from_secs(59)), "59s");
    }
}
