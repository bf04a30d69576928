//! `smd-onnx ensemble`: the drop-in graph equals the combination of its members' own outputs,
//! keeps the parent's interface, stays compact, and passes the ONNX checker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::value::TensorRef;
use serde_json::Value;
use smd_onnx::runtime::{Runtime, RuntimeConfig};
use smd_onnx::score::arrays::read_arrays;
use smd_onnx::score::npy::DType;

use crate::util::{assert_one_line_error, json_of, repo, smd};

/// Every fixture with its data, as (model stem, data stem).
pub const FIXTURES: [(&str, &str); 23] = [
    ("digits_cnn", "digits_val"),
    ("digits_cnn_undertrained", "digits_val"),
    ("mnist_mlp", "mnist_val"),
    ("digits_mlp_fp16", "digits_flat_val"),
    ("digits_mlp_bf16", "digits_flat_val"),
    ("digits_mlp_typed", "digits_flat_val"),
    ("digits_mlp_external", "digits_flat_val"),
    ("digits_if_const", "digits_flat_val"),
    ("digits_batch1", "digits_flat_val"),
    ("digits_two_inputs", "digits_two_inputs_val"),
    ("iris_skl_mlp", "iris_val"),
    ("diabetes_skl_mlp", "diabetes_val"),
    ("digits_dynamic_neg", "digits_flat_val"),
    ("digits_no_shape", "digits_flat_val"),
    ("digits_skl_nozipmap", "digits_flat_val"),
    ("digits_skl_zipmap", "digits_flat_val"),
    ("digits_transformer", "digits_tokens_val"),
    ("digits_skl_logreg", "digits_flat_val"),
    ("digits_skl_forest", "digits_flat_val"),
    ("digits_cnn_qdq_int4", "digits_val"),
    ("digits_cnn_qdq_int8", "digits_val"),
    ("mnist_mlp_nbits", "mnist_val"),
    ("mnist_mlp_qdq_block", "mnist_val"),
];

/// Fixtures whose logits have no declared shape: `ensemble` cannot tell them from other float
/// outputs and averages them as they are (evolve knows from scoring, see evolve.rs). The ONNX
/// checker rejects such models (ONNX Runtime runs them), so their ensembles are not checked.
pub fn shapeless(model: &str) -> bool {
    model == "digits_no_shape"
}

/// An output's values: floats (widened to f64) with the size of their last axis (a ZipMap's
/// sequence of maps as rows of values in key order), or integers.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Float(Vec<f64>, usize),
    Int(Vec<i64>),
}

/// A sequence of maps from class to probability (skl2onnx's ZipMap) as rows in key order.
fn zipmap_rows(v: &ort::value::DynValue) -> Option<(Vec<f64>, usize)> {
    use ort::value::{DynMapValueType, DynSequenceValueType};
    let seq = v.view().downcast::<DynSequenceValueType>().ok()?;
    let maps = seq.try_extract_sequence::<DynMapValueType>().ok()?;
    let mut out = Vec::new();
    let mut width = 0;
    for m in &maps {
        let mut kv = m.try_extract_key_values::<i64, f32>().ok()?;
        kv.sort_by_key(|(k, _)| *k);
        width = kv.len();
        out.extend(kv.into_iter().map(|(_, p)| f64::from(p)));
    }
    Some((out, width))
}

/// Runs `model` on every sample of `data` (one sample per run for a fixed batch of 1) and
/// returns each output's values in order.
pub fn run(model: &Path, data: &Path) -> Vec<(String, Values)> {
    let rt = Runtime::new(&RuntimeConfig::default()).unwrap();
    let mut session = rt.session_from_file(model, Vec::new()).unwrap();
    let arrays = read_arrays(data).unwrap();
    let inputs: Vec<(String, Vec<usize>, Feed)> = session
        .inputs()
        .iter()
        .map(|i| {
            let a = arrays
                .iter()
                .find(|a| a.name == i.name())
                .unwrap_or_else(|| panic!("no array {}", i.name()));
            let v = match a.dtype {
                DType::I64 => Feed::I64(
                    a.data
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                _ => Feed::F32(
                    a.data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
            };
            (i.name().to_string(), a.shape.clone(), v)
        })
        .collect();
    let n = inputs[0].1[0];
    let fixed_one = model.to_str().unwrap().contains("batch1");
    let step = if fixed_one { 1 } else { n };
    let names: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let mut out: Vec<(String, Values)> = Vec::new();
    for start in (0..n).step_by(step) {
        let rows = step.min(n - start);
        let feed: Vec<(String, ort::session::SessionInputValue<'_>)> = inputs
            .iter()
            .map(|(name, shape, v)| {
                let row: usize = shape[1..].iter().product();
                let mut s = vec![rows];
                s.extend_from_slice(&shape[1..]);
                let range = start * row..(start + rows) * row;
                let value = match v {
                    Feed::F32(v) => TensorRef::from_array_view((s, &v[range])).unwrap().into(),
                    Feed::I64(v) => TensorRef::from_array_view((s, &v[range])).unwrap().into(),
                };
                (name.clone(), value)
            })
            .collect();
        let res = session.run(feed).unwrap();
        for (k, name) in names.iter().enumerate() {
            let v = &res[name.as_str()];
            let vals = if let Ok((shape, x)) = v.try_extract_tensor::<f32>() {
                let last = shape.last().map_or(1, |&d| d as usize);
                Values::Float(x.iter().map(|&f| f64::from(f)).collect(), last)
            } else if let Ok((_, x)) = v.try_extract_tensor::<i64>() {
                Values::Int(x.to_vec())
            } else if let Some((x, c)) = zipmap_rows(v) {
                Values::Float(x, c)
            } else {
                panic!("output {name}: unexpected type");
            };
            match (out.get_mut(k), vals) {
                (None, vals) => out.push((name.clone(), vals)),
                (Some((_, Values::Float(a, _))), Values::Float(b, _)) => a.extend(b),
                (Some((_, Values::Int(a))), Values::Int(b)) => a.extend(b),
                _ => panic!("output {name} changed type"),
            }
        }
    }
    out
}

/// Input values of one array.
enum Feed {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// log Σ wᵢ softmax(xᵢ) per row of `c` classes, in f64.
fn log_mean_softmax(members: &[&[f64]], w: &[f64], c: usize) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    let mut out = vec![0.0; members[0].len()];
    for r in 0..out.len() / c {
        for j in 0..c {
            let mut p = 0.0;
            for (m, wi) in members.iter().zip(w) {
                let row = &m[r * c..(r + 1) * c];
                let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = row.iter().map(|x| (x - max).exp()).sum();
                p += wi / total * (row[j] - max).exp() / z;
            }
            out[r * c + j] = p.ln();
        }
    }
    out
}

/// Checks that the ensemble's outputs are the combination of the members' outputs.
pub fn assert_combines(
    ens: &Path,
    members: &[PathBuf],
    weights: &[f64],
    data: &Path,
    logits_mean: bool,
) {
    let e = run(ens, data);
    let m: Vec<Vec<(String, Values)>> = members.iter().map(|p| run(p, data)).collect();
    let total: f64 = weights.iter().sum();
    for (k, (name, got)) in e.iter().enumerate() {
        let outs: Vec<&Values> = m.iter().map(|mo| &mo[k].1).collect();
        match got {
            // A label (the fixtures' classes are 0..C): the ensemble's own argmax, recomputed
            // from its combined probabilities, never a member's.
            Values::Int(v) => {
                let (probs, c) = e
                    .iter()
                    .find_map(|(_, x)| match x {
                        Values::Float(p, c) => Some((p, *c)),
                        Values::Int(_) => None,
                    })
                    .expect("a label comes with class scores");
                let argmax: Vec<i64> = probs
                    .chunks(c)
                    .map(|r| (0..c).fold(0, |b, j| if r[j] > r[b] { j } else { b }) as i64)
                    .collect();
                assert_eq!(v, &argmax, "{} output {name}", ens.display());
            }
            Values::Float(v, c) => {
                let c = *c;
                let fl: Vec<&[f64]> = outs
                    .iter()
                    .map(|o| match o {
                        Values::Float(x, _) => x.as_slice(),
                        Values::Int(_) => panic!("type"),
                    })
                    .collect();
                let mean: Vec<f64> = (0..v.len())
                    .map(|i| fl.iter().zip(weights).map(|(x, w)| w / total * x[i]).sum())
                    .collect();
                let is_prob_row = |r: &[f64]| {
                    r.iter().all(|&p| p >= 0.0) && (r.iter().sum::<f64>() - 1.0).abs() < 1e-4
                };
                let probs = fl.iter().all(|x| x.chunks(c).all(is_prob_row));
                // Logits are combined as the log of the mean softmax, unless averaged as they are.
                let want = if probs || logits_mean || c == 1 {
                    mean
                } else {
                    log_mean_softmax(&fl, weights, c)
                };
                for (i, (a, b)) in v.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{} output {name}[{i}]: {a} vs {b}",
                        ens.display()
                    );
                }
            }
        }
    }
}

/// Writes `k` children of `model` into `dir` and returns their paths.
fn children(model: &str, dir: &Path, k: u32, extra: &[&str]) -> Vec<PathBuf> {
    let k = k.to_string();
    let mut args = vec![
        "mutate",
        model,
        "--children",
        &k,
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = smd(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect()
}

fn ensemble(members: &[PathBuf], out: &Path, extra: &[&str]) {
    let mut args: Vec<&str> = vec!["ensemble"];
    args.extend(members.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let o = smd(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn ensembles_of_children_equal_the_combination_of_members_on_every_fixture() {
    let dir = tempfile::tempdir().unwrap();
    for (model, data) in FIXTURES {
        let m = format!("models/{model}.onnx");
        let kids = children(&m, &dir.path().join(model), 3, &["--sigma", "0.2"]);
        let ens = dir.path().join(format!("{model}.ensemble.onnx"));
        ensemble(&kids, &ens, &[]);
        assert_combines(
            &ens,
            &kids,
            &[1.0; 3],
            &repo(&format!("fixtures/{data}.npz")),
            shapeless(model),
        );
        if !shapeless(model) {
            check_with_python(&ens);
        }
    }
}

#[test]
fn one_and_two_member_ensembles_store_the_members_whole() {
    let dir = tempfile::tempdir().unwrap();
    for (model, data) in FIXTURES {
        let m = format!("models/{model}.onnx");
        let kids = children(&m, &dir.path().join(model), 2, &["--sigma", "0.2"]);
        for members in [&kids[..1], &kids[..]] {
            let ens = dir.path().join(format!("{model}.{}.onnx", members.len()));
            ensemble(members, &ens, &[]);
            let weights = vec![1.0; members.len()];
            let data = repo(&format!("fixtures/{data}.npz"));
            assert_combines(&ens, members, &weights, &data, shapeless(model));
            if !shapeless(model) {
                check_with_python(&ens);
            }
        }
    }
    // Each of two partition children changes half of every weight: the file holds the two
    // members' tensors, not the parent's plus differences (about 2.25 times the parent).
    let parent = std::fs::metadata(repo("models/mnist_mlp.onnx"))
        .unwrap()
        .len();
    let ens = dir.path().join("mnist_mlp.2.onnx");
    let size = std::fs::metadata(&ens).unwrap().len();
    assert!(
        size < parent * 21 / 10,
        "{size} bytes for a {parent}-byte parent"
    );
    let one = std::fs::metadata(dir.path().join("mnist_mlp.1.onnx"))
        .unwrap()
        .len();
    assert!(
        one < parent * 11 / 10,
        "{one} bytes for a {parent}-byte parent"
    );
}

#[test]
fn weights_logits_mode_and_unrelated_models() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo("fixtures/digits_flat_val.npz");
    // Models of different structure (float16 and bfloat16 storage): full copies, merged.
    let members = [
        repo("models/digits_mlp_fp16.onnx"),
        repo("models/digits_mlp_bf16.onnx"),
        repo("models/digits_if_const.onnx"),
    ];
    let ens = dir.path().join("mixed.onnx");
    ensemble(&members, &ens, &["--weights", "1,3,2"]);
    assert_combines(&ens, &members, &[1.0, 3.0, 2.0], &data, false);
    ensemble(&members, &ens, &["--combine", "logits"]);
    assert_combines(&ens, &members, &[1.0; 3], &data, true);
    check_with_python(&ens);
    // Different interfaces cannot be combined.
    let o = smd(&[
        "ensemble",
        "models/digits_cnn.onnx",
        "models/mnist_mlp.onnx",
        "--out",
        ens.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["member 1", "differ"]);
    let o = smd(&[
        "ensemble",
        "models/digits_cnn.onnx",
        "--weights",
        "1,2",
        "--out",
        ens.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["--weights"]);
}

#[test]
fn the_ensemble_is_a_drop_in_replacement() {
    let dir = tempfile::tempdir().unwrap();
    for (model, _) in FIXTURES {
        let m = format!("models/{model}.onnx");
        let kids = children(&m, &dir.path().join(model), 2, &[]);
        let ens = dir.path().join(format!("{model}.ensemble.onnx"));
        ensemble(&kids, &ens, &[]);
        let facts = |p: &str| -> Value {
            let j = json_of(&smd(&["inspect", p, "--json"]));
            serde_json::json!({ "inputs": j["model"]["inputs"], "outputs": j["model"]["outputs"] })
        };
        assert_eq!(
            facts(&m),
            facts(ens.to_str().unwrap()),
            "{model}: same input and output names, types and shapes"
        );
    }
}

#[test]
fn partition_ensembles_do_not_grow_with_k() {
    let dir = tempfile::tempdir().unwrap();
    let size = |k: u32, mode: &str| {
        let kids = children(
            "models/mnist_mlp.onnx",
            &dir.path().join(format!("{mode}{k}")),
            k,
            &["--mode", mode],
        );
        let ens = dir.path().join(format!("{mode}{k}.onnx"));
        ensemble(&kids, &ens, &[]);
        std::fs::metadata(&ens).unwrap().len()
    };
    let parent = std::fs::metadata(repo("models/mnist_mlp.onnx"))
        .unwrap()
        .len();
    let (p4, p16) = (size(4, "partition"), size(16, "partition"));
    // Weights: the parent, one mutated copy and a one-byte map per element, whatever k. Each
    // member adds only its copy of the graph's nodes (no weights): under 2 KiB here.
    assert!(
        p4 < parent * 3,
        "k=4: {p4} bytes for a {parent}-byte parent"
    );
    assert!(p16 < p4 + 12 * 2048, "k=16: {p16} bytes vs k=4: {p4}");
    // Density children overlap: they cost their indices, still far below full copies.
    let d16 = size(16, "density");
    assert!(
        d16 < parent * 16 / 2,
        "density k=16: {d16} bytes vs 16 copies {}",
        parent * 16
    );
}

/// Environment variable that turns a missing ONNX checker into a test failure (`.ci/run` sets
/// it, so CI never passes without running the checker).
pub const REQUIRE_CHECKER_ENV: &str = "SMD_REQUIRE_CHECKER";

/// The Python that runs `onnx.checker`: `SMD_PYTHON`, else `python3`, if it has the `onnx`
/// package (`Err`: why not). Found once per test run.
fn checker_python() -> Result<&'static str, &'static str> {
    static FOUND: OnceLock<Result<String, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let python = std::env::var("SMD_PYTHON").unwrap_or_else(|_| "python3".into());
        let has_onnx = Command::new(&python)
            .args(["-c", "import onnx"])
            .output()
            .is_ok_and(|o| o.status.success());
        if has_onnx {
            Ok(python)
        } else {
            Err(format!(
                "{python} (SMD_PYTHON, else python3) has no `onnx` package"
            ))
        }
    });
    found.as_deref().map_err(String::as_str)
}

/// The checker's Python, or `None` when there is none: then checks are skipped, and one line
/// on the real stderr (not captured by the test harness) says so once per test run and how to
/// enable them. With `SMD_REQUIRE_CHECKER=1` a missing checker fails the test instead.
pub fn checker() -> Option<&'static str> {
    static SKIP_NOTE: std::sync::Once = std::sync::Once::new();
    match checker_python() {
        Ok(python) => Some(python),
        Err(why) => {
            assert!(
                std::env::var(REQUIRE_CHECKER_ENV).as_deref() != Ok("1"),
                "{REQUIRE_CHECKER_ENV}=1 but {why}: the ONNX checker cannot run \
                 (pip install onnx==1.23.2, or point SMD_PYTHON at a Python that has it)"
            );
            SKIP_NOTE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: ONNX checker tests SKIPPED: {why}; to run them, set SMD_PYTHON to a \
                     Python with `pip install onnx==1.23.2` (`bash .ci/run` makes one, and sets \
                     {REQUIRE_CHECKER_ENV}=1 so that a missing checker fails)"
                );
            });
            None
        }
    }
}

/// Runs Python's `onnx.checker.check_model(full_check=True)` on each of `models` in one Python
/// process and returns the ones it rejects, with its message (`None`: no checker, see
/// [`checker`]).
pub fn checker_rejects(models: &[&Path]) -> Option<Vec<(PathBuf, String)>> {
    let python = checker()?;
    let script = "import sys, onnx\n\
                  for p in sys.argv[1:]:\n\
                  \x20   try:\n\
                  \x20       onnx.checker.check_model(onnx.load(p), full_check=True)\n\
                  \x20   except Exception as e:\n\
                  \x20       print(p + '\\t' + ' '.join(str(e).split()))\n";
    let o = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(models)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the checker script failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(p, e)| (PathBuf::from(p), e.to_string()))
            .collect(),
    )
}

/// Every one of `models` passes `onnx.checker.check_model(full_check=True)` (when a checker is
/// available, see [`checker`]).
#[track_caller]
pub fn check_with_python_all(models: &[&Path]) {
    if let Some(rejected) = checker_rejects(models) {
        assert!(rejected.is_empty(), "onnx.checker rejects: {rejected:#?}");
    }
}

/// [`check_with_python_all`] for one model.
#[track_caller]
pub fn check_with_python(model: &Path) {
    check_with_python_all(&[model]);
}

/// The ONNX checker on ensembles `evolve` wrote, given as (fixture stem, ensemble.onnx): every
/// one passes, except those of fixtures the checker rejects themselves ([`shapeless`], checked
/// by `the_onnx_checker_runs_or_says_loudly_why_not`).
#[track_caller]
pub fn check_evolved_ensembles(ensembles: &[(&str, &Path)]) {
    let checked: Vec<&Path> = ensembles
        .iter()
        .filter(|(stem, _)| !shapeless(stem))
        .map(|(_, p)| *p)
        .collect();
    check_with_python_all(&checked);
}

#[test]
fn the_onnx_checker_runs_or_says_loudly_why_not() {
    // Without a checker: one visible line (or, with SMD_REQUIRE_CHECKER=1, a failure).
    let Some(rejected) = checker_rejects(&[
        &repo("models/digits_cnn.onnx"),
        &repo("models/digits_no_shape.onnx"),
    ]) else {
        return;
    };
    // The checker is real: it passes a good model and rejects the shapeless fixture, whose
    // ensembles are therefore not checked (an output type without a shape).
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].0.ends_with("digits_no_shape.onnx"),
        "{rejected:?}"
    );
    assert!(rejected[0].1.contains("shape"), "{rejected:?}");
}
