//! `smd-onnx runtime` and ONNX Runtime provisioning: the cache, fetching, repair, GPU errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::root;

fn smd_env(args: &[&str], cache: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smd-onnx"));
    c.args(args).current_dir(root());
    if let Some(cache) = cache {
        c.env("SMD_ONNX_CACHE", cache).env_remove("ORT_DYLIB_PATH");
    }
    c.output().expect("run smd-onnx")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn runtime_reports_library_version_and_providers() {
    let j = ok_json(&smd_env(&["runtime", "--json"], None));
    assert_eq!(j["check"], "ok");
    assert_eq!(j["device"], "cpu");
    assert_eq!(j["providers"], serde_json::json!(["CPUExecutionProvider"]));
    assert!(
        j["available_providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "CPUExecutionProvider")
    );
    let lib = PathBuf::from(j["library"].as_str().unwrap());
    assert!(lib.is_file());
    assert!(j["version"].as_str().unwrap().starts_with("1."));
    let text = smd_env(&["runtime"], None);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("check      ok"));
}

/// The source reported by `runtime --json` with the cache at `cache`.
fn source(cache: &Path) -> String {
    let j = ok_json(&smd_env(&["runtime", "--json"], Some(cache)));
    assert_eq!(j["version"], smd_onnx::runtime::ORT_VERSION);
    j["source"].as_str().unwrap().to_string()
}

#[test]
fn fresh_cache_is_fetched_verified_reused_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // Two first runs at once: the lock serialises them, one fetches, both work.
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
            .args([
                "score",
                "models/iris_skl_mlp.onnx",
                "--data",
                "fixtures/iris_val.npz",
                "--json",
            ])
            .current_dir(root())
            .env("SMD_ONNX_CACHE", &cache)
            .env_remove("ORT_DYLIB_PATH")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let fetched = [&a, &b]
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("fetching ONNX Runtime"))
        .count();
    assert_eq!(fetched, 1, "exactly one process fetches");
    for o in [&a, &b] {
        let j = ok_json(o);
        assert_eq!(j["samples"], 60);
    }
    let dir = smd_onnx::runtime::provision::cache_dir(&cache, smd_onnx::runtime::Flavor::Cpu);
    assert!(smd_onnx::runtime::provision::verify(&dir).is_ok());
    // Later runs reuse it.
    assert_eq!(source(&cache), "cache");
    let lib = smd_onnx::runtime::provision::verify(&dir).unwrap();

    // A truncated library is detected and refetched.
    let len = std::fs::metadata(&lib).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lib)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_eq!(source(&cache), "fetched");
    assert_eq!(source(&cache), "cache");

    // Same size, different bytes: detected by the manifest's hash.
    let mut bytes = std::fs::read(&lib).unwrap();
    bytes[4096] ^= 0xff;
    std::fs::write(&lib, &bytes).unwrap();
    assert_eq!(source(&cache), "fetched");

    // A partial cache folder (no manifest, as if a copy was interrupted) is repaired.
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    assert_eq!(source(&cache), "fetched");

    // A leftover temporary folder from a killed fetch does not matter.
    std::fs::create_dir_all(cache.join("ort").join(".tmp-leftover")).unwrap();
    assert_eq!(source(&cache), "cache");
}

#[test]
fn explicit_library_is_used() {
    let j = ok_json(&smd_env(&["runtime", "--json"], None));
    let lib = j["library"].as_str().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
        .args(["runtime", "--json", "--ort-lib", &lib])
        .output()
        .unwrap();
    let k = ok_json(&out);
    assert_eq!(k["source"], "explicit");
    let out = Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
        .args(["runtime", "--json"])
        .env("ORT_DYLIB_PATH", &lib)
        .output()
        .unwrap();
    assert_eq!(ok_json(&out)["source"], "env_var");
    let err = one_line_error(
        &Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
            .args(["runtime", "--ort-lib", "/nonexistent/libonnxruntime.so"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    // Not an ONNX Runtime library.
    let err = one_line_error(
        &Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
            .args(["runtime", "--ort-lib", "Cargo.toml"])
            .current_dir(root())
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("Cargo.toml") && err.contains("cannot load ONNX Runtime"),
        "{err}"
    );
}

#[test]
fn gpu_devices_never_fall_back_to_cpu() {
    // This machine has no GPU (or no CUDA build of ONNX Runtime): exit 2 with a reason.
    let cuda = smd_env(&["runtime", "--device", "cuda"], None);
    if cuda.status.success() {
        let j: Value = serde_json::from_slice(&cuda.stdout).unwrap();
        assert_eq!(j["providers"][0], "CUDAExecutionProvider");
        return;
    }
    let err = one_line_error(&cuda);
    assert!(
        err.contains("libcuda.so.1") || err.contains("GPU libraries"),
        "{err}"
    );
    // With the CPU-only library named explicitly, the missing provider is the reason.
    let j = ok_json(&smd_env(&["runtime", "--json"], None));
    let lib = j["library"].as_str().unwrap();
    for dev in ["cuda", "tensorrt:0"] {
        let out = Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
            .args(["runtime", "--device", dev, "--ort-lib", lib])
            .output()
            .unwrap();
        let err = one_line_error(&out);
        assert!(
            err.contains(lib) && err.contains("ExecutionProvider"),
            "{err}"
        );
    }
}
