//! `smd-onnx replay`: any model smd-onnx wrote is rebuilt from the original model and its
//! stored lineage, byte for byte (best.onnx, `mutate` children) or to the exact metrics the
//! report recorded (any child of any generation, merged candidates), for static and dynamic
//! subspaces.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::util::{assert_one_line_error, json_of, repo, smd};

const MODEL: &str = "models/digits_cnn_undertrained.onnx";
const DATA: &str = "fixtures/digits_val.npz";

/// `smd-onnx replay MODEL --from FROM --out OUT` with `extra` arguments.
fn replay(from: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "replay",
        MODEL,
        "--from",
        from.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    smd(&args)
}

/// [`replay`], which must succeed and print the file it wrote; returns its bytes.
fn rebuilt(from: &Path, out: &Path, extra: &[&str]) -> Vec<u8> {
    let o = replay(from, out, extra);
    assert!(
        o.status.success(),
        "replay {from:?} {extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        out.to_str().unwrap()
    );
    std::fs::read(out).unwrap()
}

/// `score --split <part> --json` metrics of a model.
fn score(model: &Path, part: &str) -> Value {
    json_of(&smd(&[
        "score",
        model.to_str().unwrap(),
        "--data",
        DATA,
        "--split",
        part,
        "--json",
    ]))["metrics"]
        .clone()
}

/// The rebuilt model scores exactly the metrics the report recorded for it (`holdout` may be
/// null: a merged candidate that lost on the selection rows was not scored there).
fn assert_scores(model: &Path, selection: &Value, holdout: &Value, what: &str) {
    assert!(
        selection.is_object(),
        "{what}: no selection metrics recorded"
    );
    let parts = [("selection", selection), ("holdout", holdout)];
    for (part, want) in parts.into_iter().filter(|(_, w)| !w.is_null()) {
        let got = score(model, part);
        for m in ["accuracy", "top5_accuracy", "nll"] {
            assert_eq!(got[m], want[m], "{what}: {part} {m}");
        }
    }
}

/// Runs evolve on the fixture with 4 children and 3 generations; returns the report.
fn evolve(out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "evolve",
        MODEL,
        "--data",
        DATA,
        "--out",
        out.to_str().unwrap(),
        "--children",
        "4",
        "--generations",
        "3",
        "--json",
    ];
    args.extend_from_slice(extra);
    json_of(&smd(&args))
}

/// Every kind of candidate of a 3-generation run is rebuilt: best.onnx byte for byte from
/// itself and from the report, a child of each generation and every merged candidate to the
/// report's exact metrics, and a rebuilt child again byte for byte from its own metadata.
fn check_run(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = evolve(&run, extra);
    let report = run.join("report.json");

    // The run must exercise a lineage of several generations (the seed and σ are chosen so).
    let lineage = r["best"]["lineage"]
        .as_array()
        .unwrap_or_else(|| panic!("{extra:?}: the run kept no candidate"));
    let gens: Vec<u64> = lineage
        .iter()
        .map(|x| x["generation"].as_u64().unwrap())
        .collect();
    assert!(
        gens.len() >= 2 && gens.windows(2).all(|w| w[0] < w[1]),
        "{extra:?}: lineage generations {gens:?}"
    );
    let best = std::fs::read(run.join("best.onnx")).unwrap();
    assert_eq!(
        rebuilt(&run.join("best.onnx"), &dir.path().join("a.onnx"), &[]),
        best,
        "best.onnx from best.onnx"
    );
    assert_eq!(
        rebuilt(&report, &dir.path().join("b.onnx"), &[]),
        best,
        "best.onnx from report.json"
    );

    // A sample of children: two per generation, among them generation 1's and 2's, whose
    // parents are not the original.
    let children = r["children"].as_array().unwrap();
    assert_eq!(children.len(), 12);
    for c in children.iter().filter(|c| {
        let (g, i) = (
            c["generation"].as_u64().unwrap(),
            c["index"].as_u64().unwrap(),
        );
        i == g % 4 || i == (g + 2) % 4
    }) {
        let pick = format!("{}:{}", c["generation"], c["index"]);
        let out = dir
            .path()
            .join(format!("child_{}_{}.onnx", c["generation"], c["index"]));
        let bytes = rebuilt(&report, &out, &["--child", &pick]);
        assert_scores(&out, &c["selection"], &c["holdout"], &pick);
        // Its metadata holds its full lineage: it rebuilds itself.
        let again = dir.path().join("again.onnx");
        assert_eq!(rebuilt(&out, &again, &["--force"]), bytes, "{pick} again");
    }

    // Every merged candidate the run made.
    let mut merged = 0;
    for g in r["generations"].as_array().unwrap() {
        let m = &g["merged"];
        if m.is_null() {
            continue;
        }
        merged += 1;
        let n = g["generation"].to_string();
        let out = dir.path().join(format!("merged_{n}.onnx"));
        rebuilt(&report, &out, &["--merged", &n]);
        assert_scores(&out, &m["selection"], &m["holdout"], &format!("merged {n}"));
    }
    assert!(merged > 0, "{extra:?}: the run made no merged candidate");
}

#[test]
fn replay_rebuilds_every_candidate_of_a_dynamic_run() {
    check_run(&["--seed", "2", "--sigma", "0.05"]);
}

#[test]
fn replay_rebuilds_every_candidate_of_a_static_run() {
    check_run(&["--static", "--seed", "2", "--sigma", "0.05"]);
}

#[test]
fn replay_rebuilds_mutate_children_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let kids = dir.path().join("kids");
    let o = smd(&[
        "mutate",
        MODEL,
        "--out",
        kids.to_str().unwrap(),
        "--children",
        "3",
        "--mode",
        "density",
        "--seed",
        "11",
        // A selection whose recipe text reads two ways ("include=conv2" and "exclude=x|...",
        // or the real one): the recipe's tensor digest picks the real one.
        "--all-float",
        "--include",
        "conv2 exclude=x|weight",
        "--exclude",
        "^fc",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files: Vec<PathBuf> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(files.len(), 3);
    for (i, f) in files.iter().enumerate() {
        let out = dir.path().join(format!("r{i}.onnx"));
        assert_eq!(
            rebuilt(f, &out, &[]),
            std::fs::read(f).unwrap(),
            "child {i}"
        );
    }
}

#[test]
fn replay_refuses_wrong_inputs_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let kids = dir.path().join("kids");
    let o = smd(&[
        "mutate",
        MODEL,
        "--out",
        kids.to_str().unwrap(),
        "--children",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let child = kids.join("child_000.onnx");
    let out = dir.path().join("out.onnx");
    let child_s = child.to_str().unwrap();
    let out_s = out.to_str().unwrap();

    // Another model as the original: the step and both files are named.
    let o = smd(&[
        "replay",
        "models/digits_cnn.onnx",
        "--from",
        child_s,
        "--out",
        out_s,
    ]);
    assert_one_line_error(
        &o,
        &[
            child_s,
            "models/digits_cnn.onnx",
            "not the original model",
            "recipe 1 of 1",
        ],
    );
    assert!(!out.exists(), "no output on error");

    // A model smd-onnx did not write.
    let o = replay(&repo("models/digits_cnn.onnx"), &out, &[]);
    assert_one_line_error(&o, &["digits_cnn.onnx", "no lineage"]);

    // Malformed metadata: the recipe list, the file's last entry, left unclosed (same length,
    // so the file stays a valid model).
    let bytes = std::fs::read(&child).unwrap();
    let end = bytes.len() - 1;
    assert_eq!(&bytes[end - 1..], b"}]", "the recipe list ends the file");
    let mut broken = bytes.clone();
    broken[end] = b' ';
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, &broken).unwrap();
    let o = replay(&bad, &out, &[]);
    assert_one_line_error(&o, &["bad.onnx", "smd_onnx.recipe"]);

    // A report selector on a model, an existing output, an unknown child, a bad selector.
    let o = replay(&child, &out, &["--child", "0:1"]);
    assert_one_line_error(&o, &[child_s, "report.json"]);
    std::fs::write(&out, b"keep").unwrap();
    let o = replay(&child, &out, &[]);
    assert_one_line_error(&o, &[out_s, "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    std::fs::remove_file(&out).unwrap();
    let report = dir.path().join("report.json");
    let r = serde_json::json!({
        "parent_hash": "00", "generations": [], "children": [], "best": null
    });
    std::fs::write(&report, r.to_string()).unwrap();
    let o = replay(&report, &out, &["--child", "0:7"]);
    assert_one_line_error(&o, &["report.json", "no generation 0"]);
    let o = replay(&report, &out, &[]);
    assert_one_line_error(&o, &["report.json", "no best model"]);
    let o = replay(&report, &out, &["--child", "7"]);
    assert_one_line_error(&o, &["--child", "G:I"]);
    assert!(!out.exists());
}

#[test]
fn replay_refuses_an_ensemble() {
    let dir = tempfile::tempdir().unwrap();
    let ens = dir.path().join("ens.onnx");
    let o = smd(&["ensemble", MODEL, MODEL, "--out", ens.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = replay(&ens, &dir.path().join("out.onnx"), &[]);
    assert_one_line_error(&o, &["ens.onnx", "ensemble"]);
}
