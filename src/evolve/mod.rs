//! Generations, selection, ensembles of predictions, the report.
//!
//! One generation: plan k sparse children of the parent ([`crate::mutate`]), build and score
//! each on the selection and holdout rows (streamed: one child's model exists at a time),
//! pick the best on the selection split (the parent stays unless beaten), try the merged
//! candidate, and build ensembles of the children's predictions. The next generation starts
//! from the winner. Every scored candidate goes to the journal first, so `--resume` continues
//! an interrupted run.
//!
//! [`Evolution`] runs this in phases (`new`, `run_generation`, `build_ensembles`, `export`,
//! `finish`), telling an [`Observer`] about every phase, candidate and generation; [`evolve`]
//! runs them all. Files: `engine.rs` (the phases), `scoring.rs` (candidates → sessions →
//! predictions → journal), `select.rs` (best candidate, greedy ensembles), `ensembles.rs`
//! (ensembles of predictions and their export), `significance.rs` (holdout gains against the
//! original model: bootstrap interval, McNemar test), `journal.rs`, `key.rs` (the run's identity
//! and settings), `report.rs` (`report.json`'s types), `observer.rs`.

mod engine;
mod ensembles;
mod journal;
mod key;
mod observer;
mod prefix;
pub mod race;
mod report;
mod scoring;
mod select;
mod sessions;
pub mod shard;
pub mod significance;

use std::path::PathBuf;

pub use engine::Evolution;
pub use observer::{Event, Flow, Observer, Silent};
pub use report::{
    BestReport, Bootstrap, ChildReport, EnsembleReport, GenerationReport, GreedyStep, MemberRef,
    MergedReport, Mutable, Outputs, Passes, Report, Scores, Settings, SharedPrefix, Significance,
    SplitSizes, Stopped, TensorChange, Timings,
};
pub use select::{Greedy, best, best_by, better, better_by, greedy, greedy_steps, greedy_with};
pub use shard::{Role, Shard, ShardOutcome, run_shard};

pub use crate::lineage::recipe_meta;

use crate::Error;
use crate::ensemble::Combine;
use crate::mutate;
use crate::mutate::Selection;
use crate::runtime::RuntimeConfig;

/// Errors from an evolution run.
#[derive(Debug, thiserror::Error)]
pub enum EvolveError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The output folder cannot be used.
    #[error("{path}: {message}")]
    Output {
        /// The folder or file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `--resume` cannot continue.
    #[error("{path}: {message}")]
    Resume {
        /// The journal file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The observer asked to stop ([`Flow::Stop`]); every candidate scored so far is in the
    /// journal, so the same run with `resume` continues.
    #[error("stopped by the caller; the journal is kept (--resume continues)")]
    Cancelled,
    /// The merge step found children of `generation` that no shard has scored yet.
    #[error(
        "generation {generation}: {} of {children} children are not in the journal (children {}); score them with their shards (--shard I/N), then merge again",
        missing.len(),
        shard::list(missing)
    )]
    Incomplete {
        /// The first generation with missing children (from 0).
        generation: u32,
        /// Children per generation.
        children: u32,
        /// The missing children's indices.
        missing: Vec<u32>,
    },
    /// A shard scored its share of `generation` and stops there (see
    /// [`shard::run_shard`], which returns it as an outcome).
    #[error("shard done: generation {generation}, {scored} children scored")]
    ShardDone {
        /// The generation (from 0).
        generation: u32,
        /// Children scored by this shard now.
        scored: u32,
        /// Children of the generation not in the journal when the shard started, less those
        /// it scored.
        missing: Vec<u32>,
    },
    /// An argument is out of range.
    #[error("{arg}: {message}")]
    Invalid {
        /// The argument.
        arg: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Which ensemble `evolve` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnsembleChoice {
    /// The ensemble with the best selection score.
    #[default]
    Auto,
    /// The mean of the children.
    Mean,
    /// The mean of the children and the parent.
    MeanWithParent,
    /// Greedy selection among the children.
    Greedy,
    /// Greedy selection among the children and the parent.
    GreedyWithParent,
}

impl EnsembleChoice {
    /// The report's name of the ensemble, `None` for `Auto`.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Auto => None,
            Self::Mean => Some("mean"),
            Self::MeanWithParent => Some("mean+parent"),
            Self::Greedy => Some("greedy"),
            Self::GreedyWithParent => Some("greedy+parent"),
        }
    }
}

/// Everything `evolve` needs.
#[derive(Debug, Clone)]
pub struct EvolveConfig {
    /// The parent model.
    pub model: PathBuf,
    /// The labelled data: a file, or arrays in memory (used where they are, never copied to
    /// disk; the run's key hashes their names, dtypes, shapes and bytes).
    pub data: crate::score::DataSource,
    /// The output folder.
    pub out: PathBuf,
    /// Mutation settings (k, mode, σ, seed...).
    pub mutation: mutate::Config,
    /// Generations (≥ 1): the most that run (see `budget` and `patience`).
    pub generations: u32,
    /// Forward passes over the selection split the run may spend (the parent's, children's
    /// and merged candidates'); a generation starts only when its k children fit, and a merged
    /// candidate is scored only when its pass fits. `None`: no limit.
    pub budget: Option<u64>,
    /// Stop once this many generations in a row kept their parent (nothing beat it on the
    /// selection split). `None`: run every generation.
    pub patience: Option<u32>,
    /// Adapt σ between generations, starting from `mutation.sigma`: the 1/5 success rule of
    /// (1+λ)-ES (×1.5 when more than a fifth of the children beat their parent on the
    /// selection split, ÷1.5 otherwise, within [1e-3, 10]). Each generation's σ is in its
    /// recipes and its report.
    pub adapt_sigma: bool,
    /// When a generation's merged candidate wins, also try its step taken twice (a line
    /// search along the merged direction; one more pass over the selection split).
    pub line_search: bool,
    /// Race children against their parent on the selection rows and drop clearly losing
    /// ones early (see [`race`]): fewer rows scored per generation, the same winners. Needs
    /// class labels.
    pub race: bool,
    /// The export gate: `best.onnx` and `ensemble.onnx` are written only when McNemar's exact
    /// test of their selection gain over the original model gives a p-value below this (the
    /// report still shows what was found, and its holdout figures). 1: always written (the
    /// paper's plain behaviour), whatever the p-value. The selection rows chose the model, so this p is optimistic:
    /// it keeps the parent when even that optimistic test finds nothing. Classification only.
    pub accept_p: f64,
    /// Which tensors are mutable.
    pub selection: Selection,
    /// Holdout fraction.
    pub holdout: f64,
    /// Split seed.
    pub split_seed: u64,
    /// Samples per run (default: [`crate::score::Dataset::default_batch`]).
    pub batch: Option<usize>,
    /// The scored output (default: the first float output of shape [N, C]).
    pub output: Option<String>,
    /// Write `best.onnx` when a candidate beats the parent.
    pub export_best: bool,
    /// Write `ensemble.onnx`.
    pub export_ensemble: bool,
    /// Which ensemble to export.
    pub ensemble: EnsembleChoice,
    /// How the exported ensemble combines outputs.
    pub combine: Combine,
    /// Reuse a non-empty output folder.
    pub force: bool,
    /// Continue from the journal in the output folder.
    pub resume: bool,
    /// ONNX Runtime settings.
    pub runtime: RuntimeConfig,
    /// Build the next candidate's session while the current one runs (`None`: on GPUs, whose
    /// CPU idles during a pass; on a CPU the pass already uses every core).
    pub pipelined: Option<bool>,
    /// Bytes of data the run may copy into memory (the selection and holdout rows, contiguous)
    /// to avoid a copy per pass (`None`: 2 GiB).
    pub copy_budget: Option<usize>,
    /// Compute the graph's unmutated prefix once and score candidates on the rest (see
    /// `evolve::prefix`): `None` when it is exact and saves time, `Some(true)` whenever it is
    /// exact, `Some(false)` never.
    pub share_prefix: Option<bool>,
    /// The command line that started the run, for the report to show (`None`: not shown).
    pub command: Option<String>,
    /// What selection optimises (best child, merged candidate, greedy ensembles, the exported
    /// ensemble). `None`: accuracy with the NLL as tie-break (MSE for regression).
    pub metric: Option<crate::score::Metric>,
    /// The caller's metric: when set, it is what selection optimises (it replaces `metric`),
    /// and every metric object of the report has its value as `custom`.
    pub custom_metric: Option<crate::score::CustomMetric>,
    /// This process's part in the run: all of it, one shard, or the merge step
    /// ([`shard`]).
    pub role: Role,
}

impl EvolveConfig {
    /// The CLI's defaults: 16 partition children, σ 0.1 relative to each tensor's std, seed 0,
    /// one generation, the default tensor selection, half the data held out, both exports,
    /// the ensemble with the best selection score, probabilities combined, on the CPU.
    pub fn new(
        model: impl Into<PathBuf>,
        data: impl Into<crate::score::DataSource>,
        out: impl Into<PathBuf>,
    ) -> Self {
        EvolveConfig {
            model: model.into(),
            data: data.into(),
            out: out.into(),
            mutation: mutate::Config::default(),
            generations: 1,
            budget: None,
            patience: None,
            adapt_sigma: false,
            line_search: false,
            race: false,
            accept_p: 1.0,
            selection: Selection::default(),
            holdout: 0.5,
            split_seed: 0,
            batch: None,
            output: None,
            export_best: true,
            export_ensemble: true,
            ensemble: EnsembleChoice::Auto,
            combine: Combine::default(),
            force: false,
            resume: false,
            runtime: RuntimeConfig::default(),
            pipelined: None,
            copy_budget: None,
            share_prefix: None,
            command: None,
            metric: None,
            custom_metric: None,
            role: Role::Whole,
        }
    }
}

/// Output file names inside the output folder.
pub const BEST_FILE: &str = "best.onnx";
/// See [`BEST_FILE`].
pub const ENSEMBLE_FILE: &str = "ensemble.onnx";
/// See [`BEST_FILE`].
pub const REPORT_FILE: &str = "report.json";
/// See [`BEST_FILE`].
pub const HTML_FILE: &str = "report.html";

fn invalid(arg: &'static str, message: impl Into<String>) -> Error {
    EvolveError::Invalid {
        arg,
        message: message.into(),
    }
    .into()
}

fn check_config(cfg: &EvolveConfig) -> Result<(), Error> {
    // Before the mutation's own checks, which allow σ = 0 (for `mutate`).
    if !(cfg.mutation.sigma.is_finite() && cfg.mutation.sigma > 0.0) {
        return Err(invalid(
            "--sigma",
            format!("must be a finite number > 0, got {}", cfg.mutation.sigma),
        ));
    }
    cfg.mutation.validate()?;
    if cfg.generations == 0 {
        return Err(invalid("--generations", "must be at least 1"));
    }
    if cfg.patience == Some(0) {
        return Err(invalid("--patience", "must be at least 1"));
    }
    if !(cfg.accept_p > 0.0 && cfg.accept_p <= 1.0) {
        return Err(invalid(
            "--accept-p",
            format!("must be in (0, 1], got {}", cfg.accept_p),
        ));
    }
    if let Some(b) = cfg.budget
        && b <= u64::from(cfg.mutation.children)
    {
        return Err(invalid(
            "--budget",
            format!(
                "{b} passes cannot score the parent and one generation of {} children",
                cfg.mutation.children
            ),
        ));
    }
    if !(cfg.holdout > 0.0 && cfg.holdout < 1.0) {
        return Err(invalid(
            "--holdout",
            format!("must be in (0, 1), got {}", cfg.holdout),
        ));
    }
    if cfg.race
        && cfg
            .metric
            .is_some_and(|m| m != crate::score::Metric::Accuracy)
    {
        return Err(invalid(
            "--metric",
            "racing drops children by accuracy; use --metric accuracy (the default) with --race",
        ));
    }
    if cfg.batch == Some(0) {
        return Err(invalid("--batch", "must be at least 1"));
    }
    shard::check(cfg)
}

/// Runs an evolution (or, with [`Role::Merge`], finishes a sharded one) and writes its
/// outputs; returns the report (also in `report.json`). A shard runs with [`run_shard`].
pub fn evolve(cfg: EvolveConfig, observer: &mut dyn Observer) -> Result<Report, Error> {
    let mut run = Evolution::new(cfg, observer)?;
    while run.generations_left() > 0 {
        run.run_generation()?;
    }
    run.finish()
}
