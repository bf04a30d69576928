//! Quantized weights: integer tensors that a `DequantizeLinear` (or a QOperator-format node:
//! `QLinearConv`, `QLinearMatMul`, `QGemm`, `MatMulInteger`, `ConvInteger`) reads, read and
//! written in the float domain through their own scale and zero point.
//!
//! A quantized tensor q with scale s and zero point z stands for the float values
//! w = (q − z)·s (one scale for the tensor, or one per slice along `axis`). smd-onnx reads w
//! ([`crate::onnx::Model::read_values`]), mutates it like any float tensor, and writes back
//! q' = clamp(round_half_even(w'/s) + z) to the type's range, in the tensor's own packing (two
//! 4-bit values per byte, low nibble first). Scales, zero points and the graph are never
//! written. Unchanged values give back q exactly: (q − z)·s/s is within 2⁻¹⁵ of q − z.
//!
//! Rounding and clamping are per element: children of a partition (disjoint elements) change
//! disjoint integers, and the merged candidate's integer change is exactly the sum of theirs.

use std::collections::HashMap;

use super::dtype::DType;
use super::index::{Payload, TensorInfo};
use super::scan::{NBits, QuantUse};
use super::values::for_each_varint;
use super::{Model, ModelError};

/// How a quantized tensor maps to float values: its scales and zero points.
#[derive(Debug, Clone, PartialEq)]
pub struct Quant {
    /// The scale tensor's name; `None` for the integer operators (`MatMulInteger`,
    /// `ConvInteger`), whose scale is applied later: mutated in integer steps.
    pub scale_name: Option<String>,
    /// The zero point tensor's name, when the `DequantizeLinear` has one.
    pub zero_point_name: Option<String>,
    /// The quantization axis for per-axis or blocked scales (normalised), `None` for one scale.
    pub axis: Option<usize>,
    /// Blocked scales: integers along `axis` per scale (`None`: one scale per slice).
    pub block_size: Option<usize>,
    /// One scale per slice along `axis`, per block (one for the whole tensor).
    scale: Vec<f32>,
    /// One zero point per scale.
    zero_point: Vec<i32>,
    /// Elements per step along `axis`: element j is in slice (j / inner) mod axis_len.
    inner: usize,
    /// Elements along `axis` (blocked scales only).
    axis_len: usize,
    /// The type of each integer: the tensor's own, or uint4 for `MatMulNBits`' bytes that
    /// each hold two 4-bit integers.
    packing: DType,
    /// How many integers the payload holds.
    count: usize,
}

/// The integer range of a quantized dtype; `None` for dtypes smd-onnx does not requantize.
fn range(dtype: DType) -> Option<(i32, i32)> {
    match dtype {
        DType::I8 => Some((-128, 127)),
        DType::U8 => Some((0, 255)),
        DType::I4 => Some((-8, 7)),
        DType::U4 => Some((0, 15)),
        _ => None,
    }
}

/// Integer `j` of a raw payload of `dtype` (one of [`range`]'s; `bytes` long enough).
fn get(dtype: DType, bytes: &[u8], j: usize) -> i32 {
    let nibble = || {
        let b = bytes.get(j / 2).copied().unwrap_or(0);
        if j.is_multiple_of(2) {
            b & 0x0f
        } else {
            b >> 4
        }
    };
    match dtype {
        DType::I8 => i32::from(bytes.get(j).copied().unwrap_or(0) as i8),
        DType::U8 => i32::from(bytes.get(j).copied().unwrap_or(0)),
        // Sign-extend the nibble.
        DType::I4 => i32::from(((nibble() << 4) as i8) >> 4),
        _ => i32::from(nibble()),
    }
}

/// The first `n` integers of a raw payload of `dtype` (int8, uint8, int4 or uint4).
pub fn integers(dtype: DType, raw: &[u8], n: usize) -> Vec<i32> {
    (0..n).map(|j| get(dtype, raw, j)).collect()
}

/// Stores integer `q` (in range) as element `j` of a raw payload of `dtype`.
fn put(dtype: DType, bytes: &mut [u8], j: usize, q: i32) {
    match dtype {
        DType::I8 | DType::U8 => {
            if let Some(b) = bytes.get_mut(j) {
                *b = q as u8;
            }
        }
        _ => {
            if let Some(b) = bytes.get_mut(j / 2) {
                let n = (q as u8) & 0x0f;
                *b = if j.is_multiple_of(2) {
                    (*b & 0xf0) | n
                } else {
                    (*b & 0x0f) | (n << 4)
                };
            }
        }
    }
}

impl Quant {
    /// The type of each integer: the tensor's own, or uint4 for `MatMulNBits`' bytes.
    pub fn packing(&self) -> DType {
        self.packing
    }

    /// The zero points, one per scale.
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_point
    }

    /// How many integers (values) the payload holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The scale and zero point of element `j`.
    fn params(&self, j: usize) -> (f32, i32) {
        let inner = self.inner.max(1);
        let c = match self.block_size {
            // Scales have the tensor's shape with `axis` divided into blocks.
            Some(b) => {
                let len = self.axis_len.max(1);
                let (outer, a, i) = (j / (inner * len), (j / inner) % len, j % inner);
                (outer * len.div_ceil(b.max(1)) + a / b.max(1)) * inner + i
            }
            None => (j / inner) % self.scale.len().max(1),
        };
        (
            self.scale.get(c).copied().unwrap_or(1.0),
            self.zero_point.get(c).copied().unwrap_or(0),
        )
    }

    /// The float values of the integers stored in `raw`.
    pub(crate) fn dequantize(&self, raw: &[u8]) -> Vec<f32> {
        (0..self.count)
            .map(|j| {
                let (s, z) = self.params(j);
                (get(self.packing, raw, j) - z) as f32 * s
            })
            .collect()
    }

    /// Writes `values` back into `raw` (the parent's payload): each element rounded half to
    /// even on its own grid and clamped to the type's range. Bytes of elements whose integer
    /// does not change (and a 4-bit payload's padding nibble) are left as they are.
    pub(crate) fn quantize_into(&self, values: &[f32], raw: &mut [u8]) {
        let Some((lo, hi)) = range(self.packing) else {
            return;
        };
        for (j, &w) in values.iter().enumerate() {
            let (s, z) = self.params(j);
            // NaN is 0 steps (saturating cast), ±inf the range ends.
            let q = ((w / s).round_ties_even() as i64)
                .saturating_add(i64::from(z))
                .clamp(lo.into(), hi.into());
            put(self.packing, raw, j, q as i32);
        }
    }
}

/// `q`, unless its widest value overflows float32 (`what`: its scale, for the message).
fn finite(q: Quant, what: &str) -> Result<Quant, String> {
    let (lo, hi) = range(q.packing).unwrap_or((0, 0));
    let widest = q
        .zero_point
        .iter()
        .zip(&q.scale)
        .map(|(&z, &s)| (hi - z).abs().max((lo - z).abs()) as f32 * s)
        .fold(0.0f32, f32::max);
    if widest.is_finite() {
        Ok(q)
    } else {
        Err(format!("{what} overflows float32"))
    }
}

/// For blocked scales `st` of tensor `t` (`DequantizeLinear` with `block_size`: `t`'s shape
/// with `axis` divided into blocks): the axis (normalised), the elements per step along it and
/// its length; `None` when they do not fit.
fn blocked_axis(t: &TensorInfo, u: &QuantUse, st: &TensorInfo) -> Option<(usize, usize, usize)> {
    let rank = t.dims.len() as i64;
    let axis = usize::try_from(if u.axis < 0 { u.axis + rank } else { u.axis }).ok()?;
    let block = u.block_size;
    let fits = block > 0
        && axis < t.dims.len()
        && st.dims.len() == t.dims.len()
        && t.dims
            .iter()
            .zip(&st.dims)
            .enumerate()
            .all(|(d, (&x, &s))| {
                x >= 0
                    && if d == axis {
                        s == x.div_euclid(block) + i64::from(x % block != 0)
                    } else {
                        s == x
                    }
            });
    fits.then(|| {
        let inner = t.dims[axis + 1..]
            .iter()
            .map(|&d| d.max(0) as usize)
            .product();
        (axis, inner, t.dims[axis] as usize)
    })
}

/// Whether tensor `t` is visible from scope `scope` (its own, or one nested in it).
fn visible(t: &TensorInfo, scope: &str) -> bool {
    t.scope.is_empty()
        || t.scope == scope
        || (scope.starts_with(&t.scope) && scope.as_bytes().get(t.scope.len()) == Some(&b'/'))
}

impl Model {
    /// The index of the tensor named `name` that a node in `scope` sees (the innermost
    /// declaration).
    fn visible_index(&self, name: &str, scope: &str) -> Option<usize> {
        self.tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.name == name && !t.training && visible(t, scope))
            .max_by_key(|(_, t)| t.scope.len())
            .map(|(i, _)| i)
    }

    /// The tensor named `name` that a node in `scope` sees.
    pub(crate) fn visible_tensor(&self, name: &str, scope: &str) -> Option<&TensorInfo> {
        self.visible_index(name, scope)
            .and_then(|i| self.tensors.get(i))
    }

    /// Works out, for each integer tensor that a quantized operator reads (`uses`), how it
    /// maps to float values, or why smd-onnx cannot requantize it; marks the scales and zero
    /// points of those it requantizes, which must stay as they are.
    pub(crate) fn resolve_quant(&mut self, uses: &[QuantUse]) {
        let mut by_name: HashMap<&str, Vec<&QuantUse>> = HashMap::new();
        for u in uses {
            by_name.entry(u.x.as_str()).or_default().push(u);
        }
        let mut params: Vec<(usize, String)> = Vec::new();
        let verdicts: Vec<Option<Result<Quant, String>>> = self
            .tensors
            .iter()
            .map(|t| {
                let mine: Vec<&QuantUse> = by_name
                    .get(t.name.as_str())?
                    .iter()
                    .copied()
                    .filter(|u| !t.training && visible(t, &u.scope))
                    .collect();
                let first = mine.first()?;
                let q = self.quant_of(t, first);
                if mine.iter().skip(1).any(|u| self.quant_of(t, u) != q) {
                    return Some(Err("dequantized with different scales".into()));
                }
                if q.is_ok() {
                    for u in &mine {
                        for p in u.scale.iter().chain(&u.zero_point) {
                            if let Some(i) = self.visible_index(p, &u.scope) {
                                params.push((i, t.name.clone()));
                            }
                        }
                    }
                }
                Some(q)
            })
            .collect();
        for (t, v) in self.tensors.iter_mut().zip(verdicts) {
            t.quant = v;
        }
        for (i, of) in params {
            if let Some(t) = self.tensors.get_mut(i) {
                t.quant_param_of.get_or_insert(of);
            }
        }
    }

    /// How tensor `t` maps to float values through node `u`.
    fn quant_of(&self, t: &TensorInfo, u: &QuantUse) -> Result<Quant, String> {
        if !matches!(t.payload, Payload::Raw { .. } | Payload::External { .. }) {
            return Err(format!("values in {}", t.storage.kind()));
        }
        if let Some(nb) = u.nbits {
            return self.nbits_quant(t, u, nb);
        }
        if range(t.dtype).is_none() {
            return Err("only int8, uint8, int4 and uint4 are requantized".into());
        }
        let zp_t = match &u.zero_point {
            None => None,
            Some(name) => Some(
                self.visible_tensor(name, &u.scope)
                    .ok_or_else(|| format!("zero point `{name}` is not a tensor of the model"))?,
            ),
        };
        // Integer operators apply their scale later: mutate in integer steps (scale 1), one
        // step per zero point.
        let (scale, shape_of, what) = match (&u.scale, zp_t) {
            (Some(name), _) => {
                let st = self
                    .visible_tensor(name, &u.scope)
                    .ok_or_else(|| format!("scale `{name}` is not a tensor of the model"))?;
                (self.scales(st, name)?, Some(st), format!("scale `{name}`"))
            }
            (None, Some(z)) => {
                let n = usize::try_from(z.elements.clamp(1, t.elements.max(1))).unwrap_or(1);
                (vec![1.0; n], Some(z), "zero point".to_string())
            }
            (None, None) => (vec![1.0], None, String::new()),
        };
        let misfit = || format!("{what} does not fit axis {} of {}", u.axis, u.op);
        let mut q = Quant {
            scale_name: u.scale.clone(),
            zero_point_name: u.zero_point.clone(),
            axis: None,
            block_size: None,
            zero_point: Vec::new(),
            inner: 1,
            axis_len: 0,
            packing: t.dtype,
            count: usize::try_from(t.elements).map_err(|_| "too many elements".to_string())?,
            scale,
        };
        let per_tensor = q.scale.len() == 1 && shape_of.is_none_or(|s| s.dims.len() <= 1);
        match shape_of {
            Some(st) if u.block_size != 0 => {
                let (axis, inner, len) = blocked_axis(t, u, st).ok_or_else(misfit)?;
                (q.axis, q.inner, q.axis_len) = (Some(axis), inner, len);
                q.block_size = usize::try_from(u.block_size).ok();
            }
            _ if per_tensor => {}
            Some(st) => {
                (q.axis, q.inner) = self.axis_of(t, u, st, q.scale.len()).ok_or_else(misfit)?;
            }
            None => {}
        }
        q.zero_point = match (zp_t, &u.zero_point) {
            (Some(zt), Some(name)) => {
                let bad = || format!("zero point `{name}` does not fit");
                if zt.dtype != t.dtype || zt.elements != q.scale.len() as u64 {
                    return Err(bad());
                }
                let raw = self.integer_bytes(zt).ok_or_else(bad)?;
                if raw.len() as u64 != t.dtype.raw_bytes(zt.elements).unwrap_or(0) {
                    return Err(bad());
                }
                integers(t.dtype, &raw, q.scale.len())
            }
            _ => vec![0; q.scale.len()],
        };
        finite(q, &what)
    }

    /// How `MatMulNBits`' weight `t` (uint8 bytes `[N, blocks, block bytes]`) maps to float
    /// values: as `N × blocks·block_size` integers of `bits` bits, one scale (and zero point,
    /// by default the middle of the range) per block of a row.
    fn nbits_quant(&self, t: &TensorInfo, u: &QuantUse, nb: NBits) -> Result<Quant, String> {
        let packing = match nb.bits {
            4 => DType::U4,
            8 => DType::U8,
            b => return Err(format!("{b}-bit MatMulNBits (4 and 8 are requantized)")),
        };
        if nb.g_idx {
            return Err("MatMulNBits with g_idx (blocks out of order)".into());
        }
        let bits: u64 = if packing == DType::U4 { 4 } else { 8 };
        // [N, blocks, bytes per block] from the attributes; `None` when they make no sense.
        let want = || -> Option<[u64; 3]> {
            let (k, n) = (u64::try_from(nb.k).ok()?, u64::try_from(nb.n).ok()?);
            let block = u64::try_from(u.block_size).ok().filter(|&b| b > 0)?;
            let bytes = block.checked_mul(bits)? / 8;
            (bytes * 8 == block * bits).then_some([n, k.div_ceil(block), bytes])
        };
        let dims: Vec<u64> = t.dims.iter().map(|&d| d.max(0) as u64).collect();
        let [n, blocks, bytes] = match want() {
            Some(w) if dims == w => w,
            w => {
                let shape = w.map_or("a shape".into(), |[n, b, y]| format!("[{n}, {b}, {y}]"));
                return Err(format!(
                    "{} {} is not the uint8 {shape} MatMulNBits' K, N, bits and block_size give",
                    t.dtype,
                    t.shape_string(),
                ));
            }
        };
        if t.dtype != DType::U8 {
            return Err(format!("MatMulNBits' weight is {}, not uint8", t.dtype));
        }
        // Within the tensor's element count (which fits in memory): no overflow below.
        let count = usize::try_from(t.elements * 8 / bits).map_err(|_| "too many elements")?;
        let block = bytes * 8 / bits;
        let scales = u.scale.as_deref().unwrap_or_default();
        let st = self
            .visible_tensor(scales, &u.scope)
            .ok_or_else(|| format!("scale `{scales}` is not a tensor of the model"))?;
        let scale = self.scales(st, scales)?;
        if scale.len() as u64 != n * blocks {
            return Err(format!("scale `{scales}` does not fit [{n}, {blocks}]"));
        }
        let zero_point = match &u.zero_point {
            None => vec![1 << (nb.bits - 1); scale.len()],
            Some(name) => self.nbits_zero_points(name, &u.scope, packing, n, blocks)?,
        };
        let q = Quant {
            scale_name: u.scale.clone(),
            zero_point_name: u.zero_point.clone(),
            axis: Some(1),
            block_size: usize::try_from(block).ok(),
            scale,
            zero_point,
            inner: 1,
            axis_len: usize::try_from(blocks * block).map_err(|_| "too many elements")?,
            packing,
            count,
        };
        finite(q, &format!("scale `{scales}`"))
    }

    /// `MatMulNBits`' zero points `name`: uint8 bytes, each row's `blocks` integers of
    /// `packing` packed low bits first and padded to a whole byte.
    fn nbits_zero_points(
        &self,
        name: &str,
        scope: &str,
        packing: DType,
        n: u64,
        blocks: u64,
    ) -> Result<Vec<i32>, String> {
        let bad = || format!("zero point `{name}` does not fit");
        let zt = self
            .visible_tensor(name, scope)
            .ok_or_else(|| format!("zero point `{name}` is not a tensor of the model"))?;
        if zt.dtype.is_mutable_float() {
            return Err(format!("float zero point `{name}`"));
        }
        let row = packing.raw_bytes(blocks).unwrap_or(0);
        let raw = self.integer_bytes(zt).ok_or_else(bad)?;
        if zt.dtype != DType::U8 || raw.len() as u64 != n * row {
            return Err(bad());
        }
        // Integers per row, padding included.
        let per_row = (row * 8 / if packing == DType::U4 { 4 } else { 8 }) as usize;
        Ok((0..n as usize)
            .flat_map(|r| (0..blocks as usize).map(move |b| r * per_row + b))
            .map(|j| get(packing, &raw, j))
            .collect())
    }

    /// The bytes of an integer tensor: raw, external, or (as quantizers write small
    /// tensors) one `int32_data` varint per byte.
    fn integer_bytes(&self, t: &TensorInfo) -> Option<Vec<u8>> {
        match &t.payload {
            Payload::Varint { runs } => {
                let mut b = Vec::new();
                for_each_varint(runs, &self.bytes, |v| b.push(v as u8)).ok()?;
                Some(b)
            }
            _ => self.raw_payload(t).map(<[u8]>::to_vec),
        }
    }

    /// The values of scale tensor `st`: float, positive, normal.
    fn scales(&self, st: &TensorInfo, name: &str) -> Result<Vec<f32>, String> {
        let v = self
            .read_values(st)
            .map_err(|_| format!("scale `{name}` is not a readable float tensor"))?;
        let scale: Vec<f32> = (0..v.len())
            .filter_map(|i| v.get_f64(i))
            .map(|s| s as f32)
            .collect();
        if scale.is_empty() || !scale.iter().all(|s| s.is_normal() && *s > 0.0) {
            return Err(format!("scale `{name}` is not positive and finite"));
        }
        Ok(scale)
    }

    /// For `count` per-axis scales (the 1-d tensor `shape_of`) of tensor `t`: the axis
    /// (normalised) and the elements per step along it; `None` when they do not fit.
    fn axis_of(
        &self,
        t: &TensorInfo,
        u: &QuantUse,
        shape_of: &TensorInfo,
        count: usize,
    ) -> Option<(Option<usize>, usize)> {
        let rank = t.dims.len() as i64;
        let axis = usize::try_from(if u.axis < 0 { u.axis + rank } else { u.axis }).ok()?;
        let fits = axis < t.dims.len()
            && shape_of.dims.len() == 1
            && t.dims.get(axis) == Some(&(count as i64));
        fits.then(|| {
            let inner = t.dims[axis + 1..]
                .iter()
                .map(|&d| d.max(0) as usize)
                .product();
            (Some(axis), inner)
        })
    }

    /// The float values of quantized tensor `t`, if it is one smd-onnx requantizes.
    pub(crate) fn dequantized(&self, t: &TensorInfo) -> Option<Result<Vec<f32>, ModelError>> {
        let q = t.quant.as_ref()?.as_ref().ok()?;
        let fits = |raw: &&[u8]| {
            let n = raw.len() as u64;
            n == t.dtype.raw_bytes(t.elements).unwrap_or(0)
                && n == q.packing.raw_bytes(q.count as u64).unwrap_or(0)
        };
        Some(
            self.raw_payload(t)
                .filter(fits)
                .map(|raw| q.dequantize(raw))
                .ok_or_else(|| ModelError::Tensor {
                    path: self.path.clone(),
                    tensor: t.name.clone(),
                    what: "quantized values are not where the index says".into(),
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quant(dtype: DType, scale: &[f32], zero_point: &[i32], inner: usize, n: usize) -> Quant {
        Quant {
            scale_name: Some("s".into()),
            zero_point_name: None,
            axis: (scale.len() > 1).then_some(0),
            block_size: None,
            axis_len: 0,
            packing: dtype,
            count: n,
            scale: scale.to_vec(),
            zero_point: zero_point.to_vec(),
            inner,
        }
    }

    #[test]
    fn nibbles_pack_low_first_and_sign_extend() {
        let raw = [0x8f_u8, 0x07];
        let i4: Vec<i32> = (0..3).map(|j| get(DType::I4, &raw, j)).collect();
        assert_eq!(i4, [-1, -8, 7]);
        let u4: Vec<i32> = (0..3).map(|j| get(DType::U4, &raw, j)).collect();
        assert_eq!(u4, [15, 8, 7]);
        let mut b = raw;
        put(DType::I4, &mut b, 1, 3);
        put(DType::I4, &mut b, 2, -2);
        assert_eq!(b, [0x3f, 0x0e]);
    }

    #[test]
    fn unchanged_values_requantize_to_the_same_bytes() {
        // Every integer of every type, awkward scales, per tensor and per axis.
        for (dtype, raw) in [
            (DType::I8, (0..=255u8).collect::<Vec<u8>>()),
            (DType::U8, (0..=255u8).collect()),
            (DType::I4, (0..=255u8).collect()),
            (DType::U4, (0..=255u8).collect()),
        ] {
            let n: usize = if matches!(dtype, DType::I4 | DType::U4) {
                511
            } else {
                256
            };
            for q in [
                quant(dtype, &[0.0123], &[3], 1, n),
                quant(dtype, &[1e-30, 7.77e20], &[0, 1], n.div_ceil(2), n),
                quant(dtype, &[0.1, 0.3, 3.0], &[-1, 0, 2], 5, n),
            ] {
                let w = q.dequantize(&raw);
                let mut again = raw.clone();
                q.quantize_into(&w, &mut again);
                assert_eq!(again, raw, "{dtype}");
                // From other bytes, every element is written back (4-bit padding aside).
                let mut other: Vec<u8> = raw.iter().map(|b| !b).collect();
                q.quantize_into(&w, &mut other);
                for j in 0..n {
                    assert_eq!(get(dtype, &other, j), get(dtype, &raw, j), "{dtype} {j}");
                }
            }
        }
    }

    #[test]
    fn changes_round_half_even_and_clamp_at_the_range_ends() {
        let q = quant(DType::U8, &[0.5], &[10], 1, 4);
        let raw = [10u8, 20, 250, 0];
        let w = q.dequantize(&raw);
        assert_eq!(w, [0.0, 5.0, 120.0, -5.0]);
        // +0.25 is half a step: ties go to even integers; beyond the range, the range's end.
        let mut out = raw;
        q.quantize_into(&[0.25, 5.75, 500.0, -1e9], &mut out);
        assert_eq!(out, [10, 22, 255, 0]);
        let q = quant(DType::I8, &[1.0], &[5], 1, 4);
        let mut out = [0u8; 4];
        // Zero point 5: NaN is 0 steps from it; -128.5 steps round to -128 (even).
        q.quantize_into(&[1e30, -1e9, f32::NAN, -128.5], &mut out);
        assert_eq!(out.map(|b| b as i8), [127, -128, 5, -123]);
        let q = quant(DType::I4, &[1.0], &[5], 1, 3);
        let mut out = [0u8; 2];
        q.quantize_into(&[100.0, -100.0, 7.4], &mut out);
        assert_eq!(out, [0x87, 0x07]);
    }
}
