//! Reading a YAML config file into its raw struct.
//!
//! Parsing goes through `serde_path_to_error`, so a bad file is reported as
//! `<file>: <field.path>: <what is wrong>` — an operator should never have to guess which of
//! forty lines is at fault. The raw struct is then converted by its owner into the typed
//! config, reporting with [`ConfigError::Field`] in the same shape.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Errors loading a configuration file. Each names the file and, where possible, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {field}: {message}", file.display())]
    Field {
        file: PathBuf,
        field: String,
        message: String,
    },
    /// A message that names its own field (e.g. from a validator shared with other callers).
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
}

/// The field path used for errors about the document as a whole.
pub const DOCUMENT: &str = "(document)";

impl ConfigError {
    pub fn field(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            file: file.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Reads a whole file as text.
pub fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// Parses YAML text into `T`; errors name `file` and the field path. An empty document is
/// read as an empty mapping, so a file holding only defaults reports the missing fields.
pub fn from_yaml<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let message = e.into_inner().to_string();
        // The YAML error repeats the path in front of its message; say it once.
        let message = match message.strip_prefix(&format!("{field}: ")) {
            Some(rest) => rest.to_string(),
            None => message,
        };
        ConfigError::Field {
            file: file.to_path_buf(),
            field: if field == "." { DOCUMENT.into() } else { field },
            message,
        }
    })
}

/// Converts an already-parsed YAML value into `T`, for documents whose config sits inside an
/// envelope (Istio's mesh config inside a ConfigMap or an IstioOperator): errors name `file`
/// and the field path below `prefix`, the envelope's path to the value (empty at the top).
pub fn from_value<T: DeserializeOwned>(
    value: serde_yaml::Value,
    file: &Path,
    prefix: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (prefix.is_empty(), inner == ".") {
            (true, true) => DOCUMENT.to_string(),
            (true, false) => inner,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{inner}"),
        };
        ConfigError::Field {
            file: file.to_path_buf(),
            field,
            message: e.into_inner().to_string(),
        }
    })
}

/// A value the raw struct left optional but the config requires.
pub fn required<T>(v: Option<T>, file: &Path, field: &str) -> Result<T, ConfigError> {
    v.ok_or_else(|| ConfigError::field(file, field, "is required"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Duration;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Raw {
        #[allow(dead_code)]
        name: String,
        #[serde(default)]
        #[allow(dead_code)]
        inner: Vec<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        idle_timeout: Duration,
    }

    #[test]
    fn bad_duration_names_file_and_field_path() {
        let text = "name: x\ninner:\n  - idleTimeout: 5s\n  - idleTimeout: 5 seconds\n";
        let e = from_yaml::<Raw>(text, Path::new("x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.yaml: inner[1].idleTimeout: invalid duration \"5 seconds\""),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_missing_fields() {
        let e = from_yaml::<Raw>("name: x\nnmae: y\n", Path::new("x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.yaml: nmae: unknown field"), "{e}");
        let e = from_yaml::<Raw>("", Path::new("x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.yaml: (document): missing field `name`"),
            "{e}"
        );
    }

    #[test]
    fn from_value_names_the_path_below_the_envelope() {
        let v: serde_yaml::Value =
            serde_yaml::from_str("name: x\ninner:\n  - idleTimeout: soon\n").unwrap();
        let e = from_value::<Raw>(v.clone(), Path::new("m.yaml"), "spec.meshConfig")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("m.yaml: spec.meshConfig.inner[0].idleTimeout: invalid duration"),
            "{e}"
        );
        let e = from_value::<Raw>(v, Path::new("m.yaml"), "").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Field { field, .. } if field == "inner[0].idleTimeout"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_file_names_it() {
        let e = read(Path::new("/nonexistent/x.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/x.yaml: cannot read:"), "{e}");
    }
}
