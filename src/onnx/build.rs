//! Small builders over the prost types for making models in tests, benchmarks and examples.
//! They favour brevity over completeness; use [`super::proto`] directly for anything else.

use half::{bf16, f16};
use prost::Message;

use super::dtype::DType;
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto, type_proto,
};

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

/// A float64 tensor in `raw_data`.
pub fn f64_raw(name: &str, dims: &[i64], v: &[f64]) -> TensorProto {
    raw(name, DType::F64, dims, bytemuck::cast_slice(v).to_vec())
}

/// A float16 tensor in `raw_data`.
pub fn f16_raw(name: &str, dims: &[i64], v: &[f16]) -> TensorProto {
    raw(name, DType::F16, dims, bytemuck::cast_slice(v).to_vec())
}

/// A bfloat16 tensor in `raw_data`.
pub fn bf16_raw(name: &str, dims: &[i64], v: &[bf16]) -> TensorProto {
    raw(name, DType::BF16, dims, bytemuck::cast_slice(v).to_vec())
}

fn typed(name: &str, dtype: DType, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dtype.to_onnx()),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

/// A float32 tensor in `float_data`.
pub fn f32_typed(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        float_data: v.to_vec(),
        ..typed(name, DType::F32, dims)
    }
}

/// A float64 tensor in `double_data`.
pub fn f64_typed(name: &str, dims: &[i64], v: &[f64]) -> TensorProto {
    TensorProto {
        double_data: v.to_vec(),
        ..typed(name, DType::F64, dims)
    }
}

/// A float16 tensor in `int32_data` (bits as uint16).
pub fn f16_typed(name: &str, dims: &[i64], v: &[f16]) -> TensorProto {
    TensorProto {
        int32_data: v.iter().map(|x| i32::from(x.to_bits())).collect(),
        ..typed(name, DType::F16, dims)
    }
}

/// A bfloat16 tensor in `int32_data` (bits as uint16).
pub fn bf16_typed(name: &str, dims: &[i64], v: &[bf16]) -> TensorProto {
    TensorProto {
        int32_data: v.iter().map(|x| i32::from(x.to_bits())).collect(),
        ..typed(name, DType::BF16, dims)
    }
}

/// An int64 tensor in `int64_data`.
pub fn i64_typed(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    TensorProto {
        int64_data: v.to_vec(),
        ..typed(name, DType::I64, dims)
    }
}

/// A tensor whose `raw_data` is in an external file.
pub fn external(
    name: &str,
    dtype: DType,
    dims: &[i64],
    location: &str,
    offset: u64,
    length: u64,
) -> TensorProto {
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    TensorProto {
        data_location: Some(1),
        external_data: vec![
            kv("location", location.into()),
            kv("offset", offset.to_string()),
            kv("length", length.to_string()),
        ],
        ..typed(name, dtype, dims)
    }
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

/// A tensor attribute.
pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..attr(name, AttributeType::Tensor)
    }
}

/// A graph attribute.
pub fn attr_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        g: Some(g),
        ..attr(name, AttributeType::Graph)
    }
}

/// A float attribute.
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}

/// A floats attribute.
pub fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: v.to_vec(),
        ..attr(name, AttributeType::Floats)
    }
}

/// An int attribute.
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

/// An ints attribute.
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

/// A `Constant` node holding tensor `t` as its `value`, output `out`.
pub fn constant(name: &str, out: &str, t: TensorProto) -> NodeProto {
    node("Constant", name, &[], &[out], vec![attr_tensor("value", t)])
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
