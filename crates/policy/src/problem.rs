//! Problems and notices, each located as `file:document:field path` so a user can jump to it.

use std::fmt;

/// Where something was found: file, 1-based YAML document number, and field path inside that
/// document (`items[2].spec.rules[0].from[0].source.ipBlocks[1]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: String,
    pub document: usize,
    pub field: String,
}

impl Location {
    pub fn new(file: &str, document: usize, field: impl Into<String>) -> Self {
        Location {
            file: file.to_string(),
            document,
            field: field.into(),
        }
    }

    /// The same document, a field below this one (`self.field` + `.` + `sub`).
    pub fn at(&self, sub: impl AsRef<str>) -> Location {
        let sub = sub.as_ref();
        let field = if self.field.is_empty() {
            sub.to_string()
        } else if sub.starts_with('[') {
            format!("{}{sub}", self.field)
        } else {
            format!("{}.{sub}", self.field)
        };
        Location {
            file: self.file.clone(),
            document: self.document,
            field,
        }
    }
}

impl fmt::Display for Location {
    /// `file:document:field`, or `file:document` for the document as a whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}:{}", self.file, self.document)
        } else {
            write!(f, "{}:{}:{}", self.file, self.document, self.field)
        }
    }
}

/// Something wrong with the configuration. `unreadable` marks input that could not be read or
/// parsed as YAML at all (the CLI exits 2 for those, 1 for every other problem). `warning`
/// marks configuration Istio itself accepts but that almost certainly does not do what was
/// meant: `validate` reports it, loading does not refuse it (it becomes a notice).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub location: Location,
    pub message: String,
    pub hint: Option<String>,
    pub unreadable: bool,
    pub warning: bool,
}

impl Problem {
    pub fn new(location: Location, message: impl Into<String>) -> Self {
        Problem {
            location,
            message: message.into(),
            hint: None,
            unreadable: false,
            warning: false,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn warning(mut self) -> Self {
        self.warning = true;
        self
    }
    pub fn unreadable(mut self) -> Self {
        self.unreadable = true;
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = if self.warning { "warning: " } else { "" };
        write!(f, "{}: {tag}{}", self.location, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Informational: something was skipped or interpreted, but the configuration is valid.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}
