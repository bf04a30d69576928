//! `evolve --metric`: what selection optimises, recorded in the report and the run's identity.

use serde_json::Value;

use crate::util::{assert_one_line_error, entries, json_of, s, smd};

const MODEL: &str = "models/digits_cnn_undertrained.onnx";
const DATA: &str = "fixtures/digits_val.npz";

fn evolve(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec![
        "evolve",
        MODEL,
        "--data",
        DATA,
        "--out",
        s(out),
        "--children",
        "6",
        "--json",
    ];
    a.extend_from_slice(extra);
    smd(&a)
}

/// The metric's value in a metrics object, as larger-is-better.
fn value(m: &Value, name: &str, higher: bool) -> f64 {
    let v = m[name]
        .as_f64()
        .unwrap_or_else(|| panic!("no {name} in {m}"));
    if higher { v } else { -v }
}

#[test]
fn selection_goes_by_the_metric_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    for (metric, key, higher) in [
        ("macro_f1", "macro_f1", true),
        ("nll", "nll", false),
        ("top5", "top5_accuracy", true),
    ] {
        let out = dir.path().join(metric);
        let r = json_of(&evolve(&out, &["--metric", metric, "--generations", "2"]));
        assert_eq!(r["settings"]["metric"], metric);
        let children = r["children"].as_array().unwrap();
        for g in r["generations"].as_array().unwrap() {
            let gen_no = g["generation"].as_u64().unwrap();
            let kids: Vec<&Value> = children
                .iter()
                .filter(|c| c["generation"].as_u64() == Some(gen_no))
                .collect();
            // The best child is the first with the highest value (lower NLL breaking ties).
            let key_of = |c: &Value| {
                let m = &c["selection"];
                (value(m, key, higher), -m["nll"].as_f64().unwrap())
            };
            let top = kids.iter().map(|c| key_of(c)).fold(
                (f64::NEG_INFINITY, f64::NEG_INFINITY),
                |a, b| {
                    if b > a { b } else { a }
                },
            );
            let first = kids.iter().position(|c| key_of(c) == top).unwrap();
            assert_eq!(g["best_child"], first, "{metric}: generation {gen_no}");
            // A child is kept exactly when the best one beats the parent by the metric.
            let parent = (
                value(&g["parent"]["selection"], key, higher),
                -g["parent"]["selection"]["nll"].as_f64().unwrap(),
            );
            if g["merged"].is_null() {
                assert_eq!(
                    g["kept"] != "parent",
                    top > parent,
                    "{metric}: generation {gen_no}"
                );
            }
        }
        // The exported ensemble is the best of the four by the metric.
        let kind = r["outputs"]["ensemble_kind"].as_str().unwrap();
        let ens = r["ensembles"].as_array().unwrap();
        let best = ens
            .iter()
            .map(|e| value(&e["scores"]["selection"], key, higher))
            .fold(f64::NEG_INFINITY, f64::max);
        let chosen = ens.iter().find(|e| e["name"] == kind).unwrap();
        assert_eq!(
            value(&chosen["scores"]["selection"], key, higher),
            best,
            "{metric}"
        );
        let page = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert!(
            page.contains(&format!("by {metric}, then lower NLL")),
            "{metric}"
        );
    }
}

#[test]
fn a_metric_that_does_not_apply_is_refused_and_resume_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    for (model, data, metric) in [
        (MODEL, DATA, "mse"),
        ("models/iris_skl_mlp.onnx", "fixtures/iris_val.npz", "top5"),
        (
            "models/diabetes_skl_mlp.onnx",
            "fixtures/diabetes_val.npz",
            "accuracy",
        ),
    ] {
        let out = dir.path().join(format!("bad-{metric}"));
        let o = smd(&[
            "evolve",
            model,
            "--data",
            data,
            "--out",
            s(&out),
            "--metric",
            metric,
        ]);
        assert_one_line_error(&o, &["--metric", metric, "does not apply"]);
        assert!(
            entries(&out).is_empty(),
            "{metric}: nothing is left behind: {:?}",
            entries(&out)
        );
    }
    let o = smd(&["evolve", MODEL, "--data", DATA, "--metric", "f1"]);
    assert_eq!(o.status.code(), Some(2));
    let o = smd(&["evolve", MODEL, "--data", DATA, "--metric", "nll", "--race"]);
    assert_one_line_error(&o, &["--metric", "--race"]);
    // The metric is part of the run's identity: a resume with another one is refused, with
    // the same one it finishes.
    let out = dir.path().join("run");
    json_of(&evolve(&out, &["--metric", "nll"]));
    let o = evolve(&out, &["--metric", "macro_f1", "--resume"]);
    assert_one_line_error(&o, &["journal belongs to a different run"]);
    let o = evolve(&out, &["--resume"]);
    assert_one_line_error(&o, &["journal belongs to a different run"]);
    let r = json_of(&evolve(&out, &["--metric", "nll", "--resume"]));
    assert_eq!(r["settings"]["metric"], "nll");
    // Without --metric the settings say so (null: the default rule).
    let plain = json_of(&evolve(&dir.path().join("plain"), &[]));
    assert!(plain["settings"]["metric"].is_null());
}
