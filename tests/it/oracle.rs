//! Independent oracles for `evolve`'s decisions (issue 19).
//!
//! 1. Holdout isolation: a copy of the data whose holdout rows alone are perturbed leaves every
//!    selection-side result of `evolve` identical and changes every holdout metric. The holdout
//!    rows are re-derived here from the split's documented definition, not asked of smd-onnx.

use std::path::{Path, PathBuf};

use serde_json::Value;
use smd_onnx::score::DType;
use smd_onnx::score::arrays::{read_arrays, write_npz};

use crate::util::{json_of, repo, smd};

const CNN: &str = "models/digits_cnn_undertrained.onnx";
const DIGITS: &str = "fixtures/digits_val.npz";

/// `evolve MODEL --data DATA --out OUT --json EXTRA...`: the report it printed.
fn evolve(model: &str, data: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "evolve",
        model,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    json_of(&smd(&args))
}

/// The kept candidate of each generation.
fn kept(r: &Value) -> Vec<&str> {
    r["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kept"].as_str().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Holdout isolation.

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The holdout rows of the label-stratified split, re-derived from its definition (the module
/// docs of src/score/split.rs): per class, the class's rows ordered by the keyed hash
/// splitmix64(splitmix64(splitmix64(seed) ^ class) ^ row), the first round(F · n_c) held out.
/// Written out here rather than called so that a wrong split cannot hide itself: if these rows
/// were not exactly the holdout, perturbing them would change selection results and the test
/// would fail. (The adjustment that keeps both parts non-empty never applies to the fixtures'
/// 600 rows.)
fn holdout_rows(labels: &[i64], fraction: f64, seed: u64) -> Vec<usize> {
    let mut classes: Vec<i64> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut holdout = Vec::new();
    for c in classes {
        let key = |r: usize| splitmix64(splitmix64(splitmix64(seed) ^ c as u64) ^ r as u64);
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&r| labels[r] == c).collect();
        rows.sort_by_key(|&r| (key(r), r));
        let cut = (rows.len() as f64 * fraction).round() as usize;
        holdout.extend_from_slice(&rows[..cut]);
    }
    holdout.sort_unstable();
    holdout
}

/// Writes `DIGITS` twice into `dir`, through the same writer: as it is (`clean.npz`) and with
/// `perturb` applied to the inputs (`perturbed.npz`; it gets the holdout rows, the floats of
/// one row, and the input array to change). The labels stay byte-identical. Returns the paths.
fn clean_and_perturbed(
    dir: &Path,
    perturb: impl Fn(&[usize], usize, &[f32], &mut [f32]),
) -> (PathBuf, PathBuf) {
    let arrays = read_arrays(&repo(DIGITS)).unwrap();
    let get = |name: &str| arrays.iter().find(|a| a.name == name).unwrap();
    let (input, labels) = (get("input"), get("labels"));
    assert_eq!((input.dtype, labels.dtype), (DType::F32, DType::I64));
    let ids: Vec<i64> = labels
        .data
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let hold = holdout_rows(&ids, 0.5, 0);
    assert_eq!(hold.len(), 303, "the split evolve reports for this fixture");
    let x: Vec<f32> = input
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut moved = x.clone();
    perturb(&hold, x.len() / ids.len(), &x, &mut moved);
    let write = |name: &str, x: &[f32]| {
        let p = dir.join(name);
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let npz = write_npz(
            &[
                ("input", DType::F32, &input.shape, &bytes),
                ("labels", DType::I64, &labels.shape, &labels.data),
            ],
            false,
        );
        std::fs::write(&p, npz).unwrap();
        p
    };
    (write("clean.npz", &x), write("perturbed.npz", &moved))
}

/// Holdout row j gets holdout row j+1's image (in ascending row order): 26 of the 303 holdout
/// images land on a row of their own class, so the parent's holdout accuracy falls from 64.7%
/// to 8.6%; the selection rows stay byte-identical.
fn rotate_holdout(hold: &[usize], row: usize, x: &[f32], out: &mut [f32]) {
    for (j, &r) in hold.iter().enumerate() {
        let from = hold[(j + 1) % hold.len()];
        out[r * row..(r + 1) * row].copy_from_slice(&x[from * row..(from + 1) * row]);
    }
}

/// Every holdout metrics object of a report, by JSON path.
fn holdout_metrics(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if k == "holdout" && x.is_object() {
                    out.push((p, x.clone()));
                } else {
                    holdout_metrics(x, &p, out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                holdout_metrics(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The report less what may depend on the holdout rows or on where the run was: holdout
/// metrics become whether they were scored (a merged candidate's are scored only when it wins
/// on the selection rows, a selection-side decision), gains are dropped, and so are `data`,
/// `timings` and the output paths (`outputs` keeps which files were written and which ensemble
/// was exported). Everything else (children's recipes and selection metrics, each
/// generation's parent, best child, merged membership and kept candidate, `best`, the
/// ensembles' members, weights and selection metrics, notices, settings) stays.
fn selection_side(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with("gain_vs_"))
                .map(|(k, x)| {
                    let x = if k == "holdout" && (x.is_object() || x.is_null()) {
                        Value::Bool(x.is_object())
                    } else {
                        selection_side(x)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(selection_side).collect()),
        x => x.clone(),
    }
}

fn strip_run(report: &Value) -> Value {
    let mut r = report.clone();
    let o = r.as_object_mut().unwrap();
    o.remove("data");
    o.remove("timings");
    let outputs = &report["outputs"];
    o.insert(
        "outputs".into(),
        serde_json::json!({
            "best": outputs["best"].is_string(),
            "ensemble": outputs["ensemble"].is_string(),
            "ensemble_kind": outputs["ensemble_kind"],
        }),
    );
    selection_side(&r)
}

/// The first JSON path at which `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &format!("{path}.{k}")),
                _ => Some(format!("{path}.{k}")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]"))),
        _ => (a != b).then(|| {
            let short = |v: &Value| v.to_string().chars().take(200).collect::<String>();
            format!("{path}: {} vs {}", short(a), short(b))
        }),
    }
}

/// Runs evolve on the clean copy and on the copy with the holdout images rotated, with `extra`
/// arguments; asserts the selection side identical (report and exported files) and every
/// holdout metric changed. Returns the clean run's report.
fn check_isolation(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (clean, perturbed) = clean_and_perturbed(dir.path(), rotate_holdout);
    let (out_a, out_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = evolve(CNN, &clean, &out_a, extra);
    let b = evolve(CNN, &perturbed, &out_b, extra);

    let (sa, sb) = (strip_run(&a), strip_run(&b));
    if let Some(d) = first_difference(&sa, &sb, "report") {
        panic!("{extra:?}: perturbing only holdout rows changed a selection-side result at {d}");
    }
    // The files are chosen on the selection rows alone, so they are the same bytes.
    for f in ["best.onnx", "ensemble.onnx"] {
        let (x, y) = (std::fs::read(out_a.join(f)), std::fs::read(out_b.join(f)));
        assert!(
            x.unwrap() == y.unwrap(),
            "{extra:?}: {f} differs between the runs"
        );
    }

    // Every holdout metric moved: the perturbation reached each candidate's holdout rows.
    // Gains are differences of these and are not compared.
    let (mut ha, mut hb) = (Vec::new(), Vec::new());
    holdout_metrics(&a, "report", &mut ha);
    holdout_metrics(&b, "report", &mut hb);
    let paths = |h: &[(String, Value)]| h.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&ha), paths(&hb));
    for ((path, x), (_, y)) in ha.iter().zip(&hb) {
        for m in ["accuracy", "nll"] {
            assert_ne!(x[m], y[m], "{extra:?}: {path}.{m} did not change");
        }
    }
    a
}

#[test]
fn oracle_holdout_isolation_one_generation() {
    let r = check_isolation(&["--generations", "1"]);
    // The run exercises every decision: a merged candidate that won (so its holdout was
    // scored), a best model, and greedy ensembles with several members.
    assert_eq!(r["generations"][0]["kept"], "merged");
    assert_eq!(r["best"]["kind"], "merged");
    assert!(r["ensembles"][2]["members"].as_array().unwrap().len() > 1);
}

#[test]
fn oracle_holdout_isolation_three_generations() {
    let r = check_isolation(&["--generations", "3", "--children", "8", "--seed", "1"]);
    // Generations 1 and 2 start from kept children, so their children and the last
    // generation's ensembles descend from models chosen on the selection rows; generation 0's
    // merged candidate lost (its holdout was never scored), generation 2 keeps its parent.
    assert_eq!(kept(&r), ["child 2", "child 7", "parent"]);
    let merged = &r["generations"][0]["merged"];
    assert!(merged["selection"].is_object() && merged["holdout"].is_null());
    assert_eq!(r["best"]["generation"], 1);
}

/// Known issue, found writing these tests: a child whose outputs are finite on the selection
/// rows but not on the holdout rows is chosen on its selection metrics (best child, merged
/// membership, kept), yet the report marks it failed without selection metrics, the ensembles
/// leave it out, and when it is kept `best` stays null while the next generation starts from
/// it: the summary says no child beat the parent, no best.onnx is written, the next
/// generation's recorded parent metrics are the original's, and `replay` cannot rebuild that
/// generation's children from the report. Scaling one holdout image by 1e38 makes some
/// children overflow there (the parent does not); with seed 5, generation 0 keeps such a
/// child. Ignored until evolve handles holdout-only failures; then it should pass.
#[test]
#[ignore = "known issue: children that fail on holdout rows only (see the comment)"]
fn oracle_holdout_isolation_with_holdout_only_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, perturbed) = clean_and_perturbed(dir.path(), |hold, row, _, out| {
        out[hold[0] * row..(hold[0] + 1) * row]
            .iter_mut()
            .for_each(|v| *v *= 1e38);
    });
    let extra = ["--seed", "5", "--generations", "2"];
    let a = evolve(CNN, &clean, &dir.path().join("a"), &extra);
    let out_b = dir.path().join("b");
    let mut args = vec!["evolve", CNN, "--data", perturbed.to_str().unwrap()];
    args.extend(["--out", out_b.to_str().unwrap(), "--json"]);
    args.extend(extra);
    let o = smd(&args);
    let b: Value = serde_json::from_slice(&o.stdout).expect("a report, even for a partial run");

    let mut problems = Vec::new();
    if let Some(d) = first_difference(&strip_run(&a), &strip_run(&b), "report") {
        problems.push(format!("a selection-side result changed at {d}"));
    }
    if kept(&b).iter().any(|k| *k != "parent") && b["best"].is_null() {
        problems.push(format!("kept {:?} but best is null", kept(&b)));
    }
    let replayed = dir.path().join("child.onnx");
    let r = smd(&[
        "replay",
        CNN,
        "--from",
        out_b.join("report.json").to_str().unwrap(),
        "--child",
        "1:0",
        "--out",
        replayed.to_str().unwrap(),
    ]);
    if !r.status.success() {
        problems.push(format!(
            "replay --child 1:0: {}",
            String::from_utf8_lossy(&r.stderr).trim()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
