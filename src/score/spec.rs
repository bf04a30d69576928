//! The model's graph inputs and outputs (name, element type, dims) as scoring sees them: the
//! model index's facts, with element types mapped to what data files can supply.

use std::path::Path;

use super::npy::DType as NpyDType;
use crate::onnx::{DType, Model, ValueFacts};

/// An ONNX tensor element type, as data files can (or cannot) supply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// A type `.npy` data can supply.
    Known(NpyDType),
    /// bfloat16 (no numpy dtype).
    BF16,
    /// Anything else (string, complex, float8...): the ONNX `TensorProto.DataType` code; 0
    /// when the model declares no type (ONNX Runtime infers it).
    Other(i32),
}

impl From<DType> for ElemType {
    fn from(t: DType) -> Self {
        match NpyDType::from_onnx(t) {
            Some(d) => Self::Known(d),
            None if t == DType::BF16 => Self::BF16,
            None => Self::Other(t.to_onnx()),
        }
    }
}

impl ElemType {
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
            Self::BF16 => write!(f, "{}", DType::BF16),
            Self::Other(c) => write!(f, "ONNX type {c}"),
        }
    }
}

pub use crate::onnx::Dim;

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
    /// A float tensor, or a tensor whose element type is not declared (ONNX Runtime infers
    /// it; the values are checked when they arrive): what scoring can read.
    pub fn may_be_float(&self) -> bool {
        self.elem
            .is_some_and(|e| e.is_float() || e == ElemType::Other(0))
    }

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
            Some(d) => format!(
                "[{}]",
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
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
    /// Values that are not outputs but hold the class scores outputs are computed from
    /// (skl2onnx's `ZipMap` input), listed only when no output is a float tensor: scored then,
    /// by exposing them as extra outputs of the scoring session
    /// ([`crate::onnx::tail::expose_suffix`]).
    pub hidden: Vec<OutputSpec>,
}

impl ModelIo {
    /// The inputs and outputs of an indexed model.
    pub fn from_model(model: &Model) -> Self {
        let spec = |v: &ValueFacts| match v.tensor() {
            Some((elem, dims)) => IoSpec {
                name: v.name.clone(),
                elem: Some(ElemType::from(elem)),
                dims: dims.map(<[Dim]>::to_vec),
            },
            // No type declared at all: ONNX Runtime infers it (a tensor, usually float).
            None if v.ty == crate::onnx::ValueType::Unknown => IoSpec {
                name: v.name.clone(),
                elem: Some(ElemType::Other(0)),
                dims: None,
            },
            None => IoSpec {
                name: v.name.clone(),
                elem: None,
                dims: None,
            },
        };
        let facts = model.facts();
        let outputs: Vec<OutputSpec> = facts.outputs.iter().map(spec).collect();
        // Decoding the graph's nodes is only worth it when no output can be scored itself.
        let hidden = if outputs.iter().any(IoSpec::may_be_float) {
            Vec::new()
        } else {
            model.hidden_scores().iter().map(spec).collect()
        };
        Self {
            path: model.path().to_path_buf(),
            inputs: facts.inputs.iter().map(spec).collect(),
            outputs,
            hidden,
        }
    }

    /// Opens and indexes the model file, and reads its inputs and outputs.
    pub fn from_file(path: &Path) -> Result<Self, crate::Error> {
        Ok(Self::from_model(&Model::open(path)?))
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// The output or hidden score value called `name`.
    pub fn scoreable(&self, name: &str) -> Option<&OutputSpec> {
        self.output(name)
            .or_else(|| self.hidden.iter().find(|o| o.name == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::linear_model;

    #[test]
    fn reads_inputs_and_outputs() {
        let io = io_of(linear_model(&[0.0; 6], &[0.0; 3], 2, 3, true, None));
        assert_eq!(io.inputs.len(), 1, "initializers are not inputs");
        let x = &io.inputs[0];
        assert_eq!(x.name, "x");
        assert_eq!(x.elem, Some(ElemType::Known(NpyDType::F32)));
        assert_eq!(x.dims, Some(vec![Dim::Symbolic("N".into()), Dim::Fixed(2)]));
        assert_eq!(io.outputs[0].dims_text(), "[N, 3]");
        let io = io_of(linear_model(&[0.0; 6], &[0.0; 3], 2, 3, false, Some(1)));
        assert_eq!(io.inputs[0].fixed(0), Some(1));
    }

    #[test]
    fn elem_types_from_onnx() {
        // What the former table of codes said: numpy dtypes, bfloat16, and the code otherwise.
        for code in 0..=30 {
            let want = match code {
                1 => ElemType::Known(NpyDType::F32),
                2 => ElemType::Known(NpyDType::U8),
                3 => ElemType::Known(NpyDType::I8),
                4 => ElemType::Known(NpyDType::U16),
                5 => ElemType::Known(NpyDType::I16),
                6 => ElemType::Known(NpyDType::I32),
                7 => ElemType::Known(NpyDType::I64),
                9 => ElemType::Known(NpyDType::Bool),
                10 => ElemType::Known(NpyDType::F16),
                11 => ElemType::Known(NpyDType::F64),
                12 => ElemType::Known(NpyDType::U32),
                13 => ElemType::Known(NpyDType::U64),
                16 => ElemType::BF16,
                c => ElemType::Other(c),
            };
            assert_eq!(
                ElemType::from(DType::from_onnx(i64::from(code))),
                want,
                "{code}"
            );
        }
        assert_eq!(ElemType::BF16.to_string(), "bfloat16");
    }

    fn io_of(bytes: Vec<u8>) -> ModelIo {
        ModelIo::from_model(&Model::from_bytes(bytes, "linear.onnx").unwrap())
    }
}
