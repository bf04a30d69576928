//! The wire-level scanner: walks ModelProto → GraphProto → NodeProto → AttributeProto →
//! (sub)graphs and tensors, recording each tensor's type, shape, storage and payload position
//! without decoding or copying payloads.

use std::path::Path;

use super::ModelError;
use super::dtype::{DType, TypedField};
use super::index::{Location, Payload, Run, Storage, TensorInfo};
use super::wire::{self, Field, LenPrefix, Reader, Wire, WireError};

/// Most dimensions accepted for one tensor (ONNX sets no limit; this guards memory).
const MAX_RANK: usize = 1024;
/// Most `external_data` entries accepted for one tensor.
const MAX_EXTERNAL_ENTRIES: usize = 64;

/// The float-array attributes of `ai.onnx.ml` operators listed as tensors: (operator,
/// attribute, weight). Weights (coefficients, leaf values) are mutable by default; the others
/// (thresholds, intercepts, kernel parameters) only when `--include` names them. Tree
/// structure (node ids, modes, features) and unused statistics (hit rates) are never listed.
const ML_ATTRIBUTES: &[(&str, &str, bool)] = &[
    ("LinearClassifier", "coefficients", true),
    ("LinearClassifier", "intercepts", false),
    ("LinearRegressor", "coefficients", true),
    ("LinearRegressor", "intercepts", false),
    ("SVMClassifier", "coefficients", true),
    ("SVMClassifier", "rho", false),
    ("SVMClassifier", "support_vectors", false),
    ("SVMClassifier", "kernel_params", false),
    ("SVMClassifier", "prob_a", false),
    ("SVMClassifier", "prob_b", false),
    ("SVMRegressor", "coefficients", true),
    ("SVMRegressor", "rho", false),
    ("SVMRegressor", "support_vectors", false),
    ("SVMRegressor", "kernel_params", false),
    ("TreeEnsembleClassifier", "class_weights", true),
    ("TreeEnsembleClassifier", "class_weights_as_tensor", true),
    ("TreeEnsembleClassifier", "base_values", false),
    ("TreeEnsembleClassifier", "base_values_as_tensor", false),
    ("TreeEnsembleClassifier", "nodes_values", false),
    ("TreeEnsembleClassifier", "nodes_values_as_tensor", false),
    ("TreeEnsembleRegressor", "target_weights", true),
    ("TreeEnsembleRegressor", "target_weights_as_tensor", true),
    ("TreeEnsembleRegressor", "base_values", false),
    ("TreeEnsembleRegressor", "base_values_as_tensor", false),
    ("TreeEnsembleRegressor", "nodes_values", false),
    ("TreeEnsembleRegressor", "nodes_values_as_tensor", false),
    ("TreeEnsemble", "leaf_weights", true),
    ("TreeEnsemble", "nodes_splits", false),
];

/// A `location` value inside a tensor's `external_data`, to be rewritten in a child.
#[derive(Debug, Clone)]
pub(crate) struct LocField {
    /// The string's content range.
    pub start: u64,
    pub end: u64,
    /// Enclosing length prefixes, outermost first; the last is the string's own.
    pub ancestors: Vec<LenPrefix>,
}

/// A tensor whose values are in an external file, not yet resolved.
#[derive(Debug, Clone)]
pub(crate) struct ExtRef {
    /// Index in the tensor list, when the tensor is listed.
    pub tensor: Option<usize>,
    /// Name for messages.
    pub name: String,
    pub location: String,
    pub offset: u64,
    pub length: u64,
    /// Every `location` entry of the tensor (normally one).
    pub fields: Vec<LocField>,
}

/// A use of a tensor name at a shape-like input position.
#[derive(Debug, Clone)]
pub(crate) struct ShapeUse {
    pub name: String,
    pub scope: String,
    pub reason: String,
}

/// A node that reads a quantized weight: which integer tensor, with which scale (none for
/// the integer operators, whose scale is applied later) and zero point, along which axis.
#[derive(Debug, Clone)]
pub(crate) struct QuantUse {
    pub x: String,
    pub scale: Option<String>,
    pub zero_point: Option<String>,
    pub axis: i64,
    pub block_size: i64,
    /// For `MatMulNBits` (com.microsoft): its packed weight's layout.
    pub nbits: Option<NBits>,
    /// The scope of the node's graph.
    pub scope: String,
    /// The operator, for messages.
    pub op: String,
}

/// The layout of `MatMulNBits`' weight B: `n` rows of `⌈k / block⌉` blocks of `block`
/// `bits`-bit integers, packed low bits first; one scale (and zero point) per block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NBits {
    pub k: i64,
    pub n: i64,
    pub bits: i64,
    /// Whether the node has a `g_idx` input (act-order: blocks are not runs of K).
    pub g_idx: bool,
}

/// Operators that read quantized weights (see [`quant_use`]).
const QUANT_OPS: &[&str] = &[
    "DequantizeLinear",
    "MatMulNBits",
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "MatMulInteger",
    "ConvInteger",
];

/// The quantized weight a node reads, if it is one of [`QUANT_OPS`] in its domain: the
/// weight input, its scale and zero point inputs, and the axis its per-axis scales follow
/// (`int` reads the node's int attributes, with a default).
fn quant_use(
    op: &str,
    domain: &str,
    inputs: &[String],
    int: &dyn Fn(&str, i64) -> i64,
    scope: &str,
) -> Option<QuantUse> {
    let default = matches!(domain, "" | "ai.onnx");
    // (weight, scale, zero point) input positions; the axis of per-channel scales.
    let (x, scale, zp, axis) = match op {
        "DequantizeLinear" if default || domain == "com.microsoft" => {
            (0, Some(1), 2, int("axis", 1))
        }
        "QLinearConv" if default => (3, Some(4), 5, 0),
        // Per output column: the last axis.
        "QLinearMatMul" if default => (3, Some(4), 5, -1),
        // B is [K, N] (per column: axis 1), or [N, K] when transposed.
        "QGemm" if domain == "com.microsoft" => {
            (3, Some(4), 5, if int("transB", 0) == 0 { 1 } else { 0 })
        }
        "MatMulInteger" if default => (1, None, 3, -1),
        "ConvInteger" if default => (1, None, 3, 0),
        // B is [N, K blocks, block bytes]: one scale per block of a row (see `NBits`).
        "MatMulNBits" if domain == "com.microsoft" => (1, Some(2), 3, 1),
        _ => return None,
    };
    let named = |i: usize| inputs.get(i).filter(|n| !n.is_empty()).cloned();
    Some(QuantUse {
        x: named(x)?,
        scale: match scale {
            Some(i) => Some(named(i)?),
            None => None,
        },
        zero_point: named(zp),
        axis,
        block_size: int("block_size", 0),
        nbits: (op == "MatMulNBits").then(|| NBits {
            k: int("K", 0),
            n: int("N", 0),
            bits: int("bits", 4),
            g_idx: inputs.get(4).is_some_and(|n| !n.is_empty()),
        }),
        scope: scope.to_string(),
        op: op.to_string(),
    })
}

/// Everything the scan finds.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub tensors: Vec<TensorInfo>,
    pub externals: Vec<ExtRef>,
    pub shape_uses: Vec<ShapeUse>,
    pub ir_version: Option<i64>,
    pub producer_name: String,
    pub producer_version: String,
    pub model_domain: String,
    pub graph_name: String,
    /// Content ranges of `opset_import` entries and of the main graph's inputs and outputs.
    pub opsets: Vec<(usize, usize)>,
    pub inputs: Vec<(usize, usize)>,
    pub outputs: Vec<(usize, usize)>,
    /// Operator domains used by graph nodes (`""` for the default one), not function bodies.
    pub domains: std::collections::BTreeSet<String>,
    /// The nodes of listed graphs that read quantized weights.
    pub quant_uses: Vec<QuantUse>,
}

#[derive(Debug, Default)]
struct Typed {
    runs: Vec<Run>,
    count: u64,
    packed: bool,
    unpacked: bool,
}

#[derive(Debug)]
struct ExtEntry {
    key: String,
    value: String,
    field: Option<LocField>,
}

#[derive(Debug, Default)]
struct TensorScan {
    name: Option<String>,
    dims: Vec<i64>,
    data_type: Option<u64>,
    segment: bool,
    raw: Option<(u64, u64)>,
    /// Indexed like [`TYPED`].
    typed: [Typed; 6],
    ext: Vec<ExtEntry>,
    data_location: u64,
}

const TYPED: [TypedField; 6] = [
    TypedField::FloatData,
    TypedField::Int32Data,
    TypedField::StringData,
    TypedField::Int64Data,
    TypedField::DoubleData,
    TypedField::Uint64Data,
];

/// A tensor's validated type, shape and storage.
struct Finished {
    dtype: DType,
    dims: Vec<i64>,
    elements: u64,
    storage: Storage,
    payload: Payload,
    ext: Option<ExtRef>,
}

/// How the node holding an attribute matters to it.
struct NodeCtx<'s> {
    label: String,
    is_constant: bool,
    /// The operator, for nodes of the `ai.onnx.ml` domain.
    ml_op: Option<String>,
    output: Option<String>,
    scope: &'s str,
    listed: bool,
    training: bool,
    graph: usize,
}

/// Walks a model's bytes.
pub(crate) struct Scanner<'a> {
    buf: &'a [u8],
    path: &'a Path,
    ctx: Vec<String>,
    anc: Vec<LenPrefix>,
    graph_names: Vec<String>,
    tensor_graph: Vec<usize>,
    /// Per tensor: 0 from its graph's `initializer`, 1 `sparse_initializer`, 2 from a node.
    tensor_rank: Vec<u8>,
    out: Scan,
}

impl<'a> Scanner<'a> {
    /// A scanner over a whole model file.
    pub fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Scanner {
            buf,
            path,
            ctx: Vec::new(),
            anc: Vec::new(),
            graph_names: Vec::new(),
            tensor_graph: Vec::new(),
            tensor_rank: Vec::new(),
            out: Scan::default(),
        }
    }

    /// Scans the model.
    pub fn run(mut self) -> Result<Scan, ModelError> {
        let mut r = Reader::new(self.buf, 0, self.buf.len());
        let mut graph_seen = false;
        let mut training_i = 0usize;
        while let Some(f) = self.next(&mut r)? {
            match f.number {
                1 => self.out.ir_version = Some(self.varint(&f, "ir_version")? as i64),
                2 => self.out.producer_name = self.string(&f, "producer_name")?,
                3 => self.out.producer_version = self.string(&f, "producer_version")?,
                4 => self.out.model_domain = self.string(&f, "domain")?,
                5 => {
                    self.varint(&f, "model_version")?;
                }
                7 => {
                    self.expect(&f, Wire::Len, "graph")?;
                    if graph_seen {
                        return Err(self.bad(f.key_pos, "the model has two `graph` fields"));
                    }
                    graph_seen = true;
                    self.enter(&f, "graph".into());
                    self.scan_graph(&f, "", true, false, true)?;
                    self.leave();
                }
                8 => {
                    self.expect(&f, Wire::Len, "opset_import")?;
                    self.out.opsets.push((f.start, f.end));
                }
                20 => {
                    self.expect(&f, Wire::Len, "training_info")?;
                    self.enter(&f, format!("training_info[{training_i}]"));
                    self.scan_training(&f, training_i)?;
                    self.leave();
                    training_i += 1;
                }
                25 => {
                    self.expect(&f, Wire::Len, "functions")?;
                    self.enter(&f, "function".into());
                    self.scan_function(&f)?;
                    self.leave();
                }
                6 | 14 | 26 => self.expect(&f, Wire::Len, "ModelProto field")?,
                _ => {}
            }
        }
        if !graph_seen {
            return Err(ModelError::NoGraph {
                path: self.path.to_path_buf(),
            });
        }
        // Required by the ONNX spec; also catches most files cut short after the graph.
        if self.out.opsets.is_empty() {
            return Err(ModelError::NoOpset {
                path: self.path.to_path_buf(),
            });
        }
        for (t, g) in self.out.tensors.iter_mut().zip(&self.tensor_graph) {
            t.graph_name = self.graph_names.get(*g).cloned().unwrap_or_default();
        }
        self.out.graph_name = self.graph_names.first().cloned().unwrap_or_default();
        Ok(self.out)
    }

    // ---- helpers ----

    fn next(&self, r: &mut Reader<'_>) -> Result<Option<Field>, ModelError> {
        let at = r.pos();
        r.next_field().map_err(|e| self.wire_err(at, e))
    }

    fn context(&self) -> String {
        if self.ctx.is_empty() {
            "model".into()
        } else {
            self.ctx.join(" > ")
        }
    }

    fn wire_err(&self, at: usize, e: WireError) -> ModelError {
        self.bad(at, &e.to_string())
    }

    fn bad(&self, at: usize, what: &str) -> ModelError {
        ModelError::Malformed {
            path: self.path.to_path_buf(),
            offset: at as u64,
            context: self.context(),
            what: what.to_string(),
        }
    }

    fn tensor_err(&self, tensor: &str, what: String) -> ModelError {
        ModelError::Tensor {
            path: self.path.to_path_buf(),
            tensor: tensor.to_string(),
            what,
        }
    }

    fn expect(&self, f: &Field, wire: Wire, name: &str) -> Result<(), ModelError> {
        if f.wire == wire {
            Ok(())
        } else {
            Err(self.bad(
                f.key_pos,
                &format!(
                    "field {} ({name}) has wire type {}, expected {wire}",
                    f.number, f.wire
                ),
            ))
        }
    }

    fn varint(&self, f: &Field, name: &str) -> Result<u64, ModelError> {
        self.expect(f, Wire::Varint, name)?;
        Ok(f.value)
    }

    fn string(&self, f: &Field, name: &str) -> Result<String, ModelError> {
        self.expect(f, Wire::Len, name)?;
        Ok(String::from_utf8_lossy(&self.buf[f.start..f.end]).into_owned())
    }

    fn enter(&mut self, f: &Field, label: String) {
        if let Some(p) = f.prefix {
            self.anc.push(p);
        }
        self.ctx.push(label);
    }

    fn leave(&mut self) {
        self.ctx.pop();
        self.anc.pop();
    }

    fn check_depth(&self, at: usize) -> Result<(), ModelError> {
        if self.anc.len() > wire::MAX_DEPTH {
            Err(self.wire_err(at, WireError::TooDeep))
        } else {
            Ok(())
        }
    }

    // ---- messages ----

    fn scan_training(&mut self, f: &Field, i: usize) -> Result<(), ModelError> {
        let mut r = Reader::new(self.buf, f.start, f.end);
        while let Some(g) = self.next(&mut r)? {
            let which = match g.number {
                1 => "initialization",
                2 => "algorithm",
                3 | 4 => {
                    self.expect(&g, Wire::Len, "binding")?;
                    continue;
                }
                _ => continue,
            };
            self.expect(&g, Wire::Len, which)?;
            self.enter(&g, which.into());
            self.scan_graph(
                &g,
                &format!("training_info[{i}]/{which}"),
                true,
                true,
                false,
            )?;
            self.leave();
        }
        Ok(())
    }

    fn scan_function(&mut self, f: &Field) -> Result<(), ModelError> {
        let mut r = Reader::new(self.buf, f.start, f.end);
        let mut name = String::new();
        let mut bodies = Vec::new();
        while let Some(g) = self.next(&mut r)? {
            match g.number {
                1 => name = self.string(&g, "name")?,
                7 | 11 => {
                    self.expect(&g, Wire::Len, "node")?;
                    bodies.push(g);
                }
                _ => {}
            }
        }
        let scope = format!("function:{name}");
        for (i, g) in bodies.iter().enumerate() {
            if g.number == 7 {
                self.enter(g, format!("node #{i}"));
                self.scan_node(g, &scope, false, false, usize::MAX, i)?;
            } else {
                // A default attribute value: only scanned for tensors it may hold.
                self.enter(g, "attribute".into());
                let ctx = NodeCtx {
                    label: String::new(),
                    is_constant: false,
                    ml_op: None,
                    output: None,
                    scope: &scope,
                    listed: false,
                    training: false,
                    graph: usize::MAX,
                };
                self.scan_attribute(g, &ctx)?;
            }
            self.leave();
        }
        Ok(())
    }

    fn scan_graph(
        &mut self,
        f: &Field,
        scope: &str,
        listed: bool,
        training: bool,
        main: bool,
    ) -> Result<(), ModelError> {
        self.check_depth(f.start)?;
        let gid = self.graph_names.len();
        self.graph_names.push(String::new());
        let first = self.out.tensors.len();
        let mut r = Reader::new(self.buf, f.start, f.end);
        let (mut node_i, mut init_i, mut sparse_i) = (0usize, 0usize, 0usize);
        while let Some(g) = self.next(&mut r)? {
            match g.number {
                1 => {
                    self.expect(&g, Wire::Len, "node")?;
                    self.enter(&g, format!("node #{node_i}"));
                    self.scan_node(&g, scope, listed, training, gid, node_i)?;
                    self.leave();
                    node_i += 1;
                }
                2 => {
                    let n = self.string(&g, "name")?;
                    if let Some(slot) = self.graph_names.get_mut(gid) {
                        *slot = n.clone();
                    }
                    if let Some(c) = self.ctx.last_mut() {
                        *c = format!("graph '{}'", n.escape_debug());
                    }
                }
                5 => {
                    self.expect(&g, Wire::Len, "initializer")?;
                    self.enter(&g, format!("initializer #{init_i}"));
                    let ts = self.scan_tensor(&g)?;
                    let name = ts.name.clone().unwrap_or_default();
                    let shown = if name.is_empty() {
                        format!("initializer #{init_i}")
                    } else {
                        name.clone()
                    };
                    let tensor = listed.then_some(self.out.tensors.len());
                    let fin = self.finish(ts, &shown, tensor)?;
                    if listed {
                        self.push(name, scope, gid, None, Location::Initializer, training, fin);
                    } else if let Some(e) = fin.ext {
                        self.out.externals.push(e);
                    }
                    self.leave();
                    init_i += 1;
                }
                15 => {
                    self.expect(&g, Wire::Len, "sparse_initializer")?;
                    self.enter(&g, format!("sparse_initializer #{sparse_i}"));
                    let idx = listed.then_some(self.out.tensors.len());
                    let shown = format!("sparse_initializer #{sparse_i}");
                    let (name, fin) = self.scan_sparse(&g, &shown, idx)?;
                    if listed {
                        self.push(
                            name,
                            scope,
                            gid,
                            None,
                            Location::SparseInitializer,
                            training,
                            fin,
                        );
                    }
                    self.leave();
                    sparse_i += 1;
                }
                11 => {
                    self.expect(&g, Wire::Len, "input")?;
                    if main {
                        self.out.inputs.push((g.start, g.end));
                    }
                }
                12 => {
                    self.expect(&g, Wire::Len, "output")?;
                    if main {
                        self.out.outputs.push((g.start, g.end));
                    }
                }
                10 | 13 | 14 | 16 => self.expect(&g, Wire::Len, "GraphProto field")?,
                _ => {}
            }
        }
        self.reorder(first, gid);
        Ok(())
    }

    /// Puts a graph's tensors in the order the Python `onnx` package lists them: its
    /// initializers, its sparse initializers, then what its nodes hold (subgraphs included),
    /// each group in file order.
    fn reorder(&mut self, first: usize, gid: usize) {
        let end = self.out.tensors.len();
        let rank = |i: usize| {
            if self.tensor_graph.get(i) == Some(&gid) {
                self.tensor_rank.get(i).copied().unwrap_or(2)
            } else {
                2
            }
        };
        let mut order: Vec<usize> = (first..end).collect();
        order.sort_by_key(|&i| rank(i));
        if order.iter().copied().eq(first..end) {
            return;
        }
        let mut new_pos = vec![0usize; end - first];
        for (k, &old) in order.iter().enumerate() {
            new_pos[old - first] = first + k;
        }
        let mut tail = self.out.tensors.split_off(first);
        let mut slots: Vec<Option<TensorInfo>> = tail.drain(..).map(Some).collect();
        for &old in &order {
            if let Some(t) = slots[old - first].take() {
                self.out.tensors.push(t);
            }
        }
        let g: Vec<usize> = order.iter().map(|&i| self.tensor_graph[i]).collect();
        let r: Vec<u8> = order.iter().map(|&i| self.tensor_rank[i]).collect();
        self.tensor_graph.truncate(first);
        self.tensor_graph.extend(g);
        self.tensor_rank.truncate(first);
        self.tensor_rank.extend(r);
        for e in &mut self.out.externals {
            if let Some(t) = e.tensor.as_mut()
                && (first..end).contains(t)
            {
                *t = new_pos[*t - first];
            }
        }
    }

    /// Records a tensor held in an attribute of `node` (a Constant's value, a listed tensor).
    fn push_constant(&mut self, name: String, node: &NodeCtx<'_>, fin: Finished) {
        self.push(
            name,
            node.scope,
            node.graph,
            Some(node.label.clone()),
            Location::Constant,
            node.training,
            fin,
        );
    }

    /// Records a weight array of an `ai.onnx.ml` node (see [`ML_ATTRIBUTES`]); `weight` false
    /// for the arrays mutable only when `--include` names them.
    fn push_ml(&mut self, name: String, node: &NodeCtx<'_>, fin: Finished, weight: bool) {
        self.push(
            name,
            node.scope,
            node.graph,
            Some(node.label.clone()),
            Location::MlAttribute,
            node.training,
            fin,
        );
        if let Some(t) = self.out.tensors.last_mut() {
            t.opt_in = !weight;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        name: String,
        scope: &str,
        gid: usize,
        node: Option<String>,
        location: Location,
        training: bool,
        fin: Finished,
    ) {
        let node_tensor = node.is_some();
        let mut ancestors = self.anc.clone();
        ancestors.shrink_to_fit();
        self.out.tensors.push(TensorInfo {
            name,
            scope: scope.to_string(),
            graph_name: String::new(),
            node,
            dtype: fin.dtype,
            dims: fin.dims,
            elements: fin.elements,
            location,
            storage: fin.storage,
            shape_use: None,
            key: String::new(),
            payload: fin.payload,
            ancestors,
            training,
            opt_in: false,
            quant: None,
            quant_param_of: None,
        });
        self.tensor_graph.push(gid);
        self.tensor_rank.push(match (location, node_tensor) {
            (_, true) => 2,
            (Location::Initializer, false) => 0,
            _ => 1,
        });
        if let Some(e) = fin.ext {
            self.out.externals.push(e);
        }
    }

    fn scan_node(
        &mut self,
        f: &Field,
        scope: &str,
        listed: bool,
        training: bool,
        gid: usize,
        index: usize,
    ) -> Result<(), ModelError> {
        self.check_depth(f.start)?;
        let mut r = Reader::new(self.buf, f.start, f.end);
        let mut inputs: Vec<String> = Vec::new();
        let mut output: Option<String> = None;
        let mut name = String::new();
        let mut op = String::new();
        let mut domain = String::new();
        let mut attrs: Vec<Field> = Vec::new();
        while let Some(g) = self.next(&mut r)? {
            match g.number {
                1 => inputs.push(self.string(&g, "input")?),
                2 => {
                    let o = self.string(&g, "output")?;
                    output.get_or_insert(o);
                }
                3 => name = self.string(&g, "name")?,
                4 => op = self.string(&g, "op_type")?,
                7 => domain = self.string(&g, "domain")?,
                5 => {
                    self.expect(&g, Wire::Len, "attribute")?;
                    attrs.push(g);
                }
                6 | 8..=10 => self.expect(&g, Wire::Len, "NodeProto field")?,
                _ => {}
            }
        }
        // Unnamed nodes are `node<i>` (index in their graph), as the fixtures' golden files say.
        let label = if name.is_empty() {
            format!("node{index}")
        } else {
            name
        };
        if let Some(c) = self.ctx.last_mut() {
            *c = format!("node '{}'", label.escape_debug());
        }
        if listed {
            let d = if domain == "ai.onnx" { "" } else { &domain };
            if !self.out.domains.contains(d) {
                self.out.domains.insert(d.to_string());
            }
            for (i, input) in inputs.iter().enumerate() {
                if !input.is_empty() && shape_like(&op, i) {
                    self.out.shape_uses.push(ShapeUse {
                        name: input.clone(),
                        scope: scope.to_string(),
                        reason: format!("shape input of {op} '{label}'"),
                    });
                }
            }
        }
        let ctx = NodeCtx {
            is_constant: op == "Constant" && (domain.is_empty() || domain == "ai.onnx"),
            ml_op: (domain == "ai.onnx.ml").then(|| op.clone()),
            label,
            output,
            scope,
            listed,
            training,
            graph: gid,
        };
        let mut ints = Vec::new();
        for a in &attrs {
            self.enter(a, "attribute".into());
            ints.push(self.scan_attribute(a, &ctx)?);
            self.leave();
        }
        if listed && QUANT_OPS.contains(&op.as_str()) {
            self.push_quant_use(&op, &domain, &inputs, &ints, scope);
        }
        Ok(())
    }

    /// Records a node of `scope` that reads a quantized weight (see [`quant_use`]).
    fn push_quant_use(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[String],
        ints: &[(String, Option<i64>)],
        scope: &str,
    ) {
        let int = |name: &str, default: i64| {
            ints.iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, i)| *i)
                .unwrap_or(default)
        };
        if let Some(u) = quant_use(op, domain, inputs, &int, scope) {
            self.out.quant_uses.push(u);
        }
    }

    /// Scans an attribute for the tensors it holds; returns its name and int value (`i`, when
    /// it has one).
    fn scan_attribute(
        &mut self,
        f: &Field,
        node: &NodeCtx<'_>,
    ) -> Result<(String, Option<i64>), ModelError> {
        let a = self.read_attribute(f)?;
        let int = (a.name.clone(), a.has_i.then_some(a.i));
        if let Some(c) = self.ctx.last_mut() {
            *c = format!("attribute '{}'", a.name.escape_debug());
        }
        let constant = node.is_constant && node.listed;
        self.scan_attribute_value(&a, node, constant)?;
        self.scan_attribute_lists(&a, node)?;
        if let Some(weight) = node.ml_attribute(&a.name)
            && a.floats.count > 0
        {
            let fin = Finished {
                dtype: DType::F32,
                dims: vec![a.floats.count as i64],
                elements: a.floats.count,
                storage: Storage::Floats {
                    packed: !a.floats.unpacked,
                },
                payload: Payload::Fixed {
                    width: 4,
                    runs: a.floats.runs,
                },
                ext: None,
            };
            self.push_ml(node.ml_name(&a.name), node, fin, weight);
            return Ok(int);
        }
        if !constant {
            return Ok(int);
        }
        // Constant's scalar and list value attributes are tensors too.
        let Some(fin) = a.into_constant_value() else {
            return Ok(int);
        };
        self.push_constant(node.constant_name(), node, fin);
        Ok(int)
    }

    /// Reads an AttributeProto's fields: its name, what scalar and list values it holds, and
    /// where its graphs and tensors are.
    fn read_attribute(&mut self, f: &Field) -> Result<AttrScan, ModelError> {
        self.check_depth(f.start)?;
        let mut r = Reader::new(self.buf, f.start, f.end);
        let mut a = AttrScan::default();
        while let Some(x) = self.next(&mut r)? {
            match x.number {
                1 => a.name = self.string(&x, "name")?,
                2 => {
                    self.expect(&x, Wire::Fixed32, "f")?;
                    a.float = Some(x);
                }
                3 => {
                    a.i = self.varint(&x, "i")? as i64;
                    a.has_i = true;
                }
                4 => {
                    self.expect(&x, Wire::Len, "s")?;
                    a.has_s = true;
                }
                5 | 6 | 22 => {
                    self.expect(&x, Wire::Len, "t/g/sparse_tensor")?;
                    let slot = match x.number {
                        5 => &mut a.t,
                        6 => &mut a.g,
                        _ => &mut a.sparse,
                    };
                    if slot.is_some() {
                        return Err(self.bad(x.key_pos, "attribute value field appears twice"));
                    }
                    *slot = Some(x);
                }
                7 => self.push_fixed(&mut a.floats, &x, 4, "floats")?,
                8 => a.ints += self.count_varints(&x, "ints")?,
                9 => {
                    self.expect(&x, Wire::Len, "strings")?;
                    a.strings += 1;
                }
                10 | 11 | 23 => {
                    self.expect(&x, Wire::Len, "tensors/graphs/sparse_tensors")?;
                    a.many.push(x);
                }
                13 | 14 | 15 | 21 => self.expect(&x, Wire::Len, "AttributeProto field")?,
                20 => {
                    self.varint(&x, "type")?;
                }
                _ => {}
            }
        }
        Ok(a)
    }

    /// Scans an attribute's single graph, tensor and sparse tensor; the `value` and
    /// `sparse_value` of a listed Constant node (`constant`) are listed as its tensor.
    fn scan_attribute_value(
        &mut self,
        a: &AttrScan,
        node: &NodeCtx<'_>,
        constant: bool,
    ) -> Result<(), ModelError> {
        let name = &a.name;
        if let Some(x) = a.g {
            self.enter(&x, "graph".into());
            self.scan_graph(
                &x,
                &node.child_scope(name.clone()),
                node.listed,
                node.training,
                false,
            )?;
            self.leave();
        }
        if let Some(x) = a.t {
            self.enter(&x, "tensor".into());
            let ts = self.scan_tensor(&x)?;
            let listed = constant && name == "value";
            let ml = node.ml_attribute(name);
            let shown = if listed {
                node.constant_name()
            } else if ml.is_some() {
                node.ml_name(name)
            } else {
                format!("attribute '{name}' of node '{}'", node.label)
            };
            let idx = (listed || ml.is_some()).then_some(self.out.tensors.len());
            let fin = self.finish(ts, &shown, idx)?;
            if listed {
                self.push_constant(shown, node, fin);
            } else if let Some(weight) = ml {
                self.push_ml(shown, node, fin, weight);
            } else if let Some(e) = fin.ext {
                self.out.externals.push(e);
            }
            self.leave();
        }
        if let Some(x) = a.sparse {
            self.enter(&x, "sparse tensor".into());
            let listed = constant && name == "sparse_value";
            let shown = if listed {
                node.constant_name()
            } else {
                format!("attribute '{name}' of node '{}'", node.label)
            };
            let idx = listed.then_some(self.out.tensors.len());
            let (_, fin) = self.scan_sparse(&x, &shown, idx)?;
            if listed {
                self.push(
                    shown,
                    node.scope,
                    node.graph,
                    Some(node.label.clone()),
                    Location::SparseInitializer,
                    node.training,
                    fin,
                );
            }
            self.leave();
        }
        Ok(())
    }

    /// Scans an attribute's lists of graphs, tensors and sparse tensors (never listed).
    fn scan_attribute_lists(&mut self, a: &AttrScan, node: &NodeCtx<'_>) -> Result<(), ModelError> {
        let name = &a.name;
        let mut graphs_i = 0usize;
        for (k, x) in a.many.iter().enumerate() {
            match x.number {
                11 => {
                    self.enter(x, "graph".into());
                    let s = node.child_scope(format!("{name}[{graphs_i}]"));
                    self.scan_graph(x, &s, node.listed, node.training, false)?;
                    self.leave();
                    graphs_i += 1;
                }
                10 => {
                    self.enter(x, "tensor".into());
                    let ts = self.scan_tensor(x)?;
                    let shown = format!("attribute '{name}'[{k}] of node '{}'", node.label);
                    let fin = self.finish(ts, &shown, None)?;
                    if let Some(e) = fin.ext {
                        self.out.externals.push(e);
                    }
                    self.leave();
                }
                _ => {
                    self.enter(x, "sparse tensor".into());
                    let shown = format!("attribute '{name}'[{k}] of node '{}'", node.label);
                    self.scan_sparse(x, &shown, None)?;
                    self.leave();
                }
            }
        }
        Ok(())
    }

    /// Scans a SparseTensorProto; returns its name and the listed form (values' storage, dense
    /// shape).
    fn scan_sparse(
        &mut self,
        f: &Field,
        shown: &str,
        listed: Option<usize>,
    ) -> Result<(String, Finished), ModelError> {
        self.check_depth(f.start)?;
        let mut r = Reader::new(self.buf, f.start, f.end);
        let mut values: Option<Finished> = None;
        let mut name = String::new();
        let mut dims: Vec<i64> = Vec::new();
        while let Some(x) = self.next(&mut r)? {
            match x.number {
                1 | 2 => {
                    self.expect(&x, Wire::Len, "values/indices")?;
                    let part = if x.number == 1 { "values" } else { "indices" };
                    self.enter(&x, part.into());
                    let ts = self.scan_tensor(&x)?;
                    if x.number == 1 {
                        name = ts.name.clone().unwrap_or_default();
                    }
                    let label = if name.is_empty() { shown } else { &name };
                    let idx = if x.number == 1 { listed } else { None };
                    let fin = self.finish(ts, &format!("{label} ({part})"), idx)?;
                    if let Some(e) = &fin.ext {
                        self.out.externals.push(e.clone());
                    }
                    if x.number == 1 {
                        values = Some(fin);
                    }
                    self.leave();
                }
                3 => self.push_dims(&mut dims, &x)?,
                _ => {}
            }
        }
        let label = if name.is_empty() {
            shown.to_string()
        } else {
            name.clone()
        };
        let Some(v) = values else {
            return Err(self.tensor_err(&label, "sparse tensor without values".into()));
        };
        let elements = self.elements(&label, &dims)?;
        Ok((
            name,
            Finished {
                dtype: v.dtype,
                dims,
                elements,
                storage: v.storage,
                payload: v.payload,
                ext: None,
            },
        ))
    }

    fn push_dims(&self, dims: &mut Vec<i64>, f: &Field) -> Result<(), ModelError> {
        match f.wire {
            Wire::Varint => dims.push(f.value as i64),
            Wire::Len => {
                let mut p = f.start;
                while p < f.end {
                    let (v, w) =
                        wire::varint_at(self.buf, p, f.end).map_err(|e| self.wire_err(p, e))?;
                    dims.push(v as i64);
                    p += w;
                    if dims.len() > MAX_RANK {
                        break;
                    }
                }
            }
            _ => self.expect(f, Wire::Varint, "dims")?,
        }
        if dims.len() > MAX_RANK {
            return Err(self.bad(f.key_pos, &format!("more than {MAX_RANK} dimensions")));
        }
        Ok(())
    }

    fn count_varints(&self, f: &Field, name: &str) -> Result<u64, ModelError> {
        match f.wire {
            Wire::Varint => Ok(1),
            Wire::Len => wire::count_packed_varints(self.buf, f.start, f.end)
                .map_err(|e| self.wire_err(f.start, e)),
            _ => self.expect(f, Wire::Varint, name).map(|_| 0),
        }
    }

    fn push_fixed(
        &self,
        t: &mut Typed,
        f: &Field,
        width: u8,
        name: &str,
    ) -> Result<(), ModelError> {
        let scalar = if width == 4 {
            Wire::Fixed32
        } else {
            Wire::Fixed64
        };
        match f.wire {
            Wire::Len => {
                if !f.value.is_multiple_of(u64::from(width)) {
                    return Err(self.bad(
                        f.key_pos,
                        &format!(
                            "packed {name} of {} bytes is not a multiple of {width}",
                            f.value
                        ),
                    ));
                }
                t.packed = true;
                if f.value > 0 {
                    let count = f.value / u64::from(width);
                    t.count += count;
                    t.runs.push(Run {
                        start: f.start as u64,
                        end: f.end as u64,
                        count,
                        key_len: f.key_len() as u8,
                        prefix: f.prefix,
                    });
                }
            }
            w if w == scalar => {
                t.unpacked = true;
                t.count += 1;
                push_unpacked(&mut t.runs, f);
            }
            _ => self.expect(f, scalar, name)?,
        }
        Ok(())
    }

    fn push_varints(&self, t: &mut Typed, f: &Field, name: &str) -> Result<(), ModelError> {
        match f.wire {
            Wire::Len => {
                let count = wire::count_packed_varints(self.buf, f.start, f.end)
                    .map_err(|e| self.wire_err(f.start, e))?;
                t.packed = true;
                if count > 0 {
                    t.count += count;
                    t.runs.push(Run {
                        start: f.start as u64,
                        end: f.end as u64,
                        count,
                        key_len: f.key_len() as u8,
                        prefix: f.prefix,
                    });
                }
            }
            Wire::Varint => {
                t.unpacked = true;
                t.count += 1;
                push_unpacked(&mut t.runs, f);
            }
            _ => self.expect(f, Wire::Varint, name)?,
        }
        Ok(())
    }

    fn scan_tensor(&mut self, f: &Field) -> Result<TensorScan, ModelError> {
        self.check_depth(f.start)?;
        let mut ts = TensorScan::default();
        let mut r = Reader::new(self.buf, f.start, f.end);
        let mut kinds = 0usize;
        while let Some(x) = self.next(&mut r)? {
            let typed_index = match x.number {
                4 => Some(0),
                5 => Some(1),
                6 => Some(2),
                7 => Some(3),
                10 => Some(4),
                11 => Some(5),
                _ => None,
            };
            if let Some(ti) = typed_index {
                // Refuse mixed typed fields early: it also bounds what a hostile file can make
                // the index hold.
                let was_empty = ts.typed[ti].runs.is_empty() && ts.typed[ti].count == 0;
                let t = &mut ts.typed[ti];
                match ti {
                    0 => self.push_fixed(t, &x, 4, "float_data")?,
                    4 => self.push_fixed(t, &x, 8, "double_data")?,
                    2 => {
                        self.expect(&x, Wire::Len, "string_data")?;
                        t.count += 1;
                    }
                    _ => self.push_varints(t, &x, TYPED[ti].name())?,
                }
                if was_empty && t.count > 0 {
                    kinds += 1;
                    if kinds > 1 {
                        let present: Vec<&str> = ts
                            .typed
                            .iter()
                            .zip(TYPED)
                            .filter(|(t, _)| t.count > 0)
                            .map(|(_, f)| f.name())
                            .collect();
                        let name = ts.name.clone().unwrap_or_else(|| self.context());
                        return Err(self.tensor_err(
                            &name,
                            format!("values in both {}", present.join(" and ")),
                        ));
                    }
                }
                continue;
            }
            match x.number {
                1 => self.push_dims(&mut ts.dims, &x)?,
                2 => ts.data_type = Some(self.varint(&x, "data_type")?),
                3 => {
                    self.expect(&x, Wire::Len, "segment")?;
                    ts.segment = true;
                }
                8 => ts.name = Some(self.string(&x, "name")?),
                9 => {
                    self.expect(&x, Wire::Len, "raw_data")?;
                    ts.raw = Some((x.start as u64, x.value));
                }
                12 | 16 => self.expect(&x, Wire::Len, "TensorProto field")?,
                13 => {
                    self.expect(&x, Wire::Len, "external_data")?;
                    if ts.ext.len() >= MAX_EXTERNAL_ENTRIES {
                        return Err(self.bad(
                            x.key_pos,
                            &format!("more than {MAX_EXTERNAL_ENTRIES} external_data entries"),
                        ));
                    }
                    let e = self.scan_entry(&x)?;
                    ts.ext.push(e);
                }
                14 => ts.data_location = self.varint(&x, "data_location")?,
                _ => {}
            }
        }
        Ok(ts)
    }

    /// A StringStringEntryProto of `external_data`.
    fn scan_entry(&mut self, f: &Field) -> Result<ExtEntry, ModelError> {
        let mut r = Reader::new(self.buf, f.start, f.end);
        let mut key = String::new();
        let mut value = String::new();
        let mut field = None;
        while let Some(x) = self.next(&mut r)? {
            match x.number {
                1 => key = self.string(&x, "key")?,
                2 => {
                    value = self.string(&x, "value")?;
                    let mut ancestors = self.anc.clone();
                    if let (Some(p), Some(q)) = (f.prefix, x.prefix) {
                        ancestors.push(p);
                        ancestors.push(q);
                    }
                    field = Some(LocField {
                        start: x.start as u64,
                        end: x.end as u64,
                        ancestors,
                    });
                }
                _ => {}
            }
        }
        Ok(ExtEntry { key, value, field })
    }

    fn elements(&self, name: &str, dims: &[i64]) -> Result<u64, ModelError> {
        let mut n: u64 = 1;
        for &d in dims {
            let Ok(d) = u64::try_from(d) else {
                return Err(self.tensor_err(name, format!("negative dimension {d}")));
            };
            n = n.checked_mul(d).ok_or_else(|| {
                self.tensor_err(
                    name,
                    format!("element count overflows: dims {}", dims_string(dims)),
                )
            })?;
        }
        Ok(n)
    }

    /// Validates a scanned tensor and works out its storage and payload.
    fn finish(
        &self,
        ts: TensorScan,
        name: &str,
        tensor: Option<usize>,
    ) -> Result<Finished, ModelError> {
        let err = |what: String| self.tensor_err(name, what);
        if ts.segment {
            return Err(err(
                "segmented tensors (TensorProto.segment) are not supported".into(),
            ));
        }
        // int32 on the wire: the low 32 bits count.
        let dtype = DType::from_onnx(i64::from(ts.data_type.unwrap_or(0) as u32 as i32));
        if dtype == DType::Undefined {
            return Err(err("no data type (UNDEFINED)".into()));
        }
        let elements = self.elements(name, &ts.dims)?;
        let present: Vec<usize> = (0..6).filter(|&i| ts.typed[i].count > 0).collect();
        let (storage, payload, ext) = if ts.data_location == 1 {
            if ts.raw.is_some() || !present.is_empty() {
                return Err(err("external data together with inline data".into()));
            }
            let ext = self.external_ref(&ts, name, tensor, dtype, elements)?;
            // The file index is filled in when external files are resolved.
            let payload = Payload::External {
                file: usize::MAX,
                offset: ext.offset,
                len: ext.length,
            };
            let storage = Storage::External {
                location: ext.location.clone(),
                offset: ext.offset,
                length: ext.length,
            };
            (storage, payload, Some(ext))
        } else if let Some((start, len)) = ts.raw {
            if let Some(&i) = present.first() {
                return Err(err(format!(
                    "values in both raw_data and {}",
                    TYPED[i].name()
                )));
            }
            self.check_raw_len(name, &ts.dims, dtype, elements, len)?;
            (Storage::Raw, Payload::Raw { start, len }, None)
        } else if let Some(&i) = present.first() {
            let (storage, payload) = self.typed_payload(&ts, i, name, dtype, elements)?;
            (storage, payload, None)
        } else if elements != 0 {
            return Err(err(format!(
                "no values for {elements} elements (dims {})",
                dims_string(&ts.dims)
            )));
        } else {
            (Storage::Empty, Payload::None, None)
        };
        Ok(Finished {
            dtype,
            dims: ts.dims,
            elements,
            storage,
            payload,
            ext,
        })
    }

    /// The reference of a tensor whose values are in an external file, from its
    /// `external_data` entries.
    fn external_ref(
        &self,
        ts: &TensorScan,
        name: &str,
        tensor: Option<usize>,
        dtype: DType,
        elements: u64,
    ) -> Result<ExtRef, ModelError> {
        let err = |what: String| self.tensor_err(name, what);
        let mut location: Option<String> = None;
        let mut offset: u64 = 0;
        let mut length: Option<u64> = None;
        let mut fields = Vec::new();
        for e in &ts.ext {
            match e.key.as_str() {
                "location" => {
                    location = Some(e.value.clone());
                    fields.extend(e.field.clone());
                }
                "offset" => {
                    offset = parse_num(&e.value).ok_or_else(|| {
                        err(format!(
                            "external data offset {:?} is not a number",
                            e.value
                        ))
                    })?
                }
                "length" => {
                    length = Some(parse_num(&e.value).ok_or_else(|| {
                        err(format!(
                            "external data length {:?} is not a number",
                            e.value
                        ))
                    })?)
                }
                _ => {}
            }
        }
        let Some(location) = location else {
            return Err(err("external data without a location".into()));
        };
        let length = self.external_length(name, &ts.dims, dtype, elements, length)?;
        Ok(ExtRef {
            tensor,
            name: name.to_string(),
            location,
            offset,
            length,
            fields,
        })
    }

    /// An external tensor's byte length: the declared `length`, which must match its dims and
    /// dtype, else the size they give.
    fn external_length(
        &self,
        name: &str,
        dims: &[i64],
        dtype: DType,
        elements: u64,
        length: Option<u64>,
    ) -> Result<u64, ModelError> {
        let err = |what: String| self.tensor_err(name, what);
        if dtype == DType::String {
            return Err(err("string tensor in external data".into()));
        }
        let expected = dtype.raw_bytes(elements);
        match (length, expected, dtype) {
            (Some(l), Some(e), _) if l != e => Err(err(format!(
                "external data length {l} does not match dims {} x {dtype} = {e} bytes",
                dims_string(dims)
            ))),
            (Some(l), _, _) => Ok(l),
            (None, Some(e), _) => Ok(e),
            (None, None, DType::Unknown(_)) => {
                Err(err(format!("external data of {dtype} without a length")))
            }
            (None, None, _) => Err(err("payload size overflows".into())),
        }
    }

    /// Checks that `raw_data` of `len` bytes holds exactly the tensor's elements (not
    /// checkable for dtypes this crate does not know).
    fn check_raw_len(
        &self,
        name: &str,
        dims: &[i64],
        dtype: DType,
        elements: u64,
        len: u64,
    ) -> Result<(), ModelError> {
        let err = |what: String| self.tensor_err(name, what);
        if dtype == DType::String {
            return Err(err("string tensor in raw_data".into()));
        }
        if !matches!(dtype, DType::Unknown(_)) {
            let Some(expected) = dtype.raw_bytes(elements) else {
                return Err(err("payload size overflows".into()));
            };
            if len != expected {
                return Err(err(format!(
                    "raw_data has {len} bytes, dims {} x {dtype} need {expected}",
                    dims_string(dims)
                )));
            }
        }
        Ok(())
    }

    /// Storage and payload of a tensor whose values are in typed field `TYPED[i]`, checked
    /// to be the field for its dtype and to hold exactly its elements.
    fn typed_payload(
        &self,
        ts: &TensorScan,
        i: usize,
        name: &str,
        dtype: DType,
        elements: u64,
    ) -> Result<(Storage, Payload), ModelError> {
        let err = |what: String| self.tensor_err(name, what);
        let field = TYPED[i];
        let t = &ts.typed[i];
        let storage = Storage::Typed {
            field,
            packed: !t.unpacked,
        };
        let Some((allowed, count)) = dtype.typed_field(elements) else {
            // Unknown dtype: nothing to check against.
            return Ok((storage, Payload::None));
        };
        if allowed != field {
            return Err(err(format!("{} cannot hold {dtype} values", field.name())));
        }
        let Some(count) = count else {
            return Err(err("payload size overflows".into()));
        };
        if t.count != count {
            return Err(err(format!(
                "{} has {} values, dims {} of {dtype} need {count}",
                field.name(),
                t.count,
                dims_string(&ts.dims)
            )));
        }
        let runs = t.runs.clone();
        let payload = match field {
            TypedField::FloatData => Payload::Fixed { width: 4, runs },
            TypedField::DoubleData => Payload::Fixed { width: 8, runs },
            TypedField::StringData => Payload::None,
            _ => Payload::Varint { runs },
        };
        Ok((storage, payload))
    }
}

/// An AttributeProto's fields, as [`Scanner::scan_attribute`] needs them.
#[derive(Debug, Default)]
struct AttrScan {
    name: String,
    /// `f`, the value of a Constant's `value_float`.
    float: Option<Field>,
    /// `floats`, the values of a Constant's `value_floats`.
    floats: Typed,
    has_i: bool,
    /// `i`, the value of an int attribute.
    i: i64,
    /// How many `ints`.
    ints: u64,
    has_s: bool,
    /// How many `strings`.
    strings: u64,
    t: Option<Field>,
    g: Option<Field>,
    sparse: Option<Field>,
    /// `tensors`, `graphs` and `sparse_tensors`, in file order.
    many: Vec<Field>,
}

impl AttrScan {
    /// The tensor a Constant node's scalar or list value attribute (`value_float`,
    /// `value_ints`, ...) holds; None for other attributes.
    fn into_constant_value(self) -> Option<Finished> {
        let (dtype, dims, storage, payload) = match self.name.as_str() {
            "value_float" => {
                let x = self.float?;
                let run = Run {
                    start: x.key_pos as u64,
                    end: x.end as u64,
                    count: 1,
                    key_len: x.key_len() as u8,
                    prefix: None,
                };
                let payload = Payload::Fixed {
                    width: 4,
                    runs: vec![run],
                };
                (DType::F32, vec![], Storage::ValueFloat, payload)
            }
            "value_floats" => {
                let n = self.floats.count as i64;
                let payload = Payload::Fixed {
                    width: 4,
                    runs: self.floats.runs,
                };
                (DType::F32, vec![n], Storage::ValueFloats, payload)
            }
            "value_int" if self.has_i => (DType::I64, vec![], Storage::ValueInt, Payload::None),
            "value_ints" => (
                DType::I64,
                vec![self.ints as i64],
                Storage::ValueInts,
                Payload::None,
            ),
            "value_string" if self.has_s => {
                (DType::String, vec![], Storage::ValueString, Payload::None)
            }
            "value_strings" => (
                DType::String,
                vec![self.strings as i64],
                Storage::ValueStrings,
                Payload::None,
            ),
            _ => return None,
        };
        let elements = dims.first().map_or(1, |&n| n as u64);
        Some(Finished {
            dtype,
            dims,
            elements,
            storage,
            payload,
            ext: None,
        })
    }
}

impl NodeCtx<'_> {
    /// For a listed `ai.onnx.ml` node's attribute of [`ML_ATTRIBUTES`]: whether it is a
    /// weight (mutable by default).
    fn ml_attribute(&self, attr: &str) -> Option<bool> {
        let op = self.ml_op.as_deref().filter(|_| self.listed)?;
        ML_ATTRIBUTES
            .iter()
            .find(|(o, a, _)| *o == op && *a == attr)
            .map(|&(_, _, weight)| weight)
    }

    /// The name an `ai.onnx.ml` attribute is listed under: `<node label>.<attribute>`.
    fn ml_name(&self, attr: &str) -> String {
        format!("{}.{attr}", self.label)
    }

    /// The scope of the node's subgraph `suffix` (an attribute name, with `[k]` in lists).
    fn child_scope(&self, suffix: String) -> String {
        if self.scope.is_empty() {
            format!("{}/{suffix}", self.label)
        } else {
            format!("{}/{}/{suffix}", self.scope, self.label)
        }
    }

    /// The name a Constant node's tensor is listed under: its output, else the node's label.
    fn constant_name(&self) -> String {
        self.output
            .clone()
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| self.label.clone())
    }
}

/// Adds one unpacked value (key and value) to `runs`, extending the last run when the value
/// follows it directly with a key of the same width.
fn push_unpacked(runs: &mut Vec<Run>, f: &Field) {
    let key_len = f.key_len() as u8;
    if let Some(last) = runs.last_mut()
        && last.prefix.is_none()
        && last.end == f.key_pos as u64
        && last.key_len == key_len
    {
        last.end = f.end as u64;
        last.count += 1;
        return;
    }
    runs.push(Run {
        start: f.key_pos as u64,
        end: f.end as u64,
        count: 1,
        key_len,
        prefix: None,
    });
}

fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(crate) fn dims_string(dims: &[i64]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(", "))
}

/// True when input `i` of an `op` node is shape-like (a shape, axes, sizes, counts or other
/// control values): such tensors are never mutated, whatever their dtype.
pub(crate) fn shape_like(op: &str, i: usize) -> bool {
    match op {
        "Reshape" | "Expand" | "Tile" | "TopK" | "Squeeze" | "Unsqueeze" | "Split" | "OneHot"
        | "CenterCropPad" | "Upsample" | "AffineGrid" | "Trilu" | "CumSum" | "ReverseSequence" => {
            i == 1
        }
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => i == 1,
        "Resize" => (1..=3).contains(&i),
        "Slice" => (1..=4).contains(&i),
        "Pad" => i == 1 || i == 3,
        "ConstantOfShape" | "Range" | "HannWindow" | "HammingWindow" | "BlackmanWindow"
        | "MelWeightMatrix" => true,
        "NonMaxSuppression" => (2..=4).contains(&i),
        "Dropout" => i == 1 || i == 2,
        "DFT" | "Col2Im" => i >= 1,
        "STFT" => i == 1 || i == 3,
        "Loop" => i <= 1,
        "If" => i == 0,
        _ => false,
    }
}
