//! Combination heads: the nodes that turn the members' outputs into the ensemble's outputs.

use std::collections::HashMap;

use super::proto::{GraphProto, NodeProto, TensorProto, ValueInfoProto, type_proto};
use crate::onnx::DType;
use crate::onnx::build::{self, attr_int};
use crate::score::ScoredAs;

/// How float outputs are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Probability outputs: weighted mean; logits outputs: log of the weighted mean of the
    /// members' softmax; other float outputs: weighted mean.
    #[default]
    Probs,
    /// Like `Probs`, but logits outputs are combined by their plain weighted mean.
    Logits,
    /// Every float output: plain weighted mean.
    Mean,
}

/// What an output holds, as far as combining goes. Not [`ScoredAs`], what scoring found in
/// an output's values ([`OutputKind::from_scored`] maps that to this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Probabilities (produced by Softmax or Sigmoid, or declared so).
    Probabilities,
    /// Log-probabilities or logits: a float tensor of shape [N, C] (C ≠ 1) that is not a
    /// probability.
    Logits,
    /// Any other float tensor.
    Float,
    /// Cannot be averaged (integers, strings, sequences, maps...).
    Other,
}

impl OutputKind {
    /// How to combine an output whose values scoring saw as `scored`: probabilities and logits
    /// as such; for regression values, `None` (the graph decides, as for any output).
    pub fn from_scored(scored: ScoredAs) -> Option<OutputKind> {
        match scored {
            ScoredAs::Probabilities => Some(OutputKind::Probabilities),
            ScoredAs::Logits => Some(OutputKind::Logits),
            ScoredAs::Regression => None,
        }
    }
}

/// Element type of a tensor value, if it is one.
pub fn elem_type(v: &ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

/// True for a tensor of shape [N, C] whose C is not fixed at 1 (a one-column output is a
/// regression value or a single score, not a distribution's logits).
fn is_class_scores(v: &ValueInfoProto) -> bool {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return false;
    };
    let Some(shape) = &t.shape else { return false };
    let one = |d: &super::proto::tensor_shape_proto::Dimension| {
        matches!(
            d.value,
            Some(super::proto::tensor_shape_proto::dimension::Value::DimValue(1))
        )
    };
    shape.dim.len() == 2 && !shape.dim.get(1).is_some_and(one)
}

/// Ops that pass a value through without changing what kind of value it is.
const PASS_THROUGH: &[&str] = &[
    "Identity",
    "Cast",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "CastLike",
];

/// Classifies output `out` of graph `g`: probabilities are recognised from the op that
/// produces them (Softmax, Sigmoid, through reshapes and casts), unless `declared` says what a
/// float output holds (e.g. what scoring saw in its values).
pub fn output_kind(
    g: &GraphProto,
    out: &ValueInfoProto,
    declared: Option<OutputKind>,
) -> OutputKind {
    let Some(code) = elem_type(out) else {
        return OutputKind::Other;
    };
    if !super::encode::is_float_code(code) {
        return OutputKind::Other;
    }
    if let Some(kind) = declared {
        return kind;
    }
    if made_by_softmax(g, out.name.as_deref().unwrap_or("")) {
        OutputKind::Probabilities
    } else if is_class_scores(out) {
        OutputKind::Logits
    } else {
        OutputKind::Float
    }
}

/// True for the `ai.onnx.ml` nodes whose float output holds class probabilities as
/// scikit-learn's exporter (skl2onnx) writes them: an L1 `Normalizer` (of softmax scores), a
/// classifier with a softmax or logistic post-transform. (A forest's averaged leaf values
/// stop summing to one once mutated: like other [N, C] scores, they are logits unless named
/// with `--probabilities`.)
fn ml_probabilities(n: &NodeProto) -> bool {
    if n.domain.as_deref() != Some("ai.onnx.ml") {
        return false;
    }
    let text = |name: &str| {
        n.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .and_then(|a| a.s.as_deref())
            .unwrap_or(&[])
    };
    let post = text("post_transform");
    let squashed = matches!(post, b"SOFTMAX" | b"LOGISTIC" | b"SOFTMAX_ZERO");
    match n.op_type.as_deref().unwrap_or("") {
        "Normalizer" => text("norm") == b"L1",
        "LinearClassifier" | "SVMClassifier" | "TreeEnsembleClassifier" => squashed,
        _ => false,
    }
}

/// True when `name` is produced by a Softmax or Sigmoid (or an `ai.onnx.ml` node that
/// outputs probabilities, [`ml_probabilities`]), through reshapes and casts.
fn made_by_softmax(g: &GraphProto, name: &str) -> bool {
    let producers: HashMap<&str, &NodeProto> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let mut name = name;
    // Bounded walk: a malformed graph may loop.
    for _ in 0..64 {
        let Some(n) = producers.get(name) else {
            return false;
        };
        let op = n.op_type.as_deref().unwrap_or("");
        if op == "Softmax" || op == "Sigmoid" || ml_probabilities(n) {
            return true;
        }
        if !PASS_THROUGH.contains(&op) {
            return false;
        }
        match n.input.first() {
            Some(i) => name = i,
            None => return false,
        }
    }
    false
}

/// Appends to `g` the nodes that combine `members` (value names, one per member, with
/// `weights`) into a value named `out`, of ONNX element type `code`.
pub fn combine(
    g: &mut GraphProto,
    out: &str,
    code: i32,
    kind: OutputKind,
    mode: Combine,
    members: &[String],
    weights: &[f64],
) {
    let tag = |s: &str| format!("smd/head/{out}/{s}");
    let total: f64 = weights.iter().sum();
    let equal = weights.windows(2).all(|w| w[0] == w[1]);
    let consts: Vec<String> = (0..members.len()).map(|i| tag(&format!("w{i}"))).collect();
    if !equal {
        for (c, w) in consts.iter().zip(weights) {
            g.initializer.push(scalar(c, code, w / total));
        }
    }
    // Weighted mean of `xs` into `dst`.
    let mean = |g: &mut GraphProto, xs: &[String], dst: &str| {
        let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
        if equal {
            g.node
                .push(build::node("Mean", dst, &refs, &[dst], Vec::new()));
        } else {
            let scaled: Vec<String> = (0..xs.len()).map(|i| format!("{dst}/scaled{i}")).collect();
            for ((x, c), s) in xs.iter().zip(&consts).zip(&scaled) {
                g.node
                    .push(build::node("Mul", s, &[x, c], &[s], Vec::new()));
            }
            let refs: Vec<&str> = scaled.iter().map(String::as_str).collect();
            g.node
                .push(build::node("Sum", dst, &refs, &[dst], Vec::new()));
        }
    };
    match (kind, mode) {
        (OutputKind::Logits, Combine::Probs) => {
            // log Σ wᵢ softmax(xᵢ), computed stably as m + log Σ wᵢ exp(log_softmax(xᵢ) − m)
            // with m the element-wise max over members.
            let logp: Vec<String> = (0..members.len())
                .map(|i| tag(&format!("logp{i}")))
                .collect();
            for (x, l) in members.iter().zip(&logp) {
                g.node.push(build::node(
                    "LogSoftmax",
                    l,
                    &[x],
                    &[l],
                    vec![attr_int("axis", 1)],
                ));
            }
            let m = tag("max");
            let refs: Vec<&str> = logp.iter().map(String::as_str).collect();
            g.node
                .push(build::node("Max", &m, &refs, &[&m], Vec::new()));
            let exps: Vec<String> = (0..members.len())
                .map(|i| tag(&format!("exp{i}")))
                .collect();
            for (l, e) in logp.iter().zip(&exps) {
                let d = format!("{e}/sub");
                g.node
                    .push(build::node("Sub", &d, &[l, &m], &[&d], Vec::new()));
                g.node.push(build::node("Exp", e, &[&d], &[e], Vec::new()));
            }
            let s = tag("mean");
            mean(g, &exps, &s);
            let lg = tag("log");
            g.node
                .push(build::node("Log", &lg, &[&s], &[&lg], Vec::new()));
            g.node.push(build::node(
                "Add",
                &tag("add"),
                &[&lg, &m],
                &[out],
                Vec::new(),
            ));
        }
        (OutputKind::Other, _) => {
            let first = members.first().map(String::as_str).unwrap_or("");
            g.node.push(build::node(
                "Identity",
                &tag("first"),
                &[first],
                &[out],
                Vec::new(),
            ));
        }
        _ => mean(g, members, out),
    }
}

/// A scalar float constant of element type `code`.
fn scalar(name: &str, code: i32, v: f64) -> TensorProto {
    let dtype = DType::from_onnx(i64::from(code));
    let raw = match dtype {
        DType::F64 => v.to_le_bytes().to_vec(),
        DType::F16 => half::f16::from_f64(v).to_le_bytes().to_vec(),
        DType::BF16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
        _ => (v as f32).to_le_bytes().to_vec(),
    };
    build::raw(name, dtype, &[], raw)
}

/// `ai.onnx.ml` classifiers: their first output is the label of the highest class score.
const ML_CLASSIFIERS: &[&str] = &[
    "LinearClassifier",
    "SVMClassifier",
    "TreeEnsembleClassifier",
];

/// Ops between a classifier's scores and a graph output that keep the classes' order.
const SCORE_ORDER_KEEPING: &[&str] = &["Normalizer", "Identity", "Cast"];

/// For graph output `label`, the first output of an `ai.onnx.ml` classifier in `g`: adds to
/// `g` the nodes that recompute it as the class of the highest score among `combined`'s
/// output computed from that classifier's scores (`Gather(classlabels, ArgMax(scores))`), and
/// returns that output's name; `None` (and `g` unchanged) when there is no such output.
pub fn add_classifier_label(
    g: &mut GraphProto,
    parent: &GraphProto,
    label: &str,
    combined: &std::collections::HashSet<String>,
) -> Option<String> {
    let node = parent.node.iter().find(|n| {
        n.domain.as_deref() == Some("ai.onnx.ml")
            && ML_CLASSIFIERS.contains(&n.op_type.as_deref().unwrap_or(""))
            && n.output.first().map(String::as_str) == Some(label)
    })?;
    let raw_scores = node.output.get(1)?;
    let producers: HashMap<&str, &NodeProto> = parent
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    // The combined output the scores reach through order-keeping ops (sorted: deterministic).
    let mut candidates: Vec<&String> = combined.iter().collect();
    candidates.sort();
    let scores = candidates.into_iter().find(|c| {
        let mut v = c.as_str();
        for _ in 0..16 {
            if v == raw_scores {
                return true;
            }
            let Some(n) = producers.get(v) else {
                return false;
            };
            if !SCORE_ORDER_KEEPING.contains(&n.op_type.as_deref().unwrap_or("")) {
                return false;
            }
            match n.input.first() {
                Some(i) => v = i,
                None => return false,
            }
        }
        false
    })?;
    let attr = |name: &str| {
        node.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    };
    let tag = |s: &str| format!("smd/label/{label}/{s}");
    // TreeEnsembleClassifier names its integer labels `classlabels_int64s`.
    let ints = attr("classlabels_ints").or_else(|| attr("classlabels_int64s"));
    let classes = match (ints, attr("classlabels_strings")) {
        (Some(a), _) if !a.ints.is_empty() => build::raw(
            &tag("classes"),
            DType::I64,
            &[a.ints.len() as i64],
            a.ints.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        (_, Some(a)) if !a.strings.is_empty() => TensorProto {
            name: Some(tag("classes")),
            data_type: Some(DType::String.to_onnx()),
            dims: vec![a.strings.len() as i64],
            string_data: a.strings.clone(),
            ..Default::default()
        },
        _ => return None,
    };
    g.node.push(build::node(
        "ArgMax",
        &tag("argmax"),
        &[scores],
        &[&tag("argmax")],
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
    ));
    g.node.push(build::node(
        "Gather",
        &tag("gather"),
        &[&tag("classes"), &tag("argmax")],
        &[label],
        vec![attr_int("axis", 0)],
    ));
    g.initializer.push(classes);
    Some(scores.clone())
}
