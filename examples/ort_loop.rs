//! The floor of the benchmarks: the smallest ort program that runs a model over an `.npz`
//! (`input`, `labels`) with the same session options as `smd-onnx` (all cores, no spinning,
//! memory pattern on), batches of `--batch` (256), accuracy by argmax. `--passes N` runs N
//! passes with the one session: the cost `smd-onnx evolve` cannot avoid for k children is
//! k + 1 passes.
//!
//! `cargo run --release --example ort_loop -- LIBONNXRUNTIME MODEL DATA [--passes N] [--batch N] [--threads N]`

use std::path::Path;
use std::time::Instant;

mod common;

fn main() -> Result<(), common::Error> {
    let args = common::Args::parse()?;
    let [lib, model, data] = args.positional.as_slice() else {
        return Err("usage: ort_loop LIB MODEL DATA [--passes N] [--batch N] [--threads N]".into());
    };
    let t0 = Instant::now();
    let data = common::Data::open(Path::new(data))?;
    let xs = data.inputs()?;
    let env = common::environment(lib)?;
    let mut session = common::session(&env, args.threads, Path::new(model))?;
    let t1 = Instant::now();
    let mut correct = 0;
    for _ in 0..args.passes {
        correct = common::pass(&mut session, &data, &xs, args.batch)?;
    }
    let t2 = Instant::now();
    println!(
        "accuracy {:.6} samples {} passes {} session+load {:.3} s inference {:.3} s",
        correct as f64 / data.labels.len() as f64,
        data.labels.len(),
        args.passes,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64()
    );
    Ok(())
}
