//! Model facts: IR version, opsets, producer, graph inputs and outputs with their types.

use std::fmt;

use prost::Message;
use serde::Serialize;

use super::dtype::DType;
use super::proto;

/// One `opset_import` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opset {
    /// Domain (`""` is the default ONNX domain).
    pub domain: String,
    /// Version.
    pub version: i64,
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size (`dim_param`), e.g. `"N"`.
    Symbolic(String),
    /// Neither given, or a negative `dim_value` (ONNX Runtime's convention for dynamic).
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => write!(f, "{s}"),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

impl Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dim::Fixed(n) => s.serialize_i64(*n),
            Dim::Symbolic(p) => s.serialize_str(p),
            Dim::Unknown => s.serialize_none(),
        }
    }
}

/// The declared type of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueType {
    /// A tensor; `shape` is `None` when no shape is declared (any rank).
    Tensor {
        /// Element type.
        elem: DType,
        /// Declared dimensions.
        shape: Option<Vec<Dim>>,
    },
    /// A sparse tensor.
    SparseTensor {
        /// Element type.
        elem: DType,
        /// Declared dimensions.
        shape: Option<Vec<Dim>>,
    },
    /// `seq(T)`.
    Sequence(Box<ValueType>),
    /// `map(K, V)`.
    Map {
        /// Key type.
        key: DType,
        /// Value type.
        value: Box<ValueType>,
    },
    /// `optional(T)`.
    Optional(Box<ValueType>),
    /// An opaque type.
    Opaque {
        /// Domain.
        domain: String,
        /// Name.
        name: String,
    },
    /// No type given.
    Unknown,
}

fn shape_str(shape: &Option<Vec<Dim>>) -> String {
    match shape {
        None => "[...]".into(),
        Some(d) => {
            let v: Vec<String> = d.iter().map(|d| d.to_string()).collect();
            format!("[{}]", v.join(", "))
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Tensor { elem, shape } => write!(f, "{elem}{}", shape_str(shape)),
            ValueType::SparseTensor { elem, shape } => {
                write!(f, "sparse {elem}{}", shape_str(shape))
            }
            ValueType::Sequence(t) => write!(f, "seq({t})"),
            ValueType::Map { key, value } => write!(f, "map({key}, {value})"),
            ValueType::Optional(t) => write!(f, "optional({t})"),
            ValueType::Opaque { domain, name } => write!(f, "opaque({domain}.{name})"),
            ValueType::Unknown => f.write_str("unknown"),
        }
    }
}

impl Serialize for ValueType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self {
            ValueType::Tensor { elem, shape } | ValueType::SparseTensor { elem, shape } => {
                let kind = if matches!(self, ValueType::Tensor { .. }) {
                    "tensor"
                } else {
                    "sparse_tensor"
                };
                m.serialize_entry("kind", kind)?;
                m.serialize_entry("dtype", elem)?;
                m.serialize_entry("shape", shape)?;
            }
            ValueType::Sequence(t) => {
                m.serialize_entry("kind", "sequence")?;
                m.serialize_entry("elem", t)?;
            }
            ValueType::Map { key, value } => {
                m.serialize_entry("kind", "map")?;
                m.serialize_entry("key", key)?;
                m.serialize_entry("value", value)?;
            }
            ValueType::Optional(t) => {
                m.serialize_entry("kind", "optional")?;
                m.serialize_entry("elem", t)?;
            }
            ValueType::Opaque { domain, name } => {
                m.serialize_entry("kind", "opaque")?;
                m.serialize_entry("domain", domain)?;
                m.serialize_entry("name", name)?;
            }
            ValueType::Unknown => m.serialize_entry("kind", "unknown")?,
        }
        m.end()
    }
}

/// A graph input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueFacts {
    /// Name.
    pub name: String,
    /// Declared type.
    #[serde(rename = "type")]
    pub ty: ValueType,
}

impl ValueFacts {
    /// Element type and dims when this is a tensor.
    pub fn tensor(&self) -> Option<(DType, Option<&[Dim]>)> {
        match &self.ty {
            ValueType::Tensor { elem, shape } => Some((*elem, shape.as_deref())),
            _ => None,
        }
    }
}

/// Facts about a model that do not concern its weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelFacts {
    /// `ir_version`.
    pub ir_version: Option<i64>,
    /// `opset_import`, in file order.
    pub opsets: Vec<Opset>,
    /// `producer_name`.
    pub producer_name: String,
    /// `producer_version`.
    pub producer_version: String,
    /// The main graph's name.
    pub graph_name: String,
    /// The main graph's inputs that are not initializers.
    pub inputs: Vec<ValueFacts>,
    /// The main graph's outputs.
    pub outputs: Vec<ValueFacts>,
}

impl ModelFacts {
    /// The version imported for the default ONNX domain, if any.
    pub fn onnx_opset(&self) -> Option<i64> {
        self.opsets
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
    }
}

/// Deepest type nesting converted (sequence of map of ...); deeper is reported as unknown.
const MAX_TYPE_DEPTH: usize = 32;

pub(crate) fn convert_type(t: &proto::TypeProto, depth: usize) -> ValueType {
    use proto::type_proto::Value;
    if depth > MAX_TYPE_DEPTH {
        return ValueType::Unknown;
    }
    let shape = |s: &Option<proto::TensorShapeProto>| {
        s.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    // Some exporters write a dynamic dimension as -1; ONNX Runtime treats every
                    // negative dim_value as symbolic, and so do we.
                    Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if *v < 0 => {
                        Dim::Unknown
                    }
                    Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                        Dim::Fixed(*v)
                    }
                    Some(proto::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                        Dim::Symbolic(p.clone())
                    }
                    None => Dim::Unknown,
                })
                .collect()
        })
    };
    let elem = |e: Option<i32>| DType::from_onnx(i64::from(e.unwrap_or(0)));
    let sub = |t: &Option<Box<proto::TypeProto>>| {
        Box::new(
            t.as_deref()
                .map_or(ValueType::Unknown, |t| convert_type(t, depth + 1)),
        )
    };
    match &t.value {
        Some(Value::TensorType(tt)) => ValueType::Tensor {
            elem: elem(tt.elem_type),
            shape: shape(&tt.shape),
        },
        Some(Value::SparseTensorType(tt)) => ValueType::SparseTensor {
            elem: elem(tt.elem_type),
            shape: shape(&tt.shape),
        },
        Some(Value::SequenceType(s)) => ValueType::Sequence(sub(&s.elem_type)),
        Some(Value::MapType(m)) => ValueType::Map {
            key: elem(m.key_type),
            value: sub(&m.value_type),
        },
        Some(Value::OptionalType(o)) => ValueType::Optional(sub(&o.elem_type)),
        Some(Value::OpaqueType(o)) => ValueType::Opaque {
            domain: o.domain.clone().unwrap_or_default(),
            name: o.name.clone().unwrap_or_default(),
        },
        None => ValueType::Unknown,
    }
}

/// Decodes a ValueInfoProto (a small message; payloads never live here).
pub(crate) fn value_facts(bytes: &[u8]) -> Result<ValueFacts, prost::DecodeError> {
    let v = proto::ValueInfoProto::decode(bytes)?;
    Ok(ValueFacts {
        name: v.name.unwrap_or_default(),
        ty: v
            .r#type
            .as_ref()
            .map_or(ValueType::Unknown, |t| convert_type(t, 0)),
    })
}

/// Decodes an OperatorSetIdProto.
pub(crate) fn opset(bytes: &[u8]) -> Result<Opset, prost::DecodeError> {
    let o = proto::OperatorSetIdProto::decode(bytes)?;
    Ok(Opset {
        domain: o.domain.unwrap_or_default(),
        version: o.version.unwrap_or(0),
    })
}
