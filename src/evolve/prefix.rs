//! Shared prefixes: when every mutable tensor lies in the later part of the graph, the nodes
//! that depend on none of them (the prefix) compute the same activations for every
//! candidate. They are computed once per run, for the selection and holdout rows in the
//! batches a full pass uses; each candidate's session is then the suffix alone (the nodes
//! that depend on a mutable tensor, plus the constants they read), fed those activations. A
//! candidate costs a suffix pass instead of a full one.
//!
//! Exactness: the suffix holds the full model's nodes with the same weights and the same
//! inputs, but ONNX Runtime may fuse nodes across the cut in the full model (a Conv before a
//! mutated BatchNormalization) and so compute other bits. Before the parent is scored, the
//! first batch runs through the full model and through the split: the split is used only when
//! their predictions are equal bit for bit (same nodes and batch sizes thereafter); otherwise
//! the run keeps full passes and `report.json` says why.

use std::collections::HashSet;
use std::time::Instant;

use ort::session::Session;
use prost::Message;

use super::report::SharedPrefix;
use super::scoring::{Part, Run};
use super::sessions::Sessions;
use crate::Error;
use crate::onnx::DType;
use crate::onnx::build::value_info;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
use crate::score::dataset::Batcher;
use crate::score::{DataError, Dataset, Labels, Predictions};

/// The split is kept when a candidate's suffix costs at most this share of a full candidate
/// (suffix + prefix): below it the saving pays for the activations' memory.
const MAX_SUFFIX_SHARE: f64 = 0.8;

/// A model split at the activations the mutable tensors' nodes read.
#[derive(Debug)]
struct Split {
    /// The nodes that depend on no mutable tensor and feed the cut; outputs: the cut.
    prefix: ModelProto,
    /// The nodes that depend on a mutable tensor and the constants they read; inputs: the cut
    /// (typed once the prefix has run).
    suffix: ModelProto,
    /// The activations between them.
    cut: Vec<String>,
    /// Node counts of the prefix and the suffix.
    nodes: (usize, usize),
}

/// Names read by `n` (optional inputs left out).
fn reads(n: &NodeProto) -> impl Iterator<Item = &str> {
    n.input.iter().map(String::as_str).filter(|s| !s.is_empty())
}

/// Which nodes of `g` depend on a `mutable` tensor (the suffix) and which ones depend on the
/// graph's inputs; `Err` says why the graph cannot be split.
fn classify(g: &GraphProto, mutable: &HashSet<String>) -> Result<(Vec<bool>, Vec<bool>), String> {
    if g.node.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return Err("the graph has subgraphs".into());
    }
    if !g.sparse_initializer.is_empty() {
        return Err("the graph has sparse initializers".into());
    }
    let inits: HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    if mutable.iter().any(|m| !inits.contains(m.as_str())) {
        return Err("a mutable tensor is not an initializer of the main graph".into());
    }
    let mut defined: HashSet<&str> = inits.clone();
    let mut varying: HashSet<&str> = HashSet::new();
    for i in &g.input {
        if let Some(n) = i.name.as_deref().filter(|n| !inits.contains(n)) {
            defined.insert(n);
            varying.insert(n);
        }
    }
    let mut mutated: HashSet<&str> = mutable.iter().map(String::as_str).collect();
    let (mut in_suffix, mut varies) = (vec![false; g.node.len()], vec![false; g.node.len()]);
    for (i, n) in g.node.iter().enumerate() {
        if reads(n).any(|x| !defined.contains(x)) {
            return Err("the nodes are not in topological order".into());
        }
        let outs = n
            .output
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty());
        defined.extend(outs.clone());
        if reads(n).any(|x| varying.contains(x)) {
            varies[i] = true;
            varying.extend(outs.clone());
        }
        if reads(n).any(|x| mutated.contains(x)) {
            in_suffix[i] = true;
            mutated.extend(outs);
        }
    }
    Ok((in_suffix, varies))
}

/// Splits `model` (its main graph) before the first nodes that read a `mutable` tensor;
/// `scored` must be computed by the suffix. `Err` says why it cannot be split usefully.
fn plan(model: &ModelProto, mutable: &HashSet<String>, scored: &str) -> Result<Split, String> {
    let g = model.graph.as_ref().ok_or("the model has no graph")?;
    let (mutated, varies) = classify(g, mutable)?;
    let n = g.node.len();
    // The suffix: mutated nodes, and the constant (input-independent) nodes they read.
    let mut suffix = mutated.clone();
    let mut need: HashSet<&str> = HashSet::new();
    for i in (0..n).rev() {
        let node = &g.node[i];
        if !suffix[i] && !varies[i] && node.output.iter().any(|o| need.contains(o.as_str())) {
            suffix[i] = true;
        }
        if suffix[i] {
            need.extend(reads(node));
        }
    }
    let produced: HashSet<&str> = (0..n)
        .filter(|&i| suffix[i])
        .flat_map(|i| g.node[i].output.iter().map(String::as_str))
        .collect();
    if !produced.contains(scored) {
        return Err(format!(
            "the scored output `{scored}` does not depend on the mutable tensors"
        ));
    }
    let inits: HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let inputs: HashSet<&str> = g.input.iter().filter_map(|i| i.name.as_deref()).collect();
    let mut cut: Vec<String> = Vec::new();
    for i in (0..n).filter(|&i| suffix[i]) {
        for x in reads(&g.node[i]) {
            if !produced.contains(x) && !inits.contains(x) && !cut.iter().any(|c| c == x) {
                if inputs.contains(x) {
                    return Err(format!("a mutated node reads the model input `{x}`"));
                }
                cut.push(x.to_string());
            }
        }
    }
    if cut.is_empty() {
        return Err("the mutated nodes read no model input".into());
    }
    // The prefix: the unmutated nodes the cut is computed from.
    let mut prefix = vec![false; n];
    let mut need: HashSet<&str> = cut.iter().map(String::as_str).collect();
    for i in (0..n).rev() {
        let node = &g.node[i];
        if !mutated[i] && node.output.iter().any(|o| need.contains(o.as_str())) {
            prefix[i] = true;
            need.extend(reads(node));
        }
    }
    let nodes = (
        prefix.iter().filter(|&&p| p).count(),
        suffix.iter().filter(|&&s| s).count(),
    );
    let untyped = |name: &String| ValueInfoProto {
        name: Some(name.clone()),
        ..Default::default()
    };
    let prefix_graph = subgraph(g, &prefix, cut.iter().map(untyped).collect(), true);
    let outputs = g
        .output
        .iter()
        .filter(|o| o.name.as_deref().is_some_and(|o| produced.contains(o)))
        .cloned()
        .collect();
    let suffix_graph = subgraph(g, &suffix, outputs, false);
    // Everything but the graph (cloned once per part, not with the whole graph's weights).
    let with = |graph: GraphProto| ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        producer_name: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        domain: model.domain.clone(),
        model_version: model.model_version,
        doc_string: model.doc_string.clone(),
        graph: Some(graph),
        metadata_props: model.metadata_props.clone(),
        functions: model.functions.clone(),
        ..Default::default()
    };
    Ok(Split {
        prefix: with(prefix_graph),
        suffix: with(suffix_graph),
        cut,
        nodes,
    })
}

/// The nodes of `g` that `keep` marks, with the initializers they read and the value infos
/// of what they compute; the graph's inputs (`model_inputs`: the data's arrays are fed by
/// name) or only the input entries of those initializers (older IR versions list them).
fn subgraph(
    g: &GraphProto,
    keep: &[bool],
    output: Vec<ValueInfoProto>,
    model_inputs: bool,
) -> GraphProto {
    let node: Vec<NodeProto> = g
        .node
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(n, _)| n.clone())
        .collect();
    let read: HashSet<&str> = node.iter().flat_map(reads).collect();
    let made: HashSet<&str> = node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let inits: HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let named = |v: &ValueInfoProto, set: &HashSet<&str>| {
        v.name.as_deref().is_some_and(|n| set.contains(n))
    };
    let initializer = g
        .initializer
        .iter()
        .filter(|t| t.name.as_deref().is_some_and(|n| read.contains(n)))
        .cloned()
        .collect();
    let input = g
        .input
        .iter()
        .filter(|i| {
            let init = i.name.as_deref().is_some_and(|n| inits.contains(n));
            if init { named(i, &read) } else { model_inputs }
        })
        .cloned()
        .collect();
    let value_info = g
        .value_info
        .iter()
        .filter(|v| named(v, &made))
        .cloned()
        .collect();
    GraphProto {
        node: node.clone(),
        initializer,
        input,
        output,
        value_info,
        name: g.name.clone(),
        doc_string: g.doc_string.clone(),
        metadata_props: g.metadata_props.clone(),
        ..Default::default()
    }
}

/// The activations of the cut for a part's rows, as a data set (one array per cut tensor,
/// batch by batch as the predictor would run them; `budget`: the bytes they may take);
/// `Ok(Err)` says why they cannot be used.
fn activations(
    session: &mut Session,
    part: &Part,
    batch: usize,
    cut: &[String],
    budget: usize,
) -> Result<Result<Dataset, String>, Error> {
    let infer = |m: String| -> Error {
        DataError::Inference {
            path: part.data.path().to_path_buf(),
            message: m.replace(['\n', '\r'], " "),
        }
        .into()
    };
    let mut columns: Vec<(String, Vec<usize>, Vec<f32>)> = cut
        .iter()
        .map(|c| (c.clone(), Vec::new(), Vec::new()))
        .collect();
    let mut batcher = Batcher::default();
    let mut planned = 0usize;
    for (b, chunk) in part.rows.chunks(batch.max(1)).enumerate() {
        let (inputs, _) = batcher.inputs(&part.data, chunk, None)?;
        let outputs = session
            .run(inputs)
            .map_err(|e| infer(e.message().to_string()))?;
        for (name, shape, values) in &mut columns {
            let Some(v) = outputs.get(name.as_str()) else {
                return Err(infer(format!("the prefix did not compute `{name}`")));
            };
            let Ok((dims, data)) = v.try_extract_tensor::<f32>() else {
                return Ok(Err(format!("activation `{name}` is not a float32 tensor")));
            };
            let row: Vec<usize> = dims
                .iter()
                .skip(1)
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            if dims.first().and_then(|&d| usize::try_from(d).ok()) != Some(chunk.len())
                || (b > 0 && row != *shape)
            {
                return Ok(Err(format!(
                    "activation `{name}` has shape {dims:?}, not one row per sample"
                )));
            }
            if b == 0 {
                let elems = data.len() / chunk.len().max(1) * part.rows.len();
                planned = planned.saturating_add(elems.saturating_mul(4));
                if planned > budget {
                    return Ok(Err(format!(
                        "the activations would take over {budget} bytes (`{name}`: {} per sample)",
                        4 * (data.len() / chunk.len().max(1))
                    )));
                }
                values.reserve(elems);
            }
            *shape = row;
            values.extend_from_slice(data);
        }
    }
    let labels = match part.data.labels() {
        Labels::Classes(v) => Labels::Classes(part.rows.iter().map(|&r| v[r]).collect()),
        Labels::Targets(v) => Labels::Targets(part.rows.iter().map(|&r| v[r]).collect()),
    };
    Ok(Ok(Dataset::from_f32_columns(
        part.data.path(),
        columns,
        labels,
    )?))
}

/// Equal bit for bit (NaNs included)?
fn same(a: &Predictions, b: &Predictions) -> bool {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    a.classes == b.classes
        && a.kind == b.kind
        && a.non_finite_rows == b.non_finite_rows
        && bits(&a.probs) == bits(&b.probs)
        && bits(&a.values) == bits(&b.values)
}

/// What trying the split found: the report, and the suffix model and the parts to use when
/// it is kept.
type Outcome = (SharedPrefix, Option<(Vec<u8>, [Part; 2])>);

impl Run {
    /// Tries the shared prefix for the `mutable` tensors before the parent is scored, and
    /// keeps it when the first batch's predictions through it are identical to a full pass's
    /// and (`force` unset) a suffix pass costs at most [`MAX_SUFFIX_SHARE`] of a full one.
    /// `force`: `Some(false)` never tries, `Some(true)` keeps it whenever exact. `budget`:
    /// bytes one part's activations may take.
    pub(super) fn share_prefix(
        &mut self,
        mutable: &HashSet<String>,
        force: Option<bool>,
        budget: usize,
    ) -> Result<Option<SharedPrefix>, Error> {
        if force == Some(false) {
            return Ok(None);
        }
        let start = Instant::now();
        // A split ONNX Runtime refuses to build or run costs the run nothing but full passes.
        let (mut report, keep) = match self.try_split(mutable, force, budget) {
            Ok(outcome) => outcome,
            Err(e) => {
                let reason = Some(format!("the split failed: {e}"));
                (
                    SharedPrefix {
                        reason,
                        ..Default::default()
                    },
                    None,
                )
            }
        };
        if let Some((suffix, parts)) = keep
            && let Sessions::Template { bytes, .. } = &mut self.sessions
        {
            *bytes = suffix;
            self.parts = parts;
        }
        report.seconds = start.elapsed().as_secs_f64();
        Ok(Some(report))
    }

    fn try_split(
        &mut self,
        mutable: &HashSet<String>,
        force: Option<bool>,
        budget: usize,
    ) -> Result<Outcome, Error> {
        let mut report = SharedPrefix::default();
        let not = |mut r: SharedPrefix, why: &str| {
            r.reason = Some(why.to_string());
            Ok((r, None))
        };
        let Sessions::Template { bytes, folder, .. } = &self.sessions else {
            return not(report, "candidates are model copies, not templates");
        };
        if self.parts[0].data.fixed_batch().is_some() {
            return not(report, "the model has a fixed batch size");
        }
        let Ok(model) = ModelProto::decode(bytes.as_slice()) else {
            return not(report, "the model does not decode");
        };
        let mut split = match plan(&model, mutable, self.predictor.output()) {
            Ok(s) => s,
            Err(why) => return not(report, &why),
        };
        report.cut.clone_from(&split.cut);
        (report.prefix_nodes, report.suffix_nodes) = split.nodes;
        let t = Instant::now();
        let mut prefix = self
            .runtime
            .session_from_template(&split.prefix.encode_to_vec(), &[], folder.as_deref(), None)
            .map_err(|e| e.for_model(self.model.path()))?;
        let batch = self.predictor.batch();
        let mut acts = Vec::with_capacity(2);
        for part in &self.parts {
            match activations(&mut prefix, part, batch, &split.cut, budget)? {
                Ok(ds) => acts.push(ds),
                Err(why) => return not(report, &why),
            }
        }
        drop(prefix);
        report.prefix_pass = t.elapsed().as_secs_f64();
        type_cut(&mut split, &acts[0]);
        let mut parts = Vec::with_capacity(2);
        for (part, data) in self.parts.iter().zip(acts) {
            let rows = (0..part.rows.len()).collect();
            parts.push(Part::new(data, rows, part.original().to_vec()));
        }
        let suffix = split.suffix.encode_to_vec();
        let t = Instant::now();
        let (exact, suffix_cost) = self.check(&suffix, &parts[0])?;
        report.check = t.elapsed().as_secs_f64();
        if !exact {
            let why = "the first batch's predictions through the split differ from a full pass";
            return not(report, why);
        }
        let share = suffix_cost / (suffix_cost + report.prefix_pass).max(1e-9);
        if force.is_none() && share > MAX_SUFFIX_SHARE {
            return not(report, "the suffix costs most of a full pass");
        }
        let [sel, hold]: [Part; 2] = parts
            .try_into()
            .map_err(|_| super::invalid("internal", "two parts expected"))?;
        report.used = true;
        Ok((report, Some((suffix, [sel, hold]))))
    }

    /// Runs the first batch of the selection rows through the full model and through
    /// `suffix` on `split` (its activations), with the current values: equal bit for bit? And
    /// the seconds a suffix session and pass over both parts would take (from this batch).
    fn check(&mut self, suffix: &[u8], split: &Part) -> Result<(bool, f64), Error> {
        let Sessions::Template {
            bytes,
            folder,
            values,
            ..
        } = &self.sessions
        else {
            return Ok((false, 0.0));
        };
        let folder = folder.as_deref();
        let for_model = |e: crate::runtime::RuntimeError| e.for_model(self.model.path());
        let part = &self.parts[0];
        let n = self.predictor.batch().clamp(1, part.rows.len().max(1));
        let first = part.rows.get(..n).unwrap_or_default();
        let mut full = self
            .runtime
            .session_from_template(bytes, values, folder, None)
            .map_err(for_model)?;
        let full_first = self.predictor.predict(&mut full, &part.data, first)?;
        drop(full);
        let t = Instant::now();
        let mut session = self
            .runtime
            .session_from_template(suffix, values, folder, None)
            .map_err(for_model)?;
        let built = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let rows = split.rows.get(..n).unwrap_or_default();
        let split_first = self.predictor.predict(&mut session, &split.data, rows)?;
        let per_row = t.elapsed().as_secs_f64() / n as f64;
        let all_rows = self.parts.iter().map(|p| p.rows.len()).sum::<usize>() as f64;
        Ok((same(&full_first, &split_first), built + per_row * all_rows))
    }
}

/// Types the suffix's inputs (the cut) from the activations: float32, a symbolic batch
/// dimension, then one sample's shape.
fn type_cut(split: &mut Split, acts: &Dataset) {
    let inputs: Vec<ValueInfoProto> = acts
        .inputs()
        .iter()
        .map(|a| {
            let mut dims: Vec<Result<i64, &str>> = vec![Err("N")];
            dims.extend(
                a.row_shape
                    .iter()
                    .map(|&d| Ok(i64::try_from(d).unwrap_or(i64::MAX))),
            );
            value_info(&a.input, DType::F32, &dims)
        })
        .collect();
    if let Some(g) = split.suffix.graph.as_mut() {
        let mut all = inputs;
        all.append(&mut g.input);
        g.input = all;
    }
}

#[cfg(test)]
mod tests;
