//! Writing the demo's files: configs, policies and bundles are watched by running sidecars, so
//! every write is write-then-rename and a sidecar never reads half of one.

use std::path::Path;

use anyhow::Context;

/// Writes `text` to `path` atomically, creating the parent directories.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Copies a text file with [`write`].
pub fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &text)
}

/// A path as a command-line argument or YAML value.
pub fn s(p: &Path) -> String {
    p.display().to_string()
}
