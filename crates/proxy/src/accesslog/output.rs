//! Where the access log goes: `meshConfig.accessLogFile`, read as Istio reads it.
//!
//! Istio documents the field as the file the sidecar writes its access log to, with an empty
//! value turning the log off; `/dev/stdout` is what its demo profile and most installs set.
//! trustmesh logs to stdout when the field is absent (Istio's own default is off), so a mesh
//! config that says nothing keeps the log the operator has always seen.

use std::path::PathBuf;

use trustmesh_policy::MeshConfig;

use super::sink::Sink;

/// The access log's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `accessLogFile: ""`: no access log.
    Off,
    /// No `accessLogFile`, or `/dev/stdout`: file descriptor 1.
    Stdout,
    /// Any other path: appended to, created when missing.
    File(PathBuf),
}

impl Output {
    /// What `mesh` asks for.
    pub fn from_mesh(mesh: &MeshConfig) -> Output {
        match mesh.access_log_file.as_deref().map(str::trim) {
            None | Some("/dev/stdout") => Output::Stdout,
            Some("") => Output::Off,
            Some(path) => Output::File(PathBuf::from(path)),
        }
    }

    /// Opens the file once to see that lines can be appended to it, so a path that cannot be
    /// written is a configuration error when the config loads, not lost lines later.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Output::File(path) => open(path)
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display())),
            Output::Off | Output::Stdout => Ok(()),
        }
    }
}

/// `path` opened for appending, created (mode 0644) when missing.
pub(super) fn open(path: &std::path::Path) -> std::io::Result<AppendFile> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map(AppendFile)
}

/// A file opened for appending.
pub(super) struct AppendFile(std::fs::File);

impl std::io::Write for AppendFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for AppendFile {
    /// A regular file is cut back by `n` bytes; appends go to the new end.
    fn discard_tail(&mut self, n: u64) -> bool {
        let Ok(meta) = self.0.metadata() else {
            return false;
        };
        meta.is_file() && meta.len() >= n && self.0.set_len(meta.len() - n).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(file: Option<&str>) -> MeshConfig {
        MeshConfig {
            access_log_file: file.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn the_field_reads_as_istio_documents_it() {
        assert_eq!(Output::from_mesh(&mesh(None)), Output::Stdout);
        assert_eq!(Output::from_mesh(&mesh(Some(""))), Output::Off);
        assert_eq!(
            Output::from_mesh(&mesh(Some("/dev/stdout"))),
            Output::Stdout
        );
        assert_eq!(
            Output::from_mesh(&mesh(Some("/var/log/access.log"))),
            Output::File("/var/log/access.log".into())
        );
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Output::File(dir.path().join("access.log"));
        assert_eq!(ok.check(), Ok(()));
        let missing_dir = dir.path().join("no-such-dir").join("access.log");
        let err = Output::File(missing_dir.clone()).check().unwrap_err();
        assert!(err.starts_with(&missing_dir.display().to_string()), "{err}");
        assert_eq!(Output::Off.check(), Ok(()));
    }

    #[test]
    fn a_cut_record_is_taken_back_from_an_appended_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "{\"n\":0}\n").unwrap();
        let mut f = open(&path).unwrap();
        f.write_all(b"{\"n\":1}\n{\"n\"").unwrap();
        assert!(f.discard_tail(4));
        f.write_all(b"{\"n\":2}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n"
        );
    }
}
