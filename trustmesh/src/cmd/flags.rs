//! Value parsers for flags shared by several commands, so every command reads a duration the
//! same way the config files do (`trustmesh_config`).

use trustmesh_config::{Deprecations, LegacyDuration};

/// `--flag DURATION`: Go's grammar (`90s`, `1h30m`); bare seconds and day units (`7d`) still
/// parse and are reported as deprecated by [`report`].
pub fn duration(s: &str) -> Result<LegacyDuration, String> {
    LegacyDuration::parse(s).map_err(|e| e.to_string())
}

/// Like [`duration`], for settings where zero means nothing sensible.
pub fn positive_duration(s: &str) -> Result<LegacyDuration, String> {
    let d = duration(s)?;
    if d.value.is_zero() {
        return Err(format!(
            "invalid duration {:?}: must be greater than zero",
            d.given
        ));
    }
    Ok(d)
}

/// Prints each deprecated spelling as a `warning:` line on stderr (for one-shot commands,
/// which log nothing else).
pub fn report(deprecations: &Deprecations) {
    for m in deprecations.messages() {
        eprintln!("warning: {m}");
    }
}
