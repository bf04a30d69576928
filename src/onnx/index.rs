//! The tensor index: what each tensor is, where it lives and where its payload bytes are.

use std::fmt;
use std::ops::Range;

use super::dtype::{DType, TypedField};
use super::quant::Quant;
use super::wire::LenPrefix;

/// Where a tensor is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// `graph.initializer`.
    Initializer,
    /// The value of a `Constant` node.
    Constant,
    /// `graph.sparse_initializer`, or a `Constant`'s `sparse_value` (listed, never mutated).
    SparseInitializer,
    /// A float-array attribute of an `ai.onnx.ml` operator that holds weights (a linear
    /// model's coefficients, a tree ensemble's leaf values): named `<node>.<attribute>`.
    MlAttribute,
}

impl Location {
    /// `"initializer"`, `"constant"`, `"sparse_initializer"` or `"ml_attribute"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Initializer => "initializer",
            Location::Constant => "constant",
            Location::SparseInitializer => "sparse_initializer",
            Location::MlAttribute => "ml_attribute",
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a tensor's values are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// No values (zero elements).
    Empty,
    /// `raw_data`, little-endian.
    Raw,
    /// A typed repeated field; `packed` when every occurrence is packed.
    Typed {
        /// Which field.
        field: TypedField,
        /// Packed encoding (the norm).
        packed: bool,
    },
    /// An external file, relative to the model's folder.
    External {
        /// The `location` entry as written.
        location: String,
        /// Byte offset in the file.
        offset: u64,
        /// Byte length.
        length: u64,
    },
    /// A `Constant` node's `value_float` attribute.
    ValueFloat,
    /// A `Constant` node's `value_floats` attribute.
    ValueFloats,
    /// A `Constant` node's `value_int` attribute.
    ValueInt,
    /// A `Constant` node's `value_ints` attribute.
    ValueInts,
    /// A `Constant` node's `value_string` attribute.
    ValueString,
    /// A `Constant` node's `value_strings` attribute.
    ValueStrings,
    /// The `floats` of an attribute ([`Location::MlAttribute`]); `packed` when every
    /// occurrence is packed.
    Floats {
        /// Packed encoding (the norm).
        packed: bool,
    },
}

impl Storage {
    /// The storage form in one word: `empty`, `raw_data`, the typed field's name (e.g.
    /// `float_data`), `external`, or the Constant attribute (`value_float`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::Empty => "empty",
            Storage::Raw => "raw_data",
            Storage::Typed { field, .. } => field.name(),
            Storage::External { .. } => "external",
            Storage::ValueFloat => "value_float",
            Storage::ValueFloats => "value_floats",
            Storage::ValueInt => "value_int",
            Storage::ValueInts => "value_ints",
            Storage::ValueString => "value_string",
            Storage::ValueStrings => "value_strings",
            Storage::Floats { .. } => "floats",
        }
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Empty => f.write_str("empty"),
            Storage::Raw => f.write_str("raw_data"),
            Storage::Typed { field, packed } => {
                write!(f, "{}", field.name())?;
                if !packed {
                    f.write_str(" (unpacked)")?;
                }
                Ok(())
            }
            Storage::External {
                location,
                offset,
                length,
            } => write!(f, "external {location:?} @{offset}+{length}"),
            Storage::ValueFloat => f.write_str("value_float"),
            Storage::ValueFloats => f.write_str("value_floats"),
            Storage::ValueInt => f.write_str("value_int"),
            Storage::ValueInts => f.write_str("value_ints"),
            Storage::ValueString => f.write_str("value_string"),
            Storage::ValueStrings => f.write_str("value_strings"),
            Storage::Floats { packed: true } => f.write_str("floats"),
            Storage::Floats { packed: false } => f.write_str("floats (unpacked)"),
        }
    }
}

/// A stretch of a repeated scalar field's values in the model file.
///
/// Packed (`prefix` is `Some`): `start..end` is the packed content. Unpacked: `start..end`
/// spans consecutive `(key, value)` pairs of the field, each key `key_len` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: u64,
    pub end: u64,
    pub count: u64,
    pub key_len: u8,
    pub prefix: Option<LenPrefix>,
}

/// Where a tensor's payload bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// Nothing to read (zero elements, or values only counted: strings, ints of Constants).
    None,
    /// `raw_data` content in the model file.
    Raw { start: u64, len: u64 },
    /// Fixed-width values (`float_data`, `double_data`, `value_float(s)`).
    Fixed { width: u8, runs: Vec<Run> },
    /// Varint values (`int32_data`, `int64_data`, `uint64_data`).
    Varint { runs: Vec<Run> },
    /// A byte range of external file number `file`.
    External { file: usize, offset: u64, len: u64 },
}

/// One tensor of the model: identity, type, shape, where it lives and how it is stored.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The tensor's name (for a `Constant`, its output name).
    pub name: String,
    /// The subgraph path holding it: `""` for the main graph, else e.g. `If_0/then_branch`
    /// (node name, or `node<i>` when the node has none, then the attribute name, `name[i]` for
    /// a list of graphs; nested scopes joined with `/`).
    pub scope: String,
    /// The name of the `GraphProto` holding it.
    pub graph_name: String,
    /// Label of the `Constant` node declaring it, if any.
    pub node: Option<String>,
    /// Element type.
    pub dtype: DType,
    /// Shape (for a sparse tensor, the dense shape).
    pub dims: Vec<i64>,
    /// Number of elements (product of `dims`).
    pub elements: u64,
    /// Where it is declared.
    pub location: Location,
    /// How its values are stored.
    pub storage: Storage,
    /// Why it is never mutable when it feeds a shape-like input (in its own scope or a nested
    /// one), e.g. `shape input of Reshape 'r'`: a fact the mutation policy
    /// ([`crate::mutate::Selection`]) reads.
    pub(crate) shape_use: Option<String>,
    pub(crate) key: String,
    pub(crate) payload: Payload,
    /// Enclosing length-delimited fields, outermost first; the last is the tensor's own.
    pub(crate) ancestors: Vec<LenPrefix>,
    /// Declared in a `training_info` graph.
    pub(crate) training: bool,
    /// An `ai.onnx.ml` attribute that is not a weight by default (a tree's thresholds, a
    /// linear model's intercepts): mutable only when `--include` names it.
    pub(crate) opt_in: bool,
    /// For an integer tensor a quantized operator reads (`DequantizeLinear`, `QLinearConv`...):
    /// its scales and zero points, or why smd-onnx cannot requantize it.
    pub(crate) quant: Option<Result<Quant, String>>,
    /// The quantized tensor whose scale or zero point this is (never mutated).
    pub(crate) quant_param_of: Option<String>,
}

impl TensorInfo {
    /// A key unique within the model and stable across runs: the scope path and the name
    /// (`If_0/then_branch/w`), with `#2`, `#3`... appended to repeated names.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The byte ranges holding the payload values, in the model file or, for external data,
    /// in [`TensorInfo::external_file`]. Unpacked typed fields span their keys too.
    pub fn payload_ranges(&self) -> Vec<Range<u64>> {
        match &self.payload {
            Payload::None => Vec::new(),
            Payload::Raw { start, len } => std::iter::once(*start..start + len).collect(),
            Payload::Fixed { runs, .. } | Payload::Varint { runs } => {
                runs.iter().map(|r| r.start..r.end).collect()
            }
            Payload::External { offset, len, .. } => {
                std::iter::once(*offset..offset + len).collect()
            }
        }
    }

    /// For external data: which of the model's external files ([`crate::onnx::Model::external_files`]).
    pub fn external_file(&self) -> Option<usize> {
        match self.payload {
            Payload::External { file, .. } => Some(file),
            _ => None,
        }
    }

    /// For an integer tensor that a quantized operator reads (`DequantizeLinear`,
    /// `QLinearConv`, `MatMulInteger`...): how it maps to float values (`Ok`), or why smd-onnx
    /// cannot requantize it (`Err`); `None` for other tensors.
    pub fn quantization(&self) -> Option<Result<&Quant, &str>> {
        self.quant
            .as_ref()
            .map(|q| q.as_ref().map_err(String::as_str))
    }

    /// How many values smd-onnx reads from and writes to the tensor: its elements, or a
    /// quantized tensor's integers (`MatMulNBits` packs two 4-bit integers in each uint8).
    pub fn value_count(&self) -> u64 {
        match &self.quant {
            Some(Ok(q)) => q.count() as u64,
            _ => self.elements,
        }
    }

    /// The shape as `[a, b, c]`.
    pub fn shape_string(&self) -> String {
        let d: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!("[{}]", d.join(", "))
    }
}
