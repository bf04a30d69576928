//! Writes the score-overhead benchmark's inputs: a small VGG-style CNN with random weights
//! (`cnn.onnx`, input `input` [N,3,32,32] → `logits` [N,10]) and random data (`data.npz`,
//! stored, with `labels`), into the folder given as the first argument.
//!
//! `cargo run --release --example make_bench_cnn -- DIR [SAMPLES]` (default 2048 samples).

use std::path::PathBuf;

use prost::Message;
use smd_onnx::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use smd_onnx::score::DType;
use smd_onnx::score::arrays::write_npz;

/// SplitMix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-a, a).
    fn uniform(&mut self, a: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * a
    }
}

fn tensor(name: &str, dims: &[i64], rng: &mut Rng, scale: f32) -> TensorProto {
    let n: i64 = dims.iter().product();
    let raw: Vec<u8> = (0..n)
        .flat_map(|_| rng.uniform(scale).to_le_bytes())
        .collect();
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(1),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        op_type: Some(op.into()),
        attribute: attrs,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            denotation: None,
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v),
                                None => Value::DimParam("N".into()),
                            }),
                        })
                        .collect(),
                }),
            })),
        }),
        ..Default::default()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "bench-data".into()));
    let samples: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2048);
    std::fs::create_dir_all(&dir).expect("create output folder");
    let mut rng = Rng(42);

    // conv(3→64) relu conv(64→64) relu pool conv(64→128) relu conv(128→128) relu pool
    // global-average-pool flatten gemm(128→10).
    let chans = [(3, 64), (64, 64), (64, 128), (128, 128)];
    let mut nodes = Vec::new();
    let mut inits = Vec::new();
    let mut x = "input".to_string();
    for (i, (cin, cout)) in chans.iter().enumerate() {
        let w = format!("conv{i}.weight");
        let b = format!("conv{i}.bias");
        let fan_in = (cin * 9) as f32;
        inits.push(tensor(
            &w,
            &[*cout, *cin, 3, 3],
            &mut rng,
            (6.0 / fan_in).sqrt(),
        ));
        inits.push(tensor(&b, &[*cout], &mut rng, 0.01));
        let c = format!("c{i}");
        nodes.push(node(
            "Conv",
            &[&x, &w, &b],
            &c,
            vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
        ));
        let r = format!("r{i}");
        nodes.push(node("Relu", &[&c], &r, vec![]));
        x = r;
        if i % 2 == 1 {
            let p = format!("p{i}");
            nodes.push(node(
                "MaxPool",
                &[&x],
                &p,
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ));
            x = p;
        }
    }
    nodes.push(node("GlobalAveragePool", &[&x], "gap", vec![]));
    nodes.push(node("Flatten", &["gap"], "flat", vec![]));
    inits.push(tensor("fc.weight", &[10, 128], &mut rng, 0.2));
    inits.push(tensor("fc.bias", &[10], &mut rng, 0.01));
    let mut gemm = node("Gemm", &["flat", "fc.weight", "fc.bias"], "logits", vec![]);
    gemm.attribute.push(AttributeProto {
        name: Some("transB".into()),
        r#type: Some(2),
        i: Some(1),
        ..Default::default()
    });
    nodes.push(gemm);
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        producer_name: Some("smd-onnx make_bench_cnn".into()),
        graph: Some(GraphProto {
            node: nodes,
            name: Some("bench_cnn".into()),
            initializer: inits,
            input: vec![value_info("input", &[None, Some(3), Some(32), Some(32)])],
            output: vec![value_info("logits", &[None, Some(10)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(dir.join("cnn.onnx"), model.encode_to_vec()).expect("write cnn.onnx");

    let x: Vec<u8> = (0..samples * 3 * 32 * 32)
        .flat_map(|_| rng.uniform(1.0).to_le_bytes())
        .collect();
    let labels: Vec<u8> = (0..samples)
        .flat_map(|_| ((rng.next() % 10) as i64).to_le_bytes())
        .collect();
    let npz = write_npz(
        &[
            ("input", DType::F32, &[samples, 3, 32, 32], &x),
            ("labels", DType::I64, &[samples], &labels),
        ],
        false,
    );
    std::fs::write(dir.join("data.npz"), npz).expect("write data.npz");
    println!(
        "wrote {} and {} ({samples} samples)",
        dir.join("cnn.onnx").display(),
        dir.join("data.npz").display()
    );
}
