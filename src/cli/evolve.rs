//! `smd-onnx evolve`: children, selection, ensembles, export, report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use smd_onnx::ensemble::Combine;
use smd_onnx::evolve::{EnsembleChoice, Event, EvolveConfig, Flow, Observer, evolve};
use smd_onnx::mutate::Subspaces;

use super::common::{DataArgs, MutationArgs, OrAuto, RuntimeArgs, SelectionArgs, parse_or_auto};

/// What `evolve` writes besides the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportArg {
    /// `best.onnx` when a candidate beats the parent.
    Best,
    /// `ensemble.onnx`.
    Ensemble,
    /// Both.
    Both,
    /// Neither (the report only).
    None,
}

/// Ensembles on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EnsembleArg {
    /// The ensemble with the best selection score.
    Auto,
    /// Mean of the children.
    Mean,
    /// Mean of the children and the parent.
    #[value(name = "mean+parent")]
    MeanParent,
    /// Greedy selection among the children.
    Greedy,
    /// Greedy selection among the children and the parent.
    #[value(name = "greedy+parent")]
    GreedyParent,
}

/// How the exported ensemble combines float outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CombineArg {
    /// Probabilities are averaged; logits become the log of the mean softmax.
    Probs,
    /// Logits are averaged as they are.
    Logits,
    /// Every float output is averaged as it is.
    Mean,
}

impl From<CombineArg> for Combine {
    fn from(c: CombineArg) -> Self {
        match c {
            CombineArg::Probs => Combine::Probs,
            CombineArg::Logits => Combine::Logits,
            CombineArg::Mean => Combine::Mean,
        }
    }
}

/// Arguments of `smd-onnx evolve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The parent ONNX model.
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    mutation: MutationArgs,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Output folder (default: `<model name>.smd` in the current folder).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Generations: each starts from the previous one's winner. `auto`: up to 100, until
    /// --patience generations in a row find nothing better (2 unless given) or --budget is
    /// spent.
    #[arg(long, default_value = "1", value_name = "G|auto", value_parser = parse_or_auto::<u32>)]
    generations: OrAuto<u32>,
    /// Forward passes over the selection split the run may spend (the parent, every child
    /// and merged candidate count one each, a raced child the fraction of rows it was
    /// scored on); no generation starts whose children could exceed it.
    #[arg(long, value_name = "PASSES")]
    budget: Option<u64>,
    /// Stop once this many generations in a row kept their parent.
    #[arg(long, value_name = "N")]
    patience: Option<u32>,
    /// When the merged candidate wins, also try its step taken twice (a line search along the
    /// merged direction: one more pass over the selection split).
    #[arg(long)]
    line_search: bool,
    /// Write best.onnx and ensemble.onnx only when McNemar's exact test of their selection
    /// gain over the original model gives p < P (1: always) [default: 0.01 with
    /// `--generations auto`, else 1]
    #[arg(long, value_name = "P")]
    accept_p: Option<f64>,
    /// Race the children against their parent: score them on the selection rows block by
    /// block and drop those that cannot or clearly do not beat it, so a generation costs
    /// fewer passes (classification only; dropped children are in no ensemble).
    #[arg(long)]
    race: bool,
    /// What selection optimises: the best child, the merged candidate, greedy ensembles and
    /// the exported ensemble (default: accuracy with the NLL as tie-break, MSE for regression).
    #[arg(long, value_name = "METRIC", value_parser = clap::builder::PossibleValuesParser::new(smd_onnx::score::Metric::NAMES))]
    metric: Option<String>,
    /// Resample the subspaces every generation (the default).
    #[arg(long, conflicts_with = "static_subspaces")]
    dynamic: bool,
    /// Keep the same subspaces in every generation.
    #[arg(long = "static", id = "static_subspaces")]
    static_subspaces: bool,
    /// What to write besides report.json and report.html.
    #[arg(long, value_enum, default_value = "both")]
    export: ExportArg,
    /// Which ensemble to export.
    #[arg(long, value_enum, default_value = "auto")]
    ensemble: EnsembleArg,
    /// How the exported ensemble combines float outputs.
    #[arg(long, value_enum, default_value = "probs")]
    combine: CombineArg,
    /// Reuse a non-empty output folder (its outputs are replaced).
    #[arg(long)]
    force: bool,
    /// Continue an interrupted run from the journal in the output folder.
    #[arg(long)]
    resume: bool,
    /// Print the report (JSON) instead of the summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    scale: Box<super::scale::ScaleArgs>,
}

/// The most generations `--generations auto` runs.
const AUTO_GENERATIONS: u32 = 100;
/// `--patience` for `--generations auto` when not given.
const AUTO_PATIENCE: u32 = 2;

/// `--accept-p` with `--generations auto`: a long search exports only a selection gain over
/// the original that is unlikely to be chance.
const AUTO_ACCEPT_P: f64 = 0.01;

/// Progress bars on stderr, one per phase, when stderr is a terminal.
struct Bars {
    bar: Option<ProgressBar>,
    tty: bool,
}

impl Observer for Bars {
    fn event(&mut self, event: &Event<'_>) -> Flow {
        match event {
            Event::Phase { name, total } if self.tty => {
                // A phase a merge step stopped in (missing shards) leaves no bar behind.
                if let Some(old) = self.bar.take() {
                    old.finish_and_clear();
                }
                let b = ProgressBar::with_draw_target(
                    Some(*total),
                    ProgressDrawTarget::stderr_with_hz(4),
                );
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b.set_message(name.to_string());
                self.bar = Some(b);
            }
            Event::Candidate { .. } => {
                if let Some(b) = &self.bar {
                    b.inc(1);
                }
            }
            Event::PhaseDone => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
            }
            _ => {}
        }
        Flow::Continue
    }
}

/// Bytes of data `evolve` may copy into memory to avoid a copy per pass: half the available
/// memory, at most 16 GiB (`None`, the library's default, when the available memory is
/// unknown).
fn copy_budget() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<usize>()
        .ok()?;
    Some((kb.saturating_mul(1024) / 2).min(16 << 30))
}

/// `SMD_PREFIX=1/0` forces the shared prefix on (whenever exact) or off (for measurements and
/// tests); otherwise the library decides by what it measures.
fn share_prefix() -> Option<bool> {
    match std::env::var("SMD_PREFIX").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    }
}

/// `SMD_PIPELINE=1/0` forces pipelined session building on or off (for measurements and
/// tests); otherwise the library decides by device.
fn pipelined() -> Option<bool> {
    match std::env::var("SMD_PIPELINE").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    }
}

/// Runs `smd-onnx evolve`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = config(&args)?;
    // `--device cuda:0,cuda:1`: one worker per device; this process merges on the first.
    let device_list = super::scale::devices(&args.runtime.device);
    let mut bars = Bars {
        bar: None,
        // Workers of a driver leave the progress to it.
        tty: std::io::stderr().is_terminal() && std::env::var("SMD_PROGRESS").as_deref() != Ok("0"),
    };
    let report = match super::scale::run(&args.scale, &device_list, cfg.clone(), &mut bars)? {
        None => evolve(cfg, &mut bars)?,
        Some(Some(report)) => report,
        // A shard printed its outcome.
        Some(None) => return Ok(ExitCode::SUCCESS),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", super::summary::summary(&report));
    }
    Ok(exit_code(&report))
}

/// The library's configuration for these arguments (the Python binding's too).
pub fn config(args: &Args) -> anyhow::Result<EvolveConfig> {
    let out = match args.out.clone() {
        Some(o) => o,
        None => {
            let stem = args
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "model".into());
            PathBuf::from(format!("{stem}.smd"))
        }
    };
    let subspaces = if args.static_subspaces {
        Subspaces::Static
    } else {
        Subspaces::Dynamic
    };
    let selection = args.selection.to_selection()?;
    // A device list runs one worker per device (see `run`); this process uses the first.
    let device_list = super::scale::devices(&args.runtime.device);
    let cfg = EvolveConfig {
        model: args.model.clone(),
        data: args.data.data.clone().into(),
        out,
        mutation: args.mutation.config(subspaces),
        generations: match args.generations {
            OrAuto::Value(g) => g,
            OrAuto::Auto => AUTO_GENERATIONS,
        },
        budget: args.budget,
        adapt_sigma: args.mutation.sigma == OrAuto::Auto,
        line_search: args.line_search,
        race: args.race,
        accept_p: args.accept_p.unwrap_or(match args.generations {
            OrAuto::Auto => AUTO_ACCEPT_P,
            OrAuto::Value(_) => 1.0,
        }),
        patience: match args.generations {
            OrAuto::Auto => args.patience.or(Some(AUTO_PATIENCE)),
            OrAuto::Value(_) => args.patience,
        },
        selection,
        holdout: args.data.holdout,
        split_seed: args.data.split_seed,
        batch: args.data.batch,
        output: args.data.output.clone(),
        export_best: matches!(args.export, ExportArg::Best | ExportArg::Both),
        export_ensemble: matches!(args.export, ExportArg::Ensemble | ExportArg::Both),
        ensemble: match args.ensemble {
            EnsembleArg::Auto => EnsembleChoice::Auto,
            EnsembleArg::Mean => EnsembleChoice::Mean,
            EnsembleArg::MeanParent => EnsembleChoice::MeanWithParent,
            EnsembleArg::Greedy => EnsembleChoice::Greedy,
            EnsembleArg::GreedyParent => EnsembleChoice::GreedyWithParent,
        },
        combine: args.combine.into(),
        force: args.force,
        resume: args.resume,
        runtime: super::common::RuntimeArgs {
            device: device_list[0].to_string(),
            ..args.runtime.clone()
        }
        .config()?,
        pipelined: pipelined(),
        share_prefix: share_prefix(),
        copy_budget: copy_budget(),
        command: Some(super::common::command_line()),
        metric: args.metric.as_deref().map(str::parse).transpose()?,
        custom_metric: None,
        role: smd_onnx::evolve::Role::Whole,
    };
    Ok(cfg)
}

/// 0 when every generation had at least one child to choose from (failed children are
/// excluded and listed in the report: a normal outcome with a large σ); 1 ("partial") when
/// every child of some generation failed, so that generation selected nothing and its
/// ensembles could not be built.
fn exit_code(report: &smd_onnx::evolve::Report) -> ExitCode {
    let odd = report
        .children
        .iter()
        .filter(|c| c.holdout_non_finite_rows.is_some())
        .count();
    if odd > 0 {
        eprintln!(
            "warning: {odd} child(ren) gave NaN/Inf on some holdout rows (see `holdout_non_finite_rows` in the report); those rows count as wrong answers"
        );
    }
    let failed = report
        .children
        .iter()
        .filter(|c| c.failed.is_some())
        .count();
    if failed == 0 {
        return ExitCode::SUCCESS;
    }
    let total = report.children.len();
    eprintln!(
        "warning: {failed} of {total} children failed (see `failed` in the report); they take no part in selection or ensembles"
    );
    let empty_generation = report.generations.iter().any(|g| {
        report
            .children
            .iter()
            .filter(|c| c.generation == g.generation)
            .all(|c| c.failed.is_some())
    });
    if empty_generation {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
