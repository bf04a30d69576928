//! What the timing examples share: the data, a session built with the same options as
//! `smd-onnx` (all cores unless told, one inter-op thread, no spinning, memory pattern on) and
//! one pass over the data. Kept minimal on purpose: it is the floor `smd-onnx` is measured
//! against, so it must not use the library's runtime or scoring code.

use std::borrow::Cow;
use std::path::Path;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;
use smd_onnx::score::arrays::{RawArray, read_arrays};

/// Boxed error for the examples.
pub type Error = Box<dyn std::error::Error>;

/// The `input` (float32) and `labels` (int64) arrays of an `.npz` file.
pub struct Data {
    arrays: Vec<RawArray>,
    /// Shape of one sample (the input's shape without the batch dimension).
    pub row_shape: Vec<usize>,
    /// Class labels.
    pub labels: Vec<i64>,
}

impl Data {
    /// Reads `input` and `labels` from `path` (memory-mapped by `read_arrays`).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let arrays = read_arrays(path)?;
        let x = arrays
            .iter()
            .find(|a| a.name == "input")
            .ok_or("no `input` array")?;
        let l = arrays
            .iter()
            .find(|a| a.name == "labels")
            .ok_or("no `labels` array")?;
        let labels = l
            .data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let row_shape = x
            .shape
            .get(1..)
            .ok_or("`input` has no batch dimension")?
            .to_vec();
        Ok(Data {
            row_shape,
            labels,
            arrays,
        })
    }

    /// The input values: borrowed from the mapped file when aligned, else copied.
    pub fn inputs(&self) -> Result<Cow<'_, [f32]>, Error> {
        let x = self
            .arrays
            .iter()
            .find(|a| a.name == "input")
            .ok_or("no `input` array")?;
        Ok(match bytemuck::try_cast_slice::<u8, f32>(&x.data) {
            Ok(v) => Cow::Borrowed(v),
            Err(_) => Cow::Owned(
                x.data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        })
    }
}

/// The ort environment on the given `libonnxruntime`, with one CPU arena shared by its sessions
/// (as `smd-onnx` has).
pub fn environment(lib: &str) -> Result<Environment, Error> {
    let env = ort::init_from(lib)?
        .with_telemetry(false)
        .build()
        .map_err(|e| e.to_string())?;
    smd_onnx::runtime::share_cpu_arena(&env)?;
    Ok(env)
}

/// A CPU session with `smd-onnx`'s session options.
pub fn session(env: &Environment, threads: usize, model: &Path) -> Result<Session, Error> {
    Ok(Session::builder(env)?
        .with_intra_threads(threads)
        .map_err(|e| e.to_string())?
        .with_inter_threads(1)
        .map_err(|e| e.to_string())?
        .with_intra_op_spinning(false)
        .map_err(|e| e.to_string())?
        .with_inter_op_spinning(false)
        .map_err(|e| e.to_string())?
        .with_memory_pattern(true)
        .map_err(|e| e.to_string())?
        .with_env_allocators()
        .map_err(|e| e.to_string())?
        .commit_from_file(model)?)
}

/// One pass over every sample in batches of `batch`; returns how many the first output's
/// argmax gets right (ties to the lowest index).
pub fn pass(session: &mut Session, data: &Data, xs: &[f32], batch: usize) -> Result<usize, Error> {
    let row: usize = data.row_shape.iter().product();
    let batch = batch.max(1);
    let mut correct = 0usize;
    for (xb, lb) in xs.chunks(batch * row).zip(data.labels.chunks(batch)) {
        let mut shape = vec![lb.len()];
        shape.extend_from_slice(&data.row_shape);
        let input = TensorRef::from_array_view((shape, xb))?;
        let out = session.run(ort::inputs!["input" => input])?;
        let (s, y) = out[0].try_extract_tensor::<f32>()?;
        let c = usize::try_from(*s.get(1).ok_or("output is not [N, C]")?)?;
        for (r, &label) in y.chunks_exact(c).zip(lb) {
            let mut best = 0;
            for (i, v) in r.iter().enumerate() {
                if *v > r[best] {
                    best = i;
                }
            }
            correct += usize::from(best as i64 == label);
        }
    }
    Ok(correct)
}

/// Flags shared by the examples: `--threads N` (default: every core), `--batch N` (default
/// 256, as `smd-onnx`), `--passes N`, `--ensemble FILE`; the rest are positionals.
pub struct Args {
    /// Intra-op threads.
    pub threads: usize,
    /// Samples per `run`.
    pub batch: usize,
    /// `--passes N` (default 1).
    pub passes: usize,
    /// `--ensemble FILE`, when given.
    pub ensemble: Option<String>,
    /// Everything else, in order.
    pub positional: Vec<String>,
}

impl Args {
    /// Parses `std::env::args()`.
    pub fn parse() -> Result<Self, Error> {
        let mut a = Args {
            threads: std::thread::available_parallelism()?.get(),
            batch: 256,
            passes: 1,
            ensemble: None,
            positional: Vec::new(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(s) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{s} needs a value"));
            match s.as_str() {
                "--threads" => a.threads = value()?.parse()?,
                "--batch" => a.batch = value()?.parse()?,
                "--passes" => a.passes = value()?.parse()?,
                "--ensemble" => a.ensemble = Some(value()?),
                _ => a.positional.push(s),
            }
        }
        Ok(a)
    }
}
