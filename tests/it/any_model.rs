//! Models and runs a new user hits in the first hour: shape conventions other exporters use,
//! scikit-learn's default export (ZipMap, label tails), multi-generation gains, closed pipes.
//! (Ensemble and evolve runs of every fixture, these included, are in ensemble.rs/evolve.rs.)

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::util::{assert_one_line_error, json_of, repo, root, smd};

fn score_json(model: &str, data: &str, extra: &[&str]) -> Value {
    let mut args = vec!["score", model, "--data", data, "--json"];
    args.extend_from_slice(extra);
    json_of(&smd(&args))
}

/// The expected scores Python onnxruntime computed for a fixture (fixtures/expected).
fn expected(stem: &str) -> Value {
    let text = std::fs::read(repo(&format!("fixtures/expected/{stem}.json"))).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// Equal up to float summation order (Python and smd-onnx sum NLL terms differently).
#[track_caller]
fn assert_close(a: &Value, b: &Value, what: &str) {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!(
        (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
        "{what}: {a} vs {b}"
    );
}

#[test]
fn negative_and_missing_dims_are_dynamic_like_onnx_runtime() {
    for stem in ["digits_dynamic_neg", "digits_no_shape"] {
        let m = format!("models/{stem}.onnx");
        let r = score_json(&m, "fixtures/digits_flat_val.npz", &["--split", "all"]);
        let want = &expected(stem)["scores"];
        assert_eq!(r["metrics"]["accuracy"], want["accuracy"], "{stem}");
        assert_close(&r["metrics"]["nll"], &want["nll"], stem);
        // Any batch size works, as in ONNX Runtime.
        let r7 = score_json(
            &m,
            "fixtures/digits_flat_val.npz",
            &["--split", "all", "--batch", "7"],
        );
        assert_eq!(r7["metrics"]["accuracy"], want["accuracy"], "{stem}");
    }
    let info = json_of(&smd(&[
        "inspect",
        "models/digits_dynamic_neg.onnx",
        "--json",
    ]));
    assert_eq!(info["model"]["inputs"][0]["type"]["shape"][0], Value::Null);
}

#[test]
fn a_batch_dimension_of_zero_is_refused_in_one_line_like_onnx_runtime_does() {
    for cmd in ["score", "evolve"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut args = vec![
            cmd,
            "models/digits_dim_zero_refused.onnx",
            "--data",
            "fixtures/digits_flat_val.npz",
        ];
        if cmd == "evolve" {
            args.extend(["--out", out.to_str().unwrap()]);
        }
        assert_one_line_error(
            &smd(&args),
            &[
                "digits_dim_zero_refused.onnx",
                "`input`",
                "batch dimension of 0",
            ],
        );
        assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    }
}

#[test]
fn zipmap_models_are_scored_on_the_scores_that_feed_the_zipmap() {
    let want = expected("digits_skl_zipmap");
    let r = score_json(
        "models/digits_skl_zipmap.onnx",
        "fixtures/digits_flat_val.npz",
        &["--split", "all"],
    );
    assert_eq!(r["output"], want["scores"]["output"]);
    assert_eq!(r["metrics"]["accuracy"], want["scores"]["accuracy"]);
    assert_close(&r["metrics"]["nll"], &want["scores"]["nll"], "zipmap");
    // The same numbers as the export without ZipMap, whose probabilities are an output.
    let plain = score_json(
        "models/digits_skl_nozipmap.onnx",
        "fixtures/digits_flat_val.npz",
        &["--split", "all"],
    );
    assert_eq!(plain["metrics"], r["metrics"]);
}

#[test]
fn ensembles_recompute_labels_and_zipmaps_from_their_combined_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    for stem in ["digits_skl_zipmap", "digits_skl_nozipmap", "iris_skl_mlp"] {
        let out = dir.path().join(stem);
        let data = if stem == "iris_skl_mlp" {
            "fixtures/iris_val.npz"
        } else {
            "fixtures/digits_flat_val.npz"
        };
        // Strong noise so that members disagree on some rows.
        let r = json_of(&smd(&[
            "evolve",
            &format!("models/{stem}.onnx"),
            "--data",
            data,
            "--out",
            out.to_str().unwrap(),
            "--children",
            "6",
            "--sigma",
            "1.0",
            "--ensemble",
            "mean",
            "--json",
        ]));
        let notices: Vec<&str> = r["notices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let label = if stem == "digits_skl_zipmap" {
            "output_label"
        } else {
            "label"
        };
        assert!(
            notices
                .iter()
                .any(|n| n.contains(&format!("`{label}` is recomputed"))),
            "{stem}: {notices:?}"
        );
        assert!(
            !notices.iter().any(|n| n.contains("first member")),
            "{stem}: {notices:?}"
        );
        // The ensemble scores exactly as its report says (on the same hidden scores).
        let s = score_json(
            out.join("ensemble.onnx").to_str().unwrap(),
            data,
            &["--split", "holdout"],
        );
        let e = r["ensembles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "mean")
            .unwrap();
        let (a, b) = (
            s["metrics"]["accuracy"].as_f64().unwrap(),
            e["scores"]["holdout"]["accuracy"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-9, "{stem}: {a} vs {b}");
    }
    // Label = argmax of the ensemble's probabilities on every row: checked for every fixture
    // (these included) by ensemble.rs's assert_combines.
}

#[test]
fn gains_say_what_they_are_measured_against_and_the_table_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = [
        "evolve",
        "models/digits_cnn_undertrained.onnx",
        "--data",
        "fixtures/digits_val.npz",
        "--out",
        out.to_str().unwrap(),
        "--generations",
        "3",
    ];
    let o = smd(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8(o.stdout).unwrap();
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let acc = |v: &Value| v["accuracy"].as_f64().unwrap();
    let original = acc(&r["parent"]["holdout"]);
    let gens = r["generations"].as_array().unwrap();
    let last_parent = acc(&gens.last().unwrap()["parent"]["holdout"]);
    // This seed keeps a winner, so later generations start from another parent.
    assert_ne!(original, last_parent, "{r}");
    let best = &r["best"];
    let made_in = best["generation"].as_u64().unwrap() as usize;
    let gen_parent = acc(&gens[made_in]["parent"]["holdout"]);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let held = acc(&best["scores"]["holdout"]);
    assert!(close(
        best["gain_vs_original"].as_f64().unwrap(),
        held - original
    ));
    assert!(close(
        best["gain_vs_generation_parent"].as_f64().unwrap(),
        held - gen_parent
    ));
    assert!(best.get("holdout_gain").is_none());
    for e in r["ensembles"].as_array().unwrap() {
        let h = acc(&e["scores"]["holdout"]);
        assert!(close(e["gain_vs_original"].as_f64().unwrap(), h - original));
        assert!(close(
            e["gain_vs_generation_parent"].as_f64().unwrap(),
            h - last_parent
        ));
        // The table's Δ column is against the original model too.
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("ensemble {} ", e["name"].as_str().unwrap())))
            .unwrap();
        let delta = row.split_whitespace().last().unwrap();
        assert_eq!(delta, format!("{:+.2}", 100.0 * (h - original)), "{row}");
    }
    // The gain against the original carries its interval and p-value (significance.rs tests
    // them); the one against the generation's parent follows.
    let line = table.lines().find(|l| l.starts_with("Best:")).unwrap();
    assert!(
        line.contains(&format!(
            "{:+.2} points vs the original model, 95% CI [",
            100.0 * (held - original),
        )) && line.contains(&format!(
            "; {:+.2} points vs the parent of generation {made_in}).",
            100.0 * (held - gen_parent)
        )),
        "{line}"
    );
}

/// Runs the binary with stdout (and stderr when `both`) into a pipe whose reader is already
/// closed: the first write fails with EPIPE.
fn into_closed_pipe(args: &[&str], both: bool) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smd-onnx"));
    cmd.args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap());
    if both {
        cmd.stderr(writer);
    } else {
        drop(writer);
        cmd.stderr(Stdio::piped());
    }
    cmd.output().unwrap()
}

/// Quiet: killed by SIGPIPE (the shell's 141) or exit 0, and no panic or error text.
fn assert_quiet(o: &Output, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() || o.status.signal() == Some(libc::SIGPIPE),
        "{what}: {:?} {err}",
        o.status
    );
    assert!(err.is_empty(), "{what}: {err}");
}

#[test]
fn closed_pipes_end_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (kids, kids0, ens, ev, evj) = (d("kids"), d("kids0"), d("ens.onnx"), d("ev"), d("evj"));
    let m = "models/digits_mlp_fp16.onnx";
    let data = "fixtures/digits_flat_val.npz";
    let cases: Vec<Vec<&str>> = vec![
        vec!["inspect", m],
        vec!["inspect", m, "--json"],
        vec!["score", m, "--data", data],
        vec!["score", m, "--data", data, "--json"],
        vec!["runtime"],
        vec!["mutate", m, "--children", "2", "--out", &kids0],
        vec!["evolve", m, "--data", data, "--children", "2", "--out", &ev],
        vec![
            "evolve",
            m,
            "--data",
            data,
            "--children",
            "2",
            "--out",
            &evj,
            "--json",
        ],
        vec!["--help"],
    ];
    for args in &cases {
        assert_quiet(&into_closed_pipe(args, false), &args.join(" "));
    }
    let o = smd(&["mutate", m, "--children", "2", "--out", &kids]);
    assert!(o.status.success());
    let members = format!("{kids}/child_000.onnx");
    let members2 = format!("{kids}/child_001.onnx");
    let args = ["ensemble", &members, &members2, "--out", &ens];
    assert_quiet(&into_closed_pipe(&args, false), "ensemble");
    assert!(Path::new(&ens).exists());
    // Progress and tables both into the closed pipe: killed at the first write, and no output
    // file is left half-written.
    let both = d("both");
    let args = [
        "evolve",
        m,
        "--data",
        data,
        "--children",
        "2",
        "--out",
        &both,
    ];
    let o = into_closed_pipe(&args, true);
    use std::os::unix::process::ExitStatusExt;
    assert!(o.status.success() || o.status.signal() == Some(libc::SIGPIPE));
    for f in ["best.onnx", "ensemble.onnx", "report.json"] {
        let p = Path::new(&both).join(f);
        if p.exists() {
            // Written whole (atomically) before the table was printed.
            assert!(std::fs::metadata(&p).unwrap().len() > 0);
        }
    }
    // And what a user types: a real `head`.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} score {m} --data {data} --json | head -c 10",
            env!("CARGO_BIN_EXE_smd-onnx")
        ))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout.len(), 10);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
}
