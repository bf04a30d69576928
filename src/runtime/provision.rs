//! Finding the ONNX Runtime shared library: an explicit path, `ORT_DYLIB_PATH`, the tool's cache,
//! or the pinned PyPI wheel fetched with the user's pip, verified and unpacked into the cache.
//!
//! The cache folder `<root>/ort/<version>-<cpu|gpu>/` is only ever created by renaming a fully
//! written temporary folder (under an exclusive file lock), and carries a manifest with the size
//! and BLAKE3 hash of every file, so a partial or corrupted cache is detected and refetched
//! (hashed in full once, then whenever a file's size, inode or times change: [`verify_stamped`]).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RuntimeError;

/// The ONNX Runtime release this version of smd-onnx pins.
pub const ORT_VERSION: &str = "1.31.1";

/// Environment variable: the cache root (default `$XDG_CACHE_HOME/smd-onnx` or `~/.cache/smd-onnx`).
pub const CACHE_ENV: &str = "SMD_ONNX_CACHE";

/// Environment variable: the Python interpreter whose pip fetches the wheel (default `python3`).
pub const PYTHON_ENV: &str = "SMD_ONNX_PYTHON";

/// Which build of ONNX Runtime: CPU only, or with the CUDA and TensorRT providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// PyPI `onnxruntime`.
    Cpu,
    /// PyPI `onnxruntime-gpu` (CUDA 13, cuDNN 9).
    Gpu,
}

impl Flavor {
    /// The PyPI package.
    pub fn package(self) -> &'static str {
        match self {
            Self::Cpu => "onnxruntime",
            Self::Gpu => "onnxruntime-gpu",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
}

/// A wheel pinned by name, size and sha256 (taken from PyPI with `pip download`).
#[derive(Debug, Clone, Copy)]
pub struct WheelPin {
    /// PyPI package.
    pub package: &'static str,
    /// CPU architecture (`std::env::consts::ARCH`).
    pub arch: &'static str,
    /// File name of the wheel.
    pub file: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lower-case hex.
    pub sha256: &'static str,
}

/// The wheels smd-onnx knows. The `cp311` wheel is requested explicitly so that the file (and its
/// hash) does not depend on the user's Python version; only the shared libraries are used.
pub const PINS: &[WheelPin] = &[
    WheelPin {
        package: "onnxruntime",
        arch: "x86_64",
        file: "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        size: 23_753_652,
        sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    },
    WheelPin {
        package: "onnxruntime",
        arch: "aarch64",
        file: "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_aarch64.whl",
        size: 21_413_526,
        sha256: "da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3",
    },
    WheelPin {
        package: "onnxruntime-gpu",
        arch: "x86_64",
        file: "onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        size: 255_560_985,
        sha256: "e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6",
    },
];

/// The pinned wheel for this machine, if there is one.
pub fn pin_for(flavor: Flavor) -> Option<&'static WheelPin> {
    PINS.iter()
        .find(|p| p.package == flavor.package() && p.arch == std::env::consts::ARCH)
}

/// Where the library came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LibrarySource {
    /// `--ort-lib` / [`super::RuntimeConfig::library`].
    Explicit,
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvVar,
    /// The tool's cache, already present and verified.
    Cache,
    /// Fetched with pip into the cache by this process.
    Fetched,
}

/// The library to load, and how it was found.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// Path of `libonnxruntime.so*`.
    pub library: PathBuf,
    /// How it was found.
    pub source: LibrarySource,
    /// The cache folder holding it, when it came from the cache.
    pub cache_dir: Option<PathBuf>,
}

/// The cache root: `$SMD_ONNX_CACHE`, else `$XDG_CACHE_HOME/smd-onnx`, else `$HOME/.cache/smd-onnx`.
pub fn cache_root() -> Result<PathBuf, RuntimeError> {
    if let Some(p) = non_empty_env(CACHE_ENV) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = non_empty_env("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(p).join("smd-onnx"));
    }
    if let Some(home) = non_empty_env("HOME") {
        return Ok(PathBuf::from(home).join(".cache").join("smd-onnx"));
    }
    Err(RuntimeError::Fetch {
        message: "no cache folder: neither SMD_ONNX_CACHE, XDG_CACHE_HOME nor HOME is set".into(),
        fix: "export SMD_ONNX_CACHE=/some/writable/folder".into(),
    })
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// The cache folder for one flavor under `root`.
pub fn cache_dir(root: &Path, flavor: Flavor) -> PathBuf {
    root.join("ort")
        .join(format!("{ORT_VERSION}-{}", flavor.tag()))
}

/// Finds (or fetches) the library, in order: `explicit`, `ORT_DYLIB_PATH`, the cache, pip.
pub fn provision(
    explicit: Option<&Path>,
    flavor: Flavor,
    root: &Path,
    allow_fetch: bool,
) -> Result<Provisioned, RuntimeError> {
    if let Some(p) = explicit {
        return given(p, LibrarySource::Explicit, "--ort-lib");
    }
    if let Some(p) = non_empty_env("ORT_DYLIB_PATH") {
        return given(Path::new(&p), LibrarySource::EnvVar, "ORT_DYLIB_PATH");
    }
    let dir = cache_dir(root, flavor);
    if let Ok(lib) = verify_stamped(&dir) {
        return Ok(Provisioned {
            library: lib,
            source: LibrarySource::Cache,
            cache_dir: Some(dir),
        });
    }
    let pin = pin_for(flavor).ok_or_else(|| RuntimeError::Fetch {
        message: format!(
            "there is no pinned {} {ORT_VERSION} wheel for {} Linux",
            flavor.package(),
            std::env::consts::ARCH
        ),
        fix: "export ORT_DYLIB_PATH=/path/to/libonnxruntime.so (an ONNX Runtime 1.22 or newer)"
            .into(),
    })?;
    if !allow_fetch {
        return Err(RuntimeError::Fetch {
            message: format!(
                "ONNX Runtime {ORT_VERSION} is not in the cache {}",
                dir.display()
            ),
            fix: fix_command(pin, root),
        });
    }
    let fetched = fetch_locked(pin, root, &dir)?;
    Ok(Provisioned {
        library: fetched.0,
        source: if fetched.1 {
            LibrarySource::Fetched
        } else {
            LibrarySource::Cache
        },
        cache_dir: Some(dir),
    })
}

fn given(p: &Path, source: LibrarySource, what: &str) -> Result<Provisioned, RuntimeError> {
    if !p.is_file() {
        return Err(RuntimeError::Load {
            path: p.to_path_buf(),
            message: format!("{what} names no such file"),
        });
    }
    Ok(Provisioned {
        library: p.to_path_buf(),
        source,
        cache_dir: None,
    })
}

/// The pip arguments that download the pinned wheel into `dest`.
pub fn pip_args(pin: &WheelPin, dest: &Path) -> Vec<String> {
    [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        &format!("manylinux_2_28_{}", pin.arch),
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--disable-pip-version-check",
        "--dest",
        &dest.display().to_string(),
        &format!("{}=={ORT_VERSION}", pin.package),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The one command a user runs to fix a failed fetch: download the wheel into the cache's
/// `wheels/` folder (where smd-onnx looks before calling pip).
pub fn fix_command(pin: &WheelPin, root: &Path) -> String {
    let dest = root.join("wheels");
    format!(
        "python3 {} (or put {} there), or export ORT_DYLIB_PATH=/path/to/libonnxruntime.so",
        pip_args(pin, &dest).join(" "),
        pin.file
    )
}

/// What the cache folder records about its contents.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    version: String,
    package: String,
    wheel: String,
    wheel_sha256: String,
    library: String,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestFile {
    name: String,
    size: u64,
    blake3: String,
}

const MANIFEST: &str = "manifest.json";

/// Checks a cache folder: the manifest is there, names the pinned version, and every file it
/// lists has its size and BLAKE3 hash. Returns the library's path, or why the folder is unusable.
pub fn verify(dir: &Path) -> Result<PathBuf, String> {
    let m = manifest(dir)?;
    for f in &m.files {
        let p = dir.join(&f.name);
        let meta = fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.len() != f.size {
            return Err(format!(
                "{}: {} bytes, expected {}",
                p.display(),
                meta.len(),
                f.size
            ));
        }
        let h = blake3_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if h != f.blake3 {
            return Err(format!(
                "{}: content does not match the manifest",
                p.display()
            ));
        }
    }
    Ok(dir.join(&m.library))
}

/// The manifest of a cache folder, checked for the pinned version and plain file names.
fn manifest(dir: &Path) -> Result<Manifest, String> {
    let text = fs::read_to_string(dir.join(MANIFEST)).map_err(|e| format!("no manifest: {e}"))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| format!("bad manifest: {e}"))?;
    if m.format != 1 || m.version != ORT_VERSION {
        return Err(format!("manifest is for version {}", m.version));
    }
    if !m.files.iter().any(|f| f.name == m.library) {
        return Err("manifest does not list the library".into());
    }
    if let Some(f) = m
        .files
        .iter()
        .find(|f| f.name.contains('/') || f.name.starts_with('.'))
    {
        return Err(format!("manifest names an odd file {:?}", f.name));
    }
    Ok(m)
}

/// Where [`verify_stamped`] keeps the file facts of the folder's last full verification.
const STAMP: &str = ".verified";

/// [`verify`] without rehashing: hashing the library (~30 MB) on every run cost a fifth of a
/// small model's whole `evolve`. After a full verification the folder's file facts (size,
/// inode, modification and change times, to the nanosecond, of the manifest and every file)
/// are saved; while they are unchanged, the files are the ones that were hashed. Any write,
/// truncation, replacement or `touch` changes the change time, which no user tool can set
/// back, so a damaged file is still hashed and caught. A folder where the facts cannot be
/// saved (read-only) is verified in full every time.
pub fn verify_stamped(dir: &Path) -> Result<PathBuf, String> {
    let m = manifest(dir)?;
    let names = std::iter::once(MANIFEST.to_string()).chain(m.files.iter().map(|f| f.name.clone()));
    let facts = file_facts(dir, names);
    let stamp = dir.join(STAMP);
    if facts.is_some() && fs::read_to_string(&stamp).ok() == facts {
        return Ok(dir.join(&m.library));
    }
    let lib = verify(dir)?;
    if let Some(facts) = facts {
        // Best effort: written under a temporary name and renamed, so a reader sees the old
        // facts, the new ones or none.
        let tmp = dir.join(format!("{STAMP}.{}", std::process::id()));
        if fs::write(&tmp, facts).is_ok() && fs::rename(&tmp, &stamp).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
    Ok(lib)
}

/// One line per file of `names` in `dir`: name, size, device, inode, modification and change
/// times (ns). `None` when a file cannot be read or the system has no such facts.
fn file_facts(dir: &Path, names: impl Iterator<Item = String>) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mut out = String::new();
        for name in names {
            let m = fs::metadata(dir.join(&name)).ok()?;
            out.push_str(&format!(
                "{name} {} {} {} {}.{:09} {}.{:09}\n",
                m.len(),
                m.dev(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ));
        }
        Some(out)
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, names);
        None
    }
}

fn blake3_file(p: &Path) -> io::Result<String> {
    // A concurrent writer could at worst make the hash mismatch, which is reported as
    // corruption and repaired.
    let map = crate::buffer::map_file(&File::open(p)?)?;
    Ok(blake3::hash(&map).to_hex().to_string())
}

fn sha256_file(p: &Path) -> io::Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn io_err(path: &Path, source: io::Error) -> RuntimeError {
    RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the cache lock, re-checks (another process may have filled the cache meanwhile),
/// fetches, verifies and installs. Returns the library and whether this process fetched it.
fn fetch_locked(pin: &WheelPin, root: &Path, dir: &Path) -> Result<(PathBuf, bool), RuntimeError> {
    let ort_dir = root.join("ort");
    fs::create_dir_all(&ort_dir).map_err(|e| RuntimeError::Fetch {
        message: format!("cannot create the cache folder {}: {e}", ort_dir.display()),
        fix: format!("export {CACHE_ENV}=/some/writable/folder"),
    })?;
    let lock_path = ort_dir.join(format!(
        ".{}.lock",
        dir.file_name().and_then(|s| s.to_str()).unwrap_or("ort")
    ));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| io_err(&lock_path, e))?;
    lock.lock().map_err(|e| io_err(&lock_path, e))?;
    // Released when `lock` is dropped (also on error paths).
    if let Ok(lib) = verify(dir) {
        return Ok((lib, false));
    }
    let lib = fetch_and_install(pin, root, &ort_dir, dir)?;
    drop(lock);
    Ok((lib, true))
}

fn fetch_and_install(
    pin: &WheelPin,
    root: &Path,
    ort_dir: &Path,
    dir: &Path,
) -> Result<PathBuf, RuntimeError> {
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(ort_dir)
        .map_err(|e| io_err(ort_dir, e))?;
    let wheel = obtain_wheel(pin, root, tmp.path())?;
    let staged = tmp.path().join("lib");
    fs::create_dir(&staged).map_err(|e| io_err(&staged, e))?;
    let manifest = extract(&wheel, pin, &staged)?;
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| io_err(&staged, io::Error::other(e)))?;
    write_synced(&staged.join(MANIFEST), text.as_bytes())?;
    // A stale or broken folder is moved aside first: rename is atomic, removal is not.
    if dir.exists() {
        let trash = tmp.path().join("old");
        fs::rename(dir, &trash).map_err(|e| io_err(dir, e))?;
    }
    fs::rename(&staged, dir).map_err(|e| io_err(dir, e))?;
    if let Ok(d) = File::open(ort_dir) {
        let _ = d.sync_all();
    }
    verify(dir).map_err(|why| RuntimeError::Cache {
        path: dir.to_path_buf(),
        message: format!("freshly installed cache does not verify: {why}"),
    })
}

/// A verified copy of the pinned wheel: from `<root>/wheels/` if the user put it there, else
/// downloaded with pip into `tmp`.
fn obtain_wheel(pin: &WheelPin, root: &Path, tmp: &Path) -> Result<PathBuf, RuntimeError> {
    let offline = root.join("wheels").join(pin.file);
    if offline.is_file() {
        let got = sha256_file(&offline).map_err(|e| io_err(&offline, e))?;
        if got == pin.sha256 {
            return Ok(offline);
        }
        return Err(RuntimeError::Fetch {
            message: format!(
                "{}: sha256 {got} does not match the pinned {}",
                offline.display(),
                pin.sha256
            ),
            fix: format!("rm {} and run again", offline.display()),
        });
    }
    let dest = tmp.join("wheel");
    let mb = pin.size / 1_000_000;
    eprintln!(
        "smd-onnx: fetching ONNX Runtime {ORT_VERSION} ({} wheel, {mb} MB) with pip into {}",
        pin.package,
        root.join("ort").display()
    );
    let fix = fix_command(pin, root);
    if let Err(why) = pip_download(&pip_args(pin, &dest)) {
        return Err(RuntimeError::Fetch {
            message: format!("cannot fetch ONNX Runtime {ORT_VERSION}: {why}"),
            fix,
        });
    }
    let got = dest.join(pin.file);
    if !got.is_file() {
        let found: Vec<String> = fs::read_dir(&dest)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        return Err(RuntimeError::Fetch {
            message: format!(
                "pip did not download {} (got: {})",
                pin.file,
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join(", ")
                }
            ),
            fix,
        });
    }
    let sha = sha256_file(&got).map_err(|e| io_err(&got, e))?;
    if sha != pin.sha256 {
        return Err(RuntimeError::Fetch {
            message: format!(
                "{}: sha256 {sha} does not match the pinned {}; refusing to use it",
                pin.file, pin.sha256
            ),
            fix,
        });
    }
    Ok(got)
}

/// Runs `python -m pip download` with `args`, trying each interpreter until one has pip;
/// the error says why the last attempt failed.
fn pip_download(args: &[String]) -> Result<(), String> {
    let mut last_err = String::new();
    for python in python_candidates() {
        match Command::new(&python)
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stderr);
                let line = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output")
                    .trim()
                    .to_string();
                last_err = format!("`{python} -m pip download` failed: {line}");
                // pip ran but failed (network, index): another interpreter will not do better.
                if !text.contains("No module named pip") {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if last_err.is_empty() {
                    last_err = format!("{python} not found");
                }
            }
            Err(e) => {
                last_err = format!("cannot run {python}: {e}");
                break;
            }
        }
    }
    Err(last_err)
}

fn python_candidates() -> Vec<String> {
    match non_empty_env(PYTHON_ENV) {
        Some(p) => vec![p],
        None => vec!["python3".into(), "python".into()],
    }
}

/// Is this wheel member one of the libraries we keep? Returns its file name.
fn wanted(member: &str) -> Option<&str> {
    let name = member.strip_prefix("onnxruntime/capi/")?;
    if name.contains('/') {
        return None;
    }
    let lib = name.starts_with("libonnxruntime.so");
    let provider = name.starts_with("libonnxruntime_providers_") && name.ends_with(".so");
    (lib || provider).then_some(name)
}

fn extract(wheel: &Path, pin: &WheelPin, staged: &Path) -> Result<Manifest, RuntimeError> {
    let f = File::open(wheel).map_err(|e| io_err(wheel, e))?;
    let bad = |e: &dyn std::fmt::Display| RuntimeError::Cache {
        path: wheel.to_path_buf(),
        message: format!("cannot unpack: {e}"),
    };
    let mut zip = zip::ZipArchive::new(io::BufReader::new(f)).map_err(|e| bad(&e))?;
    let mut files = Vec::new();
    let mut library = None;
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(|e| bad(&e))?;
        let Some(name) = member
            .name()
            .ok()
            .and_then(|n| wanted(&n).map(str::to_string))
        else {
            continue;
        };
        let out_path = staged.join(&name);
        let out = File::create(&out_path).map_err(|e| io_err(&out_path, e))?;
        let mut w = HashingWriter {
            inner: BufWriter::new(out),
            hash: blake3::Hasher::new(),
            len: 0,
        };
        io::copy(&mut member, &mut w).map_err(|e| bad(&e))?;
        let HashingWriter { inner, hash, len } = w;
        let out = inner
            .into_inner()
            .map_err(|e| io_err(&out_path, e.into_error()))?;
        out.sync_all().map_err(|e| io_err(&out_path, e))?;
        set_mode(&out_path);
        if name.starts_with("libonnxruntime.so") {
            library = Some(name.clone());
        }
        files.push(ManifestFile {
            name,
            size: len,
            blake3: hash.finalize().to_hex().to_string(),
        });
    }
    let library = library.ok_or_else(|| bad(&"the wheel holds no libonnxruntime.so"))?;
    Ok(Manifest {
        format: 1,
        version: ORT_VERSION.into(),
        package: pin.package.into(),
        wheel: pin.file.into(),
        wheel_sha256: pin.sha256.into(),
        library,
        files,
    })
}

#[cfg(unix)]
fn set_mode(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
}

#[cfg(not(unix))]
fn set_mode(_: &Path) {}

fn write_synced(p: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let mut f = File::create(p).map_err(|e| io_err(p, e))?;
    f.write_all(bytes).map_err(|e| io_err(p, e))?;
    f.sync_all().map_err(|e| io_err(p, e))
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: blake3::Hasher,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or_default();
        self.hash.update(done);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_members() {
        assert_eq!(
            wanted("onnxruntime/capi/libonnxruntime.so.1.31.1"),
            Some("libonnxruntime.so.1.31.1")
        );
        assert_eq!(
            wanted("onnxruntime/capi/libonnxruntime_providers_cuda.so"),
            Some("libonnxruntime_providers_cuda.so")
        );
        assert_eq!(
            wanted("onnxruntime/capi/onnxruntime_pybind11_state.so"),
            None
        );
        assert_eq!(wanted("onnxruntime/capi/sub/libonnxruntime.so"), None);
        assert_eq!(wanted("libonnxruntime.so"), None);
    }

    #[test]
    fn pins_are_well_formed() {
        for p in PINS {
            assert_eq!(p.sha256.len(), 64);
            assert!(p.file.contains(ORT_VERSION));
            assert!(p.file.contains(p.arch));
        }
        assert!(pin_for(Flavor::Cpu).is_some() || std::env::consts::ARCH != "x86_64");
    }

    /// A cache folder in `dir` whose manifest lists one 10-byte library; its path.
    fn cache_folder(dir: &Path) -> PathBuf {
        let lib = dir.join("libonnxruntime.so.1.31.1");
        fs::write(&lib, b"0123456789").unwrap();
        let m = Manifest {
            format: 1,
            version: ORT_VERSION.into(),
            package: "onnxruntime".into(),
            wheel: "w".into(),
            wheel_sha256: "s".into(),
            library: "libonnxruntime.so.1.31.1".into(),
            files: vec![ManifestFile {
                name: "libonnxruntime.so.1.31.1".into(),
                size: 10,
                blake3: blake3::hash(b"0123456789").to_hex().to_string(),
            }],
        };
        fs::write(dir.join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
        lib
    }

    #[test]
    fn verify_detects_missing_truncated_and_corrupt_files() {
        let d = tempfile::tempdir().unwrap();
        assert!(verify(d.path()).unwrap_err().contains("no manifest"));
        let lib = cache_folder(d.path());
        assert_eq!(verify(d.path()).unwrap(), lib);
        fs::write(&lib, b"0123456788").unwrap();
        assert!(verify(d.path()).unwrap_err().contains("does not match"));
        fs::write(&lib, b"01234").unwrap();
        assert!(verify(d.path()).unwrap_err().contains("bytes, expected"));
        fs::remove_file(&lib).unwrap();
        assert!(verify(d.path()).is_err());
    }

    #[test]
    fn a_stamped_folder_is_hashed_again_once_a_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let lib = cache_folder(d.path());
        assert_eq!(verify_stamped(d.path()).unwrap(), lib);
        let stamp = fs::read_to_string(d.path().join(STAMP)).unwrap();
        assert!(stamp.starts_with("manifest.json "), "{stamp}");
        assert!(stamp.contains("libonnxruntime.so.1.31.1 10 "), "{stamp}");
        // Unchanged: the stamp is used (and kept as it was).
        assert_eq!(verify_stamped(d.path()).unwrap(), lib);
        assert_eq!(fs::read_to_string(d.path().join(STAMP)).unwrap(), stamp);
        // The same length, other bytes, and the modification time set back to the stamped
        // one: the change time still differs from the stamp's, so the file is hashed.
        // (File times may be as coarse as a clock tick: write until the change time moves.)
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&lib).unwrap();
        let (before, ctime) = (meta.modified().unwrap(), (meta.ctime(), meta.ctime_nsec()));
        for _ in 0..1000 {
            fs::write(&lib, b"0123456788").unwrap();
            File::options()
                .write(true)
                .open(&lib)
                .unwrap()
                .set_modified(before)
                .unwrap();
            let now = fs::metadata(&lib).unwrap();
            if (now.ctime(), now.ctime_nsec()) != ctime {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(fs::metadata(&lib).unwrap().modified().unwrap(), before);
        let changed = verify_stamped(d.path()).unwrap_err();
        assert!(changed.contains("does not match"), "{changed}");
        // Repaired: verified in full and stamped again.
        fs::write(&lib, b"0123456789").unwrap();
        assert_eq!(verify_stamped(d.path()).unwrap(), lib);
        fs::write(&lib, b"01234").unwrap();
        assert!(
            verify_stamped(d.path())
                .unwrap_err()
                .contains("bytes, expected")
        );
    }

    #[test]
    fn fix_command_is_one_line_and_names_the_wheel() {
        let pin = &PINS[0];
        let c = fix_command(pin, Path::new("/c"));
        assert!(!c.contains('\n'));
        assert!(c.contains("onnxruntime==1.31.1"));
        assert!(c.contains("/c/wheels"));
    }
}
