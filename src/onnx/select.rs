//! Which tensors may be mutated.

use regex::Regex;

use super::index::{Location, Mutability, TensorInfo};

/// The mutable-tensor rule. By default: float32/float16/bfloat16/float64 tensors with at least
/// two dimensions and at least one element, in initializers or `Constant` nodes (any subgraph
/// depth). Never sparse tensors, other dtypes, training-graph tensors, or tensors consumed as a
/// shape-like input (a Reshape's shape, a Resize's scales, ...).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only tensors whose name (or key) matches, on top of the rule.
    pub include: Option<Regex>,
    /// Never tensors whose name (or key) matches.
    pub exclude: Option<Regex>,
    /// Float tensors with fewer than two dimensions are candidates too.
    pub all_float: bool,
}

/// The verdict for one tensor; `shape_use` is the reason when the tensor feeds a shape-like
/// input.
pub(crate) fn judge(t: &TensorInfo, shape_use: Option<&str>, sel: &Selection) -> Mutability {
    let no = |r: &str| Mutability::NotMutable(r.to_string());
    if t.location == Location::SparseInitializer {
        return no("sparse initializer");
    }
    if !t.dtype.is_mutable_float() {
        return no(&t.dtype.name());
    }
    if t.training {
        return no("training graph");
    }
    if t.elements == 0 {
        return no("empty");
    }
    if let Some(r) = shape_use {
        return no(r);
    }
    if !sel.all_float && t.dims.len() < 2 {
        return no(if t.dims.is_empty() {
            "scalar"
        } else {
            "1-d (bias/norm)"
        });
    }
    let matches = |re: &Regex| re.is_match(&t.name) || re.is_match(t.key());
    if sel.exclude.as_ref().is_some_and(matches) {
        return no("excluded by --exclude");
    }
    if sel.include.as_ref().is_some_and(|re| !matches(re)) {
        return no("not matched by --include");
    }
    Mutability::Mutable
}
