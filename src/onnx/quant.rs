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
use super::scan::QuantUse;
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
    /// The quantization axis for per-axis scales (normalised), `None` for one scale.
    pub axis: Option<usize>,
    /// One scale per slice along `axis` (one for the whole tensor).
    scale: Vec<f32>,
    /// One zero point per scale.
    zero_point: Vec<i32>,
    /// Elements per step along `axis`: element j is in slice (j / inner) mod scales.
    inner: usize,
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
    /// The scale and zero point of element `j`.
    fn params(&self, j: usize) -> (f32, i32) {
        let c = (j / self.inner.max(1)) % self.scale.len().max(1);
        (
            self.scale.get(c).copied().unwrap_or(1.0),
            self.zero_point.get(c).copied().unwrap_or(0),
        )
    }

    /// The float values of `n` integers of `dtype` stored in `raw`.
    pub(crate) fn dequantize(&self, dtype: DType, raw: &[u8], n: usize) -> Vec<f32> {
        (0..n)
            .map(|j| {
                let (s, z) = self.params(j);
                (get(dtype, raw, j) - z) as f32 * s
            })
            .collect()
    }

    /// Writes `values` back into `raw` (the parent's payload of `dtype`): each element rounded
    /// half to even on its own grid and clamped to the type's range. Bytes of elements whose
    /// integer does not change (and a 4-bit payload's padding nibble) are left as they are.
    pub(crate) fn quantize_into(&self, dtype: DType, values: &[f32], raw: &mut [u8]) {
        let Some((lo, hi)) = range(dtype) else { return };
        for (j, &w) in values.iter().enumerate() {
            let (s, z) = self.params(j);
            // NaN is 0 steps (saturating cast), ±inf the range ends.
            let q = ((w / s).round_ties_even() as i64)
                .saturating_add(i64::from(z))
                .clamp(lo.into(), hi.into());
            put(dtype, raw, j, q as i32);
        }
    }
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
    fn visible_tensor(&self, name: &str, scope: &str) -> Option<&TensorInfo> {
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
        if range(t.dtype).is_none() {
            return Err("only int8, uint8, int4 and uint4 are requantized".into());
        }
        if !matches!(t.payload, Payload::Raw { .. } | Payload::External { .. }) {
            return Err(format!("values in {}", t.storage.kind()));
        }
        if u.block_size != 0 {
            return Err("blocked quantization (block_size)".into());
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
        let per_tensor = scale.len() == 1 && shape_of.is_none_or(|s| s.dims.len() <= 1);
        let (axis, inner) = match shape_of {
            _ if per_tensor => (None, 1),
            Some(st) => self
                .axis_of(t, u, st, scale.len())
                .ok_or_else(|| format!("{what} does not fit axis {} of {}", u.axis, u.op))?,
            None => (None, 1),
        };
        let zero_point = match &u.zero_point {
            None => vec![0; scale.len()],
            Some(name) => self.zero_points(t, name, &u.scope, scale.len())?,
        };
        let (lo, hi) = range(t.dtype).unwrap_or((0, 0));
        let widest = zero_point
            .iter()
            .zip(&scale)
            .map(|(&z, &s)| (hi - z).abs().max((lo - z).abs()) as f32 * s)
            .fold(0.0f32, f32::max);
        if !widest.is_finite() {
            return Err(format!("{what} overflows float32"));
        }
        Ok(Quant {
            scale_name: u.scale.clone(),
            zero_point_name: u.zero_point.clone(),
            axis,
            scale,
            zero_point,
            inner,
        })
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

    /// The zero points `name` of quantized tensor `t`: `count` integers of `t`'s dtype.
    fn zero_points(
        &self,
        t: &TensorInfo,
        name: &str,
        scope: &str,
        count: usize,
    ) -> Result<Vec<i32>, String> {
        let bad = || format!("zero point `{name}` does not fit");
        let zt = self
            .visible_tensor(name, scope)
            .ok_or_else(|| format!("zero point `{name}` is not a tensor of the model"))?;
        if zt.dtype != t.dtype || zt.elements != count as u64 {
            return Err(bad());
        }
        // Quantizers write small tensors in int32_data: one byte (two nibbles) per value.
        let raw: Vec<u8> = match &zt.payload {
            Payload::Varint { runs } => {
                let mut b = Vec::new();
                for_each_varint(runs, &self.bytes, |v| b.push(v as u8)).map_err(|_| bad())?;
                b
            }
            _ => self.raw_payload(zt).ok_or_else(bad)?.to_vec(),
        };
        if raw.len() as u64 != t.dtype.raw_bytes(count as u64).unwrap_or(0) {
            return Err(bad());
        }
        Ok((0..count).map(|j| get(t.dtype, &raw, j)).collect())
    }

    /// The float values of quantized tensor `t`, if it is one smd-onnx requantizes.
    pub(crate) fn dequantized(&self, t: &TensorInfo) -> Option<Result<Vec<f32>, ModelError>> {
        let q = t.quant.as_ref()?.as_ref().ok()?;
        let n = usize::try_from(t.elements).ok()?;
        Some(
            self.raw_payload(t)
                .filter(|raw| raw.len() as u64 == t.dtype.raw_bytes(t.elements).unwrap_or(0))
                .map(|raw| q.dequantize(t.dtype, raw, n))
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

    fn quant(scale: &[f32], zero_point: &[i32], inner: usize) -> Quant {
        Quant {
            scale_name: Some("s".into()),
            zero_point_name: None,
            axis: (scale.len() > 1).then_some(0),
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
                quant(&[0.0123], &[3], 1),
                quant(&[1e-30, 7.77e20], &[0, 1], n.div_ceil(2)),
                quant(&[0.1, 0.3, 3.0], &[-1, 0, 2], 5),
            ] {
                let w = q.dequantize(dtype, &raw, n);
                let mut again = raw.clone();
                q.quantize_into(dtype, &w, &mut again);
                assert_eq!(again, raw, "{dtype}");
                // From other bytes, every element is written back (4-bit padding aside).
                let mut other: Vec<u8> = raw.iter().map(|b| !b).collect();
                q.quantize_into(dtype, &w, &mut other);
                for j in 0..n {
                    assert_eq!(get(dtype, &other, j), get(dtype, &raw, j), "{dtype} {j}");
                }
            }
        }
    }

    #[test]
    fn changes_round_half_even_and_clamp_at_the_range_ends() {
        let q = quant(&[0.5], &[10], 1);
        let raw = [10u8, 20, 250, 0];
        let w = q.dequantize(DType::U8, &raw, 4);
        assert_eq!(w, [0.0, 5.0, 120.0, -5.0]);
        // +0.25 is half a step: ties go to even integers; beyond the range, the range's end.
        let mut out = raw;
        q.quantize_into(DType::U8, &[0.25, 5.75, 500.0, -1e9], &mut out);
        assert_eq!(out, [10, 22, 255, 0]);
        let q = quant(&[1.0], &[5], 1);
        let mut out = [0u8; 4];
        // Zero point 5: NaN is 0 steps from it; -128.5 steps round to -128 (even).
        q.quantize_into(DType::I8, &[1e30, -1e9, f32::NAN, -128.5], &mut out);
        assert_eq!(out.map(|b| b as i8), [127, -128, 5, -123]);
        let mut out = [0u8; 2];
        q.quantize_into(DType::I4, &[100.0, -100.0, 7.4], &mut out);
        assert_eq!(out, [0x87, 0x07]);
    }
}
