//! Quantized weights (integer tensors a `DequantizeLinear` reads) on onnxruntime's quantized
//! fixtures: what `inspect` says, what children change byte for byte, partition semantics in
//! the integer domain, `mutate`/`replay` through the binary.

use std::ops::Range;

use serde_json::Value;
use smd_onnx::mutate::{Config, Plan, Selection, TensorSpec, child_tensors};
use smd_onnx::onnx::{DType, Model, child_bytes};

use crate::util::{json_of, repo, smd};

const INT4: &str = "models/digits_cnn_qdq_int4.onnx";
const INT8: &str = "models/digits_cnn_qdq_int8.onnx";
/// `MatMulNBits`: uint8 bytes holding 4-bit integers, blocks of 32 along K.
const NBITS: &str = "models/mnist_mlp_nbits.onnx";
/// `DequantizeLinear` with `block_size` 32 (opset 21), uint4.
const BLOCKED: &str = "models/mnist_mlp_qdq_block.onnx";

fn tensor<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

#[test]
fn inspect_shows_quantized_weights_as_mutable() {
    let v = json_of(&smd(&["inspect", "--json", INT4]));
    let w = tensor(&v, "conv2.weight_quantized");
    assert_eq!(w["dtype"], "int4");
    assert_eq!(w["mutable"], true);
    assert_eq!(w["quantized"]["scale"], "conv2.weight_scale");
    assert_eq!(w["quantized"]["zero_point"], "conv2.weight_zero_point");
    assert_eq!(w["quantized"]["axis"], 0);
    // Gemm's weight is quantized per output column (axis 1).
    assert_eq!(tensor(&v, "fc.weight_quantized")["quantized"]["axis"], 1);
    // Quantized 1-d tensors follow the float rule; int32 biases are not requantized.
    assert_eq!(
        tensor(&v, "bn1.scale_quantized")["reason"],
        "1-d (bias/norm)"
    );
    let bias = tensor(&v, "conv1.bias_quantized")["reason"]
        .as_str()
        .unwrap();
    assert!(bias.starts_with("int32 quantized: "), "{bias}");
    // Scales and zero points are never mutable, even with --all-float.
    assert_eq!(v["totals"]["mutable_tensors"], 3);
    assert_eq!(tensor(&v, "conv2.weight_zero_point")["reason"], "int4");
    let v = json_of(&smd(&["inspect", "--json", INT4, "--all-float"]));
    assert_eq!(
        tensor(&v, "conv2.weight_scale")["reason"],
        "scale or zero point of quantized conv2.weight_quantized"
    );
    let v = json_of(&smd(&["inspect", "--json", INT8]));
    let w = tensor(&v, "conv2.weight_quantized");
    assert_eq!((&w["dtype"], &w["mutable"]), (&"int8".into(), &true.into()));
    assert!(w["quantized"]["axis"].is_null(), "per tensor");
    // Blocked scales: MatMulNBits' bytes of 4-bit integers, DequantizeLinear's block_size.
    for (model, name, axis, dtype) in [
        (NBITS, "fc1.weight_Q4", 1, "uint8"),
        (BLOCKED, "fc1.weight_DQ_Q4", 0, "uint4"),
    ] {
        let v = json_of(&smd(&["inspect", "--json", model]));
        let w = tensor(&v, name);
        assert_eq!((&w["dtype"], &w["mutable"]), (&dtype.into(), &true.into()));
        let q = &w["quantized"];
        assert_eq!((&q["axis"], &q["block_size"]), (&axis.into(), &32.into()));
        // 784 × 64 weights; MatMulNBits pads K to 25 blocks of 32.
        let count = if model == NBITS {
            64 * 25 * 32
        } else {
            784 * 64
        };
        assert_eq!(
            (&q["integers"], &q["integer_type"]),
            (&count.into(), &"uint4".into())
        );
        assert_eq!(v["totals"]["mutable_tensors"], 2);
    }
    let o = smd(&["inspect", INT4]);
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(
        s.lines().any(|l| l.starts_with("conv2.weight_quantized ")
            && l.ends_with("yes: quantized (scale from conv2.weight_scale)")),
        "{s}"
    );
}

/// The integers of a raw int8/int4/uint4 payload (an independent decoder).
fn ints(dtype: DType, raw: &[u8], n: usize) -> Vec<i32> {
    (0..n)
        .map(|j| {
            let b = raw[j / 2];
            let nib = if j % 2 == 0 { b & 15 } else { b >> 4 };
            match dtype {
                DType::I8 => i32::from(raw[j] as i8),
                DType::U4 => i32::from(nib),
                _ => i32::from(((nib << 4) as i8) >> 4),
            }
        })
        .collect()
}

/// Each mutable tensor's integers in `bytes` (a model with `m`'s layout); `nibbles`: the
/// uint8 tensors hold two uint4 integers per byte (`MatMulNBits`).
fn all_ints(m: &Model, tensors: &[usize], bytes: &[u8], nibbles: bool) -> Vec<Vec<i32>> {
    tensors
        .iter()
        .map(|&i| {
            let t = &m.tensors()[i];
            let r = &t.payload_ranges()[0];
            let (dtype, n) = if nibbles {
                (DType::U4, 2 * t.elements as usize)
            } else {
                (t.dtype, t.elements as usize)
            };
            ints(dtype, &bytes[r.start as usize..r.end as usize], n)
        })
        .collect()
}

#[test]
fn children_change_disjoint_integers_that_sum_to_the_dense_change() {
    for (model, lo, hi, count, nibbles) in [
        (INT4, -8, 7, 3, false),
        (INT8, -128, 127, 3, false),
        (NBITS, 0, 15, 2, true),
        (BLOCKED, 0, 15, 2, false),
    ] {
        let m = Model::open(repo(model)).unwrap();
        let tensors = Selection::default().mutable_tensors(&m);
        assert_eq!(tensors.len(), count, "{model}");
        let values: Vec<_> = tensors
            .iter()
            .map(|&i| m.read_values(&m.tensors()[i]).unwrap())
            .collect();
        let specs: Vec<TensorSpec> = tensors
            .iter()
            .zip(&values)
            .map(|(&i, v)| TensorSpec::from_values(m.tensors()[i].key(), v))
            .collect();
        // Strong noise: many integers change, some past the range ends.
        let k = 4;
        let config = Config {
            children: k,
            sigma: 1.5,
            seed: 7,
            ..Default::default()
        };
        let plan = Plan::new(&config, &specs, 0).unwrap();
        let write = |deltas: &[smd_onnx::mutate::Delta]| {
            let changes: Vec<_> = child_tensors(&values, deltas)
                .unwrap()
                .into_iter()
                .map(|(t, v)| (tensors[t], v))
                .collect();
            child_bytes(&m, &changes).unwrap()
        };
        let parent_bytes = std::fs::read(repo(model)).unwrap();
        let parent = all_ints(&m, &tensors, &parent_bytes, nibbles);
        let payloads: Vec<Range<u64>> = tensors
            .iter()
            .flat_map(|&i| m.tensors()[i].payload_ranges())
            .collect();
        let mut sum: Vec<Vec<i32>> = parent.iter().map(|p| vec![0; p.len()]).collect();
        let mut owner: Vec<Vec<Option<u32>>> = parent.iter().map(|p| vec![None; p.len()]).collect();
        for c in 0..k {
            let bytes = write(&plan.child(c).unwrap());
            // Only the quantized weights' bytes change: scales, zero points, graph untouched.
            assert_eq!(bytes.len(), parent_bytes.len());
            for (p, (a, b)) in parent_bytes.iter().zip(&bytes).enumerate() {
                assert!(
                    a == b || payloads.iter().any(|r| r.contains(&(p as u64))),
                    "{model}: child {c} changed byte {p}"
                );
            }
            for (t, kid) in all_ints(&m, &tensors, &bytes, nibbles).iter().enumerate() {
                for (j, (&q, &p)) in kid.iter().zip(&parent[t]).enumerate() {
                    if q != p {
                        assert_eq!(owner[t][j], None, "{model}: element changed twice");
                        owner[t][j] = Some(c);
                        sum[t][j] += q - p;
                    }
                }
            }
        }
        let all: Vec<u32> = (0..k).collect();
        let dense = all_ints(&m, &tensors, &write(&plan.merged(&all).unwrap()), nibbles);
        let mut clamped = 0;
        for t in 0..tensors.len() {
            let change: Vec<i32> = dense[t]
                .iter()
                .zip(&parent[t])
                .map(|(d, p)| d - p)
                .collect();
            assert_eq!(
                change, sum[t],
                "{model}: dense change = sum of the children's"
            );
            assert!(change.iter().filter(|&&d| d != 0).count() > dense[t].len() / 4);
            clamped += dense[t].iter().filter(|&&q| q == lo || q == hi).count();
            assert!(dense[t].iter().all(|&q| (lo..=hi).contains(&q)));
        }
        assert!(clamped > 0, "{model}: the noise reaches the range ends");
    }
}

#[test]
fn quantized_children_through_the_binary_replay_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kids");
    let o = smd(&[
        "mutate",
        INT4,
        "--children",
        "3",
        "--sigma",
        "0.3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kids: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(kids.len(), 3);
    let parent = std::fs::read(repo(INT4)).unwrap();
    for kid in &kids {
        let bytes = std::fs::read(kid).unwrap();
        // Same size up to the lineage metadata appended at the end.
        assert!(bytes.len() > parent.len());
        assert_ne!(&bytes[..parent.len()], &parent[..]);
        let rebuilt = dir.path().join("rebuilt.onnx");
        let r = smd(&[
            "replay",
            INT4,
            "--from",
            kid,
            "--out",
            rebuilt.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(std::fs::read(&rebuilt).unwrap(), bytes);
        std::fs::remove_file(&rebuilt).unwrap();
        // Still a quantized model that ONNX Runtime runs.
        let s = json_of(&smd(&[
            "score",
            kid,
            "--data",
            "fixtures/digits_val.npz",
            "--json",
        ]));
        assert!(s["metrics"]["accuracy"].as_f64().unwrap() > 0.5, "{s}");
    }
}

#[test]
fn evolved_ensembles_of_quantized_children_are_compact_and_combine_their_members() {
    let dir = tempfile::tempdir().unwrap();
    let digits = "fixtures/digits_val.npz";
    let mnist = "fixtures/mnist_val.npz";
    // (model, data, --mode, k, compact). int4 is stored and cast as int8 (its
    // DequantizeLinear copies read an int8 zero point); in layer mode with two children some
    // members share the parent's DequantizeLinear, which reads it too. Blocked
    // DequantizeLinear weights are whole copies: ONNX Runtime fuses them with their MatMul
    // only when constant. Four children, as greedy ensembles weigh them, tell the difference.
    for (model, data, mode, k, compact) in [
        (INT8, digits, "partition", "16", true),
        (INT4, digits, "partition", "16", true),
        (INT4, digits, "layer", "2", true),
        // Packed 4-bit integers: their uint8 bytes vary.
        (NBITS, mnist, "partition", "16", true),
        (NBITS, mnist, "partition", "4", true),
        (BLOCKED, mnist, "partition", "4", false),
    ] {
        let name = format!("{}-{mode}-{k}", model.trim_start_matches("models/"));
        let out = dir.path().join(name);
        let r = json_of(&smd(&[
            "evolve",
            model,
            "--data",
            data,
            "--children",
            k,
            "--mode",
            mode,
            "--ensemble",
            "greedy",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]));
        let notices = r["notices"].to_string();
        let whole = notices.contains("full copies");
        assert_eq!(!whole, compact, "{model} {mode}: {notices}");
        // Drop-in: scores as the report measured it from the members' predictions.
        let ens = out.join("ensemble.onnx");
        let s = json_of(&smd(&[
            "score",
            ens.to_str().unwrap(),
            "--data",
            data,
            "--split",
            "holdout",
            "--json",
        ]));
        let greedy = &r["ensembles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "greedy")
            .unwrap()["scores"]["holdout"];
        let (got, want) = (&s["metrics"], greedy);
        assert_eq!(got["accuracy"], want["accuracy"], "{model} {mode}");
        let (nll, want) = (got["nll"].as_f64().unwrap(), want["nll"].as_f64().unwrap());
        assert!(
            (nll - want).abs() < 1e-5,
            "{model} {mode}: NLL {nll} vs {want}"
        );
        // Compact: under sixteen copies of the parent (full copies take 18).
        let parent = std::fs::metadata(repo(model)).unwrap().len();
        let size = std::fs::metadata(&ens).unwrap().len();
        if k == "16" {
            assert!(size < parent * 13, "{model} {mode}: {size} bytes");
        }
        crate::ensemble::check_with_python(&ens);
    }
}
