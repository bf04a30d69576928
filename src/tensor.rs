//! Decoded values of a float tensor, shared by model I/O (which reads and writes them) and
//! mutation (which changes them).

use half::{bf16, f16};

/// The values of a mutable-candidate float tensor, in its own dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// float32 values.
    F32(Vec<f32>),
    /// float64 values.
    F64(Vec<f64>),
    /// float16 values.
    F16(Vec<f16>),
    /// bfloat16 values.
    BF16(Vec<bf16>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::BF16(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ONNX element type of the values.
    pub fn dtype(&self) -> crate::onnx::DType {
        use crate::onnx::DType;
        match self {
            Self::F32(_) => DType::F32,
            Self::F64(_) => DType::F64,
            Self::F16(_) => DType::F16,
            Self::BF16(_) => DType::BF16,
        }
    }

    /// Element `i` widened to f64.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        match self {
            Self::F32(v) => v.get(i).map(|&x| f64::from(x)),
            Self::F64(v) => v.get(i).copied(),
            Self::F16(v) => v.get(i).map(|x| x.to_f64()),
            Self::BF16(v) => v.get(i).map(|x| x.to_f64()),
        }
    }

    /// The values at `indices` (out-of-range indices are skipped).
    pub fn gather(&self, indices: &[u32]) -> TensorData {
        match self {
            Self::F32(v) => Self::F32(pick(v, indices)),
            Self::F64(v) => Self::F64(pick(v, indices)),
            Self::F16(v) => Self::F16(pick(v, indices)),
            Self::BF16(v) => Self::BF16(pick(v, indices)),
        }
    }
}

/// Mutable access to a float tensor's values held elsewhere (e.g. in an ONNX Runtime value).
#[derive(Debug)]
pub enum TensorMut<'a> {
    /// float32 values.
    F32(&'a mut [f32]),
    /// float64 values.
    F64(&'a mut [f64]),
    /// float16 values.
    F16(&'a mut [f16]),
    /// bfloat16 values.
    BF16(&'a mut [bf16]),
}

impl TensorData {
    /// Mutable access to the values.
    pub fn as_mut(&mut self) -> TensorMut<'_> {
        match self {
            Self::F32(v) => TensorMut::F32(v),
            Self::F64(v) => TensorMut::F64(v),
            Self::F16(v) => TensorMut::F16(v),
            Self::BF16(v) => TensorMut::BF16(v),
        }
    }
}

impl TensorMut<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::F16(v) => v.len(),
            Self::BF16(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values at `indices` (out-of-range indices are skipped).
    pub fn gather(&self, indices: &[u32]) -> TensorData {
        match self {
            Self::F32(v) => TensorData::F32(pick(v, indices)),
            Self::F64(v) => TensorData::F64(pick(v, indices)),
            Self::F16(v) => TensorData::F16(pick(v, indices)),
            Self::BF16(v) => TensorData::BF16(pick(v, indices)),
        }
    }

    /// Writes `values` (same dtype, one per index) at `indices`; false on a dtype mismatch.
    pub fn scatter(&mut self, indices: &[u32], values: &TensorData) -> bool {
        fn put<T: Copy>(v: &mut [T], idx: &[u32], x: &[T]) {
            for (&j, &x) in idx.iter().zip(x) {
                if let Some(w) = v.get_mut(j as usize) {
                    *w = x;
                }
            }
        }
        match (self, values) {
            (Self::F32(v), TensorData::F32(x)) => put(v, indices, x),
            (Self::F64(v), TensorData::F64(x)) => put(v, indices, x),
            (Self::F16(v), TensorData::F16(x)) => put(v, indices, x),
            (Self::BF16(v), TensorData::BF16(x)) => put(v, indices, x),
            _ => return false,
        }
        true
    }
}

/// The values of `v` at `idx`, skipping out-of-range indices.
fn pick<T: Copy>(v: &[T], idx: &[u32]) -> Vec<T> {
    idx.iter()
        .filter_map(|&j| v.get(j as usize).copied())
        .collect()
}
