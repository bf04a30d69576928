//! Builders only tests, benchmarks and examples use (feature `test-support`).

use half::{bf16, f16};

use super::{attr, node, raw};
use crate::onnx::DType;
use crate::onnx::proto::{
    AttributeProto, GraphProto, NodeProto, StringStringEntryProto, TensorProto,
    attribute_proto::AttributeType,
};

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
