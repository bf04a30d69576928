//! Tails: graph outputs computed from a classifier's class scores, such as scikit-learn's
//! `label` (`ArgMax` → class lookup) and its `ZipMap` of probabilities (skl2onnx's default
//! export). Scoring reads the float scores that feed them even when they are not a graph
//! output; ensembles recompute the tails from the combined scores, so a drop-in ensemble's
//! label always agrees with its probabilities.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::proto::{NodeProto, ValueInfoProto};

/// Ops whose first input holds class scores and whose output is not a float tensor a model
/// can be scored on (a label index, a sequence of maps).
const SCORE_CONSUMERS: &[&str] = &["ZipMap", "ArgMax"];

/// Hops followed between a consumer and the graph output it feeds (a bound: graphs may loop).
const MAX_WALK: usize = 256;

/// The main graph's nodes, outputs and value infos; its initializers are skipped while
/// decoding (prost skips unknown fields), so this costs no copy of the weights.
#[derive(Clone, PartialEq, Message)]
struct GraphLite {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    value_info: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ModelLite {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphLite>,
}

/// Values (not graph outputs) that hold class scores feeding a graph output through a
/// `ZipMap` or an `ArgMax`, in node order, ZipMap inputs first; with their declared value
/// info when the graph has one.
pub fn hidden_scores(nodes: &[NodeProto], outputs: &[ValueInfoProto]) -> Vec<String> {
    let out_names: HashSet<&str> = outputs.iter().filter_map(|o| o.name.as_deref()).collect();
    let consumers: HashMap<&str, Vec<&NodeProto>> = {
        let mut m: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
        for n in nodes {
            for i in &n.input {
                m.entry(i.as_str()).or_default().push(n);
            }
        }
        m
    };
    // True when a graph output is computed from `value` (bounded breadth-first walk).
    let reaches_output = |value: &str| {
        let mut seen = HashSet::new();
        let mut todo = vec![value];
        while let Some(v) = todo.pop() {
            if out_names.contains(v) {
                return true;
            }
            if seen.len() > MAX_WALK || !seen.insert(v) {
                continue;
            }
            for n in consumers.get(v).into_iter().flatten() {
                todo.extend(n.output.iter().map(String::as_str));
            }
        }
        false
    };
    let mut found = Vec::new();
    for op in SCORE_CONSUMERS {
        for n in nodes.iter().filter(|n| n.op_type.as_deref() == Some(op)) {
            let (Some(input), Some(output)) = (n.input.first(), n.output.first()) else {
                continue;
            };
            if input.is_empty() || out_names.contains(input.as_str()) || found.contains(input) {
                continue;
            }
            if reaches_output(output) {
                found.push(input.clone());
            }
        }
    }
    found
}

/// [`hidden_scores`] of a serialized model, decoding only its graph's nodes and outputs; with
/// the value info the graph declares for each (if any).
pub fn hidden_scores_of(
    model_bytes: &[u8],
) -> Result<Vec<(String, Option<ValueInfoProto>)>, prost::DecodeError> {
    let m = ModelLite::decode(model_bytes)?;
    let Some(g) = m.graph else {
        return Ok(Vec::new());
    };
    Ok(hidden_scores(&g.node, &g.output)
        .into_iter()
        .map(|name| {
            let info = g
                .value_info
                .iter()
                .find(|v| v.name.as_deref() == Some(name.as_str()))
                .cloned();
            (name, info)
        })
        .collect())
}

/// Bytes to append to a serialized model so that `values` become graph outputs too. Protobuf
/// merges a repeated occurrence of a message field, so `model bytes ++ graph { output: values }`
/// is the model with those outputs appended, and no byte of the model itself changes.
/// Types are left to ONNX Runtime to infer.
pub fn expose_suffix(values: &[&str]) -> Vec<u8> {
    ModelLite {
        graph: Some(GraphLite {
            node: Vec::new(),
            output: values.iter().map(|v| out_info(v)).collect(),
            value_info: Vec::new(),
        }),
    }
    .encode_to_vec()
}

fn out_info(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// The nodes (indices into `nodes`, in their order) that compute `output` from the values in
/// `sources`: the producers of `output`'s ancestors that depend on a source. `None` when
/// `output` depends on no source (or is one).
pub fn tail(nodes: &[NodeProto], sources: &HashSet<String>, output: &str) -> Option<Vec<usize>> {
    if sources.contains(output) {
        return None;
    }
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(j, n)| n.output.iter().map(move |o| (o.as_str(), j)))
        .collect();
    // depends[j]: node j reads a source, directly or through other nodes. Nodes are visited
    // from `output` backwards; a value no node produces (input, initializer) is a leaf.
    let mut depends: HashMap<usize, bool> = HashMap::new();
    let mut stack: Vec<(usize, bool)> = producer
        .get(output)
        .map(|&j| (j, false))
        .into_iter()
        .collect();
    let mut on_stack = HashSet::new();
    while let Some((j, expanded)) = stack.pop() {
        if depends.contains_key(&j) {
            continue;
        }
        if !expanded {
            // Already being expanded further down the stack: a cycle, or a second path.
            if !on_stack.insert(j) {
                continue;
            }
            stack.push((j, true));
            for i in nodes[j].input.iter().filter(|i| !i.is_empty()) {
                if let Some(&p) = producer.get(i.as_str())
                    && !sources.contains(i)
                    && !depends.contains_key(&p)
                    && !on_stack.contains(&p)
                {
                    stack.push((p, false));
                }
            }
            continue;
        }
        let d = nodes[j].input.iter().any(|i| {
            sources.contains(i)
                || producer
                    .get(i.as_str())
                    .is_some_and(|p| depends.get(p).copied().unwrap_or(false))
        });
        depends.insert(j, d);
    }
    let mut out: Vec<usize> = depends
        .into_iter()
        .filter_map(|(j, d)| d.then_some(j))
        .collect();
    if out.is_empty() {
        return None;
    }
    out.sort_unstable();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(op: &str, i: &[&str], o: &[&str]) -> NodeProto {
        super::super::build::node(op, o[0], i, o, Vec::new())
    }

    fn out(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    /// skl2onnx's classifier tail with ZipMap.
    fn skl() -> Vec<NodeProto> {
        vec![
            n("MatMul", &["x", "w"], &["z"]),
            n("Softmax", &["z"], &["probabilities"]),
            n("ArgMax", &["probabilities"], &["argmax"]),
            n("ArrayFeatureExtractor", &["classes", "argmax"], &["picked"]),
            n("Reshape", &["picked", "shape"], &["reshaped"]),
            n("Cast", &["reshaped"], &["label"]),
            n("ZipMap", &["probabilities"], &["output_probability"]),
        ]
    }

    #[test]
    fn zipmap_input_is_the_hidden_score() {
        let outs = [out("label"), out("output_probability")];
        assert_eq!(hidden_scores(&skl(), &outs), vec!["probabilities"]);
        // Once probabilities is a graph output, nothing is hidden.
        let outs = [out("label"), out("probabilities")];
        assert!(hidden_scores(&skl(), &outs).is_empty());
    }

    #[test]
    fn tail_is_the_path_from_the_scores() {
        let nodes = skl();
        let src: HashSet<String> = ["probabilities".to_string()].into();
        assert_eq!(tail(&nodes, &src, "label"), Some(vec![2, 3, 4, 5]));
        assert_eq!(tail(&nodes, &src, "output_probability"), Some(vec![6]));
        assert_eq!(tail(&nodes, &src, "probabilities"), None);
        assert_eq!(tail(&nodes, &src, "z"), None);
    }

    #[test]
    fn an_appended_graph_adds_outputs() {
        let mut bytes = ModelLite {
            graph: Some(GraphLite {
                node: skl(),
                output: vec![out("label")],
                value_info: Vec::new(),
            }),
        }
        .encode_to_vec();
        bytes.extend(expose_suffix(&["probabilities"]));
        let g = ModelLite::decode(bytes.as_slice()).unwrap().graph.unwrap();
        assert_eq!(g.node.len(), skl().len());
        let names: Vec<_> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
        assert_eq!(names, ["label", "probabilities"]);
    }

    #[test]
    fn cycles_do_not_hang() {
        let nodes = vec![n("Add", &["a", "b"], &["c"]), n("Add", &["c", "s"], &["b"])];
        let src: HashSet<String> = ["s".to_string()].into();
        assert!(tail(&nodes, &src, "c").is_some());
    }
}
