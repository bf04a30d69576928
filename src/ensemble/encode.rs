//! Compact encodings of tensors that differ between members: the parent's values are stored
//! once, and each member's tensor is rebuilt in the graph from them plus its own sparse
//! difference (ONNX Runtime folds these constant subgraphs when it loads the model).

use super::graph::TensorAddr;
use super::proto::{NodeProto, TensorProto};
use crate::TensorData;
use crate::onnx::DType;
use crate::onnx::build::{self, attr_int};

/// One member's change to a varying tensor: flat element indices (ascending) and new values.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Flat (row-major) element indices, ascending.
    pub indices: Vec<u32>,
    /// The member's values at those indices, in the tensor's dtype.
    pub values: TensorData,
}

/// A tensor whose values differ between members.
#[derive(Debug, Clone)]
pub struct Varying {
    /// Where the tensor lives.
    pub addr: TensorAddr,
    /// Its shape.
    pub dims: Vec<i64>,
    /// The values every member starts from (the parent's).
    pub base: TensorData,
    /// Per member: its change, or None when the member keeps the base values.
    pub changes: Vec<Option<Change>>,
}

/// How a varying tensor is stored in the ensemble file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Changes are disjoint: one tensor of mutated values plus a per-element owner map.
    OwnerMap,
    /// Changes agree wherever they overlap: one tensor of mutated values plus per-member indices.
    SharedValues,
    /// General: per-member indices and values.
    Sparse,
    /// Each changing member's whole tensor. Smallest for one or two members that change most
    /// of a tensor: when every member changes it, the parent's copy is not needed at all.
    Dense,
}

/// The graph pieces that rebuild one varying tensor for every member.
pub struct Encoded {
    /// Initializers to add to the main graph.
    pub initializers: Vec<TensorProto>,
    /// Nodes to add to the main graph.
    pub nodes: Vec<NodeProto>,
    /// Which encoding was chosen.
    pub encoding: Encoding,
}

/// True for the ONNX codes of float32, float64, float16 and bfloat16.
pub fn is_float_code(code: i32) -> bool {
    DType::from_onnx(i64::from(code)).is_mutable_float()
}

/// A raw-data tensor holding float values.
pub fn float_tensor(name: &str, dims: &[i64], d: &TensorData) -> TensorProto {
    build::values(name, dims, d)
}

/// A tensor of `d`'s values: floats as they are, or, with `store` (int8/uint8/int4/uint4),
/// whole numbers held as float32 stored as that integer type (4-bit ones two per byte, low
/// nibble first).
pub fn stored_tensor(
    name: &str,
    dims: &[i64],
    d: &TensorData,
    store: Option<DType>,
) -> TensorProto {
    let Some(dtype) = store else {
        return float_tensor(name, dims, d);
    };
    let q = |j: usize| d.get_f64(j).unwrap_or(0.0) as i64;
    let bytes = match dtype {
        DType::I4 | DType::U4 => (0..d.len().div_ceil(2))
            .map(|b| {
                let lo = (q(2 * b) & 0x0f) as u8;
                let hi = if 2 * b + 1 < d.len() {
                    (q(2 * b + 1) & 0x0f) as u8
                } else {
                    0
                };
                lo | hi << 4
            })
            .collect(),
        _ => (0..d.len()).map(|j| q(j) as u8).collect(),
    };
    build::raw(name, dtype, dims, bytes)
}

/// A 1-d or scalar int64 tensor.
fn i64_tensor(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    build::raw(
        name,
        DType::I64,
        dims,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// An int32 tensor.
fn i32_tensor(name: &str, dims: &[i64], v: impl Iterator<Item = i32>) -> TensorProto {
    build::raw(
        name,
        DType::I32,
        dims,
        v.flat_map(i32::to_le_bytes).collect(),
    )
}

/// Element `j` of `d` as raw bits (for exact comparisons).
pub fn bits(d: &TensorData, j: usize) -> u64 {
    match d {
        TensorData::F32(v) => u64::from(v[j].to_bits()),
        TensorData::F64(v) => v[j].to_bits(),
        TensorData::F16(v) => u64::from(v[j].to_bits()),
        TensorData::BF16(v) => u64::from(v[j].to_bits()),
    }
}

/// Copies element `from_j` of `from` into element `j` of `to` (same dtype).
pub fn set_from(to: &mut TensorData, j: usize, from: &TensorData, from_j: usize) {
    match (to, from) {
        (TensorData::F32(t), TensorData::F32(f)) => t[j] = f[from_j],
        (TensorData::F64(t), TensorData::F64(f)) => t[j] = f[from_j],
        (TensorData::F16(t), TensorData::F16(f)) => t[j] = f[from_j],
        (TensorData::BF16(t), TensorData::BF16(f)) => t[j] = f[from_j],
        _ => {}
    }
}

/// Name of the shared int32 constant holding member index `i` (see [`member_constants`]).
pub fn member_const(i: usize) -> String {
    format!("smd/member/{i}")
}

/// Shared constants the encodings use: member indices and the flat shape `[-1]`.
pub fn member_constants(members: usize) -> Vec<TensorProto> {
    let mut out: Vec<TensorProto> = (0..members)
        .map(|i| i32_tensor(&member_const(i), &[], std::iter::once(i as i32)))
        .collect();
    out.push(i64_tensor(FLAT, &[1], &[-1]));
    out
}

const FLAT: &str = "smd/shape/flat";

/// Checks a varying tensor's changes (indices ascending and in range, values of the base's
/// dtype and of the indices' length); returns a description of the first problem.
pub fn check(v: &Varying) -> Result<(), String> {
    let n = v.base.len();
    for (i, c) in v.changes.iter().enumerate() {
        let Some(c) = c else { continue };
        if c.values.len() != c.indices.len() || c.values.dtype() != v.base.dtype() {
            return Err(format!(
                "member {i}: change of tensor `{}` does not match its dtype or index count",
                v.addr.name
            ));
        }
        if c.indices.windows(2).any(|w| w[0] >= w[1])
            || c.indices.last().is_some_and(|&l| l as usize >= n)
        {
            return Err(format!(
                "member {i}: change indices of tensor `{}` are not ascending within 0..{n}",
                v.addr.name
            ));
        }
    }
    Ok(())
}

/// Builds the nodes and initializers that produce, for every member that changes `v`, a value
/// named `member_name(i)` holding that member's tensor, from the value `base_name` (the
/// parent's tensor, already in the graph) and the stored differences. `id` names the pieces.
pub fn encode(
    v: &Varying,
    id: &str,
    base_name: &str,
    member_name: &dyn Fn(usize) -> String,
    store: Option<DType>,
) -> Encoded {
    let changers: Vec<(usize, &Change)> = v
        .changes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().filter(|c| !c.indices.is_empty()).map(|c| (i, c)))
        .collect();
    let overlap = Overlap::of(v, &changers);
    let encoding = cheapest_encoding(v, &changers, &overlap, store);
    let mut p = Pieces {
        out: Encoded {
            initializers: Vec::new(),
            nodes: Vec::new(),
            encoding,
        },
        id,
        // ONNX Runtime's CPU kernels for Where/ScatterElements lack bfloat16 and int8: select
        // in float32 (int32) and cast back (both round trips are exact).
        widen: match store {
            Some(dtype) => Some((DType::I32, dtype)),
            None if v.base.dtype() == DType::BF16 => Some((DType::F32, DType::BF16)),
            None => None,
        },
        store,
        member_name,
    };
    if encoding == Encoding::Dense {
        // No computation: each member's tensor is an initializer under the member's name.
        for &(i, _) in &changers {
            let values = member_values(v, i);
            p.out
                .initializers
                .push(stored_tensor(&member_name(i), &v.dims, &values, store));
        }
        return p.out;
    }
    let base_c = p.compute(base_name);
    match encoding {
        Encoding::Dense => {}
        Encoding::OwnerMap => p.owner_map(v, &changers, &overlap, &base_c),
        Encoding::SharedValues | Encoding::Sparse => {
            p.scatter(v, &changers, &overlap.mutated, &base_c)
        }
    }
    p.out
}

/// Marks [`Overlap::owner`] elements that no member changes.
const NO_OWNER: u16 = u16::MAX;

/// How the members' changes of one tensor overlap, found in one pass, with the shared mutated
/// tensor the owner-map and shared-values encodings store.
struct Overlap {
    /// Per element: the member that changes it first, or [`NO_OWNER`].
    owner: Vec<u16>,
    /// The base with every change applied (the first change of an element wins).
    mutated: TensorData,
    /// No element is changed by two members (and member indices fit the owner map).
    disjoint: bool,
    /// Members that change the same element give it the same value.
    consistent: bool,
}

impl Overlap {
    fn of(v: &Varying, changers: &[(usize, &Change)]) -> Overlap {
        let mut owner = vec![NO_OWNER; v.base.len()];
        let mut mutated = v.base.clone();
        let mut disjoint = v.changes.len() < usize::from(NO_OWNER);
        let mut consistent = true;
        for &(i, c) in changers {
            for (p, &j) in c.indices.iter().enumerate() {
                let j = j as usize;
                if owner[j] == NO_OWNER {
                    owner[j] = i as u16;
                    set_from(&mut mutated, j, &c.values, p);
                } else {
                    disjoint = false;
                    if bits(&mutated, j) != bits(&c.values, p) {
                        consistent = false;
                    }
                }
            }
        }
        Overlap {
            owner,
            mutated,
            disjoint,
            consistent,
        }
    }
}

/// Bytes per owner-map element: u8 member indices while they fit, else u16.
fn owner_map_width(members: usize) -> usize {
    if members <= 255 { 1 } else { 2 }
}

/// The encoding that stores the fewest bytes among those the overlap allows.
fn cheapest_encoding(
    v: &Varying,
    changers: &[(usize, &Change)],
    overlap: &Overlap,
    store: Option<DType>,
) -> Encoding {
    let n = v.base.len();
    let d = store.unwrap_or(v.base.dtype()).raw_bytes(1).unwrap_or(4) as usize;
    let members = v.changes.len();
    let nnz: usize = changers.iter().map(|(_, c)| c.indices.len()).sum();
    let idx_bytes = 4; // u32 indices suffice: `Change` holds u32.
    // Bytes beyond the parent's tensor, which the other encodings read and Dense needs only
    // for members that keep it (otherwise the graph drops it as dead).
    let dense =
        (changers.len() * n * d).saturating_sub(if changers.len() == members { n * d } else { 0 });
    let mut options = vec![(Encoding::Sparse, nnz * (idx_bytes + d))];
    if overlap.consistent {
        options.push((Encoding::SharedValues, n * d + nnz * idx_bytes));
    }
    if overlap.disjoint {
        options.push((Encoding::OwnerMap, n * (d + owner_map_width(members))));
    }
    options.push((Encoding::Dense, dense));
    options
        .iter()
        .min_by_key(|(_, cost)| *cost)
        .map(|(e, _)| *e)
        .unwrap_or(Encoding::Sparse)
}

/// The suffix of a value widened to `dtype` (`f32`, `i32`).
fn short(dtype: DType) -> &'static str {
    if dtype == DType::F32 { "f32" } else { "i32" }
}

/// The graph pieces being built for one varying tensor.
struct Pieces<'a> {
    out: Encoded,
    /// Names the pieces.
    id: &'a str,
    /// Compute in the first type and cast results back to the second (bfloat16 in float32,
    /// int8/uint8 in int32).
    widen: Option<(DType, DType)>,
    /// The integer type whole-number values are stored in (see [`stored_tensor`]).
    store: Option<DType>,
    member_name: &'a dyn Fn(usize) -> String,
}

impl Pieces<'_> {
    fn cast(&mut self, from: &str, to: &str, dtype: DType) {
        self.out.nodes.push(build::node(
            "Cast",
            to,
            &[from],
            &[to],
            vec![attr_int("to", i64::from(dtype.to_onnx()))],
        ));
    }

    /// The value to compute with in place of `name`: itself, or its widened cast.
    fn compute(&mut self, name: &str) -> String {
        if let Some((wide, _)) = self.widen {
            let w = format!("{name}/{}", short(wide));
            self.cast(name, &w, wide);
            w
        } else {
            name.to_string()
        }
    }

    /// The value member `i`'s computation writes: its final name, or a widened one to cast
    /// back to the final name (returned second, for [`Pieces::finish`]).
    fn result(&self, i: usize) -> (String, Option<String>) {
        let m = (self.member_name)(i);
        if let Some((wide, _)) = self.widen {
            (format!("{m}/{}", short(wide)), Some(m))
        } else {
            (m, None)
        }
    }

    /// Casts a member's widened result back to its final name, when [`Pieces::result`] asked.
    fn finish(&mut self, pending: Option<String>, computed: &str) {
        if let (Some(m), Some((_, back))) = (pending, self.widen) {
            self.cast(computed, &m, back);
        }
    }

    /// A tensor of `d`'s values in the stored type ([`stored_tensor`]).
    fn stored(&self, name: &str, dims: &[i64], d: &TensorData) -> TensorProto {
        stored_tensor(name, dims, d, self.store)
    }

    /// [`Encoding::OwnerMap`]: member `i` takes the mutated value where the map says `i`,
    /// else the base (`Where(map == i, mutated, base)`).
    fn owner_map(
        &mut self,
        v: &Varying,
        changers: &[(usize, &Change)],
        overlap: &Overlap,
        base_c: &str,
    ) {
        let id = self.id;
        let map_name = format!("smd/map/{id}");
        let mut_name = format!("smd/mut/{id}");
        let map_i32 = format!("smd/map_i32/{id}");
        let map_tensor = if owner_map_width(v.changes.len()) == 1 {
            build::raw(
                &map_name,
                DType::U8,
                &v.dims,
                overlap.owner.iter().map(|&o| o as u8).collect(),
            )
        } else {
            build::raw(
                &map_name,
                DType::U16,
                &v.dims,
                overlap.owner.iter().flat_map(|o| o.to_le_bytes()).collect(),
            )
        };
        self.out.initializers.push(map_tensor);
        self.out
            .initializers
            .push(self.stored(&mut_name, &v.dims, &overlap.mutated));
        let mut_c = self.compute(&mut_name);
        self.out.nodes.push(build::node(
            "Cast",
            &format!("smd/cast/{id}"),
            &[&map_name],
            &[&map_i32],
            vec![attr_int("to", i64::from(DType::I32.to_onnx()))],
        ));
        for &(i, _) in changers {
            let eq = format!("smd/eq{i}/{id}");
            self.out.nodes.push(build::node(
                "Equal",
                &eq,
                &[&map_i32, &member_const(i)],
                &[&eq],
                Vec::new(),
            ));
            let (m, pending) = self.result(i);
            self.out.nodes.push(build::node(
                "Where",
                &format!("smd/where{i}/{id}"),
                &[&eq, &mut_c, base_c],
                &[&m],
                Vec::new(),
            ));
            self.finish(pending, &m);
        }
    }

    /// [`Encoding::SharedValues`] and [`Encoding::Sparse`]: each member scatters its values
    /// (gathered from the shared mutated tensor, or its own) into the flattened base.
    fn scatter(
        &mut self,
        v: &Varying,
        changers: &[(usize, &Change)],
        mutated: &TensorData,
        base_c: &str,
    ) {
        let id = self.id;
        let shared = self.out.encoding == Encoding::SharedValues;
        let shape_name = format!("smd/shape/{id}");
        let flat = format!("smd/flat/{id}");
        self.out
            .initializers
            .push(i64_tensor(&shape_name, &[v.dims.len() as i64], &v.dims));
        self.out.nodes.push(build::node(
            "Reshape",
            &flat,
            &[base_c, FLAT],
            &[&flat],
            Vec::new(),
        ));
        let mut_flat = format!("smd/mut_flat/{id}");
        if shared {
            let mut_name = format!("smd/mut/{id}");
            self.out
                .initializers
                .push(self.stored(&mut_name, &v.dims, mutated));
            let mut_c = self.compute(&mut_name);
            self.out.nodes.push(build::node(
                "Reshape",
                &mut_flat,
                &[&mut_c, FLAT],
                &[&mut_flat],
                Vec::new(),
            ));
        }
        for &(i, c) in changers {
            let (idx, vals) = self.scatter_values(i, c, shared.then_some(mut_flat.as_str()));
            let scattered = format!("smd/scatter{i}/{id}");
            self.out.nodes.push(build::node(
                "ScatterElements",
                &scattered,
                &[&flat, &idx, &vals],
                &[&scattered],
                vec![attr_int("axis", 0)],
            ));
            let (m, pending) = self.result(i);
            self.out.nodes.push(build::node(
                "Reshape",
                &format!("smd/reshape{i}/{id}"),
                &[&scattered, &shape_name],
                &[&m],
                Vec::new(),
            ));
            self.finish(pending, &m);
        }
    }

    /// Member `i`'s scatter indices and values: an index initializer, and the values gathered
    /// from the flat shared mutated tensor `mut_flat` or stored as the member's own.
    fn scatter_values(&mut self, i: usize, c: &Change, mut_flat: Option<&str>) -> (String, String) {
        let id = self.id;
        let idx = format!("smd/idx{i}/{id}");
        let len = c.indices.len() as i64;
        self.out.initializers.push(i32_tensor(
            &idx,
            &[len],
            c.indices.iter().map(|&x| x as i32),
        ));
        let vals = format!("smd/val{i}/{id}");
        let vals = if let Some(mut_flat) = mut_flat {
            self.out.nodes.push(build::node(
                "Gather",
                &vals,
                &[mut_flat, &idx],
                &[&vals],
                vec![attr_int("axis", 0)],
            ));
            vals
        } else {
            self.out
                .initializers
                .push(self.stored(&vals, &[len], &c.values));
            self.compute(&vals)
        };
        (idx, vals)
    }
}

/// The values a member has for the whole tensor (base with its change applied): for tests and
/// for writing members as standalone models.
pub fn member_values(v: &Varying, i: usize) -> TensorData {
    let mut out = v.base.clone();
    if let Some(Some(c)) = v.changes.get(i) {
        for (p, &j) in c.indices.iter().enumerate() {
            set_from(&mut out, j as usize, &c.values, p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varying(changes: Vec<Option<Change>>) -> Varying {
        Varying {
            addr: TensorAddr {
                scope: String::new(),
                name: "w".into(),
            },
            dims: vec![2, 3],
            base: TensorData::F32(vec![0.0; 6]),
            changes,
        }
    }

    fn change(idx: &[u32], v: f32) -> Option<Change> {
        Some(Change {
            indices: idx.to_vec(),
            values: TensorData::F32(vec![v; idx.len()]),
        })
    }

    #[test]
    fn disjoint_changes_use_the_owner_map() {
        let v = varying(vec![
            change(&[0, 3], 1.0),
            change(&[1, 2], 2.0),
            change(&[4, 5], 3.0),
        ]);
        let e = encode(&v, "w", "w", &|i| format!("m{i}/w"), None);
        assert_eq!(e.encoding, Encoding::OwnerMap);
        assert_eq!(e.initializers.len(), 2);
    }

    #[test]
    fn four_bit_integers_are_stored_two_per_byte_low_nibble_first() {
        let d = TensorData::F32(vec![1.0, -2.0, 7.0, -8.0, 3.0]);
        let t = stored_tensor("x", &[5], &d, Some(DType::I4));
        assert_eq!(t.raw_data.as_deref(), Some(&[0xe1, 0x87, 0x03][..]));
        let t = stored_tensor(
            "x",
            &[2],
            &TensorData::F32(vec![15.0, 0.0]),
            Some(DType::U4),
        );
        assert_eq!(t.raw_data.as_deref(), Some(&[0x0f][..]));
        let t = stored_tensor(
            "x",
            &[2],
            &TensorData::F32(vec![-1.0, 200.0]),
            Some(DType::I8),
        );
        assert_eq!(t.raw_data.as_deref(), Some(&[0xff, 200][..]));
    }

    #[test]
    fn one_or_two_members_changing_most_of_a_tensor_are_stored_whole() {
        let v = varying(vec![change(&[0, 1, 3, 4], 1.0)]);
        let e = encode(&v, "w", "w", &|i| format!("m{i}/w"), None);
        assert_eq!(e.encoding, Encoding::Dense);
        assert!(e.nodes.is_empty());
        assert_eq!(e.initializers.len(), 1);
        assert_eq!(e.initializers[0].name.as_deref(), Some("m0/w"));
        let two = varying(vec![change(&[0, 3], 1.0), change(&[1, 2, 4, 5], 2.0)]);
        assert_eq!(
            encode(&two, "w", "w", &|i| format!("m{i}/w"), None).encoding,
            Encoding::Dense
        );
        // A member that keeps the parent's values keeps the parent's tensor in the file: a
        // small change is then cheaper as a difference.
        let kept = varying(vec![change(&[0], 1.0), None]);
        assert_eq!(
            encode(&kept, "w", "w", &|i| format!("m{i}/w"), None).encoding,
            Encoding::Sparse
        );
    }

    #[test]
    fn overlapping_agreeing_changes_share_values_and_conflicts_go_sparse() {
        let v = varying(vec![
            change(&[0, 1], 1.0),
            change(&[1], 1.0),
            change(&[0], 1.0),
        ]);
        assert_eq!(
            encode(&v, "w", "w", &|i| format!("m{i}/w"), None).encoding,
            Encoding::Sparse
        );
        let v = Varying {
            dims: vec![100],
            base: TensorData::F32(vec![0.0; 100]),
            ..varying(vec![])
        };
        let many: Vec<Option<Change>> = (0..4)
            .map(|_| change(&(0..40).collect::<Vec<_>>(), 1.0))
            .collect();
        let v = Varying { changes: many, ..v };
        assert_eq!(
            encode(&v, "w", "w", &|i| format!("m{i}/w"), None).encoding,
            Encoding::SharedValues
        );
        let conflict = varying(vec![change(&[0], 1.0), change(&[0], -1.0)]);
        assert_eq!(
            encode(&conflict, "w", "w", &|i| format!("m{i}/w"), None).encoding,
            Encoding::Sparse
        );
    }

    #[test]
    fn check_rejects_bad_changes() {
        assert!(check(&varying(vec![change(&[3, 1], 1.0)])).is_err());
        assert!(check(&varying(vec![change(&[6], 1.0)])).is_err());
        let wrong_dtype = Some(Change {
            indices: vec![0],
            values: TensorData::F64(vec![1.0]),
        });
        assert!(check(&varying(vec![wrong_dtype])).is_err());
        assert!(check(&varying(vec![change(&[0, 5], 1.0), None])).is_ok());
    }

    #[test]
    fn member_values_apply_the_change() {
        let v = varying(vec![change(&[1, 4], 7.0), None]);
        assert_eq!(
            member_values(&v, 0),
            TensorData::F32(vec![0.0, 7.0, 0.0, 0.0, 7.0, 0.0])
        );
        assert_eq!(member_values(&v, 1), v.base);
    }
}
