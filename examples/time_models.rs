//! Ensemble speed against its members: runs each MODEL over the data once, one session at a
//! time (created, run, dropped: idle sessions would slow the active one, DESIGN §5), then the
//! `--ensemble` model once with one session. Same session options as `smd-onnx`.
//! Prints one JSON line: seconds for session creation and for inference, for both.
//!
//! `cargo run --release --example time_models -- LIBONNXRUNTIME DATA --ensemble E.onnx MODEL... [--batch N] [--threads N]`

use std::path::Path;
use std::time::Instant;

mod common;

fn main() -> Result<(), common::Error> {
    let args = common::Args::parse()?;
    let (Some(ensemble), [lib, data, models @ ..]) = (&args.ensemble, args.positional.as_slice())
    else {
        return Err(
            "usage: time_models LIB DATA --ensemble E.onnx MODEL... [--batch N] [--threads N]"
                .into(),
        );
    };
    let data = common::Data::open(Path::new(data))?;
    let xs = data.inputs()?;
    let env = common::environment(lib)?;

    let (mut load, mut run, mut correct) = (0.0, 0.0, Vec::new());
    for m in models {
        let t0 = Instant::now();
        let mut s = common::session(&env, args.threads, Path::new(m))?;
        let t1 = Instant::now();
        correct.push(common::pass(&mut s, &data, &xs, args.batch)?);
        load += (t1 - t0).as_secs_f64();
        run += t1.elapsed().as_secs_f64();
    }
    let t0 = Instant::now();
    let mut s = common::session(&env, args.threads, Path::new(ensemble))?;
    let t1 = Instant::now();
    let ens_correct = common::pass(&mut s, &data, &xs, args.batch)?;
    let (ens_load, ens_run) = ((t1 - t0).as_secs_f64(), t1.elapsed().as_secs_f64());
    let n = data.labels.len() as f64;
    let member_acc = correct.iter().sum::<usize>() as f64 / (n * correct.len().max(1) as f64);
    println!(
        "{{\"members\": {}, \"samples\": {}, \"separate_session_s\": {load:.3}, \"separate_run_s\": {run:.3}, \"ensemble_session_s\": {ens_load:.3}, \"ensemble_run_s\": {ens_run:.3}, \"member_mean_accuracy\": {member_acc:.4}, \"ensemble_accuracy\": {:.4}}}",
        models.len(),
        data.labels.len(),
        ens_correct as f64 / n
    );
    Ok(())
}
