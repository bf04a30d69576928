//! Model I/O: a wire-level tensor index over a memory-mapped model, typed messages where the
//! graph must change, dtypes, external data, the byte-faithful child writer.
//!
//! [`Model::open`] maps the file and walks the protobuf wire format (never decoding or
//! copying payloads) to list every tensor: initializers, `Constant` nodes (also
//! `value_float(s)`), subgraphs of `If`/`Loop`/`Scan` at any depth, sparse initializers. For
//! each it records the dtype, shape, storage form and the exact byte ranges of its payload,
//! plus the enclosing length prefixes, so that [`write_child`] can produce a child that is the
//! parent byte for byte except the changed payloads.

pub mod build;
mod dtype;
mod external;
mod facts;
mod index;
mod meta;
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod proto;
mod quant;
mod scan;
pub mod tail;
mod values;
mod wire;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use dtype::{DType, TypedField};
pub use external::ExternalFile;
pub use facts::{Dim, ModelFacts, Opset, ValueFacts, ValueType};
pub use index::{Location, Storage, TensorInfo};
pub use quant::{Quant, integers};
pub(crate) use writer::raw_bytes;
pub use writer::{
    SMD_META_PREFIX, TEMPLATE_LOCATION, child_bytes, external_template, write_child,
    write_child_to, write_child_with_metadata,
};

use crate::buffer::{self, Bytes};
use crate::tensor::TensorData;
use scan::{LocField, ShapeUse};

/// Errors from reading, indexing or writing a model. Each names the file and, when known, the
/// tensor, on one line.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The path is a directory or another non-regular file (a pipe, a device).
    #[error("{}: {what}, not a model file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// `"is a directory"` or `"is not a regular file"`.
        what: &'static str,
    },
    /// The file is empty.
    #[error("{}: empty file, not an ONNX model", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file exceeds protobuf's 2 GiB message limit.
    #[error(
        "{}: {size} bytes is beyond protobuf's 2 GiB limit; store the weights as external data",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The protobuf encoding is broken.
    #[error("{}: not a valid ONNX model: byte {offset} ({context}): {what}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// The enclosing messages, e.g. `graph 'g' > node 'Conv_0' > attribute 'value'`.
        context: String,
        /// What is wrong.
        what: String,
    },
    /// The file parses but holds no graph.
    #[error("{}: not an ONNX model: no graph", path.display())]
    NoGraph {
        /// The file.
        path: PathBuf,
    },
    /// The model imports no operator set.
    #[error("{}: not a valid ONNX model: no opset_import", path.display())]
    NoOpset {
        /// The file.
        path: PathBuf,
    },
    /// Nodes use an operator domain the model does not import.
    #[error("{}: not a valid ONNX model: nodes use domain '{domain}' but no opset_import names it", path.display())]
    MissingOpset {
        /// The file.
        path: PathBuf,
        /// The domain.
        domain: String,
    },
    /// A tensor is inconsistent (size, dtype, dims) or cannot be read.
    #[error("{}: tensor '{tensor}': {what}", path.display())]
    Tensor {
        /// The model file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        what: String,
    },
    /// A tensor's external data is missing, too short, or outside the model's folder.
    #[error("{}: tensor '{tensor}': external data {location:?}: {what}", path.display())]
    External {
        /// The model file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The `location` entry.
        location: String,
        /// What is wrong.
        what: String,
    },
    /// A change given to the child writer does not fit its tensor.
    #[error("{}: cannot change tensor '{tensor}': {what}", path.display())]
    Change {
        /// The model file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        what: String,
    },
    /// An in-memory child was asked of a model with external data.
    #[error(
        "{}: the model has external data: write the child to a file (write_child)",
        path.display()
    )]
    NeedsFile {
        /// The model file.
        path: PathBuf,
    },
    /// Writing the child's files failed, or they would overwrite an input
    /// ([`OutputError::Overwrite`](crate::output::OutputError::Overwrite)).
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// Writing a child to a caller's writer failed.
    #[error("writing the child model: {source}")]
    Write {
        /// The cause.
        source: std::io::Error,
    },
    /// The model could not be decoded into typed messages.
    #[error("{}: cannot decode the model: {message}", path.display())]
    Decode {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A bug: an invariant of the index did not hold.
    #[error("{}: internal error: {what}", path.display())]
    Internal {
        /// The model file.
        path: PathBuf,
        /// What.
        what: String,
    },
}

/// A `location` string to rewrite in a child, and the external file it names.
#[derive(Debug, Clone)]
pub(crate) struct LocRef {
    pub file: usize,
    pub field: LocField,
}

/// An indexed ONNX model: the mapped bytes, its external files, and every tensor.
pub struct Model {
    path: PathBuf,
    bytes: Bytes,
    externals: Vec<ExternalFile>,
    tensors: Vec<TensorInfo>,
    facts: ModelFacts,
    locations: Vec<LocRef>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("len", &self.bytes.len())
            .field("tensors", &self.tensors.len())
            .field("externals", &self.externals)
            .finish()
    }
}

/// Largest model file protobuf can parse.
const MAX_MODEL_BYTES: u64 = i32::MAX as u64;

impl Model {
    /// Memory-maps and indexes the model at `path` (and its external data files). Payloads
    /// are not read: only their positions and sizes are checked.
    pub fn open(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            // Opening a pipe would block; a device could be endless.
            return Err(ModelError::NotAFile {
                path: path.to_path_buf(),
                what: if meta.is_dir() {
                    "is a directory"
                } else {
                    "is not a regular file"
                },
            });
        }
        if meta.len() > MAX_MODEL_BYTES {
            return Err(ModelError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            });
        }
        let file = std::fs::File::open(path).map_err(io)?;
        let bytes = buffer::map_file(&file).map_err(io)?;
        Self::index(path.to_path_buf(), bytes)
    }

    /// Indexes a model held in memory. `path` names it in messages, and external data is
    /// looked up relative to its folder.
    pub fn from_bytes(bytes: Vec<u8>, path: impl AsRef<Path>) -> Result<Model, ModelError> {
        Self::index(path.as_ref().to_path_buf(), Bytes::from(bytes))
    }

    fn index(path: PathBuf, bytes: Bytes) -> Result<Model, ModelError> {
        if bytes.is_empty() {
            return Err(ModelError::Empty { path });
        }
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(ModelError::TooLarge {
                path,
                size: bytes.len() as u64,
            });
        }
        let mut scan = scan::Scanner::new(&bytes, &path).run()?;
        let quant_uses = std::mem::take(&mut scan.quant_uses);
        let mut tensors = scan.tensors;
        let (externals, which) = external::resolve(&path, &scan.externals, &mut tensors)?;
        let locations = Self::location_refs(&scan.externals, &which);
        let opsets = Self::imported_opsets(&path, &bytes, &scan.opsets, &scan.domains)?;
        let (inputs, outputs) =
            Self::interface_facts(&path, &bytes, &scan.inputs, &scan.outputs, &tensors)?;
        let facts = ModelFacts {
            ir_version: scan.ir_version,
            opsets,
            producer_name: scan.producer_name,
            producer_version: scan.producer_version,
            graph_name: scan.graph_name,
            inputs,
            outputs,
        };

        assign_keys(&mut tensors);
        let shape_use = shape_uses(&tensors, &scan.shape_uses);
        for (t, s) in tensors.iter_mut().zip(shape_use) {
            t.shape_use = s;
        }
        let mut model = Model {
            path,
            bytes,
            externals,
            tensors,
            facts,
            locations,
        };
        model.resolve_quant(&quant_uses);
        Ok(model)
    }

    /// Every `location` string of the external references, with the file it names (`which`,
    /// one per reference).
    fn location_refs(externals: &[scan::ExtRef], which: &[usize]) -> Vec<LocRef> {
        let mut locations = Vec::new();
        for (r, &file) in externals.iter().zip(which) {
            for field in &r.fields {
                locations.push(LocRef {
                    file,
                    field: field.clone(),
                });
            }
        }
        locations
    }

    /// Decodes the message at `range` of the model's bytes; `context` names it in errors.
    fn decode_at<T>(
        path: &Path,
        bytes: &[u8],
        range: (usize, usize),
        context: &str,
        decode: fn(&[u8]) -> Result<T, prost::DecodeError>,
    ) -> Result<T, ModelError> {
        decode(bytes.get(range.0..range.1).unwrap_or(&[])).map_err(|e| ModelError::Malformed {
            path: path.to_path_buf(),
            offset: range.0 as u64,
            context: context.to_string(),
            what: e.to_string(),
        })
    }

    /// The model's opset imports (at `ranges`), which must name every domain nodes use.
    fn imported_opsets(
        path: &Path,
        bytes: &[u8],
        ranges: &[(usize, usize)],
        domains: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<Opset>, ModelError> {
        let mut opsets = Vec::new();
        for &r in ranges {
            opsets.push(Self::decode_at(
                path,
                bytes,
                r,
                "opset_import",
                facts::opset,
            )?);
        }
        // The ONNX checker's rule; it also catches files cut short between opset entries.
        for d in domains {
            let imported = opsets
                .iter()
                .any(|o| o.domain == *d || (d.is_empty() && o.domain == "ai.onnx"));
            if !imported {
                return Err(ModelError::MissingOpset {
                    path: path.to_path_buf(),
                    domain: if d.is_empty() {
                        "ai.onnx".into()
                    } else {
                        d.clone()
                    },
                });
            }
        }
        Ok(opsets)
    }

    /// The main graph's inputs (at `inputs`, less those that are initializers) and outputs
    /// (at `outputs`).
    fn interface_facts(
        path: &Path,
        bytes: &[u8],
        inputs: &[(usize, usize)],
        outputs: &[(usize, usize)],
        tensors: &[TensorInfo],
    ) -> Result<(Vec<ValueFacts>, Vec<ValueFacts>), ModelError> {
        let init_names: HashSet<&str> = tensors
            .iter()
            .filter(|t| {
                t.scope.is_empty()
                    && !t.training
                    && matches!(
                        t.location,
                        Location::Initializer | Location::SparseInitializer
                    )
            })
            .map(|t| t.name.as_str())
            .collect();
        let mut real_inputs = Vec::new();
        for &r in inputs {
            let v = Self::decode_at(path, bytes, r, "graph input", facts::value_facts)?;
            if !init_names.contains(v.name.as_str()) {
                real_inputs.push(v);
            }
        }
        let mut graph_outputs = Vec::new();
        for &r in outputs {
            graph_outputs.push(Self::decode_at(
                path,
                bytes,
                r,
                "graph output",
                facts::value_facts,
            )?);
        }
        Ok((real_inputs, graph_outputs))
    }

    /// The model file as given to [`Model::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model file's bytes (memory-mapped).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Every tensor, in file order (a subgraph's tensors where its node is).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The index of the tensor with this [`TensorInfo::key`].
    pub fn find(&self, key: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.key() == key)
    }

    /// IR version, opsets, producer, inputs and outputs.
    pub fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    /// The external data files, in order of first reference.
    pub fn external_files(&self) -> &[ExternalFile] {
        &self.externals
    }

    /// True when some tensor keeps its values in an external file.
    pub fn has_external_data(&self) -> bool {
        !self.externals.is_empty()
    }

    /// The model file and its external files: what must never be written.
    pub fn input_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.path.clone()];
        v.extend(self.externals.iter().map(|f| f.path.clone()));
        v
    }

    pub(crate) fn locations(&self) -> &[LocRef] {
        &self.locations
    }

    /// Decodes the values of a float32/float16/bfloat16/float64 tensor from any storage form;
    /// a quantized tensor's ([`TensorInfo::quantization`]) as float32, dequantized.
    pub fn read_values(&self, t: &TensorInfo) -> Result<TensorData, ModelError> {
        let err = |what: String| ModelError::Tensor {
            path: self.path.clone(),
            tensor: t.name.clone(),
            what,
        };
        if let Some(v) = self.dequantized(t) {
            return v.map(TensorData::F32);
        }
        if t.location == Location::SparseInitializer {
            return Err(err("cannot read values of a sparse tensor".into()));
        }
        let ext = t
            .external_file()
            .and_then(|i| self.externals.get(i))
            .map(|f| &*f.bytes);
        values::decode(t.dtype, t.elements, &t.payload, &self.bytes, ext).map_err(err)
    }

    /// The bytes of a tensor stored as raw little-endian data (`raw_data` or external), without
    /// copying; `None` for typed-field storage and sparse tensors.
    pub fn raw_payload(&self, t: &TensorInfo) -> Option<&[u8]> {
        match t.payload {
            index::Payload::Raw { start, len } => self
                .bytes
                .get(usize::try_from(start).ok()?..usize::try_from(start.checked_add(len)?).ok()?),
            index::Payload::External { file, offset, len } => {
                let f = self.externals.get(file)?;
                f.bytes.get(
                    usize::try_from(offset).ok()?
                        ..usize::try_from(offset.checked_add(len)?).ok()?,
                )
            }
            _ => None,
        }
    }

    /// The value of top-level metadata entry `key` (the last one, if repeated).
    pub fn metadata(&self, key: &str) -> Option<String> {
        meta::entries(&self.bytes)
            .ok()?
            .into_iter()
            .rfind(|e| e.key == key)
            .map(|e| e.value)
    }

    /// Values that are not graph outputs but hold the class scores a graph output is computed
    /// from (the input of skl2onnx's `ZipMap`; see [`tail::hidden_scores`]), typed from the
    /// graph's value info when declared, else as float tensors of unknown shape.
    pub fn hidden_scores(&self) -> Vec<ValueFacts> {
        // The index already checked the graph decodes; a failure here only means "none".
        tail::hidden_scores_of(&self.bytes)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, info)| ValueFacts {
                ty: info.and_then(|i| i.r#type).map_or(
                    ValueType::Tensor {
                        elem: DType::from_onnx(1),
                        shape: None,
                    },
                    |t| facts::convert_type(&t, 0),
                ),
                name,
            })
            .collect()
    }

    /// BLAKE3 (hex) of the model: the model file's bytes, then for each external file its
    /// location, size and bytes. For a model without external data this is the file's plain
    /// BLAKE3 (as `b3sum` prints it).
    pub fn content_hash(&self) -> Result<String, ModelError> {
        let mut h = blake3::Hasher::new();
        hash_bytes(&mut h, &self.bytes);
        for f in &self.externals {
            h.update(b"\0external\0");
            h.update(f.location.as_bytes());
            h.update(&[0]);
            h.update(&(f.bytes.len() as u64).to_le_bytes());
            hash_bytes(&mut h, &f.bytes);
        }
        Ok(h.finalize().to_hex().to_string())
    }
}

fn hash_bytes(h: &mut blake3::Hasher, b: &[u8]) {
    // Multi-threaded for big inputs; the result is the same either way.
    if b.len() >= 1 << 20 {
        h.update_rayon(b);
    } else {
        h.update(b);
    }
}

/// Gives each tensor a unique key: scope path + name, `#2`, `#3`... for repeats.
fn assign_keys(tensors: &mut [TensorInfo]) {
    let mut used: HashSet<String> = HashSet::new();
    for t in tensors.iter_mut() {
        let base = if t.scope.is_empty() {
            t.name.clone()
        } else {
            format!("{}/{}", t.scope, t.name)
        };
        let mut key = base.clone();
        let mut k = 2u64;
        while used.contains(&key) {
            key = format!("{base}#{k}");
            k += 1;
        }
        used.insert(key.clone());
        t.key = key;
    }
}

/// For each tensor, the reason it is never mutable because it feeds a shape-like input in its
/// own scope or a nested one.
fn shape_uses(tensors: &[TensorInfo], uses: &[ShapeUse]) -> Vec<Option<String>> {
    let mut by_name: HashMap<&str, Vec<&ShapeUse>> = HashMap::new();
    for u in uses {
        by_name.entry(u.name.as_str()).or_default().push(u);
    }
    tensors
        .iter()
        .map(|t| {
            by_name.get(t.name.as_str()).and_then(|us| {
                us.iter()
                    .find(|u| {
                        t.scope.is_empty()
                            || u.scope == t.scope
                            || (u.scope.starts_with(&t.scope)
                                && u.scope.as_bytes().get(t.scope.len()) == Some(&b'/'))
                    })
                    .map(|u| u.reason.clone())
            })
        })
        .collect()
}
