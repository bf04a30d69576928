//! A labelled data set validated against a model's inputs, and the assembly of batches.

use rayon::prelude::*;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::buffer::Bytes;
use half::f16;
use ort::memory::MemoryInfo;
use ort::session::SessionInputValue;
use ort::value::{Shape, TensorRefMut};

use super::DataError;
use super::arrays::{self, RawArray};
use super::npy::DType;
use super::spec::{Dim, ElemType, InputSpec, ModelIo};

/// The labels: integer class ids (classification) or float targets (regression).
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Class ids, one per sample.
    Classes(Vec<i64>),
    /// Regression targets, one per sample.
    Targets(Vec<f64>),
}

impl Labels {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Self::Classes(v) => v.len(),
            Self::Targets(v) => v.len(),
        }
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for class ids.
    pub fn is_classification(&self) -> bool {
        matches!(self, Self::Classes(_))
    }
}

/// One model input's data.
#[derive(Debug, Clone)]
pub struct InputArray {
    /// The model input it feeds.
    pub input: String,
    /// The array's name in the data.
    pub array: String,
    /// The data's element type.
    pub dtype: DType,
    /// The element type fed to the model (equal to `dtype`, or a lossless widening of it).
    pub feed: DType,
    /// The shape of one sample.
    pub row_shape: Vec<usize>,
    /// Elements per sample.
    pub row_elems: usize,
    data: Bytes,
}

impl InputArray {
    /// Every sample's bytes, where the data source holds them (a map of the file, or the
    /// caller's arrays: never a copy).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Bytes of one sample in the data.
    fn row_bytes(&self) -> usize {
        self.row_elems * self.dtype.size()
    }
}

/// A validated data set: one array per model input, and labels, all with the same sample count.
#[derive(Debug, Clone)]
pub struct Dataset {
    path: PathBuf,
    inputs: Vec<InputArray>,
    labels: Labels,
    samples: usize,
    fixed_batch: Option<usize>,
}

/// Can `from` be fed as `to` without losing information?
pub fn lossless(from: DType, to: DType) -> bool {
    use DType::*;
    if from == to {
        return true;
    }
    match from {
        Bool => to != Bool,
        U8 => matches!(to, U16 | U32 | U64 | I16 | I32 | I64 | F16 | F32 | F64),
        I8 => matches!(to, I16 | I32 | I64 | F16 | F32 | F64),
        U16 => matches!(to, U32 | U64 | I32 | I64 | F32 | F64),
        I16 => matches!(to, I32 | I64 | F32 | F64),
        U32 => matches!(to, U64 | I64 | F64),
        I32 => matches!(to, I64 | F64),
        F16 => matches!(to, F32 | F64),
        F32 => to == F64,
        I64 | U64 | F64 => false,
    }
}

impl Dataset {
    /// Opens `path` (an `.npz` or a folder of `.npy` files) and validates it against the model's
    /// inputs: every input has an array (by input name; a single-input model also accepts `x`
    /// or `inputs`), dtypes match or widen losslessly, ranks and fixed dims agree, every array
    /// and `labels` have the same number of samples, and there is at least one sample.
    pub fn open(path: &Path, io: &ModelIo) -> Result<Self, DataError> {
        let arrays = arrays::read_arrays(path)?;
        Self::from_arrays(path, arrays, io)
    }

    /// Validates arrays already read (see [`Self::open`]); `path` names them in errors.
    pub fn from_arrays(
        path: &Path,
        mut arrays: Vec<RawArray>,
        io: &ModelIo,
    ) -> Result<Self, DataError> {
        let err = |m: String| DataError::Invalid {
            path: path.to_path_buf(),
            message: m,
        };
        let names = |arrays: &[RawArray]| -> String {
            arrays
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if io.inputs.is_empty() {
            return Err(err("the model has no inputs to feed".into()));
        }
        let Some(li) = arrays.iter().position(|a| a.name == "labels") else {
            return Err(err(format!(
                "no array `labels` (integer class ids or float targets); arrays: {}",
                names(&arrays)
            )));
        };
        let labels_arr = arrays.swap_remove(li);
        let labels = read_labels(&labels_arr).map_err(err)?;
        let samples = labels.len();
        let mut inputs = Vec::with_capacity(io.inputs.len());
        let mut fixed_batch: Option<(usize, String)> = None;
        for spec in &io.inputs {
            let pos = arrays.iter().position(|a| a.name == spec.name).or_else(|| {
                (io.inputs.len() == 1)
                    .then(|| {
                        arrays
                            .iter()
                            .position(|a| a.name == "x" || a.name == "inputs")
                    })
                    .flatten()
            });
            let Some(pos) = pos else {
                return Err(err(format!(
                    "no array `{}` for model input `{}`; arrays: {}",
                    spec.name,
                    spec.name,
                    if arrays.is_empty() {
                        "only labels".to_string()
                    } else {
                        names(&arrays)
                    }
                )));
            };
            inputs.push(input_array(
                path,
                io,
                spec,
                &arrays[pos],
                samples,
                &mut fixed_batch,
            )?);
        }
        if samples == 0 {
            return Err(err("the data set is empty (0 samples)".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            inputs,
            labels,
            samples,
            fixed_batch: fixed_batch.map(|f| f.0),
        })
    }

    /// The data file or folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples
    }

    /// Never true for an opened data set (an empty one is rejected); for clippy.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// The labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The inputs' arrays, in model input order.
    pub fn inputs(&self) -> &[InputArray] {
        &self.inputs
    }

    /// The model's fixed batch size, when its inputs declare one.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.fixed_batch
    }

    /// The samples `rows`, in that order, copied into aligned memory in the element types the
    /// model is fed. Batches of consecutive rows of the subset are then views of it, with no
    /// copy or conversion per pass: scoring many models on the same rows (evolve) costs what
    /// the forward passes cost. Row `i` of the subset holds the same bytes a gathered batch
    /// would, so predictions are identical either way.
    pub fn subset(&self, rows: &[usize]) -> Result<Dataset, DataError> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.samples) {
            return Err(DataError::Invalid {
                path: self.path.clone(),
                message: format!("row {bad} is out of range ({} samples)", self.samples),
            });
        }
        let inputs = self
            .inputs
            .iter()
            .map(|a| {
                let (rb, out_rb) = (a.row_bytes(), a.row_elems * a.feed.size());
                let data = crate::buffer::aligned_with(out_rb * rows.len(), |dst| {
                    // In parallel: faulting in fresh pages and reading the file's pages
                    // dominate, and both scale with threads.
                    const ROWS: usize = 64;
                    dst.par_chunks_mut(out_rb.max(1) * ROWS)
                        .zip(rows.par_chunks(ROWS))
                        .for_each(|(dst, rows)| {
                            for (&r, d) in rows.iter().zip(dst.chunks_exact_mut(out_rb.max(1))) {
                                convert(
                                    a.dtype,
                                    a.feed,
                                    a.data.get(r * rb..(r + 1) * rb).unwrap_or_default(),
                                    d,
                                );
                            }
                        });
                });
                InputArray {
                    dtype: a.feed,
                    data,
                    ..a.clone()
                }
            })
            .collect();
        let labels = match &self.labels {
            Labels::Classes(v) => Labels::Classes(rows.iter().map(|&r| v[r]).collect()),
            Labels::Targets(v) => Labels::Targets(rows.iter().map(|&r| v[r]).collect()),
        };
        Ok(Dataset {
            path: self.path.clone(),
            inputs,
            labels,
            samples: rows.len(),
            fixed_batch: self.fixed_batch,
        })
    }

    /// A data set of float32 arrays computed in memory (one per model input: name, shape of
    /// one sample, `samples × elements` values) with `labels` for its samples; `path` names the
    /// data it was computed from in errors. Evolve's shared prefixes feed their activations
    /// to the suffix model this way.
    pub fn from_f32_columns(
        path: &Path,
        columns: Vec<(String, Vec<usize>, Vec<f32>)>,
        labels: Labels,
    ) -> Result<Dataset, DataError> {
        let samples = labels.len();
        let mut inputs = Vec::with_capacity(columns.len());
        for (name, row_shape, values) in columns {
            let row_elems: usize = row_shape.iter().product();
            if values.len() != row_elems.saturating_mul(samples) {
                return Err(DataError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "array `{name}` has {} values for {samples} samples of {row_elems}",
                        values.len()
                    ),
                });
            }
            let bytes: &[u8] = bytemuck::cast_slice(&values);
            inputs.push(InputArray {
                input: name.clone(),
                array: name,
                dtype: DType::F32,
                feed: DType::F32,
                row_shape,
                row_elems,
                data: crate::buffer::aligned_copy(bytes),
            });
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            inputs,
            labels,
            samples,
            fixed_batch: None,
        })
    }

    /// The batch size used when none is given: 256 samples, or fewer so that a batch's inputs
    /// take at most 64 MiB (a model's activations grow with its inputs: a MobileNet on
    /// 3×224×224 images at batch 256 needs over a gigabyte).
    pub fn default_batch(&self) -> usize {
        const INPUT_BYTES: usize = 64 << 20;
        (INPUT_BYTES / self.bytes_for(1).max(1)).clamp(1, 256)
    }

    /// Bytes the samples `rows` take once converted to the types the model is fed.
    pub fn bytes_for(&self, rows: usize) -> usize {
        self.inputs
            .iter()
            .map(|a| a.row_elems * a.feed.size())
            .sum::<usize>()
            .saturating_mul(rows)
    }

    /// Checks that every class id lies in `0..classes`.
    pub fn check_classes(&self, classes: usize, output: &str) -> Result<(), DataError> {
        let Labels::Classes(ids) = &self.labels else {
            return Ok(());
        };
        let c = i64::try_from(classes).unwrap_or(i64::MAX);
        if let Some((row, id)) = ids.iter().enumerate().find(|(_, id)| **id < 0 || **id >= c) {
            return Err(DataError::Invalid {
                path: self.path.clone(),
                message: format!(
                    "array `labels` has class id {id} at row {row}, but output `{output}` has {classes} classes (0..{})",
                    classes.saturating_sub(1)
                ),
            });
        }
        Ok(())
    }
}

fn read_labels(a: &RawArray) -> Result<Labels, String> {
    let n = match a.shape.as_slice() {
        [n] | [n, 1] => *n,
        s => {
            return Err(format!(
                "array `labels` has shape {s:?}; it needs one label per sample ([N] or [N, 1])"
            ));
        }
    };
    let d = &a.data;
    let size = a.dtype.size();
    let el = |i: usize| d.get(i * size..(i + 1) * size).unwrap_or_default();
    if a.dtype.is_float() {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let x = read_f64(a.dtype, el(i));
            if !x.is_finite() {
                return Err(format!("array `labels` has a non-finite target at row {i}"));
            }
            v.push(x);
        }
        return Ok(Labels::Targets(v));
    }
    if a.dtype == DType::Bool {
        return Err("array `labels` is bool; class ids must be integers".into());
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let b = el(i);
        let id = match a.dtype {
            DType::U64 => {
                let u = u64::from_le_bytes(b.try_into().unwrap_or_default());
                i64::try_from(u)
                    .map_err(|_| format!("array `labels` has class id {u} at row {i}"))?
            }
            DType::I64 => i64::from_le_bytes(b.try_into().unwrap_or_default()),
            // Every other integer type is exact in f64.
            t => read_f64(t, b) as i64,
        };
        v.push(id);
    }
    Ok(Labels::Classes(v))
}

/// Reads one little-endian element as f64 (exact for every dtype but the 64-bit integers).
fn read_f64(t: DType, b: &[u8]) -> f64 {
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        b.try_into().unwrap_or([0; N])
    }
    match t {
        DType::Bool => f64::from(u8::from(b.first().copied().unwrap_or(0) != 0)),
        DType::I8 => f64::from(i8::from_le_bytes(arr(b))),
        DType::U8 => f64::from(u8::from_le_bytes(arr(b))),
        DType::I16 => f64::from(i16::from_le_bytes(arr(b))),
        DType::U16 => f64::from(u16::from_le_bytes(arr(b))),
        DType::I32 => f64::from(i32::from_le_bytes(arr(b))),
        DType::U32 => f64::from(u32::from_le_bytes(arr(b))),
        DType::I64 => i64::from_le_bytes(arr(b)) as f64,
        DType::U64 => u64::from_le_bytes(arr(b)) as f64,
        DType::F16 => f16::from_le_bytes(arr(b)).to_f64(),
        DType::F32 => f64::from(f32::from_le_bytes(arr(b))),
        DType::F64 => f64::from_le_bytes(arr(b)),
    }
}

/// Writes `v` (exactly representable, see [`lossless`]) as one element of type `t`.
fn write_f64(t: DType, v: f64, out: &mut [u8]) {
    fn put<const N: usize>(out: &mut [u8], b: [u8; N]) {
        if let Some(o) = out.get_mut(..N) {
            o.copy_from_slice(&b);
        }
    }
    match t {
        DType::Bool => put(out, [u8::from(v != 0.0)]),
        DType::I8 => put(out, (v as i8).to_le_bytes()),
        DType::U8 => put(out, (v as u8).to_le_bytes()),
        DType::I16 => put(out, (v as i16).to_le_bytes()),
        DType::U16 => put(out, (v as u16).to_le_bytes()),
        DType::I32 => put(out, (v as i32).to_le_bytes()),
        DType::U32 => put(out, (v as u32).to_le_bytes()),
        DType::I64 => put(out, (v as i64).to_le_bytes()),
        DType::U64 => put(out, (v as u64).to_le_bytes()),
        DType::F16 => put(out, f16::from_f64(v).to_le_bytes()),
        DType::F32 => put(out, (v as f32).to_le_bytes()),
        DType::F64 => put(out, v.to_le_bytes()),
    }
}

/// Copies (and converts) one sample's elements from `src` (dtype `from`) into `dst` (`to`).
fn convert(from: DType, to: DType, src: &[u8], dst: &mut [u8]) {
    if from == to && to != DType::Bool {
        let n = src.len().min(dst.len());
        if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
        return;
    }
    let (fs, ts) = (from.size(), to.size());
    for (s, d) in src.chunks_exact(fs).zip(dst.chunks_exact_mut(ts)) {
        write_f64(to, read_f64(from, s), d);
    }
}

/// Reusable per-input buffers for batches that cannot be zero-copy views of the data.
#[derive(Default)]
pub struct Batcher {
    bufs: Vec<Vec<u64>>,
}

/// Named session inputs of one batch, borrowing the data set and the batcher's buffers.
pub type BatchInputs<'a> = Vec<(Cow<'a, str>, SessionInputValue<'a>)>;

/// How one batch's rows map onto the data.
#[derive(Debug, Clone, Copy)]
pub struct BatchShape {
    /// Rows taken from the data.
    pub rows: usize,
    /// Rows fed (more than `rows` when a fixed batch size pads the last batch).
    pub fed: usize,
}

impl Batcher {
    /// Session inputs for the samples `rows` (in order), padded to `pad_to` rows by repeating
    /// the last one. Contiguous rows whose dtype needs no conversion are zero-copy views of the
    /// data; others are gathered into this batcher's reusable buffers. The values borrow `self`
    /// and `ds`.
    pub fn inputs<'a>(
        &'a mut self,
        ds: &'a Dataset,
        rows: &[usize],
        pad_to: Option<usize>,
    ) -> Result<(BatchInputs<'a>, BatchShape), DataError> {
        let fed = pad_to.unwrap_or(rows.len()).max(rows.len());
        let shape = BatchShape {
            rows: rows.len(),
            fed,
        };
        let Some(&last) = rows.last() else {
            return Err(DataError::Invalid {
                path: ds.path.clone(),
                message: "empty batch".into(),
            });
        };
        if let Some(&bad) = rows.iter().find(|&&r| r >= ds.samples) {
            return Err(DataError::Invalid {
                path: ds.path.clone(),
                message: format!("row {bad} is out of range ({} samples)", ds.samples),
            });
        }
        let contiguous = fed == rows.len() && rows.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
        self.bufs.resize_with(ds.inputs.len(), Vec::new);
        // First fill buffers (needs &mut), then build views (shared borrows).
        let mut direct = vec![false; ds.inputs.len()];
        for ((a, buf), direct) in ds
            .inputs
            .iter()
            .zip(self.bufs.iter_mut())
            .zip(direct.iter_mut())
        {
            let rb = a.row_bytes();
            let start = rows.first().copied().unwrap_or(0) * rb;
            let aligned = a
                .data
                .get(start..)
                .is_some_and(|s| (s.as_ptr() as usize).is_multiple_of(a.feed.size()));
            if contiguous && a.dtype == a.feed && a.feed != DType::Bool && aligned {
                *direct = true;
                continue;
            }
            let out_rb = a.row_elems * a.feed.size();
            let total = out_rb * fed;
            buf.clear();
            buf.resize(total.div_ceil(8), 0);
            let dst_all = words_as_bytes_mut(buf);
            for (k, dst) in dst_all
                .chunks_exact_mut(out_rb.max(1))
                .take(fed)
                .enumerate()
            {
                let r = rows.get(k).copied().unwrap_or(last);
                let src = a.data.get(r * rb..(r + 1) * rb).unwrap_or_default();
                convert(a.dtype, a.feed, src, dst);
            }
        }
        let mem = MemoryInfo::default();
        let mut out = Vec::with_capacity(ds.inputs.len());
        for ((a, buf), direct) in ds.inputs.iter().zip(self.bufs.iter()).zip(direct) {
            let mut dims = Vec::with_capacity(a.row_shape.len() + 1);
            dims.push(i64::try_from(fed).unwrap_or(i64::MAX));
            dims.extend(
                a.row_shape
                    .iter()
                    .map(|&d| i64::try_from(d).unwrap_or(i64::MAX)),
            );
            let bytes: &'a [u8] = if direct {
                let rb = a.row_bytes();
                let start = rows.first().copied().unwrap_or(0) * rb;
                a.data
                    .get(start..start + rb * rows.len())
                    .unwrap_or_default()
            } else {
                words_as_bytes(buf)
            };
            let value = tensor_view(a.feed, bytes, Shape::new(dims), &mem).map_err(|m| {
                DataError::Invalid {
                    path: ds.path.clone(),
                    message: format!("array `{}`: {m}", a.array),
                }
            })?;
            out.push((Cow::Borrowed(a.input.as_str()), value));
        }
        Ok((out, shape))
    }
}

fn words_as_bytes(w: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding; any byte is a valid u8; the length is exact.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u8>(), std::mem::size_of_val(w)) }
}

fn words_as_bytes_mut(w: &mut [u64]) -> &mut [u8] {
    // SAFETY: as above, with a unique borrow.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(w)) }
}

/// A tensor over `bytes` (aligned for `t`, at least `shape`'s size) without copying.
fn tensor_view<'a>(
    t: DType,
    bytes: &'a [u8],
    shape: Shape,
    mem: &MemoryInfo,
) -> Result<SessionInputValue<'a>, String> {
    let n = shape.num_elements();
    let need = n.checked_mul(t.size()).ok_or("size overflows")?;
    if bytes.len() < need {
        return Err(format!("batch needs {need} bytes, have {}", bytes.len()));
    }
    if !(bytes.as_ptr() as usize).is_multiple_of(t.size()) {
        return Err("misaligned batch buffer".into());
    }
    let ptr = bytes.as_ptr().cast_mut().cast::<std::ffi::c_void>();
    macro_rules! view {
        ($ty:ty) => {{
            // SAFETY: `ptr` points at `need` readable bytes that live for 'a, aligned for the
            // element type; ONNX Runtime only reads input tensors.
            let v: TensorRefMut<'a, $ty> =
                unsafe { TensorRefMut::from_raw(mem.clone(), ptr, shape) }
                    .map_err(|e| e.message().to_string())?;
            Ok(SessionInputValue::from(v))
        }};
    }
    match t {
        DType::Bool => view!(bool),
        DType::I8 => view!(i8),
        DType::U8 => view!(u8),
        DType::I16 => view!(i16),
        DType::U16 => view!(u16),
        DType::I32 => view!(i32),
        DType::U32 => view!(u32),
        DType::I64 => view!(i64),
        DType::U64 => view!(u64),
        DType::F16 => view!(f16),
        DType::F32 => view!(f32),
        DType::F64 => view!(f64),
    }
}

/// Checks array `a` against model input `spec` (element type, rank, fixed dims, samples) and
/// the fixed batch size other inputs declared; returns how to feed it.
fn input_array(
    path: &Path,
    io: &ModelIo,
    spec: &InputSpec,
    a: &RawArray,
    samples: usize,
    fixed_batch: &mut Option<(usize, String)>,
) -> Result<InputArray, DataError> {
    let err = |m: String| DataError::Invalid {
        path: path.to_path_buf(),
        message: m,
    };
    let what = format!("array `{}`", a.name);
    let input = format!("model input `{}`", spec.name);
    let feed = match spec.elem {
        Some(ElemType::Known(d)) => d,
        Some(e) => {
            return Err(err(format!(
                "{input} takes {e}, which .npy data cannot supply"
            )));
        }
        None => return Err(err(format!("{input} is not a tensor"))),
    };
    if !lossless(a.dtype, feed) {
        return Err(err(format!(
            "{what} has dtype {} but {input} takes {feed} (not a lossless conversion; save it with .astype(np.{feed}))",
            a.dtype
        )));
    }
    let Some((&n, row_shape)) = a.shape.split_first() else {
        return Err(err(format!(
            "{what} is a scalar; it needs a sample axis first"
        )));
    };
    if let Some(dims) = &spec.dims {
        check_dims(path, io, spec, a, dims, fixed_batch)?;
    }
    if n != samples {
        return Err(err(format!(
            "{what} has {n} samples but array `labels` has {samples}"
        )));
    }
    let mut row_elems: usize = 1;
    for &d in row_shape {
        row_elems = row_elems
            .checked_mul(d)
            .ok_or_else(|| err(format!("{what}: shape overflows")))?;
    }
    Ok(InputArray {
        input: spec.name.clone(),
        array: a.name.clone(),
        dtype: a.dtype,
        feed,
        row_shape: row_shape.to_vec(),
        row_elems,
        data: a.data.clone(),
    })
}

/// The array's rank and non-batch dims must match the declared `dims`; a declared (fixed)
/// batch size must be positive and the same as other inputs'.
fn check_dims(
    path: &Path,
    io: &ModelIo,
    spec: &InputSpec,
    a: &RawArray,
    dims: &[Dim],
    fixed_batch: &mut Option<(usize, String)>,
) -> Result<(), DataError> {
    let err = |m: String| DataError::Invalid {
        path: path.to_path_buf(),
        message: m,
    };
    let what = format!("array `{}`", a.name);
    let input = format!("model input `{}`", spec.name);
    if dims.len() != a.shape.len() {
        return Err(err(format!(
            "{what} has rank {} but {input} has rank {} {}",
            a.shape.len(),
            dims.len(),
            spec.dims_text()
        )));
    }
    for (i, (d, &have)) in dims.iter().zip(&a.shape).enumerate().skip(1) {
        if let Dim::Fixed(want) = d
            && i64::try_from(have).ok() != Some(*want)
        {
            return Err(err(format!(
                "{what} has shape {:?} but {input} needs dim {i} = {want} {}",
                a.shape,
                spec.dims_text()
            )));
        }
    }
    if let Some(Dim::Fixed(b)) = dims.first() {
        // A negative dim is dynamic (facts); 0 is a real size ONNX Runtime enforces, so no
        // row could ever be fed.
        let b = usize::try_from(*b)
            .ok()
            .filter(|&b| b > 0)
            .ok_or_else(|| DataError::Model {
                path: io.path.clone(),
                message: format!(
                    "{input} declares a batch dimension of {b}: ONNX Runtime accepts no rows for it"
                ),
            })?;
        match fixed_batch {
            Some((fb, other)) if *fb != b => {
                return Err(err(format!(
                    "{input} has batch size {b} but {other} has {fb}"
                )));
            }
            _ => *fixed_batch = Some((b, input)),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::score::spec::IoSpec;

    fn spec(name: &str, t: DType, dims: Vec<Dim>) -> IoSpec {
        IoSpec {
            name: name.into(),
            elem: Some(ElemType::Known(t)),
            dims: Some(dims),
        }
    }

    /// An array named `name` of `t` with `shape` holding `data` (8-byte aligned).
    pub(in crate::score) fn arr(
        name: &str,
        t: DType,
        shape: Vec<usize>,
        data: Vec<u8>,
    ) -> RawArray {
        RawArray {
            name: name.into(),
            dtype: t,
            shape,
            data: crate::buffer::aligned_copy(&data),
        }
    }

    fn io1() -> ModelIo {
        ModelIo {
            path: "m.onnx".into(),
            inputs: vec![spec(
                "input",
                DType::F32,
                vec![Dim::Symbolic("N".into()), Dim::Fixed(2)],
            )],
            outputs: vec![],
            hidden: vec![],
        }
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn labels(v: &[i64]) -> RawArray {
        arr(
            "labels",
            DType::I64,
            vec![v.len()],
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    fn open(arrays: Vec<RawArray>) -> Result<Dataset, String> {
        Dataset::from_arrays(Path::new("d.npz"), arrays, &io1()).map_err(|e| e.to_string())
    }

    #[test]
    fn validation_messages_name_array_and_input() {
        let x = || arr("input", DType::F32, vec![3, 2], f32s(&[0.0; 6]));
        assert!(open(vec![x(), labels(&[0, 1, 0])]).is_ok());
        let e = open(vec![x()]).unwrap_err();
        assert!(e.starts_with("d.npz: no array `labels`"), "{e}");
        let e = open(vec![labels(&[0, 1, 0])]).unwrap_err();
        assert!(
            e.contains("no array `input` for model input `input`"),
            "{e}"
        );
        let e = open(vec![
            arr("input", DType::F32, vec![3, 2, 1], f32s(&[0.0; 6])),
            labels(&[0, 1, 0]),
        ])
        .unwrap_err();
        assert!(
            e.contains("array `input` has rank 3 but model input `input` has rank 2"),
            "{e}"
        );
        let e = open(vec![
            arr("input", DType::F32, vec![2, 3], f32s(&[0.0; 6])),
            labels(&[0, 1]),
        ])
        .unwrap_err();
        assert!(e.contains("needs dim 1 = 2"), "{e}");
        let e = open(vec![
            arr("input", DType::F64, vec![3, 2], vec![0; 48]),
            labels(&[0, 1, 0]),
        ])
        .unwrap_err();
        assert!(
            e.contains("dtype float64 but model input `input` takes float32"),
            "{e}"
        );
        let e = open(vec![x(), labels(&[0, 1])]).unwrap_err();
        assert!(
            e.contains("array `input` has 3 samples but array `labels` has 2"),
            "{e}"
        );
        let e = open(vec![
            arr("input", DType::F32, vec![0, 2], vec![]),
            labels(&[]),
        ])
        .unwrap_err();
        assert!(e.contains("empty"), "{e}");
        // `x` is accepted for a single-input model, and uint8 widens losslessly to float32.
        let d = open(vec![
            arr("x", DType::U8, vec![3, 2], vec![1; 6]),
            labels(&[0, 1, 2]),
        ])
        .unwrap();
        assert_eq!(d.inputs()[0].feed, DType::F32);
        assert!(d.check_classes(3, "y").is_ok());
        let e = d.check_classes(2, "y").unwrap_err().to_string();
        assert!(
            e.contains("class id 2 at row 2") && e.contains("output `y` has 2 classes"),
            "{e}"
        );
    }

    #[test]
    fn lossless_table() {
        assert!(lossless(DType::U8, DType::F32));
        assert!(lossless(DType::F16, DType::F32));
        assert!(lossless(DType::I32, DType::I64));
        assert!(!lossless(DType::I64, DType::I32));
        assert!(!lossless(DType::F64, DType::F32));
        assert!(!lossless(DType::I32, DType::F32));
        assert!(!lossless(DType::F32, DType::Bool));
    }

    #[test]
    fn conversion_is_exact() {
        let mut out = [0u8; 12];
        convert(DType::U8, DType::F32, &[0, 7, 255], &mut out);
        let v: Vec<f32> = out
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(v, vec![0.0, 7.0, 255.0]);
        let src: Vec<u8> = [-3i32, 70000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut out = [0u8; 16];
        convert(DType::I32, DType::I64, &src, &mut out);
        assert_eq!(i64::from_le_bytes(out[8..].try_into().unwrap()), 70000);
        assert_eq!(i64::from_le_bytes(out[..8].try_into().unwrap()), -3);
    }

    #[test]
    fn float_labels_are_regression() {
        let l = arr("labels", DType::F32, vec![3, 1], f32s(&[0.5, 1.5, -2.0]));
        let d = open(vec![
            arr("input", DType::F32, vec![3, 2], f32s(&[0.0; 6])),
            l,
        ])
        .unwrap();
        assert_eq!(d.labels(), &Labels::Targets(vec![0.5, 1.5, -2.0]));
    }

    #[test]
    fn f32_columns_become_a_data_set_fed_by_name() {
        let labels = Labels::Classes(vec![0, 1, 1]);
        let cols = vec![("h".to_string(), vec![2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])];
        let ds = Dataset::from_f32_columns(Path::new("d.npz"), cols, labels.clone()).unwrap();
        assert_eq!((ds.len(), ds.inputs()[0].input.as_str()), (3, "h"));
        assert_eq!((ds.inputs()[0].row_elems, ds.bytes_for(3)), (2, 24));
        assert_eq!(ds.labels(), &labels);
        // Rows are where a batch view expects them: sample 1 is bytes 8..16.
        let sub = ds.subset(&[1]).unwrap();
        assert_eq!(
            sub.inputs()[0].data.get(..8),
            ds.inputs()[0].data.get(8..16)
        );
        let short = vec![("h".to_string(), vec![2], vec![1.0; 5])];
        let err = Dataset::from_f32_columns(Path::new("d.npz"), short, labels).unwrap_err();
        assert!(err.to_string().contains("5 values for 3 samples"), "{err}");
    }
}
