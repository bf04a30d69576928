//! `smd-onnx inspect` through the binary: the fixtures against the Python `onnx` package's
//! inventory, the table, the selection flags, and malformed files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use smd_onnx::onnx::DType;
use smd_onnx::onnx::build::*;
use smd_onnx::onnx::proto::{ModelProto, TensorProto};

use crate::model_io::fixtures;
use crate::util::{assert_one_line_error, json_of, repo, smd};

fn inspect_json(model: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["inspect", "--json", model.to_str().unwrap()];
    args.extend_from_slice(extra);
    json_of(&smd(&args))
}

type Entry = (String, Vec<i64>, u64, String);

/// (graph, name) → (dtype, dims, elements, location).
fn inventory(tensors: &serde_json::Value, dims_key: &str) -> BTreeMap<(String, String), Entry> {
    tensors
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| {
                t[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {t}"))
                    .to_string()
            };
            let dims = t[dims_key]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            (
                (s("graph"), s("name")),
                (
                    s("dtype"),
                    dims,
                    t["elements"].as_u64().unwrap(),
                    s("location"),
                ),
            )
        })
        .collect()
}

#[test]
fn inspect_lists_what_python_onnx_finds_on_every_fixture() {
    for model in fixtures() {
        let stem = model.file_stem().unwrap().to_str().unwrap();
        let golden: serde_json::Value = serde_json::from_slice(
            &std::fs::read(repo(&format!("fixtures/expected/{stem}.json"))).unwrap(),
        )
        .unwrap();
        let got = inspect_json(&model, &[]);
        let want_inv = inventory(&golden["tensors"], "dims");
        let got_inv = inventory(&got["tensors"], "shape");
        assert_eq!(got_inv, want_inv, "{stem}");
        // Same order too (not part of the golden contract, but smd-onnx follows it).
        let order = |v: &serde_json::Value| -> Vec<(String, String)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|t| (t["graph"].to_string(), t["name"].to_string()))
                .collect()
        };
        assert_eq!(order(&got["tensors"]), order(&golden["tensors"]), "{stem}");
        assert_eq!(
            got["totals"]["tensors"], golden["totals"]["tensors"],
            "{stem}"
        );
        assert_eq!(
            got["totals"]["elements"], golden["totals"]["elements"],
            "{stem}"
        );
        // Mutable totals are consistent with the per-tensor flags.
        let ts = got["tensors"].as_array().unwrap();
        let mutable: Vec<_> = ts.iter().filter(|t| t["mutable"] == true).collect();
        assert_eq!(got["totals"]["mutable_tensors"], mutable.len() as u64);
        let me: u64 = mutable
            .iter()
            .map(|t| t["elements"].as_u64().unwrap())
            .sum();
        assert_eq!(got["totals"]["mutable_elements"], me);
        for t in ts {
            assert!(t["storage"].is_string() && t["key"].is_string());
            assert_eq!(t["storage"] == "external", t["external"].is_object(), "{t}");
            assert_eq!(t["reason"].is_null(), t["mutable"] == true, "{t}");
        }
        assert!(got["model"]["ir_version"].is_i64());
        assert!(!got["model"]["outputs"].as_array().unwrap().is_empty());
    }
}

#[test]
fn default_rule_on_the_fixtures() {
    let v = inspect_json(&repo("models/digits_cnn.onnx"), &[]);
    for t in v["tensors"].as_array().unwrap() {
        let dims = t["shape"].as_array().unwrap().len();
        assert_eq!(t["mutable"] == true, dims >= 2, "{t}");
        if dims == 1 {
            assert_eq!(t["reason"], "1-d (bias/norm)");
        }
    }
    // Subgraph Constants are candidates; the int64 shape and the bool condition are not.
    let v = inspect_json(&repo("models/digits_if_const.onnx"), &[]);
    let by_name: BTreeMap<String, &serde_json::Value> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t))
        .collect();
    assert_eq!(by_name["fc1.weight"]["mutable"], true);
    assert_eq!(by_name["fc1.weight"]["graph"], "if_outer/then_branch");
    assert_eq!(by_name["flat_shape"]["reason"], "int64");
    assert_eq!(by_name["cond"]["reason"], "bool");
    assert_eq!(by_name["unit_scale"]["storage"], "value_float");
    // --all-float makes 1-d and scalar floats candidates.
    let v = inspect_json(&repo("models/digits_if_const.onnx"), &["--all-float"]);
    assert_eq!(v["totals"]["mutable_tensors"], 7);
}

#[test]
fn include_and_exclude() {
    let m = repo("models/digits_cnn.onnx");
    let v = inspect_json(&m, &["--exclude", "^conv"]);
    for t in v["tensors"].as_array().unwrap() {
        if t["name"].as_str().unwrap().starts_with("conv") {
            assert_eq!(t["mutable"], false);
            if t["shape"].as_array().unwrap().len() >= 2 {
                assert_eq!(t["reason"], "excluded by --exclude");
            }
        }
    }
    let v = inspect_json(&m, &["--include", "fc", "--all-float"]);
    for t in v["tensors"].as_array().unwrap() {
        let float = t["dtype"] == "float32";
        let fc = t["name"].as_str().unwrap().contains("fc");
        assert_eq!(t["mutable"] == true, float && fc, "{t}");
    }
    let o = smd(&["inspect", m.to_str().unwrap(), "--include", "("]);
    assert_one_line_error(&o, &["--include"]);
}

#[test]
fn classic_ml_weights_are_mutable_attributes() {
    let m = repo("models/digits_skl_forest.onnx");
    let v = inspect_json(&m, &[]);
    let ts = v["tensors"].as_array().unwrap();
    let by_name = |n: &str| ts.iter().find(|t| t["name"] == n).unwrap().clone();
    let leaves = by_name("TreeEnsembleClassifier.class_weights");
    assert_eq!(leaves["location"], "ml_attribute");
    assert_eq!(leaves["node"], "TreeEnsembleClassifier");
    assert_eq!(leaves["storage"], "floats");
    assert_eq!(leaves["mutable"], true);
    let thresholds = by_name("TreeEnsembleClassifier.nodes_values");
    assert_eq!(
        thresholds["reason"],
        "not a weight (name it with --include)"
    );
    assert_eq!(v["totals"]["mutable_tensors"], 1);
    // --include adds the thresholds (and, as always, keeps only what it names).
    let v = inspect_json(&m, &["--include", "class_weights|nodes_values"]);
    assert_eq!(v["totals"]["mutable_tensors"], 2);
    let v = inspect_json(&m, &["--include", "nodes_values"]);
    let ts = v["tensors"].as_array().unwrap();
    let mutable: Vec<&str> = ts
        .iter()
        .filter(|t| t["mutable"] == true)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(mutable, ["TreeEnsembleClassifier.nodes_values"]);
    // The logistic regression: coefficients yes, intercepts on request; shown in the table.
    let m = repo("models/digits_skl_logreg.onnx");
    let v = inspect_json(&m, &[]);
    let ts = v["tensors"].as_array().unwrap();
    assert_eq!(ts[0]["name"], "LinearClassifier.coefficients");
    assert_eq!(ts[0]["shape"], serde_json::json!([640]));
    assert_eq!(ts[0]["mutable"], true);
    assert_eq!(ts[1]["name"], "LinearClassifier.intercepts");
    assert_eq!(ts[1]["mutable"], false);
    let o = smd(&["inspect", m.to_str().unwrap()]);
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(
        s.lines()
            .any(|l| l.contains("LinearClassifier.coefficients")
                && l.contains("ml_attribute")
                && l.contains("floats")
                && l.ends_with("yes")),
        "{s}"
    );
}

#[test]
fn table_shows_facts_tensors_and_totals() {
    let o = smd(&[
        "inspect",
        repo("models/digits_mlp_typed.onnx").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let s = String::from_utf8(o.stdout).unwrap();
    for want in [
        "IR version: 8",
        "ai.onnx 17",
        "input float32[N, 64]",
        "logits float32[N, 10]",
        "NAME",
        "MUTABLE",
        "fc1.weight_bottom_f16  float16  [32, 32]",
        "int32_data",
        "double_data",
        "totals:   5 tensors, 2,410 params",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    let o = smd(&[
        "inspect",
        repo("models/digits_mlp_external.onnx").to_str().unwrap(),
    ]);
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.contains("external data in 1 file"), "{s}");
    assert!(
        s.contains("external \"digits_mlp_external.onnx.data\""),
        "{s}"
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn fails(path: &Path, needles: &[&str]) {
    let o = smd(&["inspect", path.to_str().unwrap()]);
    let mut n = vec![path.to_str().unwrap()];
    n.extend_from_slice(needles);
    assert_one_line_error(&o, &n);
    let o = smd(&["inspect", "--json", path.to_str().unwrap()]);
    assert_one_line_error(&o, &n);
}

fn one(t: TensorProto) -> Vec<u8> {
    encode(&model(graph("g", vec![], vec![t], vec![], vec![])))
}

#[test]
fn malformed_files_fail_with_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    fails(&write(dir, "empty.onnx", b""), &["empty"]);
    fails(
        &write(dir, "text.onnx", b"this is not a model\nsecond line\n"),
        &[],
    );
    fails(&write(dir, "zeros.onnx", &[0u8; 4096]), &[]);
    fails(&dir.join("missing.onnx"), &[]);
    fails(dir, &["directory"]);
    #[cfg(unix)]
    fails(Path::new("/dev/null"), &["not a regular file"]);
    // Beyond protobuf's 2 GiB limit (a sparse file: no disk space used).
    let big = dir.join("big.onnx");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    fails(&big, &["2 GiB", "external data"]);
    std::fs::remove_file(&big).unwrap();
    // Wrong wire type: `graph` (field 7) as a varint.
    fails(
        &write(dir, "wire.onnx", &[0x08, 0x09, 0x38, 0x01]),
        &["wire type"],
    );
    // Protobuf that is not a model.
    fails(&write(dir, "nograph.onnx", &[0x08, 0x09]), &["no graph"]);
    fails(
        &write(
            dir,
            "overflow.onnx",
            &one(raw("big", DType::F32, &[1 << 62, 1 << 62], vec![])),
        ),
        &["tensor 'big'", "overflows"],
    );
    fails(
        &write(
            dir,
            "short.onnx",
            &one(raw("w_short", DType::F32, &[4, 4], vec![0; 60])),
        ),
        &["tensor 'w_short'", "60 bytes"],
    );
    fails(
        &write(
            dir,
            "long.onnx",
            &one(raw("w_long", DType::F16, &[4, 4], vec![0; 34])),
        ),
        &["tensor 'w_long'", "34 bytes"],
    );
    fails(
        &write(
            dir,
            "count.onnx",
            &one(f32_typed("w_count", &[2, 2], &[1.0; 3])),
        ),
        &["tensor 'w_count'", "3 values"],
    );
    // Wrong wire type inside a tensor: raw_data (field 9) as fixed32.
    let mut t = TensorProto {
        name: Some("w_wire".into()),
        data_type: Some(1),
        ..Default::default()
    }
    .encode_to_vec();
    t.extend([0x4d, 0, 0, 0, 0]);
    let mut g = Vec::new();
    g.push(0x2a);
    g.push(t.len() as u8);
    g.extend(&t);
    let mut m = vec![0x08, 0x09, 0x3a, g.len() as u8];
    m.extend(&g);
    m.extend([0x42, 0x02, 0x10, 17]);
    fails(
        &write(dir, "tensorwire.onnx", &m),
        &["wire type", "raw_data"],
    );

    // External data problems.
    let data = vec![0u8; 64];
    write(dir, "w.bin", &data);
    std::fs::create_dir(dir.join("sub")).unwrap();
    let ext =
        |loc: &str, off: u64, len: u64| one(external("w_ext", DType::F32, &[4, 4], loc, off, len));
    let ok = write(dir, "ext_ok.onnx", &ext("w.bin", 0, 64));
    assert!(smd(&["inspect", ok.to_str().unwrap()]).status.success());
    fails(
        &write(dir, "ext_missing.onnx", &ext("nope.bin", 0, 64)),
        &["tensor 'w_ext'", "not found"],
    );
    fails(
        &write(dir, "ext_short.onnx", &ext("w.bin", 8, 64)),
        &["tensor 'w_ext'", "64 bytes"],
    );
    fails(
        &write(dir, "ext_escape.onnx", &ext("../w.bin", 0, 64)),
        &["tensor 'w_ext'", "escapes"],
    );
    fails(
        &write(dir, "ext_abs.onnx", &ext("/etc/hostname", 0, 64)),
        &["tensor 'w_ext'", "absolute"],
    );
    fails(
        &write(dir, "ext_dir.onnx", &ext("sub", 0, 64)),
        &["tensor 'w_ext'", "directory"],
    );
    fails(
        &write(dir, "ext_len.onnx", &ext("w.bin", 0, 60)),
        &["tensor 'w_ext'", "length 60"],
    );
    // Nothing was written next to the inputs.
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(".onnx") || n == "w.bin" || n == "sub"),
        "{names:?}"
    );
}

#[test]
fn truncated_model_fails_at_every_offset() {
    let src = repo("models/digits_mlp_external.onnx");
    let bytes = std::fs::read(&src).unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("models/digits_mlp_external.onnx.data"),
        d.path().join("digits_mlp_external.onnx.data"),
    )
    .unwrap();
    for cut in 0..bytes.len() {
        let p = write(d.path(), "cut.onnx", &bytes[..cut]);
        let o = smd(&["inspect", p.to_str().unwrap()]);
        assert_one_line_error(&o, &[p.to_str().unwrap()]);
    }
}

/// xorshift64*: a tiny seeded generator, so failures reproduce.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn flipped_bytes_never_panic() {
    // A flip inside a weight payload leaves a valid model (exit 0); anything else must be a
    // clean one-line error.
    let d = tempfile::tempdir().unwrap();
    let mut seed = 0x5eed_u64;
    for name in [
        "digits_if_const.onnx",
        "iris_skl_mlp.onnx",
        "digits_mlp_typed.onnx",
    ] {
        let bytes = std::fs::read(repo(&format!("models/{name}"))).unwrap();
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..60 {
            let mut b = bytes.clone();
            let flips = 1 + rng(&mut seed) % 3;
            for _ in 0..flips {
                let i = (rng(&mut seed) % b.len() as u64) as usize;
                b[i] ^= 1 << (rng(&mut seed) % 8);
            }
            let p = write(d.path(), "flip.onnx", &b);
            let o = smd(&["inspect", "--json", p.to_str().unwrap()]);
            match o.status.code() {
                Some(0) => {
                    ok += 1;
                    let _: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                }
                _ => {
                    bad += 1;
                    assert_one_line_error(&o, &[p.to_str().unwrap()]);
                }
            }
        }
        assert!(bad > 0 && ok + bad == 60, "{name}: {ok} ok, {bad} errors");
    }
}

#[test]
fn hostile_names_cannot_forge_lines() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "names.onnx",
        &one(raw(
            "evil\nerror: forged\r",
            DType::F32,
            &[2, 2],
            vec![0; 15],
        )),
    );
    let o = smd(&["inspect", p.to_str().unwrap()]);
    assert_one_line_error(&o, &["forged"]);
    let ok = write(
        d.path(),
        "names_ok.onnx",
        &one(raw("a\nb", DType::F32, &[1], vec![0; 4])),
    );
    let o = smd(&["inspect", ok.to_str().unwrap()]);
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.contains("a\\nb"), "{s}");
    let v = inspect_json(&ok, &[]);
    assert_eq!(v["tensors"][0]["name"], "a\nb");
}

#[test]
fn decoded_model_builder_sanity() {
    // The builders used above make models prost can read back.
    let bytes = one(f32_raw("w", &[1], &[1.0]));
    let m = ModelProto::decode(&bytes[..]).unwrap();
    assert_eq!(m.graph.unwrap().initializer[0].name.as_deref(), Some("w"));
}
