//! Adding deltas to tensor values, and the tensor statistics the scale rule uses.

use super::{Delta, MutateError};
use crate::tensor::{TensorData, TensorMut};
use half::{bf16, f16};
use rayon::prelude::*;

/// Fixed chunking for the statistics: partial sums are per chunk and added in chunk order, so
/// the result is bit-identical for any thread count.
const STAT_CHUNK: usize = 1 << 16;

fn check(len: usize, delta: &Delta) -> Result<(), MutateError> {
    let err = |msg: String| MutateError::Delta {
        tensor: delta.tensor,
        msg,
    };
    if delta.indices.len() != delta.values.len() {
        return Err(err(format!(
            "{} indices but {} values",
            delta.indices.len(),
            delta.values.len()
        )));
    }
    if let Some(&j) = delta.indices.iter().find(|&&j| j as usize >= len) {
        return Err(err(format!(
            "index {j} is out of range for a tensor of {len} elements"
        )));
    }
    Ok(())
}

/// Adds `delta` to `values` in place, after checking that it fits (nothing is changed on
/// error). Noise is float32; the sum is written in the tensor's dtype: f32 `w + δ`,
/// f64 `w + f64(δ)`, f16/bf16 `from_f32(f32(w) + δ)` (round to nearest even).
/// A δ of zero (either sign) leaves the element's bits untouched, so σ = 0 is an exact copy
/// (even for −0.0 and NaN payloads).
pub fn apply(values: &mut TensorData, delta: &Delta) -> Result<(), MutateError> {
    apply_to(values.as_mut(), delta)
}

/// [`apply`] on values held elsewhere (e.g. inside an ONNX Runtime value).
pub fn apply_to(values: TensorMut<'_>, delta: &Delta) -> Result<(), MutateError> {
    check(values.len(), delta)?;
    let pairs = delta
        .indices
        .iter()
        .zip(&delta.values)
        .filter(|&(_, &d)| d != 0.0);
    // Indices are checked above; `get_mut` keeps this panic-free regardless.
    match values {
        TensorMut::F32(v) => {
            for (&j, &d) in pairs {
                if let Some(w) = v.get_mut(j as usize) {
                    *w += d;
                }
            }
        }
        TensorMut::F64(v) => {
            for (&j, &d) in pairs {
                if let Some(w) = v.get_mut(j as usize) {
                    *w += f64::from(d);
                }
            }
        }
        TensorMut::F16(v) => {
            for (&j, &d) in pairs {
                if let Some(w) = v.get_mut(j as usize) {
                    *w = f16::from_f32(w.to_f32() + d);
                }
            }
        }
        TensorMut::BF16(v) => {
            for (&j, &d) in pairs {
                if let Some(w) = v.get_mut(j as usize) {
                    *w = bf16::from_f32(w.to_f32() + d);
                }
            }
        }
    }
    Ok(())
}

/// Applies every delta to `values[delta.tensor]`, after checking all of them (nothing is
/// changed on error). Tensors are processed in parallel.
pub fn apply_all(values: &mut [TensorData], deltas: &[Delta]) -> Result<(), MutateError> {
    for d in deltas {
        let v = values.get(d.tensor).ok_or_else(|| MutateError::Delta {
            tensor: d.tensor,
            msg: format!("no such tensor among {} value arrays", values.len()),
        })?;
        check(v.len(), d)?;
    }
    let mut by_tensor: Vec<Vec<&Delta>> = vec![Vec::new(); values.len()];
    for d in deltas {
        if let Some(slot) = by_tensor.get_mut(d.tensor) {
            slot.push(d);
        }
    }
    values
        .par_iter_mut()
        .zip(by_tensor)
        .try_for_each(|(v, ds)| ds.into_iter().try_for_each(|d| apply(v, d)))
}

/// The changed tensors of a child: for each delta'd tensor (once, in the order of first
/// appearance), `(delta.tensor, parent values + its deltas)`. Only changed tensors are copied;
/// `parent` is indexed like the plan's tensor list and is not modified.
pub fn child_tensors(
    parent: &[TensorData],
    deltas: &[Delta],
) -> Result<Vec<(usize, TensorData)>, MutateError> {
    let mut order: Vec<usize> = Vec::new();
    for d in deltas {
        let v = parent.get(d.tensor).ok_or_else(|| MutateError::Delta {
            tensor: d.tensor,
            msg: format!("no such tensor among {} value arrays", parent.len()),
        })?;
        check(v.len(), d)?;
        if !order.contains(&d.tensor) {
            order.push(d.tensor);
        }
    }
    order
        .into_par_iter()
        .map(|t| {
            let mut v = parent.get(t).cloned().ok_or_else(|| MutateError::Delta {
                tensor: t,
                msg: "no such tensor".into(),
            })?;
            for d in deltas.iter().filter(|d| d.tensor == t) {
                apply(&mut v, d)?;
            }
            Ok((t, v))
        })
        .collect()
}

/// Sum of `term` over `c` with 8 interleaved accumulators (element `i` goes to accumulator
/// `i mod 8`, then the 8 are added in order): a fixed association, so deterministic, and
/// without the latency chain of a single accumulator.
#[inline(always)]
fn lane_sum<T>(c: &[T], term: impl Fn(&T) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut it = c.chunks_exact(8);
    for w in &mut it {
        for (a, x) in acc.iter_mut().zip(w) {
            *a += term(x);
        }
    }
    for (a, x) in acc.iter_mut().zip(it.remainder()) {
        *a += term(x);
    }
    acc.iter().sum()
}

fn std_of<T: Sync>(v: &[T], f: impl Fn(&T) -> f64 + Sync) -> f64 {
    // Non-finite values contribute nothing (their terms are 0 and they are not counted).
    let parts: Vec<(u64, f64)> = v
        .par_chunks(STAT_CHUNK)
        .map(|c| {
            c.iter().fold((0u64, 0f64), |(n, m), x| {
                let y = f(x);
                let fin = y.is_finite();
                (n + u64::from(fin), m.max(if fin { y.abs() } else { 0.0 }))
            })
        })
        .collect();
    let count = parts.iter().map(|p| p.0).sum::<u64>();
    let max = parts.iter().map(|p| p.1).fold(0f64, f64::max);
    if count == 0 || max == 0.0 {
        return 0.0;
    }
    // Scale by the largest magnitude so squares cannot overflow (f64 tensors near f64::MAX).
    let inv = 1.0 / max;
    let scaled = |x: &T| {
        let y = f(x);
        if y.is_finite() { Some(y * inv) } else { None }
    };
    let sums: Vec<f64> = v
        .par_chunks(STAT_CHUNK)
        .map(|c| lane_sum(c, |x| scaled(x).unwrap_or(0.0)))
        .collect();
    let mean = sums.iter().sum::<f64>() / count as f64;
    let sq: Vec<f64> = v
        .par_chunks(STAT_CHUNK)
        .map(|c| lane_sum(c, |x| scaled(x).map_or(0.0, |y| (y - mean) * (y - mean))))
        .collect();
    max * (sq.iter().sum::<f64>() / count as f64).sqrt()
}

/// Population standard deviation of a tensor's finite values, computed in f64, bit-identical
/// for any thread count. NaN and ±Inf elements are ignored (and adding noise never changes
/// them). A constant tensor, or one without finite values, gives 0: under relative σ such a
/// tensor is not mutated (it is usually structural: a mask, a fixed scale; use absolute σ to
/// mutate it).
pub fn tensor_std(values: &TensorData) -> f64 {
    match values {
        TensorData::F32(v) => std_of(v, |&x| f64::from(x)),
        TensorData::F64(v) => std_of(v, |&x| x),
        TensorData::F16(v) => std_of(v, |x| x.to_f64()),
        TensorData::BF16(v) => std_of(v, |x| x.to_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_values() {
        let v = TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]);
        assert!((tensor_std(&v) - 1.25f64.sqrt()).abs() < 1e-15);
        assert_eq!(tensor_std(&TensorData::F32(vec![])), 0.0);
        assert_eq!(tensor_std(&TensorData::F32(vec![0.5; 10])), 0.0);
        assert_eq!(
            tensor_std(&TensorData::F32(vec![0.0, f32::NEG_INFINITY])),
            0.0
        );
        let with_nan = TensorData::F64(vec![1.0, f64::NAN, 3.0, f64::INFINITY]);
        assert!((tensor_std(&with_nan) - 1.0).abs() < 1e-15);
        let huge = TensorData::F64(vec![f64::MAX, -f64::MAX]);
        assert!((tensor_std(&huge) / f64::MAX - 1.0).abs() < 1e-15);
        let h = TensorData::F16(vec![f16::from_f32(-2.0), f16::from_f32(2.0)]);
        assert_eq!(tensor_std(&h), 2.0);
        let b = TensorData::BF16(vec![bf16::from_f32(-2.0), bf16::from_f32(2.0)]);
        assert_eq!(tensor_std(&b), 2.0);
    }

    #[test]
    fn std_is_thread_count_independent() {
        let v = TensorData::F32(
            (0..1_000_003u64)
                .map(|i| ((i * 7919) % 1000) as f32 * 0.37)
                .collect(),
        );
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let many = rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .build()
            .unwrap();
        let a = one.install(|| tensor_std(&v));
        let b = many.install(|| tensor_std(&v));
        assert_eq!(a.to_bits(), b.to_bits());
    }

    #[test]
    fn apply_checks_before_changing() {
        let mut v = TensorData::F32(vec![1.0, 2.0]);
        let bad = Delta {
            tensor: 0,
            indices: vec![0, 2],
            values: vec![1.0, 1.0],
        };
        let e = apply(&mut v, &bad).unwrap_err().to_string();
        assert!(e.contains("index 2"), "{e}");
        assert_eq!(v, TensorData::F32(vec![1.0, 2.0]));
        let short = Delta {
            tensor: 0,
            indices: vec![0],
            values: vec![],
        };
        assert!(apply(&mut v, &short).is_err());
        let mut all = vec![v.clone()];
        let wrong_tensor = Delta {
            tensor: 1,
            indices: vec![],
            values: vec![],
        };
        assert!(apply_all(&mut all, std::slice::from_ref(&wrong_tensor)).is_err());
        assert!(child_tensors(&all, &[wrong_tensor]).is_err());
        let ok = Delta {
            tensor: 0,
            indices: vec![1],
            values: vec![0.5],
        };
        let changed = child_tensors(&all, &[ok]).unwrap();
        assert_eq!(changed, vec![(0, TensorData::F32(vec![1.0, 2.5]))]);
        assert_eq!(all[0], TensorData::F32(vec![1.0, 2.0]));
    }

    #[test]
    fn apply_rounds_in_dtype() {
        let d = Delta {
            tensor: 0,
            indices: vec![0, 1, 2],
            values: vec![1e-4, -0.3, 0.0],
        };
        let w = [0.1f32, 7.5, -0.0];
        let mut h = TensorData::F16(w.iter().map(|&x| f16::from_f32(x)).collect());
        apply(&mut h, &d).unwrap();
        let want: Vec<f16> = w
            .iter()
            .zip(&d.values)
            .map(|(&x, &dv)| {
                if dv == 0.0 {
                    f16::from_f32(x)
                } else {
                    f16::from_f32(f16::from_f32(x).to_f32() + dv)
                }
            })
            .collect();
        assert_eq!(h, TensorData::F16(want));
        let mut f = TensorData::F64(vec![0.1, 7.5, -0.0]);
        apply(&mut f, &d).unwrap();
        let TensorData::F64(fv) = f else {
            unreachable!()
        };
        assert_eq!(fv[0], 0.1 + f64::from(1e-4f32));
        assert_eq!(fv[2].to_bits(), (-0.0f64).to_bits());
    }
}
