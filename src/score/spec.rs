//! The model's graph inputs and outputs (name, element type, dims), read from the ONNX file.
//!
//! Only the graph's `input`, `output` and initializer names are decoded: prost skips every
//! other field (node lists, tensor payloads) without copying it.
// The lead will switch this to `onnx::Model::facts()` once model I/O provides it.

use std::path::Path;

use bytes::Bytes;
use prost::Message;

use super::DataError;
use super::npy::DType;
use crate::onnx::proto::{self, tensor_shape_proto::dimension, type_proto};

/// An ONNX tensor element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// A type `.npy` data can supply.
    Known(DType),
    /// bfloat16 (no numpy dtype).
    BF16,
    /// Anything else (string, complex, float8...): the ONNX `TensorProto.DataType` code.
    Other(i32),
}

impl ElemType {
    /// From ONNX's `TensorProto.DataType` code.
    pub fn from_onnx(code: i32) -> Self {
        match code {
            1 => Self::Known(DType::F32),
            2 => Self::Known(DType::U8),
            3 => Self::Known(DType::I8),
            4 => Self::Known(DType::U16),
            5 => Self::Known(DType::I16),
            6 => Self::Known(DType::I32),
            7 => Self::Known(DType::I64),
            9 => Self::Known(DType::Bool),
            10 => Self::Known(DType::F16),
            11 => Self::Known(DType::F64),
            12 => Self::Known(DType::U32),
            13 => Self::Known(DType::U64),
            16 => Self::BF16,
            c => Self::Other(c),
        }
    }

    /// True for float16/32/64 and bfloat16.
    pub fn is_float(self) -> bool {
        match self {
            Self::Known(d) => d.is_float(),
            Self::BF16 => true,
            Self::Other(_) => false,
        }
    }
}

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Known(d) => write!(f, "{d}"),
            Self::BF16 => f.write_str("bfloat16"),
            Self::Other(c) => write!(f, "ONNX type {c}"),
        }
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named symbolic size (`N`, `batch`).
    Symbolic(String),
    /// Unknown.
    Unknown,
}

/// A graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    /// Name.
    pub name: String,
    /// Element type; `None` when the value is not a tensor (sequence, map...).
    pub elem: Option<ElemType>,
    /// Dims; `None` when the shape is not declared.
    pub dims: Option<Vec<Dim>>,
}

/// A graph input (not an initializer).
pub type InputSpec = IoSpec;
/// A graph output.
pub type OutputSpec = IoSpec;

impl IoSpec {
    /// The declared rank, if known.
    pub fn rank(&self) -> Option<usize> {
        self.dims.as_ref().map(Vec::len)
    }

    /// The size of dim `i` when it is fixed.
    pub fn fixed(&self, i: usize) -> Option<i64> {
        match self.dims.as_ref()?.get(i)? {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        }
    }

    /// Dims as text, e.g. `[N, 3, 32, 32]`.
    pub fn dims_text(&self) -> String {
        match &self.dims {
            None => "[?]".into(),
            Some(d) => {
                let parts: Vec<String> = d
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => v.to_string(),
                        Dim::Symbolic(s) => s.clone(),
                        Dim::Unknown => "?".into(),
                    })
                    .collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }
}

/// A model's graph inputs (initializers excluded) and outputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelIo {
    /// The model file (`<memory>` when read from bytes); errors name it.
    pub path: std::path::PathBuf,
    /// Inputs fed at run time, in graph order.
    pub inputs: Vec<InputSpec>,
    /// Outputs, in graph order.
    pub outputs: Vec<OutputSpec>,
}

#[derive(Clone, PartialEq, Message)]
struct ModelLite {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphLite>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphLite {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<NamedLite>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseLite>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<proto::ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<proto::ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedLite {
    #[prost(string, optional, tag = "8")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct SparseLite {
    #[prost(message, optional, tag = "1")]
    values: Option<NamedLite>,
}

impl ModelIo {
    /// Reads the model file's inputs and outputs (memory-mapped, zero copy).
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let f = std::fs::File::open(path).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        // SAFETY: read-only map of a model file smd-onnx never writes.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut io =
            Self::from_bytes(Bytes::from_owner(map)).map_err(|message| DataError::Model {
                path: path.to_path_buf(),
                message,
            })?;
        io.path = path.to_path_buf();
        Ok(io)
    }

    /// Reads inputs and outputs from serialized model bytes.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, String> {
        let m = ModelLite::decode(bytes).map_err(|e| format!("not an ONNX model: {e}"))?;
        let g = m.graph.ok_or("not an ONNX model: no graph")?;
        let inits: std::collections::HashSet<String> = g
            .initializer
            .iter()
            .filter_map(|t| t.name.clone())
            .chain(
                g.sparse_initializer
                    .iter()
                    .filter_map(|s| s.values.as_ref().and_then(|v| v.name.clone())),
            )
            .collect();
        let inputs = g
            .input
            .iter()
            .filter(|v| !inits.contains(v.name.as_deref().unwrap_or("")))
            .map(spec)
            .collect();
        let outputs = g.output.iter().map(spec).collect();
        Ok(Self {
            path: "<memory>".into(),
            inputs,
            outputs,
        })
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }
}

fn spec(v: &proto::ValueInfoProto) -> IoSpec {
    let name = v.name.clone().unwrap_or_default();
    let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => Some(t),
        _ => None,
    };
    let Some(t) = tensor else {
        return IoSpec {
            name,
            elem: None,
            dims: None,
        };
    };
    let elem = Some(ElemType::from_onnx(t.elem_type.unwrap_or(0)));
    let dims = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v),
                Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    IoSpec { name, elem, dims }
}

/// Builds a small model for tests and smoke checks: `y = x · W + b` (MatMul + Add) with an
/// optional Softmax, input `x: float[N, features]`, output `y: float[N, classes]`.
pub fn linear_model(
    weights: &[f32],
    bias: &[f32],
    features: usize,
    classes: usize,
    softmax: bool,
    batch: Option<i64>,
) -> Vec<u8> {
    use proto::tensor_shape_proto::Dimension;
    let dim = |d: Option<i64>, p: &str| Dimension {
        denotation: None,
        value: Some(match d {
            Some(v) => dimension::Value::DimValue(v),
            None => dimension::Value::DimParam(p.to_string()),
        }),
    };
    let vi = |name: &str, dims: Vec<Dimension>| proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(proto::TensorShapeProto { dim: dims }),
            })),
        }),
        ..Default::default()
    };
    let tensor = |name: &str, dims: Vec<i64>, v: &[f32]| proto::TensorProto {
        name: Some(name.into()),
        dims,
        data_type: Some(1),
        raw_data: Some(
            v.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
        ..Default::default()
    };
    let node = |op: &str, i: Vec<&str>, o: &str| proto::NodeProto {
        input: i.into_iter().map(String::from).collect(),
        output: vec![o.into()],
        op_type: Some(op.into()),
        ..Default::default()
    };
    let f = i64::try_from(features).unwrap_or(0);
    let c = i64::try_from(classes).unwrap_or(0);
    let mut nodes = vec![node("MatMul", vec!["x", "W"], "xw")];
    if softmax {
        nodes.push(node("Add", vec!["xw", "b"], "z"));
        let mut s = node("Softmax", vec!["z"], "y");
        s.attribute.push(proto::AttributeProto {
            name: Some("axis".into()),
            r#type: Some(2),
            i: Some(1),
            ..Default::default()
        });
        nodes.push(s);
    } else {
        nodes.push(node("Add", vec!["xw", "b"], "y"));
    }
    let graph = proto::GraphProto {
        node: nodes,
        name: Some("linear".into()),
        initializer: vec![tensor("W", vec![f, c], weights), tensor("b", vec![c], bias)],
        input: vec![vi("x", vec![dim(batch, "N"), dim(Some(f), "")])],
        output: vec![vi("y", vec![dim(batch, "N"), dim(Some(c), "")])],
        ..Default::default()
    };
    let model = proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        producer_name: Some("smd-onnx".into()),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inputs_and_outputs() {
        let m = linear_model(&[0.0; 6], &[0.0; 3], 2, 3, true, None);
        let io = ModelIo::from_bytes(Bytes::from(m)).unwrap();
        assert_eq!(io.inputs.len(), 1, "initializers are not inputs");
        let x = &io.inputs[0];
        assert_eq!(x.name, "x");
        assert_eq!(x.elem, Some(ElemType::Known(DType::F32)));
        assert_eq!(x.dims, Some(vec![Dim::Symbolic("N".into()), Dim::Fixed(2)]));
        assert_eq!(io.outputs[0].dims_text(), "[N, 3]");
        let m = linear_model(&[0.0; 6], &[0.0; 3], 2, 3, false, Some(1));
        let io = ModelIo::from_bytes(Bytes::from(m)).unwrap();
        assert_eq!(io.inputs[0].fixed(0), Some(1));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(ModelIo::from_bytes(Bytes::from_static(b"\xff\xff\xff")).is_err());
        assert!(ModelIo::from_bytes(Bytes::new()).is_err());
    }
}
