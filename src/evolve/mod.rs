//! Generations, selection, ensembles of predictions, the report.
//!
//! One generation: plan k sparse children of the parent ([`crate::mutate`]), build and score
//! each on the selection and holdout rows (streamed: one child's model exists at a time),
//! pick the best on the selection split (the parent stays unless beaten), try the merged
//! candidate, and build ensembles of the children's predictions. The next generation starts
//! from the winner. Every scored candidate goes to the journal first, so `--resume` continues
//! an interrupted run.

mod journal;
mod report;
mod select;
mod sessions;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use report::{
    BestReport, ChildReport, EnsembleReport, GenerationReport, MemberRef, MergedReport, Mutable,
    Outputs, Report, Scores, Settings, SplitSizes, Timings,
};
pub use select::{Greedy, best, better, greedy, greedy_steps};

pub use crate::lineage::recipe_meta;

use crate::ensemble::{self, Combine};
use crate::lineage::Lineage;
use crate::mutate::{self, Delta, Member, Plan, Recipe};
use crate::onnx::{Model, Selection};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::score::{Dataset, Labels, Metrics, ModelIo, Predictions, Predictor, Split};
use crate::{Error, TensorData};
use journal::{Journal, Record};

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
    /// The labelled data.
    pub data: PathBuf,
    /// The output folder.
    pub out: PathBuf,
    /// Mutation settings (k, mode, σ, seed...).
    pub mutation: mutate::Config,
    /// Generations (≥ 1).
    pub generations: u32,
    /// Which tensors are mutable.
    pub selection: Selection,
    /// A description of `selection` for recipes.
    pub selection_text: String,
    /// Holdout fraction.
    pub holdout: f64,
    /// Split seed.
    pub split_seed: u64,
    /// Samples per run (default: [`Dataset::default_batch`]).
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
}

/// Progress of a run, for progress bars.
pub trait Progress {
    /// A phase with `total` steps starts.
    fn phase(&mut self, name: &str, total: u64);
    /// One step of the current phase is done.
    fn tick(&mut self);
    /// The current phase is over.
    fn finish(&mut self);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&mut self, _: &str, _: u64) {}
    fn tick(&mut self) {}
    fn finish(&mut self) {}
}

/// Output file names inside the output folder.
pub const BEST_FILE: &str = "best.onnx";
/// See [`BEST_FILE`].
pub const ENSEMBLE_FILE: &str = "ensemble.onnx";
/// See [`BEST_FILE`].
pub const REPORT_FILE: &str = "report.json";

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
    if !(cfg.holdout > 0.0 && cfg.holdout < 1.0) {
        return Err(invalid(
            "--holdout",
            format!("must be in (0, 1), got {}", cfg.holdout),
        ));
    }
    if cfg.batch == Some(0) {
        return Err(invalid("--batch", "must be at least 1"));
    }
    Ok(())
}

/// Checks and creates the output folder: it must be a folder, empty unless `--force` or
/// `--resume`, and none of its outputs may be an input.
fn prepare_out(cfg: &EvolveConfig, inputs: &[PathBuf]) -> Result<(), Error> {
    crate::onnx::fsx::prepare_out_dir(&cfg.out, cfg.force || cfg.resume).map_err(|e| match e {
        crate::onnx::ModelError::OutputDir { path, what } if what.starts_with("is not empty") => Error::from(EvolveError::Output {
            path,
            message: "is not empty (use --force to replace its outputs, or --resume to continue a run)".into(),
        }),
        e => e.into(),
    })?;
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    for name in [BEST_FILE, ENSEMBLE_FILE, REPORT_FILE] {
        crate::onnx::fsx::ensure_not_input(&cfg.out.join(name), &inputs)?;
    }
    // Temporary files of a killed run (they can be model-sized).
    crate::onnx::fsx::remove_temps(&cfg.out, Some(&[BEST_FILE, ENSEMBLE_FILE, REPORT_FILE]))?;
    Ok(())
}

/// A scored candidate.
#[derive(Clone)]
struct Scored {
    record: Record,
    /// Its metrics on the selection rows (`None`: it failed there).
    selection: Option<Metrics>,
    /// Its metrics on both parts (`None`: it failed, or its holdout rows were not scored).
    scores: Option<Scores>,
    failure: Option<String>,
}

/// Shared state of a run.
struct Run {
    model: Model,
    runtime: Runtime,
    /// The labels of every sample.
    labels: Labels,
    /// What candidates are scored on: the selection rows, then the holdout rows.
    parts: [Part; 2],
    predictor: Predictor,
    split: Split,
    journal: Journal,
    sessions: sessions::Sessions,
    timings: Timings,
}

/// A candidate to score: its journal id, which member of the generation's plan it is (`None`:
/// the parent itself), its weights key (TensorRT's engine cache), and, for a candidate that
/// matters only if it wins, the selection metrics it must beat for its holdout rows to be
/// scored (a pass over rows that would never be reported is saved).
struct Job {
    id: String,
    member: Option<Member>,
    key: String,
    holdout_if_beats: Option<Metrics>,
}

impl Run {
    /// Builds and scores candidates, in order, taking those already in the journal from it.
    fn score_all(
        &mut self,
        lineage: &Lineage,
        plan: Option<&Plan>,
        jobs: &[Job],
        progress: &mut dyn Progress,
    ) -> Result<Vec<Scored>, Error> {
        let output = self.predictor.output().to_string();
        let mut records: Vec<Option<Record>> = jobs
            .iter()
            .map(|j| {
                self.journal
                    .load(&j.id, &self.split.selection, &self.split.holdout, &output)
            })
            .collect();
        let pending: Vec<usize> = (0..jobs.len()).filter(|&j| records[j].is_none()).collect();
        for _ in 0..jobs.len() - pending.len() {
            progress.tick();
        }
        let deltas_of = |p: usize| -> Result<(Vec<Delta>, String), Error> {
            let job = &jobs[pending[p]];
            let deltas = match (&job.member, plan) {
                (Some(m), Some(plan)) => plan.deltas(m)?,
                _ => Vec::new(),
            };
            Ok((deltas, job.key.clone()))
        };
        let Run {
            model,
            runtime,
            parts,
            predictor,
            sessions,
            journal,
            labels,
            ..
        } = self;
        let mut t = Instant::now();
        let mut seconds = vec![0.0; jobs.len()];
        let warm_up = predictor.warm_up(&parts[0].data, &parts[0].rows);
        let warm = |s: &mut ort::session::Session| -> Result<(), Error> { Ok(warm_up(s)?) };
        let batch = sessions::Jobs {
            n: pending.len(),
            deltas_of: &deltas_of,
            warm: &warm,
        };
        sessions.run_all(runtime, model, lineage, &batch, &mut |p, session| {
            let j = pending[p];
            let selection = parts[0].predict(predictor, session)?;
            let wins = |bar: &Metrics| {
                selection
                    .metrics(labels)
                    .is_ok_and(|m| select::better(&m, bar))
            };
            let holdout = match &jobs[j].holdout_if_beats {
                Some(bar) if !wins(bar) => None,
                _ => Some(parts[1].predict(predictor, session)?),
            };
            // With pipelining, building the next session overlaps this one: the time since
            // the previous candidate finished is what this one cost.
            let record = Record {
                selection,
                holdout,
                seconds: t.elapsed().as_secs_f64(),
            };
            t = Instant::now();
            journal.save(&jobs[j].id, &record)?;
            seconds[j] = record.seconds;
            records[j] = Some(record);
            progress.tick();
            Ok(())
        })?;
        self.timings.per_candidate.extend(seconds);
        let labels = &self.labels;
        records
            .into_iter()
            .map(|r| {
                let record = r.ok_or_else(|| invalid("internal", "a candidate was not scored"))?;
                let holdout = record.holdout.as_ref().map(|h| h.metrics(labels));
                let (selection, scores, failure) = match (record.selection.metrics(labels), holdout)
                {
                    (Ok(selection), Some(Ok(holdout))) => {
                        (Some(selection), Some(Scores { selection, holdout }), None)
                    }
                    (Ok(selection), None) => (Some(selection), None, None),
                    (Ok(selection), Some(Err(e))) => (Some(selection), None, Some(e.to_string())),
                    (Err(e), _) => (None, None, Some(e.to_string())),
                };
                Ok(Scored {
                    record,
                    selection,
                    scores,
                    failure,
                })
            })
            .collect()
    }

    /// Scores one candidate (see [`Run::score_all`]).
    fn score(&mut self, lineage: &Lineage, plan: Option<&Plan>, job: Job) -> Result<Scored, Error> {
        let mut out = self.score_all(lineage, plan, std::slice::from_ref(&job), &mut NoProgress)?;
        out.pop()
            .ok_or_else(|| invalid("internal", "a candidate was not scored"))
    }
}

/// Rows candidates are scored on.
struct Part {
    /// The data: the rows copied contiguously when memory allows (no copy per pass), else
    /// the whole data set.
    data: Dataset,
    /// The rows to predict, in `data`.
    rows: Vec<usize>,
    /// The same rows in the data set (what predictions report).
    original: Vec<usize>,
}

impl Part {
    /// The selection and holdout parts of `data`.
    fn both(data: Dataset, split: &Split) -> Result<[Part; 2], Error> {
        let total = split.selection.len() + split.holdout.len();
        if data.bytes_for(total) <= materialize_budget() {
            let part = |rows: &[usize]| -> Result<Part, Error> {
                Ok(Part {
                    data: data.subset(rows)?,
                    rows: (0..rows.len()).collect(),
                    original: rows.to_vec(),
                })
            };
            return Ok([part(&split.selection)?, part(&split.holdout)?]);
        }
        let part = |rows: &[usize]| Part {
            data: data.clone(),
            rows: rows.to_vec(),
            original: rows.to_vec(),
        };
        Ok([part(&split.selection), part(&split.holdout)])
    }

    /// A model's predictions for these rows (reported with their data set row numbers).
    fn predict(
        &self,
        predictor: &mut Predictor,
        session: &mut ort::session::Session,
    ) -> Result<Predictions, Error> {
        let mut p = predictor.predict(session, &self.data, &self.rows)?;
        p.rows.clone_from(&self.original);
        Ok(p)
    }
}

/// Bytes of data `evolve` may copy into memory to avoid a copy per pass: half the available
/// memory, at most 16 GiB (2 GiB when the available memory is unknown).
fn materialize_budget() -> usize {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<usize>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    available.map_or(2 << 30, |a| (a / 2).min(16 << 30))
}

/// One generation's outcome.
struct Generation {
    plan: Plan,
    lineage: Lineage,
    parent: Scored,
    children: Vec<Scored>,
}

/// Runs an evolution and writes its outputs; returns the report (also in `report.json`).
pub fn evolve(cfg: &EvolveConfig, progress: &mut dyn Progress) -> Result<Report, Error> {
    let start = Instant::now();
    check_config(cfg)?;
    let model = Model::open(&cfg.model)?;
    let mut inputs = model.input_paths();
    inputs.push(cfg.data.clone());
    prepare_out(cfg, &inputs)?;
    let selected = model.select(&cfg.selection);
    if selected.is_empty() {
        return Err(EvolveError::Invalid {
            arg: "model",
            message: format!("{}: no mutable tensors (see `smd-onnx inspect`; --all-float or --include widen the selection)", cfg.model.display()),
        }
        .into());
    }
    let io = ModelIo::from_model(&model);
    let runtime = Runtime::new(&cfg.runtime)?;
    let data = Dataset::open(&cfg.data, &io)?;
    let batch = cfg.batch.unwrap_or_else(|| data.default_batch());
    let predictor = Predictor::new(&io, &data, cfg.output.as_deref(), batch)?;
    let split = Split::new(data.labels(), cfg.holdout, cfg.split_seed)?;
    let labels = data.labels().clone();
    let parts = Part::both(data, &split)?;
    let parent_hash = model.content_hash()?;
    let values = selected
        .iter()
        .map(|&t| model.read_values(&model.tensors()[t]))
        .collect::<Result<Vec<_>, _>>()?;
    let mutable = Mutable {
        tensors: selected.len(),
        elements: values.iter().map(|v| v.len() as u64).sum(),
    };
    let run_key = run_key(cfg, &parent_hash, predictor.output(), batch)?;
    let journal = Journal::open(&cfg.out, &run_key, cfg.resume)?;
    let mut lineage = Lineage::original(selected, values, parent_hash.clone());
    // On a GPU the CPU idles while a pass runs: build the next session meanwhile. On a CPU the
    // pass already uses every core. SMD_PIPELINE=1/0 overrides (for measurements and tests).
    let pipelined = match std::env::var("SMD_PIPELINE").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => runtime.device().is_gpu(),
    };
    let sessions = sessions::Sessions::new(
        &model,
        &lineage,
        journal.dir().join("candidate.onnx"),
        pipelined,
        predictor.session_suffix(),
    )?;
    let mut run = Run {
        model,
        runtime,
        labels,
        parts,
        predictor,
        split,
        journal,
        sessions,
        timings: Timings::default(),
    };
    run.timings.load = start.elapsed().as_secs_f64();

    let t = Instant::now();
    let job = Job {
        id: "parent".into(),
        member: None,
        key: parent_hash.clone(),
        holdout_if_beats: None,
    };
    let mut parent = run.score(&lineage, None, job)?;
    run.timings.parent = t.elapsed().as_secs_f64();
    if parent.scores.is_none() {
        // Nothing worth resuming: leave the output folder as it was.
        run.journal.discard();
    }
    let original = parent.scores.ok_or_else(|| {
        Error::from(EvolveError::Invalid {
            arg: "model",
            message: format!(
                "{}: the parent model fails on this data: {}",
                cfg.model.display(),
                parent.failure.clone().unwrap_or_default()
            ),
        })
    })?;

    let mut generations = Vec::new();
    let mut children_reports = Vec::new();
    let mut best: Option<BestReport> = None;
    let mut last: Option<Generation> = None;
    let t_children = Instant::now();
    for g in 0..cfg.generations {
        let gen_parent_scores = parent.scores.unwrap_or(original);
        let plan = Plan::new(&cfg.mutation, &lineage.specs(&run.model), g)?;
        let recipe = |member: Member| {
            Recipe::new(
                &plan,
                lineage.hash.clone(),
                cfg.selection_text.clone(),
                member,
            )
        };
        progress.phase(
            &format!("generation {}/{}: children", g + 1, cfg.generations),
            u64::from(cfg.mutation.children),
        );
        let jobs = (0..cfg.mutation.children)
            .map(|i| {
                let key = blake3::hash(recipe(Member::Child(i)).to_json()?.as_bytes())
                    .to_hex()
                    .to_string();
                Ok(Job {
                    id: format!("g{g}-c{i}"),
                    member: Some(Member::Child(i)),
                    key,
                    holdout_if_beats: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let children = run.score_all(&lineage, Some(&plan), &jobs, progress)?;
        for (i, scored) in children.iter().enumerate() {
            children_reports.push(ChildReport {
                generation: g,
                index: i as u32,
                recipe: recipe(Member::Child(i as u32)),
                selection: scored.scores.map(|s| s.selection),
                holdout: scored.scores.map(|s| s.holdout),
                failed: scored.failure.clone(),
            });
        }
        progress.finish();
        let child_sel: Vec<Option<Metrics>> = children
            .iter()
            .map(|c| c.scores.map(|s| s.selection))
            .collect();
        let best_child = select::best(&child_sel);
        let winners: Vec<u32> = (0..cfg.mutation.children)
            .filter(|&i| {
                child_sel[i as usize]
                    .is_some_and(|m| select::better(&m, &gen_parent_scores.selection))
            })
            .collect();
        // The next parent: the best child if it beats the parent on the selection split
        // (elitism), or the merged candidate if it beats both.
        let mut kept = "parent".to_string();
        let mut next: Option<(Scored, Vec<Delta>, Recipe, Option<u32>)> = None;
        if let Some(b) = best_child.filter(|&b| winners.contains(&(b as u32))) {
            let b = b as u32;
            next = Some((
                children[b as usize].clone(),
                plan.child(b)?,
                recipe(Member::Child(b)),
                Some(b),
            ));
            kept = format!("child {b}");
        }
        // The merged candidate: every child that beat the parent, applied together. Its
        // holdout rows are scored only if it wins on the selection rows.
        let mut merged_report = None;
        if winners.len() >= 2 {
            let r = recipe(Member::Merged(winners.clone()));
            let key = blake3::hash(r.to_json()?.as_bytes()).to_hex().to_string();
            let bar = next
                .as_ref()
                .and_then(|(n, ..)| n.selection)
                .unwrap_or(gen_parent_scores.selection);
            let job = Job {
                id: format!("g{g}-merged"),
                member: Some(Member::Merged(winners.clone())),
                key,
                holdout_if_beats: Some(bar),
            };
            let scored = run.score(&lineage, Some(&plan), job)?;
            merged_report = Some(MergedReport {
                children: winners.clone(),
                recipe: r.clone(),
                selection: scored.selection,
                holdout: scored.scores.map(|s| s.holdout),
                failed: scored.failure.clone(),
            });
            if scored
                .scores
                .is_some_and(|s| select::better(&s.selection, &bar))
            {
                next = Some((scored, plan.merged(&winners)?, r, None));
                kept = "merged".into();
            }
        }
        generations.push(GenerationReport {
            generation: g,
            parent_hash: lineage.hash.clone(),
            parent: gen_parent_scores,
            best_child: best_child.map(|b| b as u32),
            merged: merged_report,
            kept: kept.clone(),
        });
        let this_lineage = lineage.clone();
        let gen_parent = parent;
        if let Some((scored, deltas, r, index)) = next {
            let lineage_next = lineage.descend(&deltas, r)?;
            run.sessions.descend(&deltas)?;
            if let Some(s) = scored.scores {
                best = Some(BestReport {
                    generation: g,
                    index,
                    kind: if index.is_some() {
                        "child".into()
                    } else {
                        "merged".into()
                    },
                    lineage: lineage_next.recipes.clone(),
                    scores: s,
                    gain_vs_original: s.holdout.primary() - original.holdout.primary(),
                    gain_vs_generation_parent: s.holdout.primary()
                        - gen_parent_scores.holdout.primary(),
                });
            }
            lineage = lineage_next;
            parent = scored;
        } else {
            parent = gen_parent.clone();
        }
        last = Some(Generation {
            plan,
            lineage: this_lineage,
            parent: gen_parent,
            children,
        });
    }
    run.timings.children = t_children.elapsed().as_secs_f64();

    let Some(last) = last else {
        return Err(invalid("--generations", "must be at least 1"));
    };
    let t = Instant::now();
    let (ensembles, choices) = ensembles_of(&last, &run.labels, cfg.mutation.children, &original)?;
    run.timings.ensembles = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut outputs = Outputs {
        report: cfg.out.join(REPORT_FILE).display().to_string(),
        ..Default::default()
    };
    let model = &run.model;
    let best_path = cfg.out.join(BEST_FILE);
    let write_best = || -> Result<Option<String>, Error> {
        if cfg.export_best && best.is_some() {
            let changes = lineage.changes(&[])?;
            let meta = recipe_meta(&lineage.recipes, &parent_hash)?;
            crate::onnx::write_child_with_metadata(model, &changes, &meta, &best_path)?;
            return Ok(Some(best_path.display().to_string()));
        }
        if cfg.force {
            // A best model from an earlier run in this folder would now be misleading.
            remove_stale(&best_path)?;
        }
        Ok(None)
    };
    let ens_path = cfg.out.join(ENSEMBLE_FILE);
    let write_ensemble = || -> Result<Option<(Vec<String>, String)>, Error> {
        if !cfg.export_ensemble {
            if cfg.force {
                remove_stale(&ens_path)?;
            }
            return Ok(None);
        }
        let pick = match cfg.ensemble.name() {
            Some(name) => ensembles.iter().position(|e| e.name == name),
            None => {
                let sel: Vec<Option<Metrics>> =
                    ensembles.iter().map(|e| Some(e.scores.selection)).collect();
                select::best(&sel)
            }
        };
        let Some(p) = pick else { return Ok(None) };
        let notices = export_ensemble(model, &last, &choices[p], cfg, &ens_path)?;
        Ok(Some((notices, ensembles[p].name.clone())))
    };
    // Independent files: writing and syncing them side by side overlaps their I/O.
    let (best_out, ens_out) = rayon::join(write_best, write_ensemble);
    outputs.best = best_out?;
    let mut notices = Vec::new();
    if let Some((n, kind)) = ens_out? {
        notices = n;
        outputs.ensemble = Some(ens_path.display().to_string());
        outputs.ensemble_kind = Some(kind);
    }
    run.timings.export = t.elapsed().as_secs_f64();
    run.timings.total = start.elapsed().as_secs_f64();

    let report = Report {
        smd_onnx: env!("CARGO_PKG_VERSION").to_string(),
        runtime: run.runtime.describe(),
        model: cfg.model.display().to_string(),
        parent_hash,
        data: cfg.data.display().to_string(),
        output: run.predictor.output().to_string(),
        samples: SplitSizes {
            selection: run.split.selection.len(),
            holdout: run.split.holdout.len(),
        },
        settings: settings(cfg, run.predictor.batch()),
        mutable,
        parent: original,
        generations,
        children: children_reports,
        best,
        ensembles,
        outputs,
        notices,
        timings: run.timings.clone(),
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| EvolveError::Output {
        path: cfg.out.join(REPORT_FILE),
        message: e.to_string(),
    })?;
    let report_path = cfg.out.join(REPORT_FILE);
    crate::onnx::fsx::write_atomic(&report_path, |w| {
        w.write_all(&json).map_err(|e| {
            Error::from(EvolveError::Io {
                path: report_path.clone(),
                source: e,
            })
        })
    })?;
    Ok(report)
}

fn remove_stale(p: &Path) -> Result<(), Error> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EvolveError::Io {
            path: p.to_path_buf(),
            source: e,
        }
        .into()),
    }
}

/// The run's identity for the journal: model, data, and every setting that changes results.
fn run_key(
    cfg: &EvolveConfig,
    parent_hash: &str,
    output: &str,
    batch: usize,
) -> Result<String, Error> {
    let data_hash = hash_path(&cfg.data)?;
    let m = &cfg.mutation;
    let text = format!(
        "{parent_hash}\n{data_hash}\n{output}\n{:?}\n{}\n{}\n{:?}\n{}\n{}\n{:?}\n{}\n{}\n{}\n{}\n{}\n{:?}",
        m.mode,
        m.children,
        m.sigma,
        m.scale,
        m.antithetic,
        m.seed,
        m.subspaces,
        cfg.generations,
        cfg.selection_text,
        cfg.holdout,
        cfg.split_seed,
        batch,
        cfg.runtime.device
    );
    Ok(blake3::hash(text.as_bytes()).to_hex().to_string())
}

/// blake3 of a file, or of every file of a folder (sorted by name).
fn hash_path(p: &Path) -> Result<String, Error> {
    let io = |e| {
        Error::from(EvolveError::Io {
            path: p.to_path_buf(),
            source: e,
        })
    };
    let mut h = blake3::Hasher::new();
    let mut files = Vec::new();
    if p.is_dir() {
        for e in std::fs::read_dir(p).map_err(io)? {
            files.push(e.map_err(io)?.path());
        }
        files.sort();
    } else {
        files.push(p.to_path_buf());
    }
    for f in files {
        h.update(
            f.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        h.update_mmap_rayon(&f).map_err(|e| {
            Error::from(EvolveError::Io {
                path: f.clone(),
                source: e,
            })
        })?;
    }
    Ok(h.finalize().to_hex().to_string())
}

fn settings(cfg: &EvolveConfig, batch: usize) -> Settings {
    let m = &cfg.mutation;
    Settings {
        children: m.children,
        generations: cfg.generations,
        mode: m.mode.kind().name().into(),
        density: m.mode.density(),
        sigma: m.sigma,
        scale: format!("{:?}", m.scale).to_lowercase(),
        antithetic: m.antithetic,
        subspaces: format!("{:?}", m.subspaces).to_lowercase(),
        seed: m.seed,
        selection: cfg.selection_text.clone(),
        holdout: cfg.holdout,
        split_seed: cfg.split_seed,
        batch,
    }
}

/// A member of an ensemble choice: the generation's parent (`None`) or child `i`.
type Choice = Vec<(Option<u32>, f64)>;

/// The four ensembles of the last generation's predictions: mean and greedy, without and with
/// the parent; with their members (for export).
fn ensembles_of(
    g: &Generation,
    labels: &crate::score::Labels,
    k: u32,
    original: &Scores,
) -> Result<(Vec<EnsembleReport>, Vec<Choice>), Error> {
    let ok: Vec<u32> = (0..k)
        .filter(|&i| g.children[i as usize].scores.is_some())
        .collect();
    let mut reports = Vec::new();
    let mut choices = Vec::new();
    let Some(parent_scores) = g.parent.scores else {
        return Ok((reports, choices));
    };
    if ok.is_empty() {
        return Ok((reports, choices));
    }
    let preds = |who: Option<u32>| -> &Record {
        match who {
            None => &g.parent.record,
            Some(i) => &g.children[i as usize].record,
        }
    };
    let unscored = || invalid("internal", "an ensemble member has no holdout predictions");
    let mut add = |name: &str, members: Choice| -> Result<(), Error> {
        let part = |f: &dyn Fn(&Record) -> Option<&Predictions>| -> Result<Metrics, Error> {
            let w = members
                .iter()
                .map(|&(who, w)| Ok((f(preds(who)).ok_or_else(unscored)?, w)))
                .collect::<Result<Vec<(&Predictions, f64)>, Error>>()?;
            Ok(Predictions::weighted_mean(&w)?.metrics(labels)?)
        };
        let scores = Scores {
            selection: part(&|r| Some(&r.selection))?,
            holdout: part(&|r| r.holdout.as_ref())?,
        };
        reports.push(EnsembleReport {
            name: name.into(),
            members: members
                .iter()
                .map(|&(who, weight)| MemberRef {
                    kind: if who.is_some() {
                        "child".into()
                    } else {
                        "parent".into()
                    },
                    index: who,
                    weight,
                })
                .collect(),
            scores,
            gain_vs_original: scores.holdout.primary() - original.holdout.primary(),
            gain_vs_generation_parent: scores.holdout.primary() - parent_scores.holdout.primary(),
        });
        choices.push(members);
        Ok(())
    };
    let children: Choice = ok.iter().map(|&i| (Some(i), 1.0)).collect();
    add("mean", children.clone())?;
    let mut with_parent = children;
    with_parent.insert(0, (None, 1.0));
    add("mean+parent", with_parent)?;
    let pools: [(&str, Vec<Option<u32>>); 2] = [
        ("greedy", ok.iter().map(|&i| Some(i)).collect()),
        (
            "greedy+parent",
            std::iter::once(None)
                .chain(ok.iter().map(|&i| Some(i)))
                .collect(),
        ),
    ];
    let greedy = |pool: &[Option<u32>]| {
        let cands: Vec<&Predictions> = pool.iter().map(|&w| &preds(w).selection).collect();
        select::greedy(&cands, labels, select::greedy_steps(cands.len()))
    };
    // The two selections are independent: run them side by side.
    let (a, b) = rayon::join(|| greedy(&pools[0].1), || greedy(&pools[1].1));
    for ((name, pool), gr) in pools.iter().zip([a, b]) {
        let members: Choice = pool
            .iter()
            .zip(&gr?.counts)
            .filter(|(_, n)| **n > 0)
            .map(|(&w, &n)| (w, f64::from(n)))
            .collect();
        add(name, members)?;
    }
    Ok((reports, choices))
}

/// Writes the drop-in ensemble of `members` (of generation `g`) to `path`; returns notices.
fn export_ensemble(
    model: &Model,
    g: &Generation,
    members: &Choice,
    cfg: &EvolveConfig,
    path: &Path,
) -> Result<Vec<String>, Error> {
    let weights: Vec<f64> = members.iter().map(|m| m.1).collect();
    let member_deltas: Vec<Vec<Delta>> = members
        .iter()
        .map(|&(who, _)| match who {
            Some(i) => g.plan.child(i).map_err(Error::from),
            None => Ok(Vec::new()),
        })
        .collect::<Result<_, _>>()?;
    let mut varying = Vec::new();
    for (t, &mt) in g.lineage.tensors.iter().enumerate() {
        let touched = member_deltas
            .iter()
            .any(|ds| ds.iter().any(|d| d.tensor == t));
        if !touched && !g.lineage.changed[t] {
            continue;
        }
        let info = &model.tensors()[mt];
        let base = g.lineage.values[t].clone();
        let mut changes = Vec::with_capacity(members.len());
        for ds in &member_deltas {
            changes.push(match ds.iter().find(|d| d.tensor == t) {
                Some(d) => Some(sparse_change(&base, d)?),
                None => None,
            });
        }
        varying.push(ensemble::Varying {
            addr: ensemble::TensorAddr {
                scope: info.scope.clone(),
                name: info.name.clone(),
            },
            dims: info.dims.clone(),
            base,
            changes,
        });
    }
    let recipes: Vec<serde_json::Value> = members
        .iter()
        .map(|&(who, w)| {
            let member = match who {
                Some(i) => serde_json::to_value(Recipe::new(
                    &g.plan,
                    g.lineage.hash.clone(),
                    cfg.selection_text.clone(),
                    Member::Child(i),
                ))
                .unwrap_or_default(),
                None => serde_json::json!({ "parent": g.lineage.hash }),
            };
            serde_json::json!({ "weight": w, "member": member })
        })
        .collect();
    let mut meta = recipe_meta(&g.lineage.recipes, &model.content_hash()?)?;
    meta.push((
        "smd_onnx.ensemble".into(),
        serde_json::Value::Array(recipes).to_string(),
    ));
    // The scored output's values showed whether it holds probabilities or logits; trust that
    // over the graph (a softmax can be built from Exp and Div, a shape can be undeclared).
    let scored = &g.parent.record.selection;
    let kind = ensemble::OutputKind::from_scored(scored.kind);
    let heads = ensemble::Heads::Combined {
        combine: cfg.combine,
        declared: kind
            .map(|k| (scored.output.clone(), k))
            .into_iter()
            .collect(),
    };
    let built = ensemble::build_from_model(model, &varying, &weights, &heads, &meta)?;
    let inputs = model.input_paths();
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    ensemble::save(&built.model, path, &inputs)?;
    Ok(built.notices)
}

/// A member's change to one tensor: the indices of `d` and the member's values there.
fn sparse_change(base: &TensorData, d: &Delta) -> Result<ensemble::Change, Error> {
    let mut vals = base.gather(&d.indices);
    let local = Delta {
        tensor: d.tensor,
        indices: (0..d.indices.len() as u32).collect(),
        values: d.values.clone(),
    };
    mutate::apply(&mut vals, &local)?;
    Ok(ensemble::Change {
        indices: d.indices.clone(),
        values: vals,
    })
}
