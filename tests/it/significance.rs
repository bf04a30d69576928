//! `evolve`'s significance numbers (`best.significance`, `ensembles[].significance`): their
//! shape and the summary's wording, and an independent Python reference
//! (`tests/reference/significance.py`: onnxruntime + numpy) that recomputes them exactly.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{json_of, repo, smd};

/// Runs evolve into `out` with `extra` arguments; returns the report and the human summary of
/// the same run (resumed: nothing is scored twice).
fn run(model: &str, data: &str, out: &Path, extra: &[&str]) -> (Value, String) {
    let o = out.to_str().unwrap();
    let mut args = vec!["evolve", model, "--data", data, "--out", o, "--json"];
    args.extend_from_slice(extra);
    let report = json_of(&smd(&args));
    args.retain(|a| *a != "--json");
    args.push("--resume");
    let text = smd(&args);
    assert!(text.status.success(), "{text:?}");
    let again: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    for key in ["best", "ensembles"] {
        assert_eq!(
            again[key], report[key],
            "a resumed run reports the same {key}"
        );
    }
    (report, String::from_utf8(text.stdout).unwrap())
}

/// The fields every significance object has, and how they relate to the rest of the report.
fn check_shape(sig: &Value, owner: &Value, report: &Value, classification: bool) {
    let f = |k: &str| sig[k].as_f64().unwrap_or_else(|| panic!("{k} in {sig}"));
    assert_eq!(f("gain"), owner["gain_vs_original"].as_f64().unwrap());
    let sel = |s: &Value| {
        let m = &s["selection"];
        m["accuracy"]
            .as_f64()
            .unwrap_or_else(|| -m["mse"].as_f64().unwrap())
    };
    assert_eq!(
        f("selection_gain"),
        sel(&owner["scores"]) - sel(&report["parent"])
    );
    assert_eq!(f("gap"), f("selection_gain") - f("gain"));
    let ci: Vec<f64> = sig["ci95"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(ci.len() == 2 && ci[0] <= ci[1], "{sig}");
    assert_eq!(sig["bootstrap"]["resamples"], 2000);
    let split_seed = report["settings"]["split_seed"].as_u64().unwrap();
    assert_eq!(
        sig["bootstrap"]["seed"].as_u64(),
        Some(split_seed ^ 0x534D_442D_424F_4F54)
    );
    if classification {
        let p = f("mcnemar_p");
        assert!((0.0..=1.0).contains(&p), "{sig}");
        let d = sig["discordant"].as_array().unwrap();
        let (b, c) = (d[0].as_f64().unwrap(), d[1].as_f64().unwrap());
        let n = report["samples"]["holdout"].as_f64().unwrap();
        assert!(((c - b) / n - f("gain")).abs() < 1e-12, "{sig}");
    } else {
        assert!(sig.get("mcnemar_p").is_none() && sig.get("discordant").is_none());
    }
}

/// A Python with numpy and onnxruntime: `SMD_PYTHON` (`.ci/run` provides one), else `python3`;
/// `None` (said loudly) when there is none.
fn python() -> Option<String> {
    let python = std::env::var("SMD_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import numpy, onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        // Straight to the process's stderr: the test harness captures eprintln!.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: {python} lacks numpy/onnxruntime: the independent significance \
             reference (tests/reference/significance.py) did not run. Set SMD_PYTHON or use \
             .ci/run. ***\n"
        );
        return None;
    }
    Some(python)
}

/// Runs the Python reference on the run in `out`; returns whether it agreed, and its output.
fn reference(python: &str, model: &str, data: &str, out: &Path) -> (bool, String) {
    let o = Command::new(python)
        .arg(repo("tests/reference/significance.py"))
        .args([model, data, out.to_str().unwrap()])
        .current_dir(repo("."))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn significance_is_reported_and_matches_the_python_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (model, data) = (
        "models/digits_cnn_undertrained.onnx",
        "fixtures/digits_val.npz",
    );
    // Two generations and a split seed past 2^32: the winner's gain is significant here, the
    // exported ensemble's is not.
    let (r, text) = run(
        model,
        data,
        &out,
        &[
            "--children",
            "8",
            "--seed",
            "1",
            "--generations",
            "2",
            "--split-seed",
            "123456789012345",
        ],
    );
    let best = &r["best"];
    check_shape(&best["significance"], best, &r, true);
    for e in r["ensembles"].as_array().unwrap() {
        check_shape(&e["significance"], e, &r, true);
    }
    let line = text.lines().find(|l| l.starts_with("Best:")).unwrap();
    assert!(
        line.contains("(+4.29 points vs the original model, 95% CI [+1.65, +6.93], McNemar p = 0.0044; +2.31 points vs the parent of generation 1)."),
        "{text}"
    );
    let after = |start: &str| {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(start));
        lines.nth(1).unwrap_or_default().to_string()
    };
    assert!(after("Best:").starts_with("Ensemble exported:"), "{text}");
    assert!(
        after("Ensemble exported:").starts_with("The gain is not significant (p = 0.12; "),
        "{text}"
    );
    let Some(python) = python() else { return };
    let (ok, said) = reference(&python, model, data, &out);
    assert!(ok, "the Python reference disagrees:\n{said}");
    // The reference is not vacuous: a CI bound off by one ulp, or a p-value off by 1e-9, fails.
    let path = out.join("report.json");
    let original = std::fs::read(&path).unwrap();
    for (key, nudge) in [("ci95", 0usize), ("mcnemar_p", 1)] {
        let mut bad: Value = serde_json::from_slice(&original).unwrap();
        let sig = &mut bad["best"]["significance"];
        if nudge == 0 {
            let hi = sig["ci95"][1].as_f64().unwrap();
            sig["ci95"][1] = Value::from(f64::from_bits(hi.to_bits() + 1));
        } else {
            let p = sig["mcnemar_p"].as_f64().unwrap();
            sig["mcnemar_p"] = Value::from(p * (1.0 + 1e-9));
        }
        std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
        let (ok, said) = reference(&python, model, data, &out);
        assert!(!ok && said.contains(key), "a changed {key} passes:\n{said}");
    }
}

#[test]
fn an_insignificant_gain_says_so_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (model, data) = (
        "models/digits_cnn_undertrained.onnx",
        "fixtures/digits_val.npz",
    );
    // The README's run: +2.97 points on 303 holdout rows is not significant.
    let (r, text) = run(model, data, &out, &[]);
    let sig = &r["best"]["significance"];
    assert_eq!(sig["discordant"], serde_json::json!([6, 15]));
    let p = sig["mcnemar_p"].as_f64().unwrap();
    // 2·P[Bin(21, 1/2) ≤ 6], exactly.
    assert!((p - 0.0783538818359375).abs() < 1e-15, "{p}");
    assert!(
        text.contains(
            "(+2.97 points vs the original model, 95% CI [+0.00, +5.94], McNemar p = 0.078).\n\
             The gain is not significant (p = 0.078; the 95% interval includes 0): keep the \
             original, or score on more data.\n"
        ),
        "{text}"
    );
    if let Some(python) = python() {
        let (ok, said) = reference(&python, model, data, &out);
        assert!(ok, "the Python reference disagrees:\n{said}");
    }
}

#[test]
fn regression_reports_an_interval_without_mcnemar() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (model, data) = ("models/diabetes_skl_mlp.onnx", "fixtures/diabetes_val.npz");
    let (r, text) = run(model, data, &out, &["--children", "8", "--seed", "2"]);
    if !r["best"].is_null() {
        check_shape(&r["best"]["significance"], &r["best"], &r, false);
    }
    for e in r["ensembles"].as_array().unwrap() {
        check_shape(&e["significance"], e, &r, false);
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("Ensemble exported:"))
        .unwrap();
    assert!(
        line.contains("vs the original model, 95% CI [") && !line.contains("McNemar"),
        "{text}"
    );
    if let Some(python) = python() {
        let (ok, said) = reference(&python, model, data, &out);
        assert!(ok, "the Python reference disagrees:\n{said}");
    }
}

/// `--accept-p`: best.onnx and ensemble.onnx are written only when McNemar's exact test of
/// their selection gain over the original gives p below it; the report keeps what was found,
/// and a notice says why a file is missing. With `--generations auto` it defaults to 0.01.
#[test]
fn the_export_gate_writes_only_significant_selection_gains() {
    let dir = tempfile::tempdir().unwrap();
    let evolve = |model: &str, name: &str, extra: &[&str]| -> (Value, std::path::PathBuf) {
        let out = dir.path().join(name);
        let o = out.to_str().unwrap();
        let data = "fixtures/digits_val.npz";
        let mut args = vec!["evolve", model, "--data", data, "--out", o, "--json"];
        args.extend_from_slice(extra);
        (json_of(&smd(&args)), out)
    };
    // The well-trained CNN: generation 0's best child gains nothing real on selection.
    let (r, out) = evolve(
        "models/digits_cnn.onnx",
        "held",
        &["--seed", "1", "--accept-p", "0.05"],
    );
    let p = r["best"]["selection_p"].as_f64().unwrap();
    assert!(p >= 0.05, "{p}");
    assert!(!out.join("best.onnx").exists() && r["outputs"]["best"].is_null());
    assert!(!out.join("ensemble.onnx").exists() && r["outputs"]["ensemble_kind"].is_null());
    let notices = r["notices"].to_string();
    assert!(notices.contains("no best.onnx") && notices.contains("no ensemble.onnx"));
    assert_eq!(r["settings"]["accept_p"], 0.05);
    // The same run without the gate (the default with a fixed number of generations).
    let (plain, out) = evolve("models/digits_cnn.onnx", "plain", &["--seed", "1"]);
    assert_eq!(plain["settings"]["accept_p"], 1.0);
    assert_eq!(plain["best"], r["best"]);
    assert!(out.join("best.onnx").exists() && out.join("ensemble.onnx").exists());

    // The under-trained CNN after 5 generations: a real selection gain is written.
    let args = ["--generations", "5", "--sigma", "0.3", "--accept-p", "0.05"];
    let (r, out) = evolve("models/digits_cnn_undertrained.onnx", "kept", &args);
    assert!(r["best"]["selection_p"].as_f64().unwrap() < 0.05);
    assert!(out.join("best.onnx").exists());
    let chosen = r["outputs"]["ensemble_kind"].as_str().unwrap();
    let e = r["ensembles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == chosen);
    assert!(e.unwrap()["selection_p"].as_f64().unwrap() < 0.05);
    assert!(out.join("ensemble.onnx").exists());

    // `--generations auto` gates at 0.01 unless told; out-of-range values are refused.
    let auto = ["--generations", "auto", "--budget", "40", "--children", "4"];
    let (r, _) = evolve("models/digits_cnn.onnx", "auto", &auto);
    assert_eq!(r["settings"]["accept_p"], 0.01);
    for bad in ["0", "1.5", "nan"] {
        let o = dir.path().join("bad");
        let args = [
            "evolve",
            "models/digits_cnn.onnx",
            "--data",
            "fixtures/digits_val.npz",
        ];
        let out = smd(&[
            &args[..],
            &["--out", o.to_str().unwrap(), "--accept-p", bad],
        ]
        .concat());
        crate::util::assert_one_line_error(&out, &["--accept-p"]);
        assert!(!o.exists());
    }
}
