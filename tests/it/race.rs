//! `evolve --race`: children raced against their parent choose exactly what a full
//! evaluation chooses, and the passes they save are accounted for.

use serde_json::Value;

use super::evolve::evolve;
use super::util::*;

/// True when selection metrics `a` beat `b` as evolve orders them (accuracy, then NLL).
fn beats(a: &Value, b: &Value) -> bool {
    let (aa, ba) = (
        a["accuracy"].as_f64().unwrap(),
        b["accuracy"].as_f64().unwrap(),
    );
    aa > ba || (aa == ba && a["nll"].as_f64().unwrap() < b["nll"].as_f64().unwrap())
}

/// Selection rows the report's candidates were scored on.
fn rows_of(r: &Value) -> u64 {
    let n = r["samples"]["selection"].as_u64().unwrap();
    let full = |c: &Value| c["dropped_after"].as_u64().unwrap_or(n);
    let children: u64 = r["children"].as_array().unwrap().iter().map(full).sum();
    let combined = r["generations"].as_array().unwrap().iter().map(|g| {
        [&g["merged"], &g["stretched"]]
            .into_iter()
            .filter(|m| m.is_object())
            .count() as u64
    });
    n + children + combined.sum::<u64>() * n
}

/// Property over fixtures, seeds and σ: the raced run keeps the same candidates, generation by
/// generation, as the full run with the same batch (same best child, same merged children,
/// `best.onnx` byte for byte); every surviving child scores exactly as in the full run; every
/// dropped child did not beat its parent there.
#[test]
fn racing_chooses_what_a_full_evaluation_chooses() {
    let dir = tempfile::tempdir().unwrap();
    let mut dropped = 0;
    let cases = [
        (
            "models/digits_cnn_undertrained.onnx",
            "fixtures/digits_val.npz",
            "0.3",
        ),
        ("models/mnist_mlp.onnx", "fixtures/mnist_val.npz", "0.3"),
        ("models/digits_cnn.onnx", "fixtures/digits_val.npz", "1"),
        ("models/iris_skl_mlp.onnx", "fixtures/iris_val.npz", "0.3"),
    ];
    for (m, d, sigma) in cases {
        for seed in ["1", "2"] {
            let tag = format!("{}-{seed}", m.replace('/', "_"));
            let common = ["--children", "8", "--generations", "2", "--seed", seed];
            let common = [&common[..], &["--sigma", sigma]].concat();
            let raced_out = dir.path().join(format!("{tag}-race"));
            let raced = evolve(m, d, &raced_out, &[&common[..], &["--race"]].concat());
            let batch = raced["settings"]["batch"].to_string();
            let full_out = dir.path().join(format!("{tag}-full"));
            let full = evolve(
                m,
                d,
                &full_out,
                &[&common[..], &["--batch", &batch]].concat(),
            );
            assert_eq!(raced["settings"]["race"], true);
            for (g, (a, b)) in raced["generations"]
                .as_array()
                .unwrap()
                .iter()
                .zip(full["generations"].as_array().unwrap())
                .enumerate()
            {
                assert_eq!(a["kept"], b["kept"], "{tag} generation {g}");
                assert_eq!(
                    a["merged"]["children"], b["merged"]["children"],
                    "{tag} {g}"
                );
                assert_eq!(a["parent"], b["parent"], "{tag} {g}");
                if a["kept"].as_str().unwrap().starts_with("child") {
                    assert_eq!(a["best_child"], b["best_child"], "{tag} {g}");
                }
            }
            let gens = full["generations"].as_array().unwrap();
            for (a, b) in raced["children"]
                .as_array()
                .unwrap()
                .iter()
                .zip(full["children"].as_array().unwrap())
            {
                assert_eq!(a["recipe"], b["recipe"]);
                if a["dropped_after"].is_u64() {
                    dropped += 1;
                    assert!(a["selection"].is_null() && a["holdout"].is_null());
                    let parent = &gens[b["generation"].as_u64().unwrap() as usize]["parent"];
                    assert!(
                        !beats(&b["selection"], &parent["selection"]),
                        "{tag}: racing dropped a child that beat its parent: {b}"
                    );
                } else {
                    assert_eq!(a["selection"], b["selection"], "{tag}");
                    assert_eq!(a["holdout"], b["holdout"], "{tag}");
                }
            }
            let best = |o: &std::path::Path| std::fs::read(o.join("best.onnx")).ok();
            assert_eq!(best(&raced_out), best(&full_out), "{tag}: best.onnx");
            assert_eq!(raced["best"]["scores"], full["best"]["scores"], "{tag}");
            let rows = rows_of(&raced);
            assert_eq!(
                raced["passes"]["selection_rows"].as_u64(),
                Some(rows),
                "{tag}"
            );
            let n = raced["samples"]["selection"].as_f64().unwrap();
            let passes = raced["passes"]["selection"].as_f64().unwrap();
            assert!((passes - rows as f64 / n).abs() < 1e-9, "{tag}");
            assert!(passes <= full["passes"]["selection"].as_f64().unwrap());
        }
    }
    assert!(
        dropped >= 10,
        "racing dropped only {dropped} children: the test shows little"
    );
}

/// A raced run's budget counts the rows it scored: it never spends more than the budget, and
/// spends what its candidates account for. Regression data is refused with one line.
#[test]
fn raced_budgets_and_regression() {
    let dir = tempfile::tempdir().unwrap();
    let (m, d) = ("models/mnist_mlp.onnx", "fixtures/mnist_val.npz");
    let args = [
        "--race",
        "--generations",
        "auto",
        "--budget",
        "60",
        "--sigma",
        "0.3",
    ];
    let r = evolve(m, d, &dir.path().join("budget"), &args);
    let used = r["passes"]["selection"].as_f64().unwrap();
    assert!(used <= 60.0, "{used}");
    assert_eq!(r["passes"]["selection_rows"].as_u64(), Some(rows_of(&r)));
    assert_eq!(r["stopped"], "budget");
    // Dropped children are not journaled: a resumed run races them again, to the same end.
    let again = evolve(
        m,
        d,
        &dir.path().join("budget"),
        &[&args[..], &["--resume"]].concat(),
    );
    for key in ["generations", "children", "passes", "best", "ensembles"] {
        assert_eq!(again[key], r[key], "{key}");
    }

    // σ so large that every child is dropped: no ensemble can be built, and the run says so.
    let args = ["--race", "--sigma", "20", "--children", "4"];
    let r = evolve(m, d, &dir.path().join("all-dropped"), &args);
    let children = r["children"].as_array().unwrap();
    assert!(
        children
            .iter()
            .all(|c| c["dropped_after"].as_u64() < Some(498))
    );
    assert!(r["ensembles"].as_array().unwrap().is_empty());
    assert!(!dir.path().join("all-dropped/ensemble.onnx").exists());
    assert!(r["passes"]["selection"].as_f64().unwrap() < 1.0 + 4.0 * 0.5);
    let notices = r["notices"].to_string();
    assert!(notices.contains("no ensemble.onnx") && notices.contains("4 dropped by racing"));

    let out = dir.path().join("regression");
    let o = out.to_str().unwrap();
    let data = "fixtures/diabetes_val.npz";
    let args = [
        "evolve",
        "models/diabetes_skl_mlp.onnx",
        "--data",
        data,
        "--out",
        o,
        "--race",
    ];
    assert_one_line_error(&smd(&args), &["--race", "class labels"]);
    assert!(!out.exists() || entries(&out).is_empty());
}
