//! `smd-onnx score`: a model's accuracy, top-5 accuracy and NLL (or MSE) on a labelled data
//! set, on all samples or one part of the selection/holdout split.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use smd_onnx::runtime::Runtime;
use smd_onnx::score::{DataSource, Dataset, ModelIo, Predictor, ScoredAs, Split, SplitPart};

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
    /// Also write a self-contained HTML page of the results (per-class charts, confusion
    /// matrix) to this file.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Arrays in memory instead of `--data`'s file (the Python binding's numpy arrays).
    #[arg(skip)]
    pub(super) arrays: Option<DataSource>,
}

impl Args {
    /// The data: the arrays given in memory, or `--data`.
    fn source(&self) -> DataSource {
        self.arrays
            .clone()
            .unwrap_or_else(|| self.data.data.clone().into())
    }
}

/// Shows a progress bar on a terminal once a run has taken longer than this.
const PROGRESS_AFTER: Duration = Duration::from_millis(1500);

/// Runs `smd-onnx score`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let part: SplitPart = args.split.parse()?;
    let config = args.runtime.config()?;
    let source = args.source();
    if let Some(h) = &args.html {
        // Refused before any work: the page must never replace an input.
        let mut inputs = smd_onnx::onnx::Model::open(&args.model)?.input_paths();
        inputs.extend(source.path().map(std::path::Path::to_path_buf));
        let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
        smd_onnx::output::ensure_not_input(h, &inputs)?;
    }
    // Data problems are reported before ONNX Runtime is touched (or fetched).
    let io = ModelIo::from_file(&args.model)?;
    let ds = source.open(&io)?;
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
    let preds = predict_with_bar(&mut predictor, &mut session, &ds, &rows)?;
    let t_infer = t2.elapsed();
    let (metrics, classes) = if preds.failed() {
        (None, None)
    } else {
        (
            Some(preds.metrics(ds.labels())?),
            preds.class_stats(ds.labels())?,
        )
    };
    let failure = preds.failed().then(|| {
        format!(
            "output `{}` has NaN/Inf in {} samples (first: row {})",
            preds.output,
            preds.non_finite_rows,
            preds.first_non_finite.unwrap_or(0)
        )
    });
    let outcome = Outcome {
        info: rt.describe(),
        preds,
        metrics,
        classes,
        failure,
        rows: rows.len(),
        samples: ds.len(),
        part,
        split: (split.selection.len(), split.holdout.len()),
        batch: predictor.batch(),
        seconds: [t_load, t_session, t_infer].map(|t| t.as_secs_f64()),
    };
    if let Some(h) = &args.html {
        write_html(h, &args, &outcome)?;
    }
    if args.json {
        print_json(&args, &outcome)?;
    } else {
        print_table(&args, &outcome);
    }
    let failure = outcome.failure;
    if let Some(f) = failure {
        eprintln!("error: {}: the run failed: {f}", args.model.display());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `score` found, for printing.
struct Outcome {
    info: smd_onnx::runtime::RuntimeInfo,
    preds: smd_onnx::score::Predictions,
    metrics: Option<smd_onnx::score::Metrics>,
    /// Per-class results (classification).
    classes: Option<smd_onnx::score::ClassStats>,
    failure: Option<String>,
    /// Rows scored, and samples in the data.
    rows: usize,
    samples: usize,
    part: SplitPart,
    /// Selection and holdout sizes of the split.
    split: (usize, usize),
    batch: usize,
    /// Load, session and inference seconds.
    seconds: [f64; 3],
}

/// Predictions for `rows`, with a progress bar on a terminal once the run takes a while.
fn predict_with_bar(
    predictor: &mut Predictor,
    session: &mut ort::session::Session,
    ds: &Dataset,
    rows: &[usize],
) -> anyhow::Result<smd_onnx::score::Predictions> {
    let t = Instant::now();
    let total = rows.len();
    let mut bar: Option<ProgressBar> = None;
    let tty = std::io::stderr().is_terminal();
    let preds = predictor.predict_with_progress(session, ds, rows, &mut |done| {
        if !tty {
            return;
        }
        if bar.is_none() && t.elapsed() > PROGRESS_AFTER && done < total {
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
    Ok(preds)
}

fn print_json(args: &Args, o: &Outcome) -> anyhow::Result<()> {
    let [load, session, inference] = o.seconds;
    let v = json!({
        "model": args.model,
        "data": args.source().to_string(),
        "samples": o.rows,
        "split": {
            "part": o.part.to_string(),
            "holdout": args.data.holdout,
            "seed": args.data.split_seed,
            "selection": o.split.0,
            "holdout_samples": o.split.1,
        },
        "output": o.preds.output,
        "output_kind": serde_json::to_value(o.preds.kind)?,
        "classes": o.preds.classes,
        "batch": o.batch,
        "metrics": o.metrics,
        "per_class": o.classes,
        "failed": o.failure.is_some(),
        "failure": o.failure,
        "device": o.info.device,
        "providers": o.info.providers,
        "runtime": {
            "library": o.info.library,
            "version": o.info.version,
            "source": o.info.source,
        },
        "seconds": {
            "load": load,
            "session": session,
            "inference": inference,
        },
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Writes the page of `score --html`.
fn write_html(path: &std::path::Path, args: &Args, o: &Outcome) -> anyhow::Result<()> {
    let [load, session, inference] = o.seconds;
    let page = smd_onnx::html::ScorePage {
        model: &args.model.display().to_string(),
        data: &args.source().to_string(),
        part: &format!(
            "{}: {} of {} samples (holdout {}, split seed {})",
            o.part, o.rows, o.samples, args.data.holdout, args.data.split_seed
        ),
        output: &format!(
            "`{}` ({:?}, {} classes)",
            o.preds.output, o.preds.kind, o.preds.classes
        ),
        metrics: o.metrics.as_ref(),
        classes: o.classes.as_ref(),
        facts: vec![
            (
                "device".into(),
                format!("{} ({})", o.info.device, o.info.providers.join(", ")),
            ),
            (
                "ONNX Runtime".into(),
                format!("{} ({})", o.info.version, o.info.library.display()),
            ),
            ("batch".into(), o.batch.to_string()),
            (
                "seconds".into(),
                format!("load {load:.2}, session {session:.2}, inference {inference:.2}"),
            ),
            ("smd-onnx".into(), env!("CARGO_PKG_VERSION").into()),
        ],
        command: Some(&super::common::command_line()),
    };
    smd_onnx::html::write(path, &smd_onnx::html::score(&page), &[])?;
    Ok(())
}

fn print_table(args: &Args, o: &Outcome) {
    println!("model          {}", args.model.display());
    println!(
        "data           {} ({}: {} of {} samples; holdout {}, split seed {})",
        args.source(),
        o.part,
        o.rows,
        o.samples,
        args.data.holdout,
        args.data.split_seed
    );
    let preds = &o.preds;
    let what = match preds.kind {
        ScoredAs::Probabilities => format!("probabilities, {} classes", preds.classes),
        ScoredAs::Logits => format!("logits → softmax, {} classes", preds.classes),
        ScoredAs::Regression => "regression values".to_string(),
    };
    println!("output         `{}` ({what})", preds.output);
    println!(
        "runtime        ONNX Runtime {} on {} ({})",
        o.info.version,
        o.info.device,
        o.info.providers.join(", ")
    );
    for (name, v) in o.metrics.iter().flat_map(|m| m.values()) {
        println!("{name:<14} {v:.6}");
    }
    let [_, session, inference] = o.seconds;
    let rate = o.rows as f64 / inference.max(1e-9);
    println!(
        "time           session {session:.2} s, inference {inference:.2} s ({rate:.0} samples/s, batch {})",
        o.batch
    );
}
