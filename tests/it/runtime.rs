//! `smd-onnx runtime` and ONNX Runtime provisioning: the cache, fetching, repair, GPU errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::util::{assert_one_line_error, json_of, root, smd};

fn smd_env(args: &[&str], cache: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smd-onnx"));
    c.args(args).current_dir(root());
    if let Some(cache) = cache {
        c.env("SMD_ONNX_CACHE", cache).env_remove("ORT_DYLIB_PATH");
    }
    c.output().expect("run smd-onnx")
}

#[test]
fn runtime_reports_library_version_and_providers() {
    let j = json_of(&smd_env(&["runtime", "--json"], None));
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
    let j = json_of(&smd_env(&["runtime", "--json"], Some(cache)));
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
        let j = json_of(o);
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
    let j = json_of(&smd_env(&["runtime", "--json"], None));
    let lib = j["library"].as_str().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
        .args(["runtime", "--json", "--ort-lib", &lib])
        .output()
        .unwrap();
    let k = json_of(&out);
    assert_eq!(k["source"], "explicit");
    let out = Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
        .args(["runtime", "--json"])
        .env("ORT_DYLIB_PATH", &lib)
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["source"], "env_var");
    assert_one_line_error(
        &smd(&["runtime", "--ort-lib", "/nonexistent/libonnxruntime.so"]),
        &["/nonexistent/libonnxruntime.so"],
    );
    // Not an ONNX Runtime library.
    assert_one_line_error(
        &smd(&["runtime", "--ort-lib", "Cargo.toml"]),
        &["Cargo.toml", "cannot load ONNX Runtime"],
    );
}

#[test]
fn gpu_devices_never_fall_back_to_cpu() {
    // This machine has no GPU (or no CUDA build of ONNX Runtime): exit 2 with a reason.
    let cuda = smd_env(&["runtime", "--device", "cuda", "--json"], None);
    if cuda.status.success() {
        let j: Value = serde_json::from_slice(&cuda.stdout).unwrap();
        assert_eq!(j["providers"][0], "CUDAExecutionProvider");
        return;
    }
    let err = assert_one_line_error(&cuda, &[]);
    assert!(
        err.contains("libcuda.so.1") || err.contains("GPU libraries"),
        "{err}"
    );
    // With the CPU-only library named explicitly, the missing provider is the reason.
    let j = json_of(&smd_env(&["runtime", "--json"], None));
    let lib = j["library"].as_str().unwrap();
    for dev in ["cuda", "tensorrt:0"] {
        let out = Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
            .args(["runtime", "--device", dev, "--ort-lib", lib])
            .output()
            .unwrap();
        let err = assert_one_line_error(&out, &[]);
        assert!(
            err.contains(lib) && err.contains("ExecutionProvider"),
            "{err}"
        );
    }
}

#[test]
fn sessions_take_initializer_overrides_and_predict_any_rows() {
    use smd_onnx::TensorData;
    use smd_onnx::onnx::build::linear_model;
    use smd_onnx::runtime::{Runtime, RuntimeConfig, tensor_value};
    use smd_onnx::score::arrays::RawArray;
    use smd_onnx::score::{DType, Dataset, ModelIo, Predictor};

    let rt = Runtime::new(&RuntimeConfig::default()).expect("runtime");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.onnx");
    let m = linear_model(
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        &[0.0; 3],
        2,
        3,
        false,
        None,
    );
    std::fs::write(&path, &m).unwrap();

    // Override W so that y = [0, 0, x0 + x1].
    let w = tensor_value(
        "W",
        TensorData::F32(vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
        &[2, 3],
    )
    .unwrap();
    let mut s = rt.session_from_file(&path, vec![("W".into(), w)]).unwrap();
    let x = ort::value::Tensor::from_array(([1usize, 2], vec![1.0f32, 2.0])).unwrap();
    let out = s.run(ort::inputs!["x" => x]).unwrap();
    let (_, y) = out["y"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(y, [0.0, 0.0, 3.0]);
    drop(out);
    // A value that does not fill its dims is refused before ONNX Runtime sees it.
    assert!(tensor_value("W", TensorData::F32(vec![0.0; 5]), &[2, 3]).is_err());
    // The file itself is untouched.
    assert_eq!(std::fs::read(&path).unwrap(), m);

    // Predictions over any rows: a gathered (non-contiguous) batch equals the contiguous one.
    let io = ModelIo::from_file(&path).unwrap();
    let n = 10usize;
    let xs: Vec<u8> = (0..n * 2)
        .flat_map(|i| (i as f32 * 0.1).to_le_bytes())
        .collect();
    let ls: Vec<u8> = (0..n)
        .flat_map(|i| ((i % 3) as i64).to_le_bytes())
        .collect();
    let arrays = vec![
        RawArray {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![n, 2],
            data: smd_onnx::buffer::aligned_copy(&xs),
        },
        RawArray {
            name: "labels".into(),
            dtype: DType::I64,
            shape: vec![n],
            data: smd_onnx::buffer::aligned_copy(&ls),
        },
    ];
    let ds = Dataset::from_arrays(std::path::Path::new("mem.npz"), arrays, &io).unwrap();
    let mut s = rt.session_from_memory(&m).unwrap();
    let mut p = Predictor::new(&io, &ds, None, 4).unwrap();
    let all: Vec<usize> = (0..n).collect();
    let a = p.predict(&mut s, &ds, &all).unwrap();
    let odd = [9usize, 1, 3, 7];
    let b = p.predict(&mut s, &ds, &odd).unwrap();
    assert_eq!(b.rows, odd);
    for (k, &r) in odd.iter().enumerate() {
        for (u, v) in b.row(k).iter().zip(a.row(r)) {
            assert!((u - v).abs() < 1e-6);
        }
    }
    // Same rows, same batch: bit-identical.
    assert_eq!(p.predict(&mut s, &ds, &odd).unwrap(), b);
    let metrics = a.metrics(ds.labels()).unwrap();
    assert_eq!(metrics.samples, n);

    // A runtime with another thread count than the environment's shared pool gets sessions
    // with their own pool, and the same predictions.
    let threads = rt.describe().intra_threads % 3 + 1;
    let rt2 = Runtime::new(&RuntimeConfig {
        intra_threads: Some(threads),
        ..RuntimeConfig::default()
    })
    .expect("second runtime");
    assert_eq!(rt2.describe().intra_threads, threads);
    let mut s2 = rt2.session_from_memory(&m).unwrap();
    assert_eq!(p.predict(&mut s2, &ds, &all).unwrap(), a);
}
