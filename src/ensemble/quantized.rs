//! Quantized weights in compact ensembles: the members' integers (not their float values) are
//! what varies, selected in int32 and cast back to the type they are stored in. 4-bit weights
//! are stored and cast as 8-bit integers (ONNX casts to 4 bits only from opset 21, and 8-bit
//! storage takes one path for every opset); their `DequantizeLinear` nodes then read an 8-bit
//! copy of the zero point (dequantization gives the same floats: (q − z)·s with the same
//! integers).
//!
//! Blocked `DequantizeLinear` weights (`block_size`) are not compacted: ONNX Runtime fuses a
//! blocked dequantization of a constant weight and its `MatMul` into `MatMulNBits`, whose
//! results differ (by up to 0.02 in the fixture's logits) from the unfused computation that a
//! member's computed weight gets, so the ensemble would not combine what the members compute
//! on their own. Their members are stored as full copies.

use super::encode::{Change, Varying, member_values};
use super::{EnsembleError, is_member_copy_of};
use crate::onnx::{DType, Model, Quant, build, proto};

/// The compact form of an ensemble's varying tensors (see [`integer_varying`]).
pub(super) struct Stored {
    /// Quantized tensors' values as the integers the child writer stores, held in float32.
    pub varying: Vec<Varying>,
    /// The integer type each varying tensor is stored in (`None`: as it is).
    pub stores: Vec<Option<DType>>,
    /// 4-bit weights stored as 8-bit integers.
    pub widened: Vec<Widened>,
}

/// A 4-bit weight stored as 8-bit integers, with its zero point, if any, as 8-bit integers.
pub(super) struct Widened {
    weight: String,
    zero_point: Option<proto::TensorProto>,
}

/// The compact form of `varying` for `model`: quantized tensors (float values here, integers
/// in the file) as the integers the child writer stores, held in float32, each with the
/// integer type it is stored in. `MatMulNBits`' packed weights vary as their uint8 bytes (a
/// member changes the bytes holding its changed 4-bit integers). `None` when some quantized
/// tensor has another integer type or blocked scales (see the module's documentation).
pub(super) fn integer_varying(
    model: &Model,
    varying: &[Varying],
) -> Result<Option<Stored>, crate::Error> {
    let mut out = Stored {
        varying: Vec::with_capacity(varying.len()),
        stores: Vec::with_capacity(varying.len()),
        widened: Vec::new(),
    };
    for v in varying {
        let info = model
            .tensors()
            .iter()
            .find(|t| t.scope == v.addr.scope && t.name == v.addr.name);
        let Some(t) = info.filter(|t| !t.dtype.is_mutable_float()) else {
            out.varying.push(v.clone());
            out.stores.push(None);
            continue;
        };
        let quant = t.quantization().and_then(Result::ok);
        let packed = quant.map(|q| q.packing()) != Some(t.dtype);
        if !packed && quant.is_some_and(|q| q.block_size.is_some()) {
            return Ok(None);
        }
        let store = match t.dtype {
            DType::I8 | DType::U8 => t.dtype,
            DType::I4 | DType::U4 => {
                let wide = if t.dtype == DType::I4 {
                    DType::I8
                } else {
                    DType::U8
                };
                let zero_point = match quant.and_then(|q| Some((q, q.zero_point_name.as_deref()?)))
                {
                    None => None,
                    Some((q, z)) => match eight_bit_copy(model, q, z, &t.scope, wide) {
                        Some(zp) => Some(zp),
                        None => return Ok(None),
                    },
                };
                out.widened.push(Widened {
                    weight: v.addr.name.clone(),
                    zero_point,
                });
                wide
            }
            _ => return Ok(None),
        };
        // What the child writer would store: integers, or a packed tensor's bytes.
        let stored = |values: &crate::TensorData| -> Result<Vec<f32>, crate::Error> {
            let raw = crate::onnx::raw_bytes(model, t, values)?;
            let n = if packed { raw.len() } else { values.len() };
            Ok(crate::onnx::integers(t.dtype, &raw, n)
                .into_iter()
                .map(|q| q as f32)
                .collect())
        };
        let base = stored(&v.base)?;
        let mut changes = Vec::with_capacity(v.changes.len());
        for (i, c) in v.changes.iter().enumerate() {
            let Some(c) = c else {
                changes.push(None);
                continue;
            };
            let all = stored(&member_values(v, i))?;
            let indices: Vec<u32> = if packed {
                (0..all.len() as u32)
                    .filter(|&j| all.get(j as usize) != base.get(j as usize))
                    .collect()
            } else {
                c.indices.clone()
            };
            let at = |j: &u32| all.get(*j as usize).copied().unwrap_or(0.0);
            let values = crate::TensorData::F32(indices.iter().map(at).collect());
            changes.push(Some(Change { indices, values }));
        }
        out.varying.push(Varying {
            addr: v.addr.clone(),
            dims: v.dims.clone(),
            base: crate::TensorData::F32(base),
            changes,
        });
        out.stores.push(Some(store));
    }
    Ok(Some(out))
}

/// The zero points of `q` (tensor `name`, seen from `scope`) as a tensor of `wide` integers.
fn eight_bit_copy(
    model: &Model,
    q: &Quant,
    name: &str,
    scope: &str,
    wide: DType,
) -> Option<proto::TensorProto> {
    let zt = model.visible_tensor(name, scope)?;
    let bytes: Vec<u8> = q.zero_points().iter().map(|&z| z as u8).collect();
    (bytes.len() as u64 == zt.elements)
        .then(|| build::raw(&eight_bit_name(name), wide, &zt.dims, bytes))
}

/// The name of zero point `name`'s 8-bit copy.
fn eight_bit_name(name: &str) -> String {
    format!("smd/int8/{name}")
}

/// Points every `DequantizeLinear` of each widened weight (the members' copies and the one
/// the members share) at its 8-bit zero point, and adds those to the graph. An error (the
/// caller falls back to full copies) when the weight feeds anything else, or a node in a
/// subgraph (a `Cast` reads it the same as 4 or 8 bits).
pub(super) fn eight_bit_zero_points(
    model: &mut proto::ModelProto,
    widened: &[Widened],
) -> Result<(), EnsembleError> {
    if widened.is_empty() {
        return Ok(());
    }
    let Some(g) = model.graph.as_mut() else {
        return Ok(());
    };
    // The stored base keeps the weight's name: the nodes members share read it too.
    let is_member_copy =
        |input: &str, w: &Widened| input == w.weight || is_member_copy_of(input, &w.weight);
    let refuse = |what: &str| {
        Err(EnsembleError::Invalid(format!(
            "a 4-bit weight read by {what}"
        )))
    };
    for w in widened {
        let mut used = false;
        for n in &mut g.node {
            for (k, input) in n.input.iter().enumerate() {
                if !is_member_copy(input, w) {
                    continue;
                }
                // Casts (the encodings' own, widening the base) give the same integers.
                match (n.op_type.as_deref(), k) {
                    (Some("DequantizeLinear"), 0) => used = true,
                    (Some("Cast"), _) => {}
                    (op, _) => return refuse(op.unwrap_or("a node")),
                }
            }
            if n.input.first().is_some_and(|x| is_member_copy(x, w))
                && w.zero_point.is_some()
                && let Some(z) = n.input.get_mut(2).filter(|z| !z.is_empty())
            {
                *z = eight_bit_name(z);
            }
            if n.attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty())
                && reads_in_subgraph(n, &|x: &str| is_member_copy(x, w))
            {
                return refuse("a node in a subgraph");
            }
        }
        if let (true, Some(zp)) = (used, &w.zero_point) {
            g.initializer.push(zp.clone());
        }
    }
    Ok(())
}

/// Whether a node of a subgraph of `n` (at any depth) reads a value `hit` accepts.
fn reads_in_subgraph(n: &proto::NodeProto, hit: &dyn Fn(&str) -> bool) -> bool {
    n.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(&a.graphs))
        .flat_map(|g| &g.node)
        .any(|m| m.input.iter().any(|x| hit(x)) || reads_in_subgraph(m, hit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{graph, model, node};

    fn widened() -> Vec<Widened> {
        vec![Widened {
            weight: "w".into(),
            zero_point: Some(build::raw(&eight_bit_name("z"), DType::I8, &[], vec![3])),
        }]
    }

    fn with_nodes(nodes: Vec<proto::NodeProto>) -> proto::ModelProto {
        model(graph("g", nodes, vec![], vec![], vec![]))
    }

    #[test]
    fn dequantizations_of_widened_weights_read_the_8_bit_zero_point() {
        let mut m = with_nodes(vec![
            node("DequantizeLinear", "a", &["w", "s", "z"], &["x"], vec![]),
            node(
                "DequantizeLinear",
                "b",
                &["m1/w", "s", "z"],
                &["m1/x"],
                vec![],
            ),
            node("Cast", "c", &["w"], &["w32"], vec![]),
            // Another weight's dequantization and a look-alike name are left alone.
            node("DequantizeLinear", "d", &["v", "s", "z"], &["y"], vec![]),
            node(
                "DequantizeLinear",
                "e",
                &["mx/w", "s", "z"],
                &["y2"],
                vec![],
            ),
        ]);
        eight_bit_zero_points(&mut m, &widened()).unwrap();
        let g = m.graph.unwrap();
        let zp: Vec<&str> = g
            .node
            .iter()
            .filter_map(|n| n.input.get(2))
            .map(String::as_str)
            .collect();
        assert_eq!(zp, ["smd/int8/z", "smd/int8/z", "z", "z"]);
        assert_eq!(g.initializer.len(), 1);
    }

    #[test]
    fn widened_weights_read_by_other_operators_are_refused() {
        for op in ["MatMulInteger", "Identity"] {
            let mut m = with_nodes(vec![node(op, "a", &["m0/w", "b"], &["y"], vec![])]);
            let e = eight_bit_zero_points(&mut m, &widened()).unwrap_err();
            assert!(e.to_string().contains(op), "{e}");
        }
        // Read as a zero point or scale (not input 0) is refused as well.
        let mut m = with_nodes(vec![node(
            "DequantizeLinear",
            "a",
            &["x", "w"],
            &["y"],
            vec![],
        )]);
        assert!(eight_bit_zero_points(&mut m, &widened()).is_err());
    }
}
