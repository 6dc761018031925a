//! Old spellings that still work, each recorded with the spelling that replaces it.
//!
//! Renaming a key must not break a config file that worked yesterday, but the old spelling has
//! to go away some day, so every use is reported: once per load, as a warning that names both
//! spellings (`agent.yaml: `trust_domain` is deprecated; write `trustDomain``). The loaders
//! also return the list, so a command that checks a config can print it.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::duration::LegacyDuration;
use crate::load::ConfigError;

/// One old spelling and its replacement, both as they would be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    pub old: String,
    pub new: String,
}

/// The deprecations met while reading one file (or one command line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deprecations {
    source: PathBuf,
    items: Vec<Deprecation>,
}

impl Deprecations {
    /// `source` names what is read in messages: the file, or e.g. `trustmesh ca serve` for flags.
    pub fn new(source: impl Into<PathBuf>) -> Deprecations {
        Deprecations {
            source: source.into(),
            items: Vec::new(),
        }
    }

    pub fn push(&mut self, old: impl Into<String>, new: impl Into<String>) {
        let d = Deprecation {
            old: old.into(),
            new: new.into(),
        };
        if !self.items.contains(&d) {
            self.items.push(d);
        }
    }

    /// A key renamed without changing its value: returns whichever spelling was given,
    /// recording a deprecation for the old one. Both given is an error naming both. `at` is the
    /// path of the mapping holding the keys (empty at the top level).
    pub fn renamed<T>(
        &mut self,
        at: &str,
        new_key: &str,
        new: Option<T>,
        old_key: &str,
        old: Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        self.converted(at, new_key, new, old_key, old, |v| Ok((v, None)))
    }

    /// A key renamed with a change of value (e.g. `handshakeMs: 500` → `handshake: 500ms`):
    /// `convert` turns the old value into the new one and, when it can, the new spelling of the
    /// value for the message.
    pub fn converted<T, U>(
        &mut self,
        at: &str,
        new_key: &str,
        new: Option<T>,
        old_key: &str,
        old: Option<U>,
        convert: impl FnOnce(U) -> Result<(T, Option<(String, String)>), String>,
    ) -> Result<Option<T>, ConfigError> {
        match (new, old) {
            (Some(_), Some(_)) => Err(ConfigError::Field {
                file: self.source.clone(),
                field: path(at, new_key),
                message: format!(
                    "`{old_key}` is the deprecated spelling of `{new_key}`; give only `{new_key}`"
                ),
            }),
            (Some(v), None) => Ok(Some(v)),
            (None, None) => Ok(None),
            (None, Some(v)) => {
                let (value, spelled) = convert(v).map_err(|message| ConfigError::Field {
                    file: self.source.clone(),
                    field: path(at, old_key),
                    message,
                })?;
                match spelled {
                    Some((old_value, new_value)) => self.push(
                        format!("{}: {old_value}", path(at, old_key)),
                        format!("{}: {new_value}", path(at, new_key)),
                    ),
                    None => self.push(path(at, old_key), path(at, new_key)),
                }
                Ok(Some(value))
            }
        }
    }

    /// A YAML value given in an old spelling: `ttl: 7d` → `ttl: 168h`.
    pub fn value(&mut self, field: &str, d: &LegacyDuration) {
        if d.legacy {
            self.push(
                format!("{field}: {}", d.given),
                format!("{field}: {}", d.value.spelling()),
            );
        }
    }

    /// A flag given in an old spelling: `--max-ttl 7d` → `--max-ttl 168h`.
    pub fn flag(&mut self, flag: &str, d: &LegacyDuration) {
        if d.legacy {
            self.push(
                format!("{flag} {}", d.given),
                format!("{flag} {}", d.value.spelling()),
            );
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Deprecation> {
        self.items.iter()
    }

    /// One line per deprecation: ``<source>: `<old>` is deprecated; write `<new>` ``.
    pub fn messages(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|d| format!("{}: {d}", self.source.display()))
            .collect()
    }

    /// Logs each deprecation as a warning, once per process: a sidecar re-reads its file on
    /// every reload, and the same old spelling should not be repeated each time.
    pub fn warn(&self) {
        for m in self.unwarned() {
            tracing::warn!("{m}");
        }
    }

    /// The messages not yet logged by [`Deprecations::warn`] in this process, now marked.
    fn unwarned(&self) -> Vec<String> {
        static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        let mut warned = WARNED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.messages()
            .into_iter()
            .filter(|m| warned.insert(m.clone()))
            .collect()
    }
}

impl fmt::Display for Deprecation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is deprecated; write `{}`", self.old, self.new)
    }
}

/// `at.key`, or `key` at the top level.
pub fn path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Duration;

    #[test]
    fn each_message_is_warned_once_per_process() {
        let mut d = Deprecations::new("once-test.yaml");
        d.push("old_key", "newKey");
        assert_eq!(d.unwarned(), d.messages());
        // The same file read again (a reload): nothing new to say.
        assert!(d.unwarned().is_empty());
        d.push("other_key", "otherKey");
        assert_eq!(
            d.unwarned(),
            vec!["once-test.yaml: `other_key` is deprecated; write `otherKey`".to_string()]
        );
    }

    #[test]
    fn renamed_key_records_both_spellings() {
        let mut d = Deprecations::new("agent.yaml");
        let v = d
            .renamed("", "trustDomain", None, "trust_domain", Some("td"))
            .unwrap();
        assert_eq!(v, Some("td"));
        let v = d
            .renamed("ca", "rootCert", Some("a"), "root_cert", None)
            .unwrap();
        assert_eq!(v, Some("a"));
        assert_eq!(
            d.messages(),
            ["agent.yaml: `trust_domain` is deprecated; write `trustDomain`"]
        );
    }

    #[test]
    fn both_spellings_are_an_error_naming_both() {
        let mut d = Deprecations::new("agent.yaml");
        let e = d
            .renamed("ca", "rootCert", Some(1), "root_cert", Some(2))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "agent.yaml: ca.rootCert: `root_cert` is the deprecated spelling of `rootCert`; \
             give only `rootCert`"
        );
    }

    #[test]
    fn converted_value_names_the_new_value() {
        let mut d = Deprecations::new("proxy.yaml");
        let v = d
            .converted(
                "timeouts",
                "handshake",
                None,
                "handshakeMs",
                Some(500u64),
                |ms| {
                    let v = Duration::from_millis(ms);
                    Ok((v, Some((ms.to_string(), v.spelling()))))
                },
            )
            .unwrap();
        assert_eq!(v, Some(Duration::from_millis(500)));
        assert_eq!(
            d.messages(),
            ["proxy.yaml: `timeouts.handshakeMs: 500` is deprecated; write `timeouts.handshake: 500ms`"]
        );
    }

    #[test]
    fn legacy_values_and_flags() {
        let mut d = Deprecations::new("trustmesh ca serve");
        d.flag("--max-ttl", &LegacyDuration::parse("7d").unwrap());
        d.flag("--idle-timeout", &LegacyDuration::parse("60s").unwrap());
        d.value("ttl", &LegacyDuration::parse("90").unwrap());
        assert_eq!(
            d.messages(),
            [
                "trustmesh ca serve: `--max-ttl 7d` is deprecated; write `--max-ttl 168h`",
                "trustmesh ca serve: `ttl: 90` is deprecated; write `ttl: 1m30s`",
            ]
        );
    }
}
