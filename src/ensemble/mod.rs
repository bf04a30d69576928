//! Drop-in ensemble export: one ONNX graph that runs every member and combines their outputs,
//! with exactly the parent's inputs and outputs.
//!
//! Two builders:
//! - [`compact`]: members are one parent plus sparse changes (SMD children). The parent's
//!   tensors are stored once, each varying tensor once more with its changes (see
//!   `encode`), and every node whose inputs no member changes is computed once, shared.
//! - [`merge`]: arbitrary models with the same interface, each copied whole.

mod encode;
mod graph;
mod heads;
mod quantized;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

pub use encode::{Change, Encoding, Varying, member_values};
pub use graph::TensorAddr;
pub use heads::{Combine, OutputKind};

use crate::onnx::{DType, Model, ModelError, proto};
use crate::output;
use graph::{copy_graph, copy_node, rename_all, topo_order};
use proto::{GraphProto, ModelProto, StringStringEntryProto, ValueInfoProto};

/// Errors from building an ensemble graph.
#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    /// The members do not share an interface.
    #[error("member {member}: {msg}")]
    Interface {
        /// Index of the member that differs from the first.
        member: usize,
        /// What differs.
        msg: String,
    },
    /// Invalid arguments (weights, changes, names).
    #[error("{0}")]
    Invalid(String),
    /// The model's opset is too old for the compact encoding.
    #[error("the compact encoding needs default-domain opset >= 11, the model imports {0}")]
    OpsetTooOld(i64),
}

/// What the ensemble graph outputs.
#[derive(Debug, Clone)]
pub enum Heads {
    /// The parent's outputs, each combined over the members (the drop-in ensemble).
    Combined {
        /// How float outputs are combined.
        combine: Combine,
        /// What some float outputs are known to hold (e.g. from scoring their values); the
        /// others are recognised from the graph (`heads::output_kind`).
        declared: Vec<(String, OutputKind)>,
    },
    /// One output per member, `smd/member/<i>/<output>`, for output `output` only (to score
    /// several members in one run).
    PerMember {
        /// The parent output to expose per member.
        output: String,
    },
}

/// A built ensemble.
#[derive(Debug, Clone)]
pub struct Built {
    /// The ensemble model.
    pub model: ModelProto,
    /// Things a user should know (e.g. outputs taken from the first member).
    pub notices: Vec<String>,
    /// How each varying tensor was encoded (compact builder only).
    pub encodings: Vec<(TensorAddr, Encoding)>,
}

/// Name of member `i`'s copy of `name`.
fn member_name(i: usize, name: &str) -> String {
    format!("m{i}/{name}")
}

/// Whether `value` is some member's copy of `name` ([`member_name`]'s inverse).
fn is_member_copy_of(value: &str, name: &str) -> bool {
    value.split_once('/').is_some_and(|(m, rest)| {
        rest == name
            && m.strip_prefix('m')
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Internal name of graph output `o` before the heads combine it.
fn internal_output(o: &str) -> String {
    format!("smd/out/{o}")
}

fn name_of(v: &ValueInfoProto) -> &str {
    v.name.as_deref().unwrap_or("")
}

/// Names of the real (non-initializer) graph inputs.
fn real_inputs(g: &GraphProto) -> HashSet<String> {
    let inits: HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    g.input
        .iter()
        .map(name_of)
        .filter(|n| !inits.contains(n))
        .map(str::to_string)
        .collect()
}

/// Renames the graph's outputs to their internal names (outputs that are graph inputs stay).
fn rename_outputs(g: &mut GraphProto) {
    let inputs = real_inputs(g);
    let outs: HashSet<String> = g
        .output
        .iter()
        .map(|v| name_of(v).to_string())
        .filter(|o| !inputs.contains(o))
        .collect();
    rename_all(g, &|n| outs.contains(n).then(|| internal_output(n)));
}

fn check_weights(weights: &[f64]) -> Result<(), EnsembleError> {
    if weights.is_empty() {
        return Err(EnsembleError::Invalid(
            "an ensemble needs at least one member".into(),
        ));
    }
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0 {
        return Err(EnsembleError::Invalid(
            "member weights must be finite, non-negative and not all zero".into(),
        ));
    }
    Ok(())
}

/// Default-domain opset version the model imports.
pub fn default_opset(m: &ModelProto) -> i64 {
    m.opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .unwrap_or(0)
}

/// Builds an ensemble of one parent and members that differ from it only in `varying` tensors.
/// `weights` has one entry per member (e.g. multiplicities of a greedy selection).
pub fn compact(
    parent: &ModelProto,
    varying: &[Varying],
    weights: &[f64],
    heads: &Heads,
    meta: &[(String, String)],
) -> Result<Built, EnsembleError> {
    compact_stored(
        parent,
        varying,
        &vec![None; varying.len()],
        weights,
        heads,
        meta,
    )
}

/// [`compact`], with `stores[j]` the integer type varying tensor `j`'s values (whole numbers
/// held as float32) are stored in, for quantized int8/uint8 tensors.
fn compact_stored(
    parent: &ModelProto,
    varying: &[Varying],
    stores: &[Option<DType>],
    weights: &[f64],
    heads: &Heads,
    meta: &[(String, String)],
) -> Result<Built, EnsembleError> {
    check_weights(weights)?;
    let members = weights.len();
    check_varying(parent, varying, members)?;
    let parent_graph = parent
        .graph
        .as_ref()
        .ok_or_else(|| EnsembleError::Invalid("the model has no graph".into()))?;
    let mut g = parent_graph.clone();
    rename_outputs(&mut g);

    let EncodedVarying {
        sub_varying,
        mut dirty,
        prelude,
        initializers,
        encodings,
    } = encode_varying(&mut g, varying, stores, members)?;
    let nodes = copy_member_nodes(&g, &sub_varying, &mut dirty, prelude);
    let value_info = member_value_info(&g, &dirty);
    g.node = nodes;
    g.value_info = value_info;
    g.initializer.extend(initializers);
    // A value of the (renamed) graph: member i's copy if the member changes it, else shared.
    let member_values = |v: &str, i: usize| {
        if dirty[i].contains(v) {
            member_name(i, v)
        } else {
            v.to_string()
        }
    };
    let shared = |v: &str| v.to_string();
    let notices = add_heads(
        &mut g,
        parent_graph,
        heads,
        weights,
        &member_values,
        &shared,
    )?;
    finish(&mut g);
    let mut model = parent.clone();
    model.graph = Some(g);
    add_meta(&mut model, meta);
    Ok(Built {
        model,
        notices,
        encodings,
    })
}

/// Checks that every varying tensor has valid changes for `members` members, and that the
/// model's opset has the operators the encodings use.
fn check_varying(
    parent: &ModelProto,
    varying: &[Varying],
    members: usize,
) -> Result<(), EnsembleError> {
    for v in varying {
        if v.changes.len() != members {
            return Err(EnsembleError::Invalid(format!(
                "tensor `{}` has changes for {} members, expected {members}",
                v.addr.name,
                v.changes.len()
            )));
        }
        encode::check(v).map_err(EnsembleError::Invalid)?;
    }
    // The encodings rebuild initializers and Constant nodes only (never node attributes).
    let mut addrs = Vec::new();
    if let Some(g) = &parent.graph {
        graph::graph_tensor_addrs("", g, &mut addrs);
    }
    let addrs: HashSet<&TensorAddr> = addrs.iter().collect();
    if let Some(v) = varying.iter().find(|v| !addrs.contains(&v.addr)) {
        return Err(EnsembleError::Invalid(format!(
            "tensor `{}` is neither an initializer nor a Constant node",
            v.addr.name
        )));
    }
    let opset = default_opset(parent);
    if opset < 11 && !varying.is_empty() {
        return Err(EnsembleError::OpsetTooOld(opset));
    }
    Ok(())
}

/// True when member `i` changes some of `v`'s elements.
fn member_changes(v: &Varying, i: usize) -> bool {
    v.changes
        .get(i)
        .is_some_and(|c| c.as_ref().is_some_and(|c| !c.indices.is_empty()))
}

/// The id that names the graph pieces of varying tensor `a`: its scope and name.
fn varying_id(a: &TensorAddr) -> String {
    if a.scope.is_empty() {
        a.name.clone()
    } else {
        format!("{}/{}", a.scope, a.name)
    }
}

/// The varying tensors, encoded: what [`compact`] adds to the parent's graph besides the
/// members' copies of its nodes.
struct EncodedVarying<'v> {
    /// Varying tensors of subgraphs, whose base and member values are main-graph values.
    sub_varying: HashMap<TensorAddr, &'v Varying>,
    /// Per member: main-graph values it computes differently from the parent (so far, the
    /// main-graph tensors it changes).
    dirty: Vec<HashSet<String>>,
    /// Nodes that rebuild the members' tensors, ahead of the graph's own.
    prelude: Vec<proto::NodeProto>,
    /// Initializers to add: shared constants, subgraph bases, stored differences.
    initializers: Vec<proto::TensorProto>,
    /// How each varying tensor was encoded.
    encodings: Vec<(TensorAddr, Encoding)>,
}

/// Stores each varying tensor's base (main-graph tensors in place in `g`, subgraph ones as
/// new initializers) and encodes the members' changes of it.
fn encode_varying<'v>(
    g: &mut GraphProto,
    varying: &'v [Varying],
    stores: &[Option<DType>],
    members: usize,
) -> Result<EncodedVarying<'v>, EnsembleError> {
    let mut e = EncodedVarying {
        sub_varying: HashMap::new(),
        dirty: vec![HashSet::new(); members],
        prelude: Vec::new(),
        initializers: encode::member_constants(members),
        encodings: Vec::new(),
    };
    for (v, &store) in varying.iter().zip(stores) {
        let id = varying_id(&v.addr);
        let main = v.addr.scope.is_empty();
        let base_name = if main {
            set_main_tensor(g, &v.addr.name, &v.dims, &v.base, store)?;
            v.addr.name.clone()
        } else {
            let b = format!("smd/base/{id}");
            e.initializers
                .push(encode::stored_tensor(&b, &v.dims, &v.base, store));
            e.sub_varying.insert(v.addr.clone(), v);
            b
        };
        let member_value = |i: usize| {
            if main {
                member_name(i, &v.addr.name)
            } else {
                format!("smd/m{i}/{id}")
            }
        };
        let enc = encode::encode(v, &id, &base_name, &member_value, store);
        e.encodings.push((v.addr.clone(), enc.encoding));
        e.prelude.extend(enc.nodes);
        e.initializers.extend(enc.initializers);
        if main {
            for (i, d) in e.dirty.iter_mut().enumerate() {
                if member_changes(v, i) {
                    d.insert(v.addr.name.clone());
                }
            }
        }
    }
    Ok(e)
}

/// Where each subgraph's varying tensor comes from, for the shared copy (`member` None) and
/// for each member.
fn varying_source<'a>(
    sub_varying: &'a HashMap<TensorAddr, &Varying>,
    member: Option<usize>,
) -> impl Fn(&TensorAddr) -> Option<String> + 'a {
    move |a: &TensorAddr| {
        sub_varying.get(a).map(|v| match member {
            Some(i) if member_changes(v, i) => format!("smd/m{i}/{}", varying_id(a)),
            _ => format!("smd/base/{}", varying_id(a)),
        })
    }
}

/// The ensemble's nodes: `prelude`, then in topological order each node of `g` once, shared,
/// plus a copy for every member that computes it differently (it reads a value in the
/// member's `dirty` set or holds a subgraph tensor the member changes). The outputs of copied
/// nodes join the member's `dirty` set.
fn copy_member_nodes(
    g: &GraphProto,
    sub_varying: &HashMap<TensorAddr, &Varying>,
    dirty: &mut [HashSet<String>],
    prelude: Vec<proto::NodeProto>,
) -> Vec<proto::NodeProto> {
    let mut nodes = prelude;
    let shared_source = varying_source(sub_varying, None);
    let keep = |s: &str| s.to_string();
    for j in topo_order(g) {
        let n = &g.node[j];
        nodes.push(copy_node(n, "", j, &keep, &keep, &shared_source));
        let refs = graph::node_refs(n);
        let mut nested = Vec::new();
        graph::nested_tensor_addrs("", n, j, &mut nested);
        for (i, d) in dirty.iter_mut().enumerate() {
            let member_changes_inside = nested
                .iter()
                .any(|a| sub_varying.get(a).is_some_and(|v| member_changes(v, i)));
            if !member_changes_inside && !refs.iter().any(|r| d.contains(r)) {
                continue;
            }
            d.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
            let d: &HashSet<String> = d;
            let rename = |x: &str| {
                if d.contains(x) {
                    member_name(i, x)
                } else {
                    x.to_string()
                }
            };
            let local = |x: &str| member_name(i, x);
            let source = varying_source(sub_varying, Some(i));
            nodes.push(copy_node(n, "", j, &rename, &local, &source));
        }
    }
    nodes
}

/// `g`'s value infos, each followed by a copy for every member whose `dirty` set holds it.
fn member_value_info(g: &GraphProto, dirty: &[HashSet<String>]) -> Vec<ValueInfoProto> {
    g.value_info
        .iter()
        .flat_map(|v| {
            let mut copies = vec![v.clone()];
            for (i, d) in dirty.iter().enumerate() {
                if d.contains(name_of(v)) {
                    let mut c = v.clone();
                    c.name = Some(member_name(i, name_of(v)));
                    copies.push(c);
                }
            }
            copies
        })
        .collect()
}

/// Replaces the values of main-graph tensor `name` (an initializer or a Constant node).
fn set_main_tensor(
    g: &mut GraphProto,
    name: &str,
    dims: &[i64],
    base: &crate::TensorData,
    store: Option<DType>,
) -> Result<(), EnsembleError> {
    let t = encode::stored_tensor(name, dims, base, store);
    if let Some(init) = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
    {
        let doc = init.doc_string.take();
        *init = proto::TensorProto {
            doc_string: doc,
            ..t
        };
        return Ok(());
    }
    let node = g
        .node
        .iter_mut()
        .find(|n| graph::is_constant(n) && n.output.first().map(String::as_str) == Some(name))
        .ok_or_else(|| {
            EnsembleError::Invalid(format!(
                "tensor `{name}` is neither an initializer nor a Constant node of the main graph"
            ))
        })?;
    node.attribute = vec![proto::AttributeProto {
        name: Some("value".into()),
        r#type: Some(proto::attribute_proto::AttributeType::Tensor as i32),
        t: Some(proto::TensorProto { name: None, ..t }),
        ..Default::default()
    }];
    Ok(())
}

/// Adds the output heads to `g` (whose node names are already final); `parent` is the
/// original graph, for the outputs' names, types and producers. `member_values(v, i)` names
/// member `i`'s copy of value `v` of the renamed graph (outputs renamed by
/// [`rename_outputs`]); `shared(v)` names a value every member computes alike.
fn add_heads(
    g: &mut GraphProto,
    parent: &GraphProto,
    heads: &Heads,
    weights: &[f64],
    member_values: &dyn Fn(&str, usize) -> String,
    shared: &dyn Fn(&str) -> String,
) -> Result<Vec<String>, EnsembleError> {
    let src = HeadSources {
        parent,
        weights,
        member_values,
        shared,
    };
    match heads {
        Heads::Combined { combine, declared } => Ok(src.add_combined(g, *combine, declared)),
        Heads::PerMember { output } => {
            src.add_per_member(g, output)?;
            Ok(Vec::new())
        }
    }
}

/// What the heads read (see [`add_heads`]).
struct HeadSources<'a> {
    parent: &'a GraphProto,
    weights: &'a [f64],
    member_values: &'a dyn Fn(&str, usize) -> String,
    shared: &'a dyn Fn(&str) -> String,
}

impl HeadSources<'_> {
    /// Every member's copy of value `v`.
    fn members(&self, v: &str) -> Vec<String> {
        (0..self.weights.len())
            .map(|i| (self.member_values)(v, i))
            .collect()
    }

    /// [`Heads::Combined`]: the parent's outputs, combined over the members or recomputed
    /// from combined class scores; returns the notices.
    fn add_combined(
        &self,
        g: &mut GraphProto,
        combine: Combine,
        declared: &[(String, OutputKind)],
    ) -> Vec<String> {
        let parent = self.parent;
        let inputs = real_inputs(parent);
        let mut notices = Vec::new();
        let declared = |o: &str| declared.iter().find(|(x, _)| x == o).map(|(_, k)| *k);
        let kinds: Vec<(&ValueInfoProto, OutputKind)> = parent
            .output
            .iter()
            .filter(|out| !inputs.contains(name_of(out)))
            .map(|out| (out, heads::output_kind(parent, out, declared(name_of(out)))))
            .collect();
        let combined: HashSet<String> = kinds
            .iter()
            .filter(|(_, k)| *k != OutputKind::Other)
            .map(|(out, _)| name_of(out).to_string())
            .collect();
        // Outputs that cannot be averaged but are computed from class scores (a label, a
        // ZipMap) are recomputed from the combined scores by the parent's own nodes, so
        // they agree with the ensemble; the others come from the first member.
        let hidden = crate::onnx::tail::hidden_scores(&parent.node, &parent.output);
        let mut sources = combined.clone();
        sources.extend(hidden.iter().cloned());
        let mut tail_nodes = std::collections::BTreeSet::new();
        let mut used_hidden = HashSet::new();
        for (out, kind) in &kinds {
            let o = name_of(out);
            let code = heads::elem_type(out).unwrap_or(1);
            let tail = (*kind == OutputKind::Other)
                .then(|| crate::onnx::tail::tail(&parent.node, &sources, o))
                .flatten();
            let Some(nodes) = tail else {
                if *kind == OutputKind::Other {
                    if let Some(s) = heads::add_classifier_label(g, parent, o, &combined) {
                        notices.push(format!(
                            "output `{o}` is recomputed as the class of the highest combined `{s}`"
                        ));
                        continue;
                    }
                    notices.push(format!("output `{o}` cannot be averaged; the ensemble takes it from the first member"));
                }
                let vals = self.members(&internal_output(o));
                heads::combine(g, o, code, *kind, combine, &vals, self.weights);
                continue;
            };
            let from = tail_sources(parent, &nodes, &sources, &hidden, &mut used_hidden);
            tail_nodes.extend(nodes);
            notices.push(format!(
                "output `{o}` is recomputed from the ensemble's combined `{}` by the model's own nodes",
                from.join("`, `")
            ));
        }
        for h in hidden.iter().filter(|h| used_hidden.contains(*h)) {
            let info = hidden_info(parent, h);
            let kind = heads::output_kind(parent, &info, declared(h));
            let code = heads::elem_type(&info).unwrap_or(1);
            heads::combine(
                g,
                &combined_hidden(h),
                code,
                kind,
                combine,
                &self.members(h),
                self.weights,
            );
        }
        self.copy_tail(g, &tail_nodes, &combined, &hidden);
        g.output = parent.output.clone();
        notices
    }

    /// Copies the parent's `tail_nodes` once, reading the combined outputs and hidden scores
    /// and, for everything else, the shared values.
    fn copy_tail(
        &self,
        g: &mut GraphProto,
        tail_nodes: &std::collections::BTreeSet<usize>,
        combined: &HashSet<String>,
        hidden: &[String],
    ) {
        let parent = self.parent;
        let outputs: HashSet<&str> = parent.output.iter().map(name_of).collect();
        let tail_value = |x: &str| -> String {
            if outputs.contains(x) {
                x.to_string()
            } else {
                format!("smd/tail/{x}")
            }
        };
        let produced: HashSet<&str> = tail_nodes
            .iter()
            .flat_map(|&j| parent.node[j].output.iter().map(String::as_str))
            .collect();
        let rename = |x: &str| -> String {
            if combined.contains(x) || produced.contains(x) {
                tail_value(x)
            } else if hidden.iter().any(|h| h == x) {
                combined_hidden(x)
            } else if outputs.contains(x) {
                (self.shared)(&internal_output(x))
            } else {
                (self.shared)(x)
            }
        };
        let local = |x: &str| format!("smd/tail/{x}");
        for &j in tail_nodes {
            g.node.push(graph::copy_node(
                &parent.node[j],
                "",
                j,
                &rename,
                &local,
                &|_| None,
            ));
        }
    }

    /// [`Heads::PerMember`]: one graph output per member, its copy of `output`.
    fn add_per_member(&self, g: &mut GraphProto, output: &str) -> Result<(), EnsembleError> {
        let out = self
            .parent
            .output
            .iter()
            .find(|v| name_of(v) == output)
            .ok_or_else(|| EnsembleError::Invalid(format!("the model has no output `{output}`")))?;
        g.output.clear();
        for i in 0..self.weights.len() {
            let name = format!("smd/member/{i}/{output}");
            g.node.push(graph::identity(
                &(self.member_values)(&internal_output(output), i),
                &name,
                &name,
            ));
            let mut v = out.clone();
            v.name = Some(name);
            g.output.push(v);
        }
        Ok(())
    }
}

/// The values among `sources` that the parent's tail `nodes` read, in order of first use;
/// marks the hidden scores they read in `used_hidden`.
fn tail_sources<'p>(
    parent: &'p GraphProto,
    nodes: &[usize],
    sources: &HashSet<String>,
    hidden: &[String],
    used_hidden: &mut HashSet<String>,
) -> Vec<&'p str> {
    let mut from: Vec<&str> = Vec::new();
    for &j in nodes {
        for i in &parent.node[j].input {
            if sources.contains(i) && !from.contains(&i.as_str()) {
                from.push(i);
            }
            if hidden.contains(i) {
                used_hidden.insert(i.clone());
            }
        }
    }
    from
}

/// The ensemble's combined value of hidden class scores `h` (see [`crate::onnx::tail`]).
fn combined_hidden(h: &str) -> String {
    format!("smd/combined/{h}")
}

/// The declared value info of `name` in `g`, else a float tensor of unknown shape.
fn hidden_info(g: &GraphProto, name: &str) -> ValueInfoProto {
    g.value_info
        .iter()
        .find(|v| name_of(v) == name)
        .cloned()
        .unwrap_or_else(|| ValueInfoProto {
            name: Some(name.to_string()),
            r#type: Some(proto::TypeProto {
                value: Some(proto::type_proto::Value::TensorType(
                    proto::type_proto::Tensor {
                        elem_type: Some(crate::onnx::DType::F32.to_onnx()),
                        shape: None,
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        })
}

/// Removes dead code and puts the nodes in topological order.
fn finish(g: &mut GraphProto) {
    graph::remove_dead(g);
    let order = topo_order(g);
    let mut nodes: Vec<Option<proto::NodeProto>> =
        std::mem::take(&mut g.node).into_iter().map(Some).collect();
    g.node = order
        .into_iter()
        .filter_map(|j| nodes.get_mut(j).and_then(Option::take))
        .collect();
}

fn add_meta(model: &mut ModelProto, meta: &[(String, String)]) {
    for (k, v) in meta {
        model
            .metadata_props
            .retain(|e| e.key.as_deref() != Some(k.as_str()));
        model.metadata_props.push(StringStringEntryProto {
            key: Some(k.clone()),
            value: Some(v.clone()),
        });
    }
}

/// Describes a value's type for interface comparisons: element type and rank of tensors, the
/// whole type otherwise.
fn interface_of(v: &ValueInfoProto) -> String {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(proto::type_proto::Value::TensorType(t)) => {
            format!(
                "tensor(elem {}, rank {:?})",
                t.elem_type.unwrap_or(0),
                t.shape.as_ref().map(|s| s.dim.len())
            )
        }
        other => format!("{other:?}"),
    }
}

/// Names and types of a graph's inputs or outputs.
type Interface = Vec<(String, String)>;

/// Builds an ensemble of arbitrary models with the same inputs and outputs (names, element
/// types and ranks), each member's graph copied whole.
pub fn merge(
    models: &[ModelProto],
    weights: &[f64],
    heads: &Heads,
    meta: &[(String, String)],
) -> Result<Built, EnsembleError> {
    check_weights(weights)?;
    if models.len() != weights.len() {
        return Err(EnsembleError::Invalid(format!(
            "{} members but {} weights",
            models.len(),
            weights.len()
        )));
    }
    let first = models
        .first()
        .ok_or_else(|| EnsembleError::Invalid("an ensemble needs at least one member".into()))?;
    let g0 = first
        .graph
        .as_ref()
        .ok_or_else(|| EnsembleError::Invalid("member 0 has no graph".into()))?;
    let inputs0 = real_inputs(g0);
    let want = interface(g0);
    let mut model = first.clone();
    let mut imports = Imports::default();
    let mut out = GraphProto {
        name: g0.name.clone(),
        doc_string: g0.doc_string.clone(),
        input: g0
            .input
            .iter()
            .filter(|v| inputs0.contains(name_of(v)))
            .cloned()
            .collect(),
        ..Default::default()
    };
    for (i, m) in models.iter().enumerate() {
        let g = m.graph.as_ref().ok_or_else(|| EnsembleError::Interface {
            member: i,
            msg: "no graph".into(),
        })?;
        let got = interface(g);
        if got != want {
            return Err(EnsembleError::Interface {
                member: i,
                msg: format!("inputs/outputs {got:?} differ from the first member's {want:?}"),
            });
        }
        imports.add(m, i)?;
        model.ir_version = model.ir_version.max(m.ir_version);
        copy_member_graph(&mut out, g, i);
    }
    let member_values = |v: &str, i: usize| member_name(i, v);
    // Values tails read besides the scores (class lists, shapes): the first member's.
    let shared = |v: &str| {
        if inputs0.contains(v) {
            v.to_string()
        } else {
            member_name(0, v)
        }
    };
    let notices = add_heads(&mut out, g0, heads, weights, &member_values, &shared)?;
    finish(&mut out);
    imports.set(&mut model);
    model.graph = Some(out);
    add_meta(&mut model, meta);
    Ok(Built {
        model,
        notices,
        encodings: Vec::new(),
    })
}

/// A graph's real inputs and its outputs, as [`merge`] compares them.
fn interface(g: &GraphProto) -> (Interface, Interface) {
    let ins = real_inputs(g);
    (
        g.input
            .iter()
            .filter(|v| ins.contains(name_of(v)))
            .map(|v| (name_of(v).to_string(), interface_of(v)))
            .collect(),
        g.output
            .iter()
            .map(|v| (name_of(v).to_string(), interface_of(v)))
            .collect(),
    )
}

/// The operator sets and functions the members import, which must agree.
#[derive(Default)]
struct Imports {
    /// Domain (`""` for the default one) → version.
    opsets: HashMap<String, i64>,
    /// (domain, name, overload) → function.
    functions: HashMap<(String, String, String), proto::FunctionProto>,
}

impl Imports {
    /// Adds member `i`'s imports; an error when they conflict with another member's.
    fn add(&mut self, m: &ModelProto, i: usize) -> Result<(), EnsembleError> {
        for o in &m.opset_import {
            let domain = o.domain.clone().unwrap_or_default();
            let domain = if domain == "ai.onnx" {
                String::new()
            } else {
                domain
            };
            let v = o.version.unwrap_or(0);
            if let Some(prev) = self.opsets.insert(domain.clone(), v)
                && prev != v
            {
                return Err(EnsembleError::Interface {
                    member: i,
                    msg: format!("imports opset {v} of domain `{domain}`, another member {prev}"),
                });
            }
        }
        for f in &m.functions {
            let key = (
                f.domain.clone().unwrap_or_default(),
                f.name.clone().unwrap_or_default(),
                f.overload.clone().unwrap_or_default(),
            );
            if let Some(prev) = self.functions.get(&key) {
                if prev != f {
                    return Err(EnsembleError::Interface {
                        member: i,
                        msg: format!("defines function `{}` differently", key.1),
                    });
                }
            } else {
                self.functions.insert(key, f.clone());
            }
        }
        Ok(())
    }

    /// Sets the model's opset imports and functions to these, sorted.
    fn set(self, model: &mut ModelProto) {
        let mut opsets: Vec<(String, i64)> = self.opsets.into_iter().collect();
        opsets.sort();
        model.opset_import = opsets
            .into_iter()
            .map(|(d, v)| proto::OperatorSetIdProto {
                domain: Some(d),
                version: Some(v),
            })
            .collect();
        let mut functions: Vec<_> = self.functions.into_iter().collect();
        functions.sort_by(|a, b| a.0.cmp(&b.0));
        model.functions = functions.into_iter().map(|(_, f)| f).collect();
    }
}

/// Copies member `i`'s graph `g` into `out`, its values renamed to the member's (graph inputs
/// keep their names).
fn copy_member_graph(out: &mut GraphProto, g: &GraphProto, i: usize) {
    let mut gi = g.clone();
    rename_outputs(&mut gi);
    let ins = real_inputs(&gi);
    let local = |x: &str| {
        if ins.contains(x) {
            x.to_string()
        } else {
            member_name(i, x)
        }
    };
    let copy = copy_graph(&gi, "", &local, &|x: &str| x.to_string(), &|_| None);
    out.node.extend(copy.node);
    out.initializer.extend(copy.initializer);
    out.sparse_initializer.extend(copy.sparse_initializer);
    out.value_info.extend(copy.value_info);
}

/// Decodes a model for graph surgery, with every external tensor's payload read into the
/// message (the ensemble is written elsewhere, so references to the parent's files cannot stay).
pub fn decode_model(model: &Model) -> Result<ModelProto, crate::Error> {
    let mut proto = ModelProto::decode(model.bytes()).map_err(|e| ModelError::Decode {
        path: model.path().to_path_buf(),
        message: e.to_string(),
    })?;
    if !model.has_external_data() {
        return Ok(proto);
    }
    let by_addr: HashMap<(&str, &str), &crate::onnx::TensorInfo> = model
        .tensors()
        .iter()
        .map(|t| ((t.scope.as_str(), t.name.as_str()), t))
        .collect();
    let mut missing = None;
    if let Some(g) = proto.graph.as_mut() {
        graph::for_each_tensor_mut(g, "", &mut |addr, t| {
            if t.data_location != Some(proto::tensor_proto::DataLocation::External as i32) {
                return;
            }
            let payload = addr
                .and_then(|a| by_addr.get(&(a.scope.as_str(), a.name.as_str())))
                .and_then(|info| model.raw_payload(info));
            match payload {
                Some(p) => {
                    t.raw_data = Some(bytes::Bytes::copy_from_slice(p));
                    t.external_data.clear();
                    t.data_location = None;
                }
                None => missing = Some(t.name.clone().unwrap_or_default()),
            }
        });
    }
    match missing {
        Some(name) => Err(ModelError::Decode {
            path: model.path().to_path_buf(),
            message: format!("cannot read the external data of tensor `{name}`"),
        }
        .into()),
        None => Ok(proto),
    }
}

/// Sets the values of the tensor at `addr` (an initializer, a Constant node or an
/// `ai.onnx.ml` attribute, any scope) of `proto`, a copy of `model`: quantized tensors get
/// their integers, requantized as the child writer does. False when there is no such tensor.
fn set_tensor(
    model: &Model,
    proto: &mut ModelProto,
    addr: &TensorAddr,
    dims: &[i64],
    values: &crate::TensorData,
) -> Result<bool, crate::Error> {
    let info = model
        .tensors()
        .iter()
        .find(|t| t.scope == addr.scope && t.name == addr.name);
    let value = match info {
        Some(t) if !t.dtype.is_mutable_float() => crate::onnx::build::raw(
            "",
            t.dtype,
            dims,
            crate::onnx::raw_bytes(model, t, values)?.into_owned(),
        ),
        _ => encode::float_tensor("", dims, values),
    };
    let mut found = false;
    if let Some(g) = proto.graph.as_mut() {
        graph::for_each_tensor_mut(g, "", &mut |a, t| {
            if a == Some(addr) {
                let name = t.name.take();
                let doc = t.doc_string.take();
                *t = proto::TensorProto {
                    name,
                    doc_string: doc,
                    ..value.clone()
                };
                found = true;
            }
        });
        // Constants given as `value_float(s)` become a `value` tensor.
        if !found {
            found = graph::set_constant_value(g, "", addr, value);
        }
        if !found {
            found = graph::set_ml_attribute(g, "", addr, dims, values);
        }
    }
    Ok(found)
}

/// Builds the ensemble of `model` and members that differ from it in `varying` tensors:
/// compact when the model allows it, else (old opsets, tensors the compact encoding cannot
/// address, quantized weights it does not compact: see `quantized.rs`) by merging full copies
/// of the members.
pub fn build_from_model(
    model: &Model,
    varying: &[Varying],
    weights: &[f64],
    heads: &Heads,
    meta: &[(String, String)],
) -> Result<Built, crate::Error> {
    let proto = decode_model(model)?;
    let compacted = match quantized::integer_varying(model, varying)? {
        Some(s) => {
            compact_stored(&proto, &s.varying, &s.stores, weights, heads, meta).and_then(|mut b| {
                quantized::eight_bit_zero_points(&mut b.model, &s.widened).map(|()| b)
            })
        }
        None => Err(EnsembleError::Invalid(
            "quantized tensors of another type".into(),
        )),
    };
    match compacted {
        Ok(b) => Ok(b),
        Err(EnsembleError::OpsetTooOld(_) | EnsembleError::Invalid(_)) => {
            let mut members = Vec::with_capacity(weights.len());
            for i in 0..weights.len() {
                let mut m = proto.clone();
                for v in varying {
                    if !set_tensor(model, &mut m, &v.addr, &v.dims, &member_values(v, i))? {
                        return Err(EnsembleError::Invalid(format!(
                            "tensor `{}` not found in {}",
                            v.addr.name,
                            model.path().display()
                        ))
                        .into());
                    }
                }
                members.push(m);
            }
            let mut built = merge(&members, weights, heads, meta)?;
            built.notices.push("the members are stored as full copies (the compact encoding does not apply to this model)".into());
            Ok(built)
        }
        Err(e) => Err(e.into()),
    }
}

/// Largest model written without external data (protobuf's limit is 2 GiB).
const INLINE_LIMIT: usize = (1 << 31) - (64 << 20);

/// Writes `model` to `path` atomically, never over one of `inputs`. Above the protobuf size
/// limit, tensors of 1 KiB or more go to `<file name>.data` beside it (external data).
pub fn save(model: &ModelProto, path: &Path, inputs: &[&Path]) -> Result<(), crate::Error> {
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    if model.encoded_len() < INLINE_LIMIT {
        let bytes = model.encode_to_vec();
        return Ok(output::write_atomic_except(path, inputs, |w| {
            w.write_all(&bytes).map_err(io)
        })?);
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "ensemble.onnx".into());
    let data_name = format!("{file_name}.data");
    let data_path = path.with_file_name(&data_name);
    let mut m = model.clone();
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    let mut offset = 0u64;
    if let Some(g) = m.graph.as_mut() {
        graph::for_each_tensor_mut(g, "", &mut |_, t| {
            let Some(raw) = t.raw_data.take_if(|r| r.len() >= 1024) else {
                return;
            };
            // Keep offsets aligned for memory mapping.
            let pad = (4096 - offset % 4096) % 4096;
            if pad > 0 {
                chunks.push(bytes::Bytes::from(vec![0u8; pad as usize]));
                offset += pad;
            }
            let entry = |k: &str, v: String| StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
            };
            t.external_data = vec![
                entry("location", data_name.clone()),
                entry("offset", offset.to_string()),
                entry("length", raw.len().to_string()),
            ];
            t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
            offset += raw.len() as u64;
            chunks.push(raw);
        });
    }
    // The data first, so a model file never names data that is not there.
    let data_io = |e: std::io::Error| ModelError::Io {
        path: data_path.clone(),
        source: e,
    };
    output::write_atomic_except(&data_path, inputs, |w| {
        for c in &chunks {
            w.write_all(c).map_err(data_io)?;
        }
        Ok::<(), ModelError>(())
    })?;
    let bytes = m.encode_to_vec();
    output::write_atomic_except(path, inputs, |w| w.write_all(&bytes).map_err(io))?;
    Ok(())
}

/// The graph with float tensor payloads removed, for telling whether models differ only in
/// their weights.
fn skeleton(m: &ModelProto) -> Vec<u8> {
    let mut g = m.graph.clone().unwrap_or_default();
    graph::for_each_tensor_mut(&mut g, "", &mut |_, t| {
        let code = t.data_type.unwrap_or(0);
        if encode::is_float_code(code) {
            t.raw_data = None;
            t.float_data.clear();
            t.double_data.clear();
            t.int32_data.clear();
        }
    });
    let mut out = g.encode_to_vec();
    for o in &m.opset_import {
        out.extend(o.encode_to_vec());
    }
    for f in &m.functions {
        out.extend(f.encode_to_vec());
    }
    out
}

/// Per element, the value most members hold (the lowest member's among equals), and each
/// member's differences from it.
fn consensus(values: &[crate::TensorData]) -> (crate::TensorData, Vec<Option<Change>>) {
    let mut base = values[0].clone();
    let n = base.len();
    let bits = encode::bits;
    if values.len() > 2 {
        // (bits, first member holding them, count)
        let mut counts: Vec<(u64, usize, usize)> = Vec::with_capacity(values.len());
        for j in 0..n {
            let b0 = bits(&values[0], j);
            if values.iter().all(|v| bits(v, j) == b0) {
                continue;
            }
            counts.clear();
            for (m, v) in values.iter().enumerate() {
                let b = bits(v, j);
                match counts.iter_mut().find(|c| c.0 == b) {
                    Some(c) => c.2 += 1,
                    None => counts.push((b, m, 1)),
                }
            }
            // `max_by_key` keeps the last maximum: reverse so the lowest member wins ties.
            if let Some(&(_, m, _)) = counts.iter().rev().max_by_key(|c| c.2) {
                encode::set_from(&mut base, j, &values[m], j);
            }
        }
    }
    let changes = values
        .iter()
        .map(|v| {
            let idx: Vec<u32> = (0..n)
                .filter(|&j| bits(v, j) != bits(&base, j))
                .map(|j| j as u32)
                .collect();
            (!idx.is_empty()).then(|| Change {
                values: v.gather(&idx),
                indices: idx,
            })
        })
        .collect();
    (base, changes)
}

/// Builds the ensemble of model files: compact when they differ only in float weights (e.g.
/// children of one parent: the consensus of the members is stored once, plus each member's
/// differences), else by merging full copies.
pub fn from_models(
    models: &[Model],
    weights: &[f64],
    heads: &Heads,
    meta: &[(String, String)],
) -> Result<Built, crate::Error> {
    let first = models
        .first()
        .ok_or_else(|| EnsembleError::Invalid("an ensemble needs at least one member".into()))?;
    let protos = models
        .iter()
        .map(decode_model)
        .collect::<Result<Vec<_>, _>>()?;
    let skel = skeleton(&protos[0]);
    let same_shape = protos.iter().skip(1).all(|p| skeleton(p) == skel)
        && models
            .iter()
            .all(|m| m.tensors().len() == first.tensors().len());
    if same_shape && models.len() > 1 {
        let mut varying = Vec::new();
        for (i, info) in first.tensors().iter().enumerate() {
            if !info.dtype.is_mutable_float() {
                continue;
            }
            let values = models
                .iter()
                .map(|m| m.read_values(&m.tensors()[i]))
                .collect::<Result<Vec<_>, _>>()?;
            if values.iter().all(|v| *v == values[0]) {
                continue;
            }
            let (base, changes) = consensus(&values);
            varying.push(Varying {
                addr: TensorAddr {
                    scope: info.scope.clone(),
                    name: info.name.clone(),
                },
                dims: info.dims.clone(),
                base,
                changes,
            });
        }
        match compact(&protos[0], &varying, weights, heads, meta) {
            Ok(b) => return Ok(b),
            Err(EnsembleError::OpsetTooOld(_) | EnsembleError::Invalid(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(merge(&protos, weights, heads, meta)?)
}
