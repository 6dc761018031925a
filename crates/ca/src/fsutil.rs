//! Crash-safe output of a *set* of files (a CA directory, an issued SVID).
//!
//! Consumers such as Envoy or an Istio agent watch these directories and reload on change, so
//! a reader must never see a truncated PEM, and a failed run must not leave a key without its
//! certificate. Each file is written to a temp file in the same directory (same filesystem, so
//! `rename` is atomic), fsynced, and only once *all* temp files are complete are they renamed
//! into place; any failure before that removes every temp file (and the directory, if this call
//! created it).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::CaError;

/// Mode of private key files: owner read/write only, as Istio and openssl expect.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: public material.
pub const CERT_MODE: u32 = 0o644;

/// One file to write.
pub struct OutFile<'a> {
    pub name: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
}

/// Writes all `files` into `dir` (created if missing) so that each one appears complete or
/// not at all, and none is renamed into place unless all were fully written.
pub fn write_files_atomically(dir: &Path, files: &[OutFile<'_>]) -> Result<(), CaError> {
    if dir.exists() && !dir.is_dir() {
        return Err(CaError::malformed(dir, "exists and is not a directory"));
    }
    // Refuse up front when a target name is taken by something we cannot replace atomically
    // (a directory, a socket...), so we never fail half-way through the renames.
    for f in files {
        let target = dir.join(f.name);
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if !meta.is_file() {
                return Err(CaError::malformed(
                    target,
                    "exists and is not a regular file; refusing to replace it",
                ));
            }
        }
    }
    let created_dir = if dir.exists() {
        None
    } else {
        Some(create_dir(dir)?)
    };

    let mut temps: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
    let staged = files.iter().try_for_each(|f| {
        let tmp = write_temp(dir, f)?;
        temps.push((tmp, dir.join(f.name)));
        Ok(())
    });
    if let Err(e) = staged {
        cleanup(&temps, created_dir.as_deref());
        return Err(e);
    }
    for (i, (tmp, target)) in temps.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, target) {
            // Only reachable on exotic races (the pre-check above rules out the usual causes);
            // drop what is still staged so at least no temp litter remains.
            cleanup(&temps[i..], None);
            return Err(CaError::io(target, e));
        }
    }
    // Make the renames themselves durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<PathBuf, CaError> {
    // Remember the top-most directory we create so a failure can remove exactly that.
    let mut top = dir.to_path_buf();
    while let Some(parent) = top.parent() {
        if parent.as_os_str().is_empty() || parent.exists() {
            break;
        }
        top = parent.to_path_buf();
    }
    fs::create_dir_all(dir).map_err(|e| CaError::io(dir, e))?;
    Ok(top)
}

fn write_temp(dir: &Path, f: &OutFile<'_>) -> Result<PathBuf, CaError> {
    let suffix: u64 = rand::thread_rng().gen();
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{suffix:016x}",
        f.name,
        std::process::id()
    ));
    let result = (|| {
        // The mode is set at creation so a key is never readable by others, not even briefly.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&tmp)?;
        // create_new honours the umask; force the exact mode we promise.
        file.set_permissions(fs::Permissions::from_mode(f.mode))?;
        file.write_all(f.contents)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(CaError::io(dir.join(f.name), e))
        }
    }
}

fn cleanup(temps: &[(PathBuf, PathBuf)], created_dir: Option<&Path>) {
    for (tmp, _) in temps {
        let _ = fs::remove_file(tmp);
    }
    if let Some(d) = created_dir {
        let _ = fs::remove_dir_all(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_all_files_with_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        write_files_atomically(
            &dir,
            &[
                OutFile {
                    name: "key.pem",
                    contents: b"k",
                    mode: KEY_MODE,
                },
                OutFile {
                    name: "cert.pem",
                    contents: b"c",
                    mode: CERT_MODE,
                },
            ],
        )
        .unwrap();
        assert_eq!(names(&dir), ["cert.pem", "key.pem"]);
        let mode = fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read(dir.join("cert.pem")).unwrap(), b"c");
    }

    #[test]
    fn blocked_target_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(dir.join("cert.pem")).unwrap();
        let err = write_files_atomically(
            &dir,
            &[
                OutFile {
                    name: "key.pem",
                    contents: b"k",
                    mode: KEY_MODE,
                },
                OutFile {
                    name: "cert.pem",
                    contents: b"c",
                    mode: CERT_MODE,
                },
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
        assert_eq!(names(&dir), ["cert.pem"]);
    }

    #[test]
    fn parent_is_a_file_errors_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("file"), b"x").unwrap();
        let dir = tmp.path().join("file/sub");
        let err = write_files_atomically(
            &dir,
            &[OutFile {
                name: "key.pem",
                contents: b"k",
                mode: KEY_MODE,
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("file/sub"), "{err}");
        assert_eq!(names(tmp.path()), ["file"]);
    }
}
