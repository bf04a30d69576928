use super::*;
use crate::onnx::build::{f32_raw, graph, model, node};

/// x → Relu → h → MatMul(w1) → z → Add(b) → y, plus a Reshape of `h` by a Constant shape
/// that `y2` computes from `h` and `b2`.
fn chain() -> ModelProto {
    let nodes = vec![
        node("Relu", "relu", &["x"], &["h"], vec![]),
        node("MatMul", "mm", &["h", "w1"], &["z"], vec![]),
        node("Add", "add", &["z", "b"], &["y"], vec![]),
        node("Add", "add2", &["h", "b2"], &["y2"], vec![]),
    ];
    let inits = vec![
        f32_raw("w1", &[2, 2], &[1.0, 0.0, 0.0, 1.0]),
        f32_raw("b", &[2], &[0.5, 0.5]),
        f32_raw("b2", &[2], &[0.5, 0.5]),
    ];
    let x = value_info("x", DType::F32, &[Err("N"), Ok(2)]);
    let y = value_info("y", DType::F32, &[Err("N"), Ok(2)]);
    let y2 = value_info("y2", DType::F32, &[Err("N"), Ok(2)]);
    model(graph("g", nodes, inits, vec![x], vec![y, y2]))
}

fn names(v: &[&str]) -> HashSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn node_names(m: &ModelProto) -> Vec<String> {
    let g = m.graph.as_ref().expect("graph");
    g.node.iter().filter_map(|n| n.name.clone()).collect()
}

#[test]
fn splits_before_the_first_mutated_node() {
    let s = plan(&chain(), &names(&["b"]), "y").expect("split");
    assert_eq!(s.cut, vec!["z".to_string()]);
    assert_eq!(node_names(&s.prefix), ["relu", "mm"]);
    assert_eq!(node_names(&s.suffix), ["add"]);
    assert_eq!(s.nodes, (2, 1));
    let sg = s.suffix.graph.as_ref().expect("graph");
    // The suffix keeps only its own initializers and the outputs it computes.
    let inits: Vec<_> = sg
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    assert_eq!(inits, ["b"]);
    let outs: Vec<_> = sg.output.iter().filter_map(|o| o.name.clone()).collect();
    assert_eq!(outs, ["y"]);
    let pg = s.prefix.graph.as_ref().expect("graph");
    let outs: Vec<_> = pg.output.iter().filter_map(|o| o.name.clone()).collect();
    assert_eq!(outs, ["z"]);
    let inits: Vec<_> = pg
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    assert_eq!(inits, ["w1"]);
}

#[test]
fn a_cut_may_hold_several_activations() {
    let s = plan(&chain(), &names(&["w1", "b2"]), "y").expect("split");
    assert_eq!(s.cut, vec!["h".to_string()]);
    assert_eq!(node_names(&s.suffix), ["mm", "add", "add2"]);
}

#[test]
fn constants_the_suffix_reads_are_copied_into_it() {
    let mut m = chain();
    let g = m.graph.as_mut().expect("graph");
    // The bias comes from a Constant node (an input-independent node the suffix reads).
    g.node
        .insert(0, node("Identity", "const", &["b2"], &["bc"], vec![]));
    g.node[3].input[1] = "bc".into();
    let s = plan(&m, &names(&["w1"]), "y").expect("split");
    assert_eq!(node_names(&s.suffix), ["const", "mm", "add"]);
    assert_eq!(s.cut, vec!["h".to_string()]);
}

#[test]
fn refuses_graphs_it_cannot_split_usefully() {
    let why = |m: &ModelProto, mutable: &[&str], scored: &str| {
        plan(m, &names(mutable), scored).expect_err("no split")
    };
    assert!(why(&chain(), &["b"], "y2").contains("does not depend"));
    let mut first = chain();
    let g = first.graph.as_mut().expect("graph");
    g.node[0] = node("Add", "relu", &["x", "b2"], &["h"], vec![]);
    assert!(why(&first, &["b2"], "y").contains("model input `x`"));
    assert!(why(&chain(), &["nope"], "y").contains("not an initializer"));
    let mut unordered = chain();
    unordered.graph.as_mut().expect("graph").node.swap(0, 1);
    assert!(why(&unordered, &["b"], "y").contains("topological"));
}
