//! `smd-onnx score`: a model's accuracy, top-5 accuracy and NLL (or MSE) on a labelled data
//! set, on all samples or one part of the selection/holdout split.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use smd_onnx::runtime::Runtime;
use smd_onnx::score::{Dataset, ModelIo, Predictor, ScoredAs, Split, SplitPart};

use super::common::{DataArgs, RuntimeArgs};

/// Arguments of `smd-onnx score`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Which samples: the selection part, the holdout part, or all.
    #[arg(long, default_value = "all", value_name = "PART")]
    split: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Shows a progress bar on a terminal once a run has taken longer than this.
const PROGRESS_AFTER: Duration = Duration::from_millis(1500);

/// Runs `smd-onnx score`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let part: SplitPart = args.split.parse()?;
    let config = args.runtime.config()?;
    // Data problems are reported before ONNX Runtime is touched (or fetched).
    let io = ModelIo::from_file(&args.model)?;
    let ds = Dataset::open(&args.data.data, &io)?;
    let split = Split::new(ds.labels(), args.data.holdout, args.data.split_seed)?;
    let rows = split.rows(part);
    let batch = args.data.batch.unwrap_or_else(|| ds.default_batch());
    let mut predictor = Predictor::new(&io, &ds, args.data.output.as_deref(), batch)?;
    let t_load = t0.elapsed();

    let rt = Runtime::new(&config)?;
    let t1 = Instant::now();
    let mut session = rt.session_with_suffix(&args.model, &predictor.session_suffix(), None)?;
    let t_session = t1.elapsed();

    let t2 = Instant::now();
    let total = rows.len();
    let mut bar: Option<ProgressBar> = None;
    let tty = std::io::stderr().is_terminal();
    let preds = predictor.predict_with_progress(&mut session, &ds, &rows, &mut |done| {
        if !tty {
            return;
        }
        if bar.is_none() && t2.elapsed() > PROGRESS_AFTER && done < total {
            let b = ProgressBar::with_draw_target(
                Some(total as u64),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} samples ({per_sec}, eta {eta})",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let t_infer = t2.elapsed();
    let info = rt.describe();
    let metrics = if preds.failed() {
        None
    } else {
        Some(preds.metrics(ds.labels())?)
    };
    let failure = preds.failed().then(|| {
        format!(
            "output `{}` has NaN/Inf in {} samples (first: row {})",
            preds.output,
            preds.non_finite_rows,
            preds.first_non_finite.unwrap_or(0)
        )
    });
    let kind = serde_json::to_value(preds.kind)?;
    if args.json {
        let v = json!({
            "model": args.model,
            "data": args.data.data,
            "samples": rows.len(),
            "split": {
                "part": part.to_string(),
                "holdout": args.data.holdout,
                "seed": args.data.split_seed,
                "selection": split.selection.len(),
                "holdout_samples": split.holdout.len(),
            },
            "output": preds.output,
            "output_kind": kind,
            "classes": preds.classes,
            "batch": predictor.batch(),
            "metrics": metrics,
            "failed": failure.is_some(),
            "failure": failure,
            "device": info.device,
            "providers": info.providers,
            "runtime": {
                "library": info.library,
                "version": info.version,
                "source": info.source,
            },
            "seconds": {
                "load": t_load.as_secs_f64(),
                "session": t_session.as_secs_f64(),
                "inference": t_infer.as_secs_f64(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("model          {}", args.model.display());
        println!(
            "data           {} ({part}: {} of {} samples; holdout {}, split seed {})",
            args.data.data.display(),
            rows.len(),
            ds.len(),
            args.data.holdout,
            args.data.split_seed
        );
        let what = match preds.kind {
            ScoredAs::Probabilities => format!("probabilities, {} classes", preds.classes),
            ScoredAs::Logits => format!("logits → softmax, {} classes", preds.classes),
            ScoredAs::Regression => "regression values".to_string(),
        };
        println!("output         `{}` ({what})", preds.output);
        println!(
            "runtime        ONNX Runtime {} on {} ({})",
            info.version,
            info.device,
            info.providers.join(", ")
        );
        for (name, v) in metrics.iter().flat_map(|m| m.values()) {
            println!("{name:<14} {v:.6}");
        }
        let rate = rows.len() as f64 / t_infer.as_secs_f64().max(1e-9);
        println!(
            "time           session {:.2} s, inference {:.2} s ({rate:.0} samples/s, batch {})",
            t_session.as_secs_f64(),
            t_infer.as_secs_f64(),
            predictor.batch()
        );
    }
    if let Some(f) = failure {
        eprintln!("error: {}: the run failed: {f}", args.model.display());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
