//! Small builders over the prost types, for the graphs the library writes: ensemble heads and
//! member encodings ([`crate::ensemble`]), label tails ([`super::tail`]), and the model of
//! [`crate::runtime::Runtime::self_check`] ([`linear_model`]). They favour brevity over
//! completeness; use [`super::proto`] directly for anything else.
//!
//! With the `test-support` feature this module also holds the builders only tests, benchmarks
//! and examples use (typed-field and external tensors, `Constant` nodes, more attribute kinds).

use prost::Message;

use super::dtype::DType;
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto, type_proto,
};

#[cfg(any(test, feature = "test-support"))]
mod testing;
#[cfg(any(test, feature = "test-support"))]
pub use testing::*;

/// A tensor with `raw_data`.
pub fn raw(name: &str, dtype: DType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dtype.to_onnx()),
        dims: dims.to_vec(),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// A tensor holding `data` in `raw_data` (its dtype is the data's).
pub fn values(name: &str, dims: &[i64], data: &crate::TensorData) -> TensorProto {
    raw(
        name,
        data.dtype(),
        dims,
        super::values::encode_le(data, 0, data.len()).into_owned(),
    )
}

/// A float32 tensor in `raw_data`.
pub fn f32_raw(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    raw(name, DType::F32, dims, bytemuck::cast_slice(v).to_vec())
}

/// A node.
pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

/// An int attribute.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

/// A tensor value info with fixed (`Ok`) or symbolic (`Err`) dims.
pub fn value_info(name: &str, elem: DType, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Ok(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Err(p) => tensor_shape_proto::dimension::Value::DimParam(p.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem.to_onnx()),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A graph.
pub fn graph(
    name: &str,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> GraphProto {
    GraphProto {
        name: Some(name.into()),
        node: nodes,
        initializer: initializers,
        input: inputs,
        output: outputs,
        ..Default::default()
    }
}

/// A model around `graph` (IR 9, default-domain opset 17).
pub fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(9),
        producer_name: Some("smd-onnx-build".into()),
        producer_version: Some("0".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// The protobuf encoding of a model.
pub fn encode(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// A small model: `y = x · W + b` (MatMul + Add) with an optional Softmax, input
/// `x: float[N, features]`, output `y: float[N, classes]` (`N` fixed when `batch` is given).
/// [`crate::runtime::Runtime::self_check`] runs it; tests use it too.
pub fn linear_model(
    weights: &[f32],
    bias: &[f32],
    features: usize,
    classes: usize,
    softmax: bool,
    batch: Option<i64>,
) -> Vec<u8> {
    let f = i64::try_from(features).unwrap_or(0);
    let c = i64::try_from(classes).unwrap_or(0);
    let n = batch.ok_or("N");
    let mut nodes = vec![node("MatMul", "mm", &["x", "W"], &["xw"], Vec::new())];
    if softmax {
        nodes.push(node("Add", "add", &["xw", "b"], &["z"], Vec::new()));
        nodes.push(node(
            "Softmax",
            "softmax",
            &["z"],
            &["y"],
            vec![attr_int("axis", 1)],
        ));
    } else {
        nodes.push(node("Add", "add", &["xw", "b"], &["y"], Vec::new()));
    }
    let g = graph(
        "linear",
        nodes,
        vec![f32_raw("W", &[f, c], weights), f32_raw("b", &[c], bias)],
        vec![value_info("x", DType::F32, &[n, Ok(f)])],
        vec![value_info("y", DType::F32, &[n, Ok(c)])],
    );
    encode(&model(g))
}
