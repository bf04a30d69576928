//! Shared prefixes (`evolve::prefix`): scoring candidates on the unmutated prefix's
//! activations gives exactly what full passes give.

use serde_json::Value;

use crate::util::*;

/// `evolve` with the shared prefix forced on or off (`SMD_PREFIX`): the report without its
/// timings and outputs, the timings' `prefix` entry, and the written models and journal
/// records (files in name order).
fn run(
    dir: &std::path::Path,
    tag: &str,
    prefix: &str,
    args: &[&str],
) -> (Value, Value, Vec<Vec<u8>>) {
    let out = dir.join(format!("{tag}-{prefix}"));
    let mut all = vec!["evolve"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", s(&out), "--json"]);
    let mut r = json_of(&smd_env(&all, &[("SMD_PREFIX", prefix)]));
    let o = r.as_object_mut().unwrap();
    let shared = o["timings"].get("prefix").cloned().unwrap_or(Value::Null);
    o.remove("timings");
    o.remove("outputs");
    let mut files = Vec::new();
    for f in ["best.onnx", "ensemble.onnx"] {
        files.push(std::fs::read(out.join(f)).unwrap_or_default());
    }
    let mut journal: Vec<_> = std::fs::read_dir(out.join(".smd-journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    journal.sort();
    assert!(!journal.is_empty(), "{tag}: no journal");
    for p in journal {
        files.push(std::fs::read(p).unwrap());
    }
    (r, shared, files)
}

/// The models are equal, and so are the journal records (every candidate's predictions)
/// but for the 8 bytes of the seconds each took (and the checksum, the last 32 bytes).
fn assert_same_files(tag: &str, a: &[Vec<u8>], b: &[Vec<u8>]) {
    assert_eq!(a.len(), b.len(), "{tag}: journals differ in length");
    assert!(
        a[0] == b[0] && a[1] == b[1],
        "{tag}: best.onnx or ensemble.onnx differ"
    );
    for (x, y) in a.iter().zip(b).skip(2) {
        assert_eq!(
            x.len(),
            y.len(),
            "{tag}: a journal record differs in length"
        );
        let body = x.len().saturating_sub(32);
        let diff: Vec<usize> = (0..body).filter(|&i| x[i] != y[i]).collect();
        if let (Some(first), Some(last)) = (diff.first(), diff.last()) {
            assert!(
                last - first < 8,
                "{tag}: journal predictions differ at byte {first}"
            );
        }
    }
}

#[test]
fn a_shared_prefix_scores_exactly_what_full_passes_score() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 4] = [
        (
            "cnn_head",
            &[
                "models/digits_cnn_undertrained.onnx",
                "--data",
                "fixtures/digits_val.npz",
                "--include",
                "^fc\\.weight$",
                "--generations",
                "2",
            ],
        ),
        (
            "cnn_late_layers",
            &[
                "models/digits_cnn_undertrained.onnx",
                "--data",
                "fixtures/digits_val.npz",
                "--include",
                "^(conv2|fc)\\.weight$",
                "--race",
            ],
        ),
        (
            "mlp_head",
            &[
                "models/mnist_mlp.onnx",
                "--data",
                "fixtures/mnist_val.npz",
                "--include",
                "^fc2\\.weight$",
                "--generations",
                "2",
                "--mode",
                "density",
            ],
        ),
        (
            "mlp_all",
            &["models/mnist_mlp.onnx", "--data", "fixtures/mnist_val.npz"],
        ),
    ];
    for (tag, args) in cases {
        let mut args = args.to_vec();
        args.extend_from_slice(&["--children", "6"]);
        let (full, off, full_files) = run(dir.path(), tag, "0", &args);
        let (split, on, split_files) = run(dir.path(), tag, "1", &args);
        assert_eq!(off, Value::Null, "{tag}: SMD_PREFIX=0 tries no prefix");
        assert_eq!(full, split, "{tag}: reports differ");
        assert_same_files(tag, &full_files, &split_files);
        if tag == "mlp_all" {
            // fc1 reads the model input: nothing to share, and the report says why.
            assert_eq!(on["used"], false, "{tag}: {on}");
            assert!(
                on["reason"].as_str().unwrap().contains("model input"),
                "{on}"
            );
        } else {
            assert_eq!(on["used"], true, "{tag}: {on}");
            assert!(on["prefix_nodes"].as_u64().unwrap() > 0, "{on}");
            assert!(!on["cut"].as_array().unwrap().is_empty(), "{on}");
        }
    }
}

#[test]
fn models_written_as_copies_keep_full_passes() {
    // Typed weights (float_data) cannot be external initializers: no template, no split.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "models/digits_skl_zipmap.onnx",
        "--data",
        "fixtures/digits_flat_val.npz",
        "--children",
        "4",
    ];
    let (full, _, full_files) = run(dir.path(), "skl", "0", &args);
    let (split, on, split_files) = run(dir.path(), "skl", "1", &args);
    assert_eq!(full, split);
    assert_same_files("skl", &full_files, &split_files);
    assert_eq!(on["used"], false, "{on}");
    assert!(on["reason"].as_str().unwrap().contains("copies"), "{on}");
}
