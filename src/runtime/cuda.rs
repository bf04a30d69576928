//! Finding and preloading the CUDA, cuDNN and TensorRT libraries that ONNX Runtime's GPU
//! providers need, without the user setting `LD_LIBRARY_PATH`: the driver from the system,
//! the rest from `CUDA_HOME`/`CUDA_PATH`, the pip packages (`site-packages/nvidia/*/lib`,
//! `tensorrt_libs`) of every Python `site-packages` folder, conda, and the usual system folders.
//!
//! A library loaded by full path stays loaded, and the dynamic loader then satisfies later
//! requests for the same soname (ONNX Runtime's provider, cuDNN's sub-libraries) from it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::RuntimeError;

/// The NVIDIA driver library; always from the system.
pub const DRIVER: &str = "libcuda.so.1";

/// CUDA 13 libraries the CUDA provider needs, dependencies first.
pub const CUDA_REQUIRED: &[&str] = &[
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libcurand.so.10",
];

/// CUDA libraries some operators load on demand: preloaded when found.
pub const CUDA_OPTIONAL: &[&str] = &["libnvrtc.so.13", "libcufft.so.12"];

/// cuDNN 9: the front library loads its sub-libraries by soname at run time.
pub const CUDNN: &[&str] = &[
    "libcudnn.so.9",
    "libcudnn_graph.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_adv.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
];

/// TensorRT 10 libraries the TensorRT provider needs.
pub const TENSORRT_REQUIRED: &[&str] = &["libnvinfer.so.10", "libnvonnxparser.so.10"];

/// TensorRT plugins: preloaded when found.
pub const TENSORRT_OPTIONAL: &[&str] = &["libnvinfer_plugin.so.10"];

/// The pip packages that provide the CUDA 13 / cuDNN 9 libraries.
pub const PIP_CUDA: &str = "nvidia-cuda-runtime nvidia-cublas nvidia-cudnn-cu13 nvidia-cufft nvidia-curand nvidia-cuda-nvrtc";

/// One preloaded library.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedLib {
    /// Soname, e.g. `libcudart.so.13`.
    pub name: String,
    /// Where it was loaded from (the bare name when the system loader found it).
    pub path: PathBuf,
}

/// What was found and preloaded for a GPU device.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GpuLibs {
    /// Libraries loaded, in load order.
    pub loaded: Vec<LoadedLib>,
    /// Optional libraries that were not found.
    pub missing_optional: Vec<String>,
    /// Folders searched, in order.
    pub searched: Vec<PathBuf>,
}

/// Checks that the NVIDIA driver library can be loaded (and leaves it loaded).
pub fn load_driver() -> Result<LoadedLib, RuntimeError> {
    match ort::util::preload_dylib(DRIVER) {
        Ok(()) => Ok(LoadedLib {
            name: DRIVER.into(),
            path: PathBuf::from(DRIVER),
        }),
        Err(e) => {
            for dir in [
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib64",
                "/usr/lib/wsl/lib",
                "/usr/lib",
            ] {
                let p = Path::new(dir).join(DRIVER);
                if p.is_file() && ort::util::preload_dylib(&p).is_ok() {
                    return Ok(LoadedLib {
                        name: DRIVER.into(),
                        path: p,
                    });
                }
            }
            Err(RuntimeError::NoDriver { message: chain(&e) })
        }
    }
}

/// Folders to search, most specific first.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDNN_HOME", "TENSORRT_HOME"] {
        if let Some(root) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let root = PathBuf::from(root);
            dirs.push(root.join("lib64"));
            dirs.push(root.join("lib"));
            dirs.push(
                root.join("targets")
                    .join(format!("{}-linux", std::env::consts::ARCH))
                    .join("lib"),
            );
        }
    }
    for sp in site_packages() {
        dirs.push(sp.join("nvidia").join("cu13").join("lib"));
        dirs.push(sp.join("nvidia").join("cudnn").join("lib"));
        if let Ok(rd) = std::fs::read_dir(sp.join("nvidia")) {
            let mut more: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("lib"))
                .collect();
            more.sort();
            dirs.extend(more);
        }
        dirs.push(sp.join("tensorrt_libs"));
        dirs.push(sp.join("tensorrt").join("lib"));
    }
    if let Some(c) = std::env::var_os("CONDA_PREFIX").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(c).join("lib"));
    }
    for d in [
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
        "/usr/local/cuda/targets/sbsa-linux/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| d.is_dir() && seen.insert(d.clone()));
    dirs
}

/// The `site-packages` folders of the `python3` on PATH (and `$SMD_ONNX_PYTHON`), asked once.
fn site_packages() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pythons = vec!["python3".to_string()];
    if let Ok(p) = std::env::var(super::provision::PYTHON_ENV)
        && !p.is_empty()
    {
        pythons.insert(0, p);
    }
    const SCRIPT: &str = "import site,sys\nfor p in site.getsitepackages()+[site.getusersitepackages()]+sys.path: print(p)";
    for py in pythons {
        let Ok(o) = Command::new(&py)
            .args(["-c", SCRIPT])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        if !o.status.success() {
            continue;
        }
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let p = PathBuf::from(line.trim());
            let is_sp = p
                .file_name()
                .is_some_and(|n| n == "site-packages" || n == "dist-packages");
            if is_sp && p.is_dir() && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// `libnvrtc-builtins.so.<version>` in `dir`, if there is one.
fn builtins(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc-builtins.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

fn find(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Finds and preloads what `tensorrt` (or else CUDA) needs. Fails naming every missing
/// required library and the command that installs it.
pub fn preload(tensorrt: bool) -> Result<GpuLibs, RuntimeError> {
    let dirs = search_dirs();
    let mut required: Vec<&str> = CUDA_REQUIRED.to_vec();
    required.extend_from_slice(CUDNN);
    let mut optional: Vec<&str> = CUDA_OPTIONAL.to_vec();
    if tensorrt {
        required.extend_from_slice(TENSORRT_REQUIRED);
        optional.extend_from_slice(TENSORRT_OPTIONAL);
    }
    let mut plan: Vec<(&str, Option<PathBuf>, bool)> = Vec::new();
    let mut missing = Vec::new();
    for name in required {
        let p = find(name, &dirs);
        if p.is_none() && !loadable_by_name(name) {
            missing.push(name);
        }
        plan.push((name, p, true));
    }
    let mut libs = GpuLibs {
        searched: dirs.clone(),
        ..GpuLibs::default()
    };
    if !missing.is_empty() {
        let trt_missing = missing.iter().any(|m| m.starts_with("libnv"));
        let fix = if trt_missing && missing.iter().all(|m| m.starts_with("libnv")) {
            "python3 -m pip install tensorrt-cu13".to_string()
        } else if trt_missing {
            format!("python3 -m pip install {PIP_CUDA} tensorrt-cu13")
        } else {
            format!("python3 -m pip install {PIP_CUDA}")
        };
        return Err(RuntimeError::MissingGpuLibs {
            missing: missing.join(", "),
            searched: dirs.len(),
            fix,
        });
    }
    for name in optional {
        match find(name, &dirs) {
            Some(p) => {
                // NVRTC loads its builtins library (versioned name) by soname at run time.
                if name.starts_with("libnvrtc.")
                    && let Some(b) = p.parent().and_then(builtins)
                {
                    plan.push(("libnvrtc-builtins", Some(b), false));
                }
                plan.push((name, Some(p), false));
            }
            None => libs.missing_optional.push(name.to_string()),
        }
    }
    // Optional ones (nvrtc, cufft) may be dependencies of cuDNN's runtime-compiled engines:
    // load in passes until nothing more loads, so the order of the lists is only a hint.
    let mut pending: Vec<(&str, Option<PathBuf>, bool)> = plan;
    loop {
        let before = pending.len();
        let mut still = Vec::new();
        let mut last_errors = Vec::new();
        for (name, path, req) in pending {
            let target: PathBuf = path.clone().unwrap_or_else(|| PathBuf::from(name));
            match ort::util::preload_dylib(&target) {
                Ok(()) => libs.loaded.push(LoadedLib {
                    name: name.to_string(),
                    path: target,
                }),
                Err(e) => {
                    last_errors.push((name, target.clone(), chain(&e), req));
                    still.push((name, path, req));
                }
            }
        }
        if still.is_empty() {
            break;
        }
        if still.len() == before {
            // No progress: required failures are fatal, optional ones are noted.
            if let Some((_, path, msg, _)) = last_errors.iter().find(|e| e.3) {
                return Err(RuntimeError::GpuLibLoad {
                    path: path.clone(),
                    message: msg.clone(),
                });
            }
            for (name, ..) in last_errors {
                libs.missing_optional.push(name.to_string());
            }
            break;
        }
        pending = still;
    }
    Ok(libs)
}

/// True when the system loader finds `name` (LD_LIBRARY_PATH, ld.so.cache) — probed without
/// keeping it loaded.
fn loadable_by_name(name: &str) -> bool {
    // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's libraries that
    // ONNX Runtime would load anyway.
    unsafe { libloading::Library::new(name) }.is_ok()
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// A loader error with its cause (libloading puts dlerror's text in the source).
fn chain(e: &libloading::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s = format!("{s}: {c}");
        src = c.source();
    }
    one_line(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_folder_holding_a_library() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("libcudart.so.13"), b"x").unwrap();
        std::fs::write(a.path().join("libcudart.so.13"), b"x").unwrap();
        std::fs::write(b.path().join("libnvrtc-builtins.so.13.0"), b"x").unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find("libcudart.so.13", &dirs),
            Some(a.path().join("libcudart.so.13"))
        );
        assert_eq!(find("libcublas.so.13", &dirs), None);
        assert_eq!(
            builtins(b.path()),
            Some(b.path().join("libnvrtc-builtins.so.13.0"))
        );
        assert_eq!(builtins(a.path()), None);
    }

    #[test]
    fn missing_libraries_are_named_with_the_fix() {
        // On a machine without CUDA 13 libraries this names them; with them, they load.
        match preload(false) {
            Ok(libs) => assert!(libs.loaded.iter().any(|l| l.name == "libcudart.so.13")),
            Err(RuntimeError::MissingGpuLibs { missing, fix, .. }) => {
                assert!(missing.contains(".so."), "{missing}");
                assert!(fix.starts_with("python3 -m pip install"), "{fix}");
            }
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("cannot load"), "{m}");
            }
        }
    }
}
