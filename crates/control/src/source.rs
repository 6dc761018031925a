//! Configuration sources. A source yields [`Inputs`] — Istio documents, the mesh config and
//! extra trust bundles — and says when they may have changed; the control plane does the rest.
//! Today's source is a directory of YAML files; a Kubernetes source will implement the same
//! trait.
//!
//! A file that stops parsing as YAML does not take its resources away: its last good contents
//! keep being served, and the problem is reported (log, `/debug/syncz`, metrics) until it is
//! fixed. An operator saving a half-edited file must not drop a DENY policy mesh-wide.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use trustmesh_policy::split::{split, Piece};

/// One Istio object as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub value: serde_yaml::Value,
    /// `file#document` (and `items[n]` inside a List): where it was read, for messages.
    pub origin: String,
}

/// Everything a source provides.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub documents: Vec<Document>,
    /// The mesh config document as read (any shape `MeshConfig` accepts); `None`: defaults.
    pub mesh: Option<(serde_yaml::Value, String)>,
    /// Extra trust bundles: trust domain → PEM roots (federation).
    pub bundles: Vec<(String, String)>,
    /// What is wrong in the source now (the last good version of those files is in use).
    pub problems: Vec<String>,
}

/// A configuration source.
pub trait Source: Send + 'static {
    /// Reads the current configuration.
    fn read(&mut self) -> Inputs;
    /// A cheap token that differs whenever the configuration may have changed.
    fn fingerprint(&self) -> u64;
}

/// A directory of Istio YAML (recursively, `*.yaml`/`*.yml`/`*.json`), a mesh config file and
/// bundle files.
pub struct DirSource {
    pub dir: Option<PathBuf>,
    pub mesh_file: Option<PathBuf>,
    /// `(trust domain, PEM file)`.
    pub bundle_files: Vec<(String, PathBuf)>,
    last_good: HashMap<PathBuf, Vec<Document>>,
    last_mesh: Option<(serde_yaml::Value, String)>,
    last_bundles: HashMap<PathBuf, String>,
}

/// How often a directory source looks for changes, and how long files must hold still.
pub const POLL: Duration = Duration::from_millis(100);
/// Bounds a mistaken `--config-dir /`.
const MAX_FILES: usize = 20_000;
const MAX_DEPTH: usize = 8;

impl DirSource {
    pub fn new(
        dir: Option<PathBuf>,
        mesh_file: Option<PathBuf>,
        bundle_files: Vec<(String, PathBuf)>,
    ) -> DirSource {
        DirSource {
            dir,
            mesh_file,
            bundle_files,
            last_good: HashMap::new(),
            last_mesh: None,
            last_bundles: HashMap::new(),
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(d) = &self.dir {
            let bounds = trustmesh_config::watch::Bounds {
                max_depth: MAX_DEPTH,
                max_files: MAX_FILES,
            };
            trustmesh_config::watch::walk(d, bounds, &is_config, &mut out);
        }
        out
    }
}

/// What the directory source reads: YAML and JSON files, not hidden ones (editors' temporary
/// files, Kubernetes volume mounts' `..data` twins).
fn is_config(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with('.') {
        return false;
    }
    p.is_dir()
        || matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

impl Source for DirSource {
    fn fingerprint(&self) -> u64 {
        let mut files = self.files();
        files.extend(self.mesh_file.iter().cloned());
        files.extend(self.bundle_files.iter().map(|(_, p)| p.clone()));
        trustmesh_config::watch::fingerprint(&files)
    }

    fn read(&mut self) -> Inputs {
        let mut inputs = Inputs::default();
        let files = self.files();
        self.last_good.retain(|p, _| files.contains(p));
        for f in &files {
            match read_documents(f) {
                Ok(docs) => {
                    self.last_good.insert(f.clone(), docs);
                }
                Err(why) => {
                    let kept = if self.last_good.contains_key(f) {
                        "its last good contents are still served"
                    } else {
                        "nothing from it is served"
                    };
                    inputs.problems.push(format!("{why}; {kept}"));
                }
            }
            if let Some(docs) = self.last_good.get(f) {
                inputs.documents.extend(docs.iter().cloned());
            }
        }
        if let Some(m) = &self.mesh_file {
            match read_mesh(m) {
                Ok(v) => self.last_mesh = Some(v),
                Err(why) => inputs
                    .problems
                    .push(mesh_problem(&why, self.last_mesh.is_some())),
            }
        }
        inputs.mesh = self.last_mesh.clone();
        for (td, p) in &self.bundle_files {
            match std::fs::read_to_string(p) {
                Ok(pem) if !pem.trim().is_empty() => {
                    self.last_bundles.insert(p.clone(), pem);
                }
                Ok(_) => inputs
                    .problems
                    .push(format!("{}: empty trust bundle for {td}", p.display())),
                Err(e) => inputs.problems.push(format!(
                    "{}: cannot read trust bundle for {td}: {e}",
                    p.display()
                )),
            }
            if let Some(pem) = self.last_bundles.get(p) {
                inputs.bundles.push((td.clone(), pem.clone()));
            }
        }
        inputs
    }
}

/// Several sources as one (the cluster and `--trust-bundle` files, say): the documents,
/// bundles and problems of all of them; the mesh config of the first that has one.
pub struct Merged(pub Vec<Box<dyn Source>>);

impl Source for Merged {
    fn fingerprint(&self) -> u64 {
        self.0.iter().fold(0xcbf2_9ce4_8422_2325, |h, s| {
            (h ^ s.fingerprint()).wrapping_mul(0x0100_0000_01b3)
        })
    }

    fn read(&mut self) -> Inputs {
        let mut all = Inputs::default();
        for s in &mut self.0 {
            let i = s.read();
            all.documents.extend(i.documents);
            all.bundles.extend(i.bundles);
            all.problems.extend(i.problems);
            if all.mesh.is_none() {
                all.mesh = i.mesh;
            }
        }
        all
    }
}

/// Reads one file's objects; an error when any part of it is not YAML (the file is then
/// judged as a whole: half a file is never served).
pub fn read_documents(path: &Path) -> Result<Vec<Document>, String> {
    let text = trustmesh_policy::load::read_bounded(path).map_err(|e| e.to_string())?;
    let file = path.display().to_string();
    let mut docs = Vec::new();
    for piece in split(&file, &text) {
        match piece {
            Piece::Object(loc, value) => {
                let mut origin = format!("{}#{}", loc.file, loc.document);
                if !loc.field.is_empty() {
                    origin.push('.');
                    origin.push_str(&loc.field);
                }
                docs.push(Document { value, origin });
            }
            // Around the objects (a scalar document, a List without items): nothing to serve.
            Piece::Problem(p) => tracing::warn!("config source: {p}"),
            Piece::Unreadable(p) => return Err(p.to_string()),
        }
    }
    Ok(docs)
}

fn read_mesh(path: &Path) -> Result<(serde_yaml::Value, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the mesh config: {e}", path.display()))?;
    let origin = path.display().to_string();
    Ok((mesh_value(&text, &origin)?, origin))
}

/// A mesh config's text as served, read as the sidecars will read it: text they would refuse
/// is an error, so it is not served. `origin` names it in messages.
pub fn mesh_value(text: &str, origin: &str) -> Result<serde_yaml::Value, String> {
    trustmesh_policy::MeshConfig::parse(text, Path::new(origin)).map_err(|e| e.to_string())?;
    serde_yaml::from_str(text).map_err(|e| format!("{origin}: {e}"))
}

/// The problem of a mesh config that stopped reading, and what is served instead.
pub fn mesh_problem(why: &str, last_good: bool) -> String {
    if last_good {
        format!("{why}; the last good mesh config is still served")
    } else {
        format!("{why}; the default mesh config is served")
    }
}

#[cfg(test)]
mod tests;
