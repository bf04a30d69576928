//! Graph surgery for ensembles: scope-aware renaming, per-member instantiation with sharing of
//! everything a member does not change, dead-code removal.

use std::collections::{HashMap, HashSet};

use super::proto::{AttributeProto, GraphProto, NodeProto, TensorProto, ValueInfoProto};
use crate::onnx::build;

/// Where a tensor lives: the scope path of its graph ("" for the main graph, else e.g.
/// `If_0/then_branch`, nested with `/`) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorAddr {
    /// Scope path of the graph holding the tensor ("" for the main graph).
    pub scope: String,
    /// The tensor's name (a Constant node's output name for constants).
    pub name: String,
}

/// The scope path of subgraph `attr` (index `j` when the attribute is a list of graphs) of
/// `node` (the `index`-th node of its graph) inside a graph whose scope path is `parent`.
pub fn subgraph_scope(
    parent: &str,
    node: &NodeProto,
    index: usize,
    attr: &AttributeProto,
    j: Option<usize>,
) -> String {
    let node_id = match node.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("node{index}"),
    };
    let attr_name = attr.name.as_deref().unwrap_or("");
    let leaf = match j {
        Some(j) => format!("{node_id}/{attr_name}[{j}]"),
        None => format!("{node_id}/{attr_name}"),
    };
    if parent.is_empty() {
        leaf
    } else {
        format!("{parent}/{leaf}")
    }
}

/// Subgraphs of a node's attributes with their scope paths.
pub fn subgraphs<'a>(
    parent: &str,
    node: &'a NodeProto,
    index: usize,
) -> Vec<(String, &'a GraphProto)> {
    let mut out = Vec::new();
    for attr in &node.attribute {
        if let Some(g) = &attr.g {
            out.push((subgraph_scope(parent, node, index, attr, None), g));
        }
        for (j, g) in attr.graphs.iter().enumerate() {
            out.push((subgraph_scope(parent, node, index, attr, Some(j)), g));
        }
    }
    out
}

/// [`subgraphs`], mutably.
pub fn subgraphs_mut<'a>(
    parent: &str,
    node: &'a mut NodeProto,
    index: usize,
) -> Vec<(String, &'a mut GraphProto)> {
    let scopes: Vec<String> = subgraphs(parent, node, index)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let graphs = node
        .attribute
        .iter_mut()
        .flat_map(|a| a.g.iter_mut().chain(a.graphs.iter_mut()));
    scopes.into_iter().zip(graphs).collect()
}

/// Names defined in `g` itself (inputs, initializers, node outputs), not in its subgraphs.
pub fn defined_names(g: &GraphProto) -> HashSet<String> {
    let mut defs = HashSet::new();
    defs.extend(g.input.iter().filter_map(|v| v.name.clone()));
    defs.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
    defs.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref().and_then(|t| t.name.clone())),
    );
    for n in &g.node {
        defs.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    defs
}

/// Names a graph uses from enclosing scopes (outer-scope captures), through any nesting.
pub fn free_names(g: &GraphProto) -> HashSet<String> {
    let defs = defined_names(g);
    let mut refs = HashSet::new();
    for n in &g.node {
        refs.extend(node_refs(n));
    }
    refs.extend(g.output.iter().filter_map(|v| v.name.clone()));
    refs.retain(|r| !r.is_empty() && !defs.contains(r));
    refs
}

/// Everything a node reads: its inputs and what its subgraphs capture.
pub fn node_refs(n: &NodeProto) -> HashSet<String> {
    let mut refs: HashSet<String> = n.input.iter().filter(|i| !i.is_empty()).cloned().collect();
    for attr in &n.attribute {
        for g in attr.g.iter().chain(attr.graphs.iter()) {
            refs.extend(free_names(g));
        }
    }
    refs
}

/// Addresses of tensors defined inside a node's subgraphs (initializers and Constant nodes),
/// at any depth.
pub fn nested_tensor_addrs(scope: &str, node: &NodeProto, index: usize, out: &mut Vec<TensorAddr>) {
    for (sub_scope, g) in subgraphs(scope, node, index) {
        graph_tensor_addrs(&sub_scope, g, out);
    }
}

/// Addresses of the tensors a graph defines (initializers and Constant nodes), subgraphs included.
pub fn graph_tensor_addrs(scope: &str, g: &GraphProto, out: &mut Vec<TensorAddr>) {
    for t in &g.initializer {
        out.push(TensorAddr {
            scope: scope.to_string(),
            name: t.name.clone().unwrap_or_default(),
        });
    }
    for (j, n) in g.node.iter().enumerate() {
        if is_constant(n)
            && let Some(o) = n.output.first()
        {
            out.push(TensorAddr {
                scope: scope.to_string(),
                name: o.clone(),
            });
        }
        nested_tensor_addrs(scope, n, j, out);
    }
}

/// Calls `f` with every tensor a graph defines, subgraphs included: initializers, and the
/// `value` tensor of Constant nodes (addressed by the node's output name). Tensors held in
/// other attributes (e.g. `ConstantOfShape`'s value) are visited with `f`'s address `None`.
pub fn for_each_tensor_mut(
    g: &mut GraphProto,
    scope: &str,
    f: &mut dyn FnMut(Option<&TensorAddr>, &mut TensorProto),
) {
    for t in &mut g.initializer {
        let addr = TensorAddr {
            scope: scope.to_string(),
            name: t.name.clone().unwrap_or_default(),
        };
        f(Some(&addr), t);
    }
    for s in &mut g.sparse_initializer {
        for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
            f(None, t);
        }
    }
    for j in 0..g.node.len() {
        let n = &g.node[j];
        let constant = is_constant(n).then(|| n.output.first().cloned()).flatten();
        let n = &mut g.node[j];
        for a in &mut n.attribute {
            let is_value = a.name.as_deref() == Some("value");
            if let Some(t) = a.t.as_mut() {
                match (&constant, is_value) {
                    (Some(o), true) => f(
                        Some(&TensorAddr {
                            scope: scope.to_string(),
                            name: o.clone(),
                        }),
                        t,
                    ),
                    _ => f(None, t),
                }
            }
            for t in &mut a.tensors {
                f(None, t);
            }
        }
        for (sub_scope, sg) in subgraphs_mut(scope, n, j) {
            for_each_tensor_mut(sg, &sub_scope, f);
        }
    }
}

/// Gives the Constant node at `addr` (any scope) the tensor `value`, replacing whatever
/// attribute held its value (`value`, `value_float`, `value_floats`...). Returns false when
/// there is no such Constant node.
pub fn set_constant_value(
    g: &mut GraphProto,
    scope: &str,
    addr: &TensorAddr,
    value: TensorProto,
) -> bool {
    for j in 0..g.node.len() {
        let n = &g.node[j];
        if scope == addr.scope && is_constant(n) && n.output.first() == Some(&addr.name) {
            g.node[j].attribute = vec![AttributeProto {
                name: Some("value".into()),
                r#type: Some(super::proto::attribute_proto::AttributeType::Tensor as i32),
                t: Some(value),
                ..Default::default()
            }];
            return true;
        }
        for (sub_scope, sg) in subgraphs_mut(scope, &mut g.node[j], j) {
            let inside =
                addr.scope == sub_scope || addr.scope.starts_with(&format!("{sub_scope}/"));
            if inside && set_constant_value(sg, &sub_scope, addr, value.clone()) {
                return true;
            }
        }
    }
    false
}

/// Gives the `ai.onnx.ml` node attribute at `addr` (named `<node label>.<attribute>`, any
/// scope; see [`crate::onnx::Location::MlAttribute`]) the values `values`: its `floats`
/// (float32 values only), or its tensor with `dims`. False when there is no such attribute.
pub fn set_ml_attribute(
    g: &mut GraphProto,
    scope: &str,
    addr: &TensorAddr,
    dims: &[i64],
    values: &crate::TensorData,
) -> bool {
    for j in 0..g.node.len() {
        let n = &mut g.node[j];
        if scope == addr.scope && n.domain.as_deref() == Some("ai.onnx.ml") {
            let label = match n.name.as_deref() {
                Some(l) if !l.is_empty() => l.to_string(),
                _ => format!("node{j}"),
            };
            let named = |a: &AttributeProto| {
                format!("{label}.{}", a.name.as_deref().unwrap_or("")) == addr.name
            };
            if let Some(a) = n.attribute.iter_mut().find(|a| named(a)) {
                return match (a.t.as_mut(), values) {
                    (Some(t), _) => {
                        let name = t.name.take();
                        *t = TensorProto {
                            name,
                            ..build::values("", dims, values)
                        };
                        true
                    }
                    (None, crate::TensorData::F32(v)) => {
                        a.floats = v.clone();
                        true
                    }
                    (None, _) => false,
                };
            }
        }
        for (sub_scope, sg) in subgraphs_mut(scope, &mut g.node[j], j) {
            let inside =
                addr.scope == sub_scope || addr.scope.starts_with(&format!("{sub_scope}/"));
            if inside && set_ml_attribute(sg, &sub_scope, addr, dims, values) {
                return true;
            }
        }
    }
    false
}

/// True for an ONNX `Constant` node (default domain).
pub fn is_constant(n: &NodeProto) -> bool {
    n.op_type.as_deref() == Some("Constant")
        && matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

/// Node indices in a topological order (ONNX requires graphs to be sorted, but not every
/// exporter complies); falls back to the stored order for what cannot be ordered.
pub fn topo_order(g: &GraphProto) -> Vec<usize> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (j, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o, j);
        }
    }
    let deps: Vec<Vec<usize>> = g
        .node
        .iter()
        .enumerate()
        .map(|(j, n)| {
            let mut d: Vec<usize> = node_refs(n)
                .iter()
                .filter_map(|r| producer.get(r.as_str()).copied())
                .filter(|&p| p != j)
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect();
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
    for (j, d) in deps.iter().enumerate() {
        for &p in d {
            users[p].push(j);
        }
    }
    // A min-heap keeps the stored order wherever the dependencies allow it.
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..g.node.len())
        .filter(|&j| indegree[j] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(g.node.len());
    let mut placed = vec![false; g.node.len()];
    while let Some(std::cmp::Reverse(j)) = ready.pop() {
        order.push(j);
        placed[j] = true;
        for &u in &users[j] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.push(std::cmp::Reverse(u));
            }
        }
    }
    // Cycles (invalid models) keep their stored order; ORT reports them.
    order.extend((0..g.node.len()).filter(|&j| !placed[j]));
    order
}

/// Renames every value name in a graph (definitions and references, any depth) with `f`.
/// Not scope-aware: `f` is applied to every occurrence, which stays consistent under shadowing.
pub fn rename_all(g: &mut GraphProto, f: &dyn Fn(&str) -> Option<String>) {
    let apply = |s: &mut String| {
        if !s.is_empty()
            && let Some(n) = f(s)
        {
            *s = n;
        }
    };
    for v in g
        .input
        .iter_mut()
        .chain(g.output.iter_mut())
        .chain(g.value_info.iter_mut())
    {
        if let Some(name) = v.name.as_mut() {
            apply(name);
        }
    }
    for t in &mut g.initializer {
        if let Some(name) = t.name.as_mut() {
            apply(name);
        }
    }
    for s in &mut g.sparse_initializer {
        if let Some(name) = s.values.as_mut().and_then(|t| t.name.as_mut()) {
            apply(name);
        }
    }
    for n in &mut g.node {
        n.input.iter_mut().for_each(apply);
        n.output.iter_mut().for_each(apply);
        for a in &mut n.attribute {
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                rename_all(sub, f);
            }
        }
    }
}

/// How a (sub)graph copy treats the tensors that vary between members: the value name each
/// varying tensor takes in this copy (None = the tensor is not varying).
pub type TensorSource<'a> = &'a dyn Fn(&TensorAddr) -> Option<String>;

/// Copies graph `g` (scope path `scope`) for one member. Local definitions are renamed with
/// `local` (e.g. prefixed for a member copy, unchanged for the shared copy); references to
/// enclosing scopes go through `outer`. Varying tensors defined in the graph (initializers or
/// Constant nodes) become `Identity(source)` nodes, so their values come from the main graph.
pub fn copy_graph(
    g: &GraphProto,
    scope: &str,
    local: &dyn Fn(&str) -> String,
    outer: &dyn Fn(&str) -> String,
    source: TensorSource<'_>,
) -> GraphProto {
    let defs = defined_names(g);
    let rename = |n: &str| -> String {
        if n.is_empty() {
            String::new()
        } else if defs.contains(n) {
            local(n)
        } else {
            outer(n)
        }
    };
    let rename_vi = |v: &ValueInfoProto| {
        let mut v = v.clone();
        v.name = v.name.as_deref().map(rename);
        v
    };
    let mut out = GraphProto {
        name: g.name.clone(),
        doc_string: g.doc_string.clone(),
        input: g.input.iter().map(rename_vi).collect(),
        output: g.output.iter().map(rename_vi).collect(),
        value_info: g.value_info.iter().map(rename_vi).collect(),
        quantization_annotation: g.quantization_annotation.clone(),
        metadata_props: g.metadata_props.clone(),
        ..Default::default()
    };
    for t in &g.initializer {
        let name = t.name.clone().unwrap_or_default();
        let addr = TensorAddr {
            scope: scope.to_string(),
            name: name.clone(),
        };
        match source(&addr) {
            Some(src) => out.node.push(identity(
                &src,
                &rename(&name),
                &format!("smd/src/{}", rename(&name)),
            )),
            None => {
                let mut t = t.clone();
                t.name = Some(rename(&name));
                out.initializer.push(t);
            }
        }
    }
    for s in &g.sparse_initializer {
        let mut s = s.clone();
        if let Some(name) = s.values.as_mut().and_then(|t| t.name.as_mut()) {
            *name = rename(name);
        }
        out.sparse_initializer.push(s);
    }
    for (j, n) in g.node.iter().enumerate() {
        out.node
            .push(copy_node(n, scope, j, &rename, local, source));
    }
    out
}

/// Copies node `n` (the `j`-th node of the graph at `scope`): value names go through `rename`,
/// the node's own name and its subgraphs' local names through `local`. A Constant node holding
/// a varying tensor becomes `Identity(source)`.
pub fn copy_node(
    n: &NodeProto,
    scope: &str,
    j: usize,
    rename: &dyn Fn(&str) -> String,
    local: &dyn Fn(&str) -> String,
    source: TensorSource<'_>,
) -> NodeProto {
    let node_name = n.name.as_deref().filter(|s| !s.is_empty()).map(local);
    if is_constant(n)
        && let Some(o) = n.output.first()
    {
        let addr = TensorAddr {
            scope: scope.to_string(),
            name: o.clone(),
        };
        if let Some(src) = source(&addr) {
            return identity(&src, &rename(o), node_name.as_deref().unwrap_or(""));
        }
    }
    // An empty name is an omitted optional input or output: it stays empty.
    let names = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|s| {
                if s.is_empty() {
                    String::new()
                } else {
                    rename(s)
                }
            })
            .collect()
    };
    let mut c = n.clone();
    c.input = names(&n.input);
    c.output = names(&n.output);
    c.name = node_name.or(c.name);
    for (a, orig) in c.attribute.iter_mut().zip(&n.attribute) {
        if let Some(sub) = &orig.g {
            a.g = Some(copy_graph(
                sub,
                &subgraph_scope(scope, n, j, orig, None),
                local,
                rename,
                source,
            ));
        }
        for (gj, sub) in orig.graphs.iter().enumerate() {
            a.graphs[gj] = copy_graph(
                sub,
                &subgraph_scope(scope, n, j, orig, Some(gj)),
                local,
                rename,
                source,
            );
        }
    }
    c
}

/// An `Identity` node.
pub fn identity(input: &str, output: &str, name: &str) -> NodeProto {
    build::node("Identity", name, &[input], &[output], Vec::new())
}

/// Removes nodes whose outputs nothing needs (graph outputs are needed; a node is needed when
/// one of its outputs is), and initializers nothing reads. Graph inputs are kept.
pub fn remove_dead(g: &mut GraphProto) {
    let mut needed: HashSet<String> = g.output.iter().filter_map(|v| v.name.clone()).collect();
    let mut keep = vec![false; g.node.len()];
    for j in (0..g.node.len()).rev() {
        let n = &g.node[j];
        if n.output.iter().any(|o| needed.contains(o)) {
            keep[j] = true;
            needed.extend(node_refs(n));
        }
    }
    let mut it = keep.iter();
    g.node.retain(|_| *it.next().unwrap_or(&true));
    let inputs: HashSet<String> = g.input.iter().filter_map(|v| v.name.clone()).collect();
    g.initializer.retain(|t| {
        let name = t.name.as_deref().unwrap_or("");
        needed.contains(name) || inputs.contains(name)
    });
    g.value_info
        .retain(|v| v.name.as_deref().is_some_and(|n| needed.contains(n)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(op: &str, i: &[&str], o: &[&str]) -> NodeProto {
        build::node(op, "", i, o, Vec::new())
    }

    #[test]
    fn topo_order_repairs_unsorted_graphs_and_keeps_sorted_ones() {
        let g = GraphProto {
            node: vec![n("Relu", &["b"], &["c"]), n("Relu", &["a"], &["b"])],
            ..Default::default()
        };
        assert_eq!(topo_order(&g), vec![1, 0]);
        let g = GraphProto {
            node: vec![n("Relu", &["a"], &["b"]), n("Relu", &["b"], &["c"])],
            ..Default::default()
        };
        assert_eq!(topo_order(&g), vec![0, 1]);
    }

    #[test]
    fn free_names_see_through_nested_subgraphs() {
        let inner = GraphProto {
            node: vec![n("Add", &["x", "outer2"], &["y"])],
            ..Default::default()
        };
        let attr = AttributeProto {
            name: Some("body".into()),
            g: Some(inner),
            ..Default::default()
        };
        let mid = GraphProto {
            node: vec![
                n("Relu", &["outer1"], &["x"]),
                build::node("If", "", &["c"], &["z"], vec![attr]),
            ],
            ..Default::default()
        };
        let free = free_names(&mid);
        let mut free: Vec<_> = free.into_iter().collect();
        free.sort();
        assert_eq!(free, vec!["c", "outer1", "outer2"]);
    }

    #[test]
    fn dead_nodes_and_initializers_are_removed() {
        let mut g = GraphProto {
            node: vec![n("Relu", &["a"], &["b"]), n("Relu", &["w"], &["dead"])],
            output: vec![ValueInfoProto {
                name: Some("b".into()),
                ..Default::default()
            }],
            initializer: vec![TensorProto {
                name: Some("w".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        remove_dead(&mut g);
        assert_eq!(g.node.len(), 1);
        assert!(g.initializer.is_empty());
    }
}
