//! External data: resolving `location` entries relative to the model's folder, refusing paths
//! that escape it, and memory-mapping the files.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use super::ModelError;
use super::index::{Payload, TensorInfo};
use super::scan::ExtRef;
use crate::buffer::{self, Bytes};

/// One external data file of a model.
pub struct ExternalFile {
    /// The `location` as first written in the model.
    pub location: String,
    /// The file: the model's folder joined with the location.
    pub path: PathBuf,
    pub(crate) bytes: Bytes,
}

impl std::fmt::Debug for ExternalFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalFile")
            .field("location", &self.location)
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl ExternalFile {
    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Why a `location` is refused before touching the file system, if it is.
fn location_problem(location: &str) -> Option<&'static str> {
    if location.is_empty() {
        return Some("empty location");
    }
    if location.contains('\0') {
        return Some("location contains a NUL byte");
    }
    if location.starts_with('/') || location.starts_with('\\') || Path::new(location).is_absolute()
    {
        return Some("absolute path (must be relative to the model's folder)");
    }
    // Windows-style separators and drive letters are refused too, so a model means the same
    // file on every platform.
    if location.split(['/', '\\']).any(|c| c == "..") {
        return Some("path escapes the model's folder");
    }
    if location.len() >= 2 && location.as_bytes()[1] == b':' {
        return Some("absolute path (must be relative to the model's folder)");
    }
    for c in Path::new(location).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => return Some("path escapes the model's folder"),
        }
    }
    None
}

/// Resolves every external reference: validates the location, maps each distinct file once,
/// checks the range fits, and points the listed tensors' payloads at their file. Returns the
/// files and, for each reference, its file's index.
pub(crate) fn resolve(
    model_path: &Path,
    refs: &[ExtRef],
    tensors: &mut [TensorInfo],
) -> Result<(Vec<ExternalFile>, Vec<usize>), ModelError> {
    let mut files: Vec<ExternalFile> = Vec::new();
    let mut which = Vec::with_capacity(refs.len());
    if refs.is_empty() {
        return Ok((files, which));
    }
    let dir = match model_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut canonical_dir: Option<PathBuf> = None;
    let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
    for r in refs {
        let err = |what: String| ModelError::External {
            path: model_path.to_path_buf(),
            tensor: r.name.clone(),
            location: r.location.clone(),
            what,
        };
        if let Some(p) = location_problem(&r.location) {
            return Err(err(p.to_string()));
        }
        let full = dir.join(&r.location);
        let meta = match std::fs::metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(err(format!("file {} not found", full.display())));
            }
            Err(e) => return Err(err(format!("{}: {e}", full.display()))),
        };
        if meta.is_dir() {
            return Err(err(format!("{} is a directory", full.display())));
        }
        if !meta.is_file() {
            return Err(err(format!("{} is not a regular file", full.display())));
        }
        let canonical =
            std::fs::canonicalize(&full).map_err(|e| err(format!("{}: {e}", full.display())))?;
        if canonical_dir.is_none() {
            canonical_dir = Some(
                std::fs::canonicalize(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?,
            );
        }
        if let Some(cd) = &canonical_dir
            && !canonical.starts_with(cd)
        {
            return Err(err(format!(
                "{} resolves outside the model's folder",
                full.display()
            )));
        }
        let idx = match by_path.get(&canonical) {
            Some(&i) => i,
            None => {
                let file =
                    File::open(&full).map_err(|e| err(format!("{}: {e}", full.display())))?;
                let bytes = buffer::map_file(&file).map_err(|source| ModelError::Io {
                    path: full.clone(),
                    source,
                })?;
                files.push(ExternalFile {
                    location: r.location.clone(),
                    path: full.clone(),
                    bytes,
                });
                by_path.insert(canonical, files.len() - 1);
                files.len() - 1
            }
        };
        which.push(idx);
        let flen = files.get(idx).map_or(0, ExternalFile::len);
        let end = r.offset.checked_add(r.length);
        if end.is_none_or(|e| e > flen) {
            return Err(err(format!(
                "{} has {flen} bytes, the tensor needs bytes {}..{}",
                full.display(),
                r.offset,
                u128::from(r.offset) + u128::from(r.length)
            )));
        }
        if let Some(t) = r.tensor.and_then(|t| tensors.get_mut(t))
            && let Payload::External { file, .. } = &mut t.payload
        {
            *file = idx;
        }
    }
    Ok((files, which))
}

#[cfg(test)]
mod tests {
    use super::location_problem;

    #[test]
    fn locations() {
        assert_eq!(location_problem("w.bin"), None);
        assert_eq!(location_problem("./sub/w.bin"), None);
        assert!(location_problem("").is_some());
        assert!(location_problem("/etc/passwd").is_some());
        assert!(location_problem("../w.bin").is_some());
        assert!(location_problem("a/../../w.bin").is_some());
        assert!(location_problem("a\\..\\w.bin").is_some());
        assert!(location_problem("C:\\w.bin").is_some());
        assert!(location_problem("a\0b").is_some());
    }
}
