//! `smd-onnx score`: golden metrics from Python onnxruntime, the split, malformed data.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use smd_onnx::onnx::build::linear_model;
use smd_onnx::score::DType;
use smd_onnx::score::arrays::write_npz;

use crate::util::{assert_one_line_error, json_of, repo, smd};

fn score(args: &[&str]) -> Output {
    let mut a = vec!["score"];
    a.extend_from_slice(args);
    smd(&a)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// `score --json`'s metrics and per-class results equal scikit-learn's on the same outputs
/// (`fixtures/expected/sklearn/<stem>.json`, written by models/make_metrics.py).
#[track_caller]
fn assert_sklearn_agrees(golden: &Path, got: &Value) {
    let stem = golden.file_stem().unwrap().to_str().unwrap();
    let path = repo(&format!("fixtures/expected/sklearn/{stem}.json"));
    let want: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let metrics = got["metrics"].as_object().unwrap();
    for (k, g) in metrics.iter().filter(|(k, _)| *k != "samples") {
        let w = want["metrics"][k]
            .as_f64()
            .unwrap_or_else(|| panic!("{stem}: scikit-learn has no {k}"));
        // NLL: scikit-learn renormalises rows and clips at f64's epsilon, smd-onnx floors at
        // 1e-15; the others are ratios of the same counts.
        let tol = if k == "nll" { 1e-6 } else { 1e-12 };
        assert!(
            close(g.as_f64().unwrap(), w, tol),
            "{stem}: {k} = {g}, scikit-learn says {w}"
        );
    }
    let want_metrics = want["metrics"].as_object().unwrap();
    assert_eq!(
        metrics.len() - 1,
        want_metrics.len(),
        "{stem}: every metric is checked"
    );
    match want.get("per_class") {
        None => assert!(got["per_class"].is_null(), "{stem}"),
        Some(w) => {
            let g = &got["per_class"];
            assert_eq!(g["support"], w["support"], "{stem}");
            assert_eq!(g["confusion"], w["confusion"], "{stem}");
            for k in ["precision", "recall", "f1"] {
                let (gs, ws) = (g[k].as_array().unwrap(), w[k].as_array().unwrap());
                assert_eq!(gs.len(), ws.len(), "{stem} {k}");
                for (a, b) in gs.iter().zip(ws) {
                    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                    assert!(close(a, b, 1e-12), "{stem} {k}: {a} vs scikit-learn {b}");
                }
            }
        }
    }
}

#[test]
fn reproduces_python_onnxruntime_on_every_fixture() {
    let dir = repo("fixtures/expected");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/expected")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    let mut seen_multi_input = false;
    let mut seen_batch1 = false;
    for f in files {
        let e: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let model = e["model"].as_str().unwrap();
        let data = &e["data"];
        let want = &e["scores"];
        if want.is_null() {
            // A model onnxruntime refuses (see models/README.md); any_model.rs tests its error.
            assert!(model.contains("refused"), "{model}: no expected scores");
            continue;
        }
        let data = data.as_str().unwrap();
        let got = json_of(&score(&[model, "--data", data, "--split", "all", "--json"]));
        let name = f.display();
        assert_eq!(got["samples"], want["samples"], "{name}");
        assert_eq!(got["output"], want["output"], "{name}");
        for k in ["accuracy", "top5_accuracy", "nll", "mse"] {
            match want[k].as_f64() {
                None => assert!(got["metrics"][k].is_null(), "{name}: {k} should be absent"),
                Some(w) => {
                    let g = got["metrics"][k].as_f64().unwrap_or(f64::NAN);
                    assert!(close(g, w, 1e-6), "{name}: {k} = {g}, python says {w}");
                }
            }
        }
        assert_sklearn_agrees(&f, &got);
        seen_multi_input |= model.contains("two_inputs");
        if model.contains("batch1") {
            seen_batch1 = true;
            assert_eq!(got["batch"], 1, "fixed batch dimension of 1 is honoured");
        }
        assert_eq!(got["failed"], false);
        assert_eq!(got["device"], "cpu");
        assert_eq!(got["providers"][0], "CPUExecutionProvider");
        assert!(
            got["runtime"]["version"]
                .as_str()
                .unwrap()
                .starts_with("1.")
        );
    }
    assert!(seen_multi_input && seen_batch1);
}

#[test]
fn selection_and_holdout_partition_the_samples() {
    let base = [
        "models/digits_cnn.onnx",
        "--data",
        "fixtures/digits_val.npz",
        "--json",
    ];
    let run = |part: &str, extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(&["--split", part]);
        a.extend_from_slice(extra);
        json_of(&score(&a))
    };
    let all = run("all", &[]);
    let sel = run("selection", &[]);
    let hold = run("holdout", &[]);
    let n = |v: &Value| v["samples"].as_u64().unwrap();
    assert_eq!(n(&all), 600);
    assert_eq!(n(&sel) + n(&hold), n(&all));
    // Stratified: round(F * n_c) of each class goes to the holdout.
    let expected_holdout = |f: f64| -> u64 {
        let arrays =
            smd_onnx::score::arrays::read_arrays(&repo("fixtures/digits_val.npz")).unwrap();
        let l = arrays.iter().find(|a| a.name == "labels").unwrap();
        let ids: Vec<i64> = l
            .data
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (0..10)
            .map(|c| ((ids.iter().filter(|&&x| x == c).count() as f64) * f).round() as u64)
            .sum()
    };
    assert_eq!(n(&hold), expected_holdout(0.5));
    assert_eq!(sel["split"]["selection"], n(&sel));
    assert_eq!(sel["split"]["holdout_samples"], n(&hold));
    // Correct predictions add up: the parts are disjoint and cover every sample.
    let correct = |v: &Value| v["metrics"]["accuracy"].as_f64().unwrap() * n(v) as f64;
    assert!((correct(&sel) + correct(&hold) - correct(&all)).abs() < 1e-6);
    let nll = |v: &Value| v["metrics"]["nll"].as_f64().unwrap() * n(v) as f64;
    assert!((nll(&sel) + nll(&hold) - nll(&all)).abs() < 1e-6);
    // Deterministic; another seed or fraction gives another split.
    assert_eq!(run("selection", &[])["metrics"], sel["metrics"]);
    let other = run("holdout", &["--split-seed", "7", "--holdout", "0.25"]);
    assert_eq!(n(&other), expected_holdout(0.25));
    // Batch size does not change which samples are scored.
    let b7 = run("selection", &["--batch", "7"]);
    assert_eq!(b7["metrics"]["accuracy"], sel["metrics"]["accuracy"]);
}

#[test]
fn human_summary() {
    let out = score(&[
        "models/iris_skl_mlp.onnx",
        "--data",
        "fixtures/iris_val.npz",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("accuracy"), "{text}");
    assert!(
        text.contains("`probabilities` (probabilities, 3 classes)"),
        "{text}"
    );
    assert!(!text.contains("top5"), "C < 5 has no top-5: {text}");
}

/// A temporary folder with a linear model `x [N,2] -> y [N,3]` (logits).
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let m = linear_model(
            &[1.0, 0.0, -1.0, 0.0, 1.0, 0.5],
            &[0.0, 0.1, 0.2],
            2,
            3,
            false,
            None,
        );
        std::fs::write(dir.path().join("m.onnx"), m).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn score(&self, data: &Path) -> Output {
        score(&[
            self.path("m.onnx").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ])
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn good_synthetic_data_scores() {
    let c = Case::new();
    let x = f32s(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.5]);
    let l = i64s(&[1, 1, 0]);
    for (name, deflate) in [("s.npz", false), ("d.npz", true)] {
        let p = c.write(
            name,
            &write_npz(
                &[
                    ("x", DType::F32, &[3, 2], &x),
                    ("labels", DType::I64, &[3], &l),
                ],
                deflate,
            ),
        );
        let j = json_of(&c.score(&p));
        assert_eq!(j["samples"], 3);
        assert_eq!(j["output_kind"], "logits");
    }
    // A folder of .npy files works too, and uint8 data widens losslessly to float32.
    let d = c.path("npy");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("x.npy"),
        smd_onnx::score::npy::write_npy(DType::U8, &[3, 2], &[1, 2, 3, 4, 5, 6]),
    )
    .unwrap();
    std::fs::write(
        d.join("labels.npy"),
        smd_onnx::score::npy::write_npy(DType::I64, &[3], &l),
    )
    .unwrap();
    assert_eq!(json_of(&c.score(&d))["samples"], 3);
}

#[test]
fn malformed_data_is_one_line_exit_2_naming_file_and_array() {
    let c = Case::new();
    let x = f32s(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.5]);
    let l = i64s(&[1, 1, 0]);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "text.npz",
            b"this is not a zip file".to_vec(),
            vec!["not an .npz"],
        ),
        (
            "nolabels.npz",
            write_npz(&[("x", DType::F32, &[3, 2], &x)], false),
            vec!["no array `labels`"],
        ),
        (
            "noinput.npz",
            write_npz(
                &[
                    ("other", DType::F32, &[3, 2], &x),
                    ("labels", DType::I64, &[3], &l),
                ],
                false,
            ),
            vec!["no array `x` for model input `x`", "other"],
        ),
        (
            "dtype.npz",
            write_npz(
                &[
                    ("x", DType::F64, &[3, 2], &[0u8; 48]),
                    ("labels", DType::I64, &[3], &l),
                ],
                false,
            ),
            vec!["array `x` has dtype float64 but model input `x` takes float32"],
        ),
        (
            "rank.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[3, 2, 1], &x),
                    ("labels", DType::I64, &[3], &l),
                ],
                false,
            ),
            vec!["array `x` has rank 3 but model input `x` has rank 2"],
        ),
        (
            "dims.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[2, 3], &x),
                    ("labels", DType::I64, &[2], &l[..16]),
                ],
                false,
            ),
            vec!["array `x`", "dim 1 = 2"],
        ),
        (
            "count.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[3, 2], &x),
                    ("labels", DType::I64, &[2], &l[..16]),
                ],
                false,
            ),
            vec!["array `x` has 3 samples but array `labels` has 2"],
        ),
        (
            "range.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[3, 2], &x),
                    ("labels", DType::I64, &[3], &i64s(&[0, 3, 1])),
                ],
                false,
            ),
            vec![
                "array `labels` has class id 3 at row 1",
                "output `y` has 3 classes",
            ],
        ),
        (
            "negative.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[3, 2], &x),
                    ("labels", DType::I64, &[3], &i64s(&[0, -1, 1])),
                ],
                false,
            ),
            vec!["array `labels` has class id -1"],
        ),
        (
            "empty.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[0, 2], &[]),
                    ("labels", DType::I64, &[0], &[]),
                ],
                false,
            ),
            vec!["empty"],
        ),
        (
            "short.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[4, 2], &x),
                    ("labels", DType::I64, &[3], &l),
                ],
                false,
            ),
            vec!["array `x`", "need"],
        ),
    ];
    for (name, bytes, needles) in cases {
        let p = c.write(name, &bytes);
        let mut all = vec![p.to_str().unwrap()];
        all.extend(needles);
        assert_one_line_error(&c.score(&p), &all);
    }
    // A corrupt deflated member: flip bytes inside the compressed stream of `x`.
    let mut z = write_npz(
        &[
            ("x", DType::F32, &[3, 2], &f32s(&[0.5; 6])),
            ("labels", DType::I64, &[3], &l),
        ],
        true,
    );
    let pos = z.windows(5).position(|w| w == b"x.npy").unwrap() + 5 + 20 + 4;
    for b in &mut z[pos..pos + 12] {
        *b ^= 0xa5;
    }
    let p = c.write("corrupt.npz", &z);
    assert_one_line_error(&c.score(&p), &[p.to_str().unwrap(), "array `x`"]);
    // Missing file.
    let p = c.path("absent.npz");
    assert_one_line_error(&c.score(&p), &[p.to_str().unwrap()]);
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let base = [
        "models/iris_skl_mlp.onnx",
        "--data",
        "fixtures/iris_val.npz",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        score(&a)
    };
    assert_one_line_error(&with(&["--holdout", "1.5"]), &["--holdout"]);
    assert_one_line_error(&with(&["--split", "test"]), &["--split"]);
    assert_one_line_error(
        &with(&["--output", "nope"]),
        &[
            "models/iris_skl_mlp.onnx",
            "no output `nope`",
            "probabilities",
        ],
    );
    assert_one_line_error(&with(&["--output", "label"]), &["output `label`", "int64"]);
    assert_one_line_error(&with(&["--batch", "0"]), &["--batch"]);
    assert_one_line_error(&with(&["--device", "quantum"]), &["--device"]);
    // Not a model.
    let out = score(&["fixtures/iris_val.npz", "--data", "fixtures/iris_val.npz"]);
    assert_one_line_error(&out, &["fixtures/iris_val.npz", "not a valid ONNX model"]);
}

#[test]
fn nan_outputs_fail_the_run_without_a_crash() {
    let c = Case::new();
    let m = linear_model(
        &[f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.0],
        &[0.0; 3],
        2,
        3,
        false,
        None,
    );
    std::fs::write(c.path("m.onnx"), m).unwrap();
    let x = f32s(&[1.0, 2.0, 0.0, 4.0, -1.0, 0.5]);
    let p = c.write(
        "d.npz",
        &write_npz(
            &[
                ("x", DType::F32, &[3, 2], &x),
                ("labels", DType::I64, &[3], &i64s(&[0, 1, 2])),
            ],
            false,
        ),
    );
    let out = c.score(&p);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["failed"], true);
    assert!(j["metrics"].is_null());
    assert!(j["failure"].as_str().unwrap().contains("NaN/Inf in"));
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    let out = score(&[
        "models/iris_skl_mlp.onnx",
        "--data",
        "fixtures/iris_val.npz",
        "--device",
        "cuda",
    ]);
    if out.status.success() {
        // A machine with a working CUDA setup: nothing to check here.
        return;
    }
    assert_one_line_error(&out, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("libcuda.so.1")
            || err.contains("GPU libraries")
            || err.contains("CUDAExecutionProvider"),
        "{err}"
    );
}
