//! `smd-onnx mutate`: children carry their recipes, regenerate exactly, and partition children
//! change disjoint elements.

use std::path::{Path, PathBuf};

use smd_onnx::TensorData;
use smd_onnx::mutate::Selection;
use smd_onnx::onnx::Model;

use crate::util::{assert_one_line_error, repo, smd};

fn mutate(model: &str, out: &Path, extra: &[&str]) -> Vec<PathBuf> {
    let mut args = vec!["mutate", model, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = smd(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// Element `j` of every mutable tensor, flattened in index order, as bits.
fn weights(path: &Path) -> Vec<u64> {
    let m = Model::open(path).unwrap();
    let mut out = Vec::new();
    let default = Selection::default();
    for t in m.tensors().iter().filter(|t| default.judge(t).is_mutable()) {
        match m.read_values(t).unwrap() {
            TensorData::F32(v) => out.extend(v.iter().map(|x| u64::from(x.to_bits()))),
            other => panic!("float32 fixture expected, got {:?}", other.dtype()),
        }
    }
    out
}

#[test]
fn children_carry_recipes_and_regenerate_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let kids = mutate(
        "models/digits_cnn.onnx",
        &dir.path().join("all"),
        &["--children", "5", "--seed", "7"],
    );
    assert_eq!(kids.len(), 5);
    let parent_hash = Model::open(repo("models/digits_cnn.onnx"))
        .unwrap()
        .content_hash()
        .unwrap();
    for (i, k) in kids.iter().enumerate() {
        let m = Model::open(k).unwrap();
        assert_eq!(
            m.metadata("smd_onnx.parent_hash").as_deref(),
            Some(parent_hash.as_str())
        );
        let recipes: serde_json::Value =
            serde_json::from_str(&m.metadata("smd_onnx.recipe").unwrap()).unwrap();
        assert_eq!(recipes[0]["member"]["child"], i);
        assert_eq!(recipes[0]["seed"], 7);
        // Any child alone, from its recipe's settings, is the same file.
        let only = mutate(
            "models/digits_cnn.onnx",
            &dir.path().join(format!("only{i}")),
            &["--children", "5", "--seed", "7", "--only", &i.to_string()],
        );
        assert_eq!(
            std::fs::read(&only[0]).unwrap(),
            std::fs::read(k).unwrap(),
            "child {i}"
        );
    }
}

#[test]
fn partition_children_change_disjoint_elements_that_cover_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let k = 4;
    let kids = mutate(
        "models/digits_cnn.onnx",
        dir.path(),
        &["--children", &k.to_string()],
    );
    let parent = weights(&repo("models/digits_cnn.onnx"));
    let mut owners = vec![0u32; parent.len()];
    for kid in &kids {
        for (o, (a, b)) in owners.iter_mut().zip(weights(kid).iter().zip(&parent)) {
            *o += u32::from(a != b);
        }
    }
    // Every element is changed by exactly one child (a σ-scaled Gaussian is never exactly 0).
    assert!(
        owners.iter().all(|&o| o == 1),
        "owners per element: {:?}",
        &owners[..20]
    );
}

#[test]
fn sigma_zero_children_are_the_parent_plus_their_recipe() {
    let dir = tempfile::tempdir().unwrap();
    for model in [
        "models/digits_mlp_typed.onnx",
        "models/digits_if_const.onnx",
        "models/digits_cnn.onnx",
    ] {
        let out = dir.path().join(Path::new(model).file_stem().unwrap());
        let kids = mutate(model, &out, &["--children", "2", "--sigma", "0"]);
        let parent = std::fs::read(repo(model)).unwrap();
        for kid in kids {
            let child = std::fs::read(&kid).unwrap();
            // Byte-identical up to the end of the parent; the recipe entry is appended.
            assert_eq!(&child[..parent.len()], &parent[..], "{}", kid.display());
            assert!(
                Model::open(&kid)
                    .unwrap()
                    .metadata("smd_onnx.recipe")
                    .is_some()
            );
        }
    }
    // With external data, the child's own data file is a copy of the parent's (and its model
    // differs only in the data file's name, see tests/it/model_io.rs).
    mutate(
        "models/digits_mlp_external.onnx",
        &dir.path().join("ext"),
        &["--children", "2", "--sigma", "0"],
    );
    let data = std::fs::read(dir.path().join("ext/child_000.onnx.data")).unwrap();
    assert_eq!(
        data,
        std::fs::read(repo("models/digits_mlp_external.onnx.data")).unwrap()
    );
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kids");
    let o = out.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["mutate", "models/digits_cnn.onnx", "--out", o];
        a.extend_from_slice(extra);
        smd(&a)
    };
    assert_one_line_error(&run(&["--children", "0"]), &["--children"]);
    assert_one_line_error(&run(&["--sigma=-1"]), &["--sigma"]);
    assert_one_line_error(&run(&["--children", "3", "--only", "3"]), &["--only"]);
    assert_one_line_error(
        &run(&["--mode", "density", "--density", "1.5"]),
        &["--density"],
    );
    assert_one_line_error(
        &run(&["--antithetic", "--children", "3"]),
        &["--antithetic"],
    );
    assert!(!out.exists(), "nothing written");
}
