//! The baseline of the score-overhead benchmark: the smallest ort program that scores a model
//! on an `.npz` (input `input`, `labels`) with the same session options as `smd-onnx score`
//! (all cores, no spinning, memory pattern on), batches of 256, accuracy by argmax.
//!
//! `cargo run --release --example ort_loop -- LIBONNXRUNTIME MODEL DATA [THREADS]`

use std::time::Instant;

use ort::session::Session;
use ort::value::TensorRef;
use smd_onnx::score::arrays::read_arrays;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let lib = args
        .next()
        .ok_or("usage: ort_loop LIB MODEL DATA [THREADS]")?;
    let model = args.next().ok_or("missing MODEL")?;
    let data = args.next().ok_or("missing DATA")?;
    let threads: usize = match args.next() {
        Some(t) => t.parse()?,
        None => std::thread::available_parallelism()?.get(),
    };
    let t0 = Instant::now();
    let arrays = read_arrays(data.as_ref())?;
    let x = arrays
        .iter()
        .find(|a| a.name == "input")
        .ok_or("no `input`")?;
    let l = arrays
        .iter()
        .find(|a| a.name == "labels")
        .ok_or("no `labels`")?;
    let xs: Vec<f32> = x
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let labels: Vec<i64> = l
        .data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let row_shape: Vec<usize> = x.shape[1..].to_vec();
    let row: usize = row_shape.iter().product();

    let env = ort::init_from(&lib)?
        .with_telemetry(false)
        .build()
        .map_err(|e| e.to_string())?;
    let mut session = Session::builder(&env)?
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
        .commit_from_file(&model)?;
    let t1 = Instant::now();
    let mut correct = 0usize;
    for (xb, lb) in xs.chunks(256 * row).zip(labels.chunks(256)) {
        let mut shape = vec![lb.len()];
        shape.extend_from_slice(&row_shape);
        let input = TensorRef::from_array_view((shape, xb))?;
        let out = session.run(ort::inputs!["input" => input])?;
        let (s, y) = out[0].try_extract_tensor::<f32>()?;
        let c = usize::try_from(s[1])?;
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
    let t2 = Instant::now();
    println!(
        "accuracy {:.6} samples {} session+load {:.3} s inference {:.3} s",
        correct as f64 / labels.len() as f64,
        labels.len(),
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64()
    );
    Ok(())
}
