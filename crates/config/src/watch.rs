//! Watching configuration files by polling their metadata: the one way the sidecar's reload and
//! the control plane's source find out that files changed.
//!
//! Polling, not inotify, because configuration is routinely replaced through symlink swaps
//! (Kubernetes Secret/ConfigMap volumes) and renames (atomic writes), which event APIs report
//! inconsistently. Metadata, not contents, because reading every file every poll scaled with
//! the size of the folder; a `stat` per file catches every write (the change time moves even
//! when size and modification time are forced back).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// How far a walk goes, so a mistaken `policyDir: /` cannot stall a watcher.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_depth: usize,
    pub max_files: usize,
}

/// Appends the files under `root` (itself when it is not a directory), in name order, to `out`,
/// within `bounds`; `keep` decides which files and directories are taken (by path).
pub fn walk(root: &Path, bounds: Bounds, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    fn go(p: &Path, depth: usize, b: Bounds, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
        if out.len() >= b.max_files {
            return;
        }
        if !p.is_dir() {
            if keep(p) {
                out.push(p.to_path_buf());
            }
            return;
        }
        if depth >= b.max_depth {
            return;
        }
        if let Ok(rd) = std::fs::read_dir(p) {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            v.sort();
            for c in v.into_iter().filter(|c| !c.is_dir() || keep(c)) {
                go(&c, depth + 1, b, keep, out);
            }
        }
    }
    go(root, 0, bounds, keep, out)
}

/// A hash of every file's path and metadata (size, modification and change times, inode and
/// device); a missing file hashes as absent.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::metadata(f) {
            Ok(m) => {
                1u8.hash(&mut h);
                (
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                )
                    .hash(&mut h);
                (m.ino(), m.dev()).hash(&mut h);
            }
            Err(_) => 0u8.hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_in_order_within_bounds_and_fingerprints_every_write() {
        let dir = std::env::temp_dir().join(format!("tm-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b/c")).unwrap();
        for f in ["a.yaml", "b/x.yaml", "b/c/deep.yaml", "b/skip.txt"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let yaml = |p: &Path| p.is_dir() || p.extension().is_some_and(|e| e == "yaml");
        let mut out = Vec::new();
        let b = Bounds {
            max_depth: 2,
            max_files: 10,
        };
        walk(&dir, b, &yaml, &mut out);
        assert_eq!(
            out,
            [dir.join("a.yaml"), dir.join("b/x.yaml")],
            "depth 2 stops above b/c"
        );
        let mut one = Vec::new();
        walk(
            &dir,
            Bounds {
                max_depth: 8,
                max_files: 1,
            },
            &yaml,
            &mut one,
        );
        assert_eq!(one.len(), 1);
        let before = fingerprint(&out);
        std::fs::write(dir.join("a.yaml"), "y").unwrap();
        assert_ne!(fingerprint(&out), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
