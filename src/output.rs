//! Writing outputs safely: atomic file writes (a temporary file in the destination's folder,
//! fsync, rename), output folders, cleanup of temporary files, and the refusal to write over
//! an input. A failed or interrupted write leaves no partial file behind.
//!
//! Every writer of the library (child models, ensembles, reports, the run journal) goes
//! through here. The functions are generic over the caller's error type `E`, which only needs
//! `From<OutputError>`, so the closure that produces the contents can fail with its own errors.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Errors from writing outputs. Each names the file or folder, on one line.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file or folder could not be read, created, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An output path is one of the inputs.
    #[error("refusing to write {}: it is the input {}", out.display(), input.display())]
    Overwrite {
        /// The output.
        out: PathBuf,
        /// The input it would overwrite.
        input: PathBuf,
    },
    /// The output folder's path exists and is not a folder.
    #[error("{}: exists and is not a folder", path.display())]
    NotAFolder {
        /// The path.
        path: PathBuf,
    },
    /// The output folder holds files, and reusing it was not asked for.
    #[error("{}: is not empty (use --force to replace its outputs)", path.display())]
    NotEmpty {
        /// The folder.
        path: PathBuf,
    },
    /// No file can be created in the output folder.
    #[error("{}: is not writable ({kind})", path.display())]
    NotWritable {
        /// The folder.
        path: PathBuf,
        /// Why creating a file failed (only the kind: the message stays one short line).
        kind: std::io::ErrorKind,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Suffix of the temporary files: `.<final name>.<random>.tmp`, hidden, in the same folder.
const TEMP_SUFFIX: &str = ".tmp";

fn temp_for(path: &Path) -> Result<tempfile::NamedTempFile, OutputError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(TEMP_SUFFIX);
    // tempfile creates 0600 files; outputs get the permissions any new file gets (0666 minus
    // the umask, e.g. 0644), as `File::create` would: the mode goes to open(2), which applies
    // the umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(folder_of(path)).map_err(io_err(path))
}

/// Removes the temporary files an interrupted [`write_atomic`] left in `dir` (a killed
/// process cannot clean up): hidden `.<name>.<random>.tmp` files, only those whose `<name>`
/// starts with one of `names` when given. A missing folder is fine.
pub fn remove_temps(dir: &Path, names: Option<&[&str]>) -> Result<(), OutputError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let file_name = e.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some(inner) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
        else {
            continue;
        };
        let ours = names.is_none_or(|ns| {
            ns.iter()
                .any(|n| inner.strip_prefix(n).is_some_and(|r| r.starts_with('.')))
        });
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            let p = e.path();
            match std::fs::remove_file(&p) {
                // Another process (a shard starting beside this one) removed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(io_err(&p))?,
            }
        }
    }
    Ok(())
}

fn commit(tmp: tempfile::NamedTempFile, path: &Path, durable: bool) -> Result<(), OutputError> {
    if durable {
        tmp.as_file().sync_all().map_err(io_err(path))?;
    }
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    // Make the rename itself durable; not every platform can sync a folder, so best effort.
    if durable && let Ok(d) = File::open(folder_of(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes the contents `f` produces to a temporary file and renames it over `path`, synced
/// to disk first when `durable`.
fn write_via_temp<T, E>(
    path: &Path,
    durable: bool,
    f: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<OutputError>,
{
    let mut tmp = temp_for(path)?;
    let value = {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        let value = f(&mut w)?;
        w.flush().map_err(io_err(path))?;
        value
    };
    commit(tmp, path, durable)?;
    Ok(value)
}

/// Writes `path` atomically: `f` writes the contents to a buffered temporary file in the same
/// folder, which is then synced and renamed over `path`. If `f` fails, nothing is written.
pub fn write_atomic<T, E>(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<OutputError>,
{
    write_via_temp(path, true, f)
}

/// Like [`write_atomic`] without syncing to disk: a process crash still leaves the old file
/// or the new one, never a partial one, but a power loss may lose or empty the new file. For
/// files whose loss only costs recomputation and whose corruption is detected (the journal's
/// checksummed records): syncing each one costs more than writing it.
pub fn write_atomic_cache<T, E>(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<OutputError>,
{
    write_via_temp(path, false, f)
}

/// Like [`write_atomic`], but first refuses to write over any of `inputs` (e.g.
/// [`crate::onnx::Model::input_paths`]).
pub fn write_atomic_except<T, E>(
    path: &Path,
    inputs: &[&Path],
    f: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<OutputError>,
{
    ensure_not_input(path, inputs)?;
    write_atomic(path, f)
}

/// Copies `src` to `dst` atomically, letting `patch` overwrite parts of the copy before it is
/// committed. The copy is the kernel's (`copy_file_range`/reflink where available).
pub(crate) fn copy_atomic(
    src: &Path,
    dst: &Path,
    patch: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let mut tmp = temp_for(dst)?;
    // `fs::copy` gives the copy the source's permissions: keep those of a new file.
    let perms = tmp.as_file().metadata().map_err(io_err(dst))?.permissions();
    std::fs::copy(src, tmp.path()).map_err(io_err(src))?;
    std::fs::set_permissions(tmp.path(), perms).map_err(io_err(dst))?;
    patch(tmp.as_file_mut()).map_err(io_err(dst))?;
    commit(tmp, dst, true)
}

/// True when `a` and `b` are the same existing file (same device and inode on Unix).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Refuses `out` when it is (or links to) one of `inputs`.
pub fn ensure_not_input(out: &Path, inputs: &[&Path]) -> Result<(), OutputError> {
    for input in inputs {
        if same_file(out, input) {
            return Err(OutputError::Overwrite {
                out: out.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Prepares an output folder: creates it if missing; refuses a path that is not a folder, and a
/// non-empty folder unless `reuse` (e.g. `--force`, `--resume`).
pub fn prepare_out_dir(out: &Path, reuse: bool) -> Result<(), OutputError> {
    let path = || out.to_path_buf();
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => return Err(OutputError::NotAFolder { path: path() }),
        Ok(_) => {
            // A probe left by a run killed right after creating it is not an output.
            remove_temps(out, Some(&[PROBE]))?;
            let mut entries = std::fs::read_dir(out).map_err(io_err(out))?;
            if entries.next().is_some() && !reuse {
                return Err(OutputError::NotEmpty { path: path() });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(io_err(out))?;
        }
        Err(e) => return Err(io_err(out)(e)),
    }
    // Fail now rather than after hours of work: can files be created there? (The probe is
    // removed when dropped; named like every temporary file, so a kill leaves nothing else.)
    temp_for(&out.join(PROBE)).map(drop).map_err(|e| match e {
        OutputError::Io { source, .. } => OutputError::NotWritable {
            path: path(),
            kind: source.kind(),
        },
        other => other,
    })
}

/// The name behind the writability probe of [`prepare_out_dir`] (`.smd-probe.<random>.tmp`).
const PROBE: &str = "smd-probe";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_failure_leave_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write_atomic::<_, OutputError>(&p, |w| {
            w.write_all(b"hello").map_err(io_err(&p))?;
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let r = write_atomic::<(), OutputError>(&p, |w| {
            w.write_all(b"partial").map_err(io_err(&p))?;
            Err(io_err(&p)(std::io::Error::other("boom")))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn outputs_get_the_permissions_of_a_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        // What the umask makes of a new file, whatever it is.
        let plain = d.path().join("plain");
        File::create(&plain).unwrap();
        let want = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        let p = d.path().join("out.bin");
        write_atomic::<_, OutputError>(&p, |w| w.write_all(b"x").map_err(io_err(&p))).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            want
        );
        // A copy does not inherit a read-only source's mode.
        let src = d.path().join("src");
        std::fs::write(&src, b"abc").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o400)).unwrap();
        let dst = d.path().join("dst");
        copy_atomic(&src, &dst, |_| Ok(())).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"abc");
        assert_eq!(
            std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777,
            want
        );
    }

    #[test]
    fn a_leftover_probe_is_no_output() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        prepare_out_dir(&out, false).unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "probe removed");
        // A run killed while its probe existed.
        std::fs::write(out.join(".smd-probe.x1y2z3.tmp"), b"").unwrap();
        prepare_out_dir(&out, false).unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        // A real file is: the error says so by its type (callers reword it) and in one line.
        std::fs::write(out.join("best.onnx"), b"").unwrap();
        let e = prepare_out_dir(&out, false).unwrap_err();
        assert!(matches!(&e, OutputError::NotEmpty { path } if path == &out));
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is not empty (use --force to replace its outputs)",
                out.display()
            )
        );
        prepare_out_dir(&out, true).unwrap();
        let file = out.join("best.onnx");
        assert!(matches!(
            prepare_out_dir(&file, true),
            Err(OutputError::NotAFolder { .. })
        ));
    }

    #[test]
    fn removes_only_its_own_temps() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            ".best.onnx.a1b2c3.tmp",
            ".report.json.zzzzzz.tmp",
            ".mine.tmp",
            "best.onnx",
            "x.tmp",
        ] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        remove_temps(d.path(), Some(&["best.onnx", "report.json"])).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".mine.tmp", "best.onnx", "x.tmp"]);
        remove_temps(d.path(), None).unwrap();
        assert!(!d.path().join(".mine.tmp").exists());
        assert!(remove_temps(&d.path().join("absent"), None).is_ok());
    }

    #[test]
    fn refuses_inputs() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let link = d.path().join("b");
        std::fs::hard_link(&a, &link).unwrap();
        assert!(ensure_not_input(&a, &[&a]).is_err());
        assert!(ensure_not_input(&link, &[&a]).is_err());
        assert!(ensure_not_input(&d.path().join("c"), &[&a]).is_ok());
        let r = write_atomic_except::<(), OutputError>(&a, &[&a], |_| Ok(()));
        assert!(matches!(r, Err(OutputError::Overwrite { .. })));
    }
}
