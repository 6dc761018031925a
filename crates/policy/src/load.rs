//! The crate's only I/O: reading policy files and directories, and the mesh config file.

use std::path::{Path, PathBuf};

use crate::mesh::MeshConfig;
use crate::problem::{Location, Problem};

/// A file's path (as given, for messages) and its text.
#[derive(Debug, Clone)]
pub struct SourceText {
    pub file: String,
    pub text: String,
}

/// Input that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: cannot read: {source} (hint: check the path and permissions)")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no .yaml/.yml/.json files found (hint: point --config at the folder holding the policies)")]
    Empty { path: String },
    #[error("{path}: {size} bytes; a file over {max} bytes, or policies over {total} bytes in all, are not read (hint: split the resources into several files, or several policy folders)", max = crate::shape::MAX_FILE_BYTES, total = crate::shape::MAX_TOTAL_BYTES)]
    TooLarge { path: String, size: u64 },
}

/// Reads one configuration file within the size bound (see [`crate::shape`]); its nesting is
/// checked where it is parsed.
pub fn read_bounded(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut text = String::new();
    // One byte past the limit tells "too large" without trusting the size the file claims.
    file.take(crate::shape::MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| io(path, e))?;
    if text.len() as u64 > crate::shape::MAX_FILE_BYTES {
        let size = std::fs::metadata(path).map_or(text.len() as u64, |m| m.len());
        return Err(ReadError::TooLarge {
            path: path.display().to_string(),
            size,
        });
    }
    Ok(text)
}

fn is_config(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn io(path: &Path, source: std::io::Error) -> ReadError {
    ReadError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads files, and directories recursively (`.yaml`, `.yml`, `.json`, sorted by path so results
/// are reproducible; hidden entries such as `..data` of mounted ConfigMaps are skipped).
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<SourceText>, ReadError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io(p, e))?;
        if meta.is_dir() {
            let before = files.len();
            walk(p, &mut files)?;
            if files.len() == before {
                return Err(ReadError::Empty {
                    path: p.display().to_string(),
                });
            }
        } else {
            files.push(p.clone());
        }
    }
    // The whole load is bounded too, so a folder of many large files cannot take the memory a
    // single oversized file may not.
    let mut total = 0u64;
    files
        .into_iter()
        .map(|f| {
            let text = read_bounded(&f)?;
            total += text.len() as u64;
            if total > crate::shape::MAX_TOTAL_BYTES {
                return Err(ReadError::TooLarge {
                    path: format!("{} (and the files before it)", f.display()),
                    size: total,
                });
            }
            Ok(SourceText {
                file: f.display().to_string(),
                text,
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| io(dir, e)))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_config(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads and parses a mesh config file. A parse failure is a [`Problem`] located in the file.
pub fn read_mesh(path: &Path) -> Result<Result<MeshConfig, Problem>, ReadError> {
    let text = read_bounded(path)?;
    Ok(MeshConfig::parse(&text, path).map_err(|e| {
        let (field, message) = match e {
            trustmesh_config::ConfigError::Field { field, message, .. } => (field, message),
            other => (String::new(), other.to_string()),
        };
        let field = if field == trustmesh_config::load::DOCUMENT {
            String::new()
        } else {
            field
        };
        let syntax = message.starts_with("not valid YAML");
        let p = Problem::new(Location::new(&path.display().to_string(), 1, field), message)
            .hint("the mesh config is Istio's meshConfig (trustDomain, trustDomainAliases, rootNamespace, extensionProviders)");
        if syntax {
            p.unreadable()
        } else {
            p
        }
    }))
}
