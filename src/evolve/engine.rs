//! [`Evolution`]: a run in phases. `new` opens everything and scores the parent;
//! `run_generation` scores one generation's children (and merged candidate) and picks the next
//! parent; `build_ensembles` combines the last generation's predictions; `export` writes
//! `best.onnx` and `ensemble.onnx`; `finish` writes `report.json` and returns the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::ensembles::{Choice, Generation, ensembles_of, export_ensemble};
use super::journal::Journal;
use super::key::{run_key, settings};
use super::observer::{Event, Flow, Observer};
use super::race::{self, Race};
use super::report::{
    BestReport, ChildReport, EnsembleReport, GenerationReport, MergedReport, Mutable, Outputs,
    Passes, Report, Scores, SplitSizes, Stopped, TensorChange, Timings,
};
use super::scoring::{Job, Part, Run, Scored};
use super::{
    BEST_FILE, ENSEMBLE_FILE, EvolveConfig, EvolveError, HTML_FILE, REPORT_FILE, check_config,
    invalid, select, sessions, shard, significance,
};
use crate::Error;
use crate::lineage::{Lineage, recipe_meta};
use crate::mutate::{Delta, Member, Plan, Recipe};
use crate::onnx::Model;
use crate::runtime::Runtime;
use crate::score::{Labels, Metrics, ModelIo, Predictions, Predictor, Split};

/// Data `evolve` copies into memory by default to avoid a copy per pass (see
/// [`EvolveConfig::copy_budget`]).
const DEFAULT_COPY_BUDGET: usize = 2 << 30;

/// Mixed into the split seed to order a generation's racing blocks.
const RACE_SEED: u64 = 0x534D_442D_5241_4345;

/// The files a run writes in its output folder.
const OUTPUT_FILES: [&str; 4] = [BEST_FILE, ENSEMBLE_FILE, REPORT_FILE, HTML_FILE];

/// An evolution run, phase by phase (see the module docs; [`super::evolve`] runs them all).
pub struct Evolution<'o> {
    cfg: EvolveConfig,
    observer: &'o mut dyn Observer,
    run: Run,
    start: Instant,
    /// The original model's content hash.
    parent_hash: String,
    /// `cfg.selection` as recipes record it.
    selection_text: String,
    mutable: Mutable,
    /// The current parent.
    lineage: Lineage,
    parent: Scored,
    /// The original model's scores.
    original: Scores,
    /// The original model's holdout predictions (what gains are tested against).
    original_holdout: Predictions,
    /// The original model's selection predictions (what the export gate tests against).
    original_selection: Predictions,
    generations: Vec<GenerationReport>,
    children: Vec<ChildReport>,
    best: Option<BestReport>,
    last: Option<Generation>,
    ensembles: Option<Built>,
    outputs: Option<(Outputs, Vec<String>)>,
    passes: Passes,
    /// Generations in a row that kept their parent.
    stale: u32,
    /// σ of the next generation (adapted when `cfg.adapt_sigma`).
    sigma: f64,
}

/// The ensembles of the last generation with their members (for export).
type Built = (Vec<EnsembleReport>, Vec<Choice>);

/// What a generation keeps as the next parent: its scores, its changes to the current parent,
/// and its recipe (whose member says which candidate it is).
type Next = (Scored, Vec<Delta>, Recipe);

impl<'o> Evolution<'o> {
    /// Checks the settings, opens the model, data and runtime, prepares the output folder
    /// and the journal, and scores the parent.
    pub fn new(mut cfg: EvolveConfig, observer: &'o mut dyn Observer) -> Result<Self, Error> {
        let start = Instant::now();
        // A caller's metric is what selection optimises.
        if let Some(c) = &cfg.custom_metric {
            cfg.metric = Some(c.metric());
        }
        check_config(&cfg)?;
        let model = Model::open(&cfg.model)?;
        let mut inputs = model.input_paths();
        inputs.extend(cfg.data.path().map(Path::to_path_buf));
        prepare_out(&cfg, &inputs)?;
        let selected = cfg.selection.mutable_tensors(&model);
        if selected.is_empty() {
            return Err(invalid(
                "model",
                format!(
                    "{}: no mutable tensors (see `smd-onnx inspect`; --all-float or --include widen the selection)",
                    cfg.model.display()
                ),
            ));
        }
        let parent_hash = model.content_hash()?;
        let values = selected
            .iter()
            .map(|&t| model.read_values(&model.tensors()[t]))
            .collect::<Result<Vec<_>, _>>()?;
        let mutable = Mutable {
            tensors: selected.len(),
            elements: values.iter().map(|v| v.len() as u64).sum(),
        };
        let lineage = Lineage::original(selected, values, parent_hash.clone());
        let mut run = open_run(&cfg, model, &lineage, &parent_hash)?;
        if cfg.race && matches!(run.labels, Labels::Targets(_)) {
            return Err(invalid("--race", race::NEEDS_CLASSES));
        }
        run.timings.load = start.elapsed().as_secs_f64();
        let names = lineage.tensors.iter();
        let names = names.map(|&t| run.model.tensors()[t].name.clone());
        let budget = cfg.copy_budget.unwrap_or(DEFAULT_COPY_BUDGET);
        run.timings.prefix = run.share_prefix(&names.collect(), cfg.share_prefix, budget)?;
        let t = Instant::now();
        let job = Job {
            id: "parent".into(),
            member: None,
            key: parent_hash.clone(),
            holdout_if_beats: None,
        };
        let parent = run.score(&lineage, None, job, observer)?;
        run.timings.parent = t.elapsed().as_secs_f64();
        let mut passes = Passes::default();
        count(
            &mut passes,
            std::slice::from_ref(&parent),
            run.split.selection.len(),
        );
        let Some(original) = parent.scores else {
            // Nothing worth resuming: leave the output folder as it was.
            run.journal.discard();
            return Err(invalid(
                "model",
                format!(
                    "{}: the parent model fails on this data: {}",
                    cfg.model.display(),
                    parent.failure.clone().unwrap_or_default()
                ),
            ));
        };
        if let Some(m) = cfg.metric
            && m.value(&original.selection).is_none()
        {
            run.journal.discard();
            return Err(invalid(
                "--metric",
                format!(
                    "{}: {} does not apply to this data (mse and mae need float targets, the others class labels, top5 at least 5 classes)",
                    cfg.data,
                    m.name()
                ),
            ));
        }
        let original_holdout = parent
            .record
            .holdout
            .clone()
            .ok_or_else(|| invalid("internal", "the parent has no holdout predictions"))?;
        let original_selection = parent.record.selection.clone();
        let cfg_sigma = cfg.mutation.sigma;
        Ok(Evolution {
            selection_text: cfg.selection.describe(),
            cfg,
            observer,
            run,
            start,
            parent_hash,
            mutable,
            lineage,
            parent,
            original,
            original_holdout,
            original_selection,
            generations: Vec::new(),
            children: Vec::new(),
            best: None,
            last: None,
            ensembles: None,
            outputs: None,
            passes,
            stale: 0,
            sigma: cfg_sigma,
        })
    }

    /// Generations still to run: none once the budget cannot pay for another generation's
    /// children or `patience` generations in a row kept their parent.
    pub fn generations_left(&self) -> u32 {
        if self.stop_reason().is_some() {
            return 0;
        }
        self.cfg
            .generations
            .saturating_sub(self.generations.len() as u32)
    }

    /// Why no further generation would run now, if none would.
    pub fn stop_reason(&self) -> Option<Stopped> {
        let done = self.generations.len() as u32;
        if done >= self.cfg.generations {
            return Some(Stopped::Generations);
        }
        if self.cfg.patience.is_some_and(|p| self.stale >= p) {
            return Some(Stopped::Patience);
        }
        let k = u64::from(self.cfg.mutation.children);
        if self.fits(k) {
            None
        } else {
            Some(Stopped::Budget)
        }
    }

    /// Forward passes spent so far.
    pub fn passes(&self) -> Passes {
        self.passes
    }

    /// True when `n` more passes over the selection split fit in the budget.
    fn fits(&self, n: u64) -> bool {
        self.cfg
            .budget
            .is_none_or(|b| self.passes.selection + n as f64 <= b as f64)
    }

    /// The original model's scores.
    pub fn original(&self) -> &Scores {
        &self.original
    }

    /// The model the run ends with so far, when a candidate beat the parent.
    pub fn best(&self) -> Option<&BestReport> {
        self.best.as_ref()
    }

    /// Runs the next generation: scores its children (and, when at least two beat the parent,
    /// the merged candidate) and keeps the winner as the next parent.
    pub fn run_generation(&mut self) -> Result<&GenerationReport, Error> {
        if self.generations_left() == 0 {
            return Err(invalid("--generations", "every generation has run"));
        }
        let g = self.generations.len() as u32;
        let t = Instant::now();
        let gen_parent = self.parent.scores.unwrap_or(self.original);
        let mutation = crate::mutate::Config {
            sigma: self.sigma,
            ..self.cfg.mutation
        };
        let plan = Plan::new(&mutation, &self.lineage.specs(&self.run.model), g)?;
        let children = self.score_children(g, &plan)?;
        let child_sel: Vec<Option<Metrics>> = children.iter().map(|c| c.selection).collect();
        let best_child = select::best_by(self.cfg.metric, &child_sel);
        let winners: Vec<u32> = (0..self.cfg.mutation.children)
            .filter(|&i| {
                child_sel[i as usize]
                    .is_some_and(|m| select::better_by(self.cfg.metric, &m, &gen_parent.selection))
            })
            .collect();
        // Elitism: the best child only if it beats the parent on the selection split.
        let mut next: Option<Next> = None;
        if let Some(b) = best_child.filter(|&b| winners.contains(&(b as u32))) {
            let b = b as u32;
            let r = self.recipe(&plan, Member::Child(b));
            next = Some((children[b as usize].clone(), plan.child(b)?, r));
        }
        // The merged candidate: every child that beat the parent, applied together (when at
        // least two did); with the line search, its step taken twice when it won.
        let mut merged = None;
        let mut stretched = None;
        if winners.len() >= 2 {
            let m = Member::Merged(winners.clone());
            merged = self.try_combined(g, &plan, m, &gen_parent, &mut next)?;
        }
        let merged_won = matches!(&next, Some((_, _, r)) if matches!(r.member, Member::Merged(_)));
        if self.cfg.line_search && merged_won {
            let m = Member::Stretched {
                children: winners.clone(),
                times: 2,
            };
            stretched = self.try_combined(g, &plan, m, &gen_parent, &mut next)?;
        }
        let kept = match next.as_ref().map(|(_, _, r)| &r.member) {
            Some(Member::Child(b)) => format!("child {b}"),
            Some(Member::Merged(_)) => "merged".into(),
            Some(Member::Stretched { .. }) => "stretched".into(),
            None => "parent".into(),
        };
        self.generations.push(GenerationReport {
            generation: g,
            parent_hash: self.lineage.hash.clone(),
            sigma: self.sigma,
            parent: gen_parent,
            best_child: best_child.map(|b| b as u32),
            merged,
            stretched,
            kept,
        });
        self.advance(g, plan, children, next, gen_parent)?;
        if self.cfg.adapt_sigma {
            self.sigma = adapt_sigma(self.sigma, winners.len(), self.cfg.mutation.children);
        }
        self.run.timings.children += t.elapsed().as_secs_f64();
        let report = self
            .generations
            .last()
            .ok_or_else(|| invalid("internal", "no generation"))?;
        match self.observer.event(&Event::Generation(report)) {
            Flow::Continue => Ok(report),
            Flow::Stop => Err(EvolveError::Cancelled.into()),
        }
    }

    /// The recipe of `member` of the current parent's `plan`.
    fn recipe(&self, plan: &Plan, member: Member) -> Recipe {
        Recipe::new(
            plan,
            self.lineage.hash.clone(),
            self.selection_text.clone(),
            member,
        )
    }

    /// Scores generation `g`'s children and records them for the report.
    fn score_children(&mut self, g: u32, plan: &Plan) -> Result<Vec<Scored>, Error> {
        let k = self.cfg.mutation.children;
        let name = format!("generation {}/{}: children", g + 1, self.cfg.generations);
        if self.observer.event(&Event::Phase {
            name: &name,
            total: u64::from(k),
        }) == Flow::Stop
        {
            return Err(EvolveError::Cancelled.into());
        }
        let jobs = (0..k)
            .map(|i| {
                let key = blake3::hash(self.recipe(plan, Member::Child(i)).to_json()?.as_bytes());
                Ok(Job {
                    id: format!("g{g}-c{i}"),
                    member: Some(Member::Child(i)),
                    key: key.to_hex().to_string(),
                    holdout_if_beats: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if let shard::Share::Mine { mine, missing } =
            shard::share(&self.cfg, &self.run.journal, g, &jobs)?
        {
            // A shard: its own missing children, then stop (the others are other shards').
            let own: Vec<Job> = jobs
                .into_iter()
                .enumerate()
                .filter(|(i, _)| mine.contains(&(*i as u32)))
                .map(|(_, j)| j)
                .collect();
            self.run
                .score_all(&self.lineage, Some(plan), &own, None, self.observer)?;
            self.observer.event(&Event::PhaseDone);
            return Err(EvolveError::ShardDone {
                generation: g,
                scored: mine.len() as u32,
                missing: missing.into_iter().filter(|i| !mine.contains(i)).collect(),
            }
            .into());
        }
        let race = self.race(g)?;
        let children = self.run.score_all(
            &self.lineage,
            Some(plan),
            &jobs,
            race.as_ref(),
            self.observer,
        )?;
        count(&mut self.passes, &children, self.run.split.selection.len());
        for (i, scored) in children.iter().enumerate() {
            self.children.push(ChildReport {
                generation: g,
                index: i as u32,
                recipe: self.recipe(plan, Member::Child(i as u32)),
                selection: scored.scores.map(|s| s.selection),
                holdout: scored.scores.map(|s| s.holdout),
                failed: scored.failure.clone(),
                holdout_non_finite_rows: nonzero(scored.holdout_non_finite),
                dropped_after: scored.dropped.then_some(scored.record.selection.rows.len()),
            });
        }
        self.observer.event(&Event::PhaseDone);
        Ok(children)
    }

    /// Generation `g`'s race against the current parent, when racing.
    fn race(&self, g: u32) -> Result<Option<Race>, Error> {
        if !self.cfg.race {
            return Ok(None);
        }
        let correct = self.parent.record.selection.correct(&self.run.labels);
        let correct = correct.ok_or_else(|| invalid("--race", race::NEEDS_CLASSES))?;
        let seed = self.cfg.split_seed ^ (u64::from(g) << 32) ^ RACE_SEED;
        Ok(Some(Race::new(correct, self.run.predictor.batch(), seed)))
    }

    /// Scores a combination of children (`member`: merged or stretched) when its pass fits in
    /// the budget. Its holdout rows are scored only if it beats `next` (or the parent) on the
    /// selection rows; it then replaces `next`.
    fn try_combined(
        &mut self,
        g: u32,
        plan: &Plan,
        member: Member,
        gen_parent: &Scores,
        next: &mut Option<Next>,
    ) -> Result<Option<MergedReport>, Error> {
        if !self.fits(1) {
            return Ok(None);
        }
        let (id, children) = match &member {
            Member::Merged(c) => ("merged", c.clone()),
            Member::Stretched { children, .. } => ("stretched", children.clone()),
            Member::Child(c) => {
                return Err(invalid(
                    "internal",
                    format!("child {c} is not a combination"),
                ));
            }
        };
        let r = self.recipe(plan, member.clone());
        let key = blake3::hash(r.to_json()?.as_bytes()).to_hex().to_string();
        let bar = next
            .as_ref()
            .and_then(|(n, ..)| n.selection)
            .unwrap_or(gen_parent.selection);
        let job = Job {
            id: format!("g{g}-{id}"),
            member: Some(member.clone()),
            key,
            holdout_if_beats: Some(bar),
        };
        let scored = self
            .run
            .score(&self.lineage, Some(plan), job, self.observer)?;
        count(
            &mut self.passes,
            std::slice::from_ref(&scored),
            self.run.split.selection.len(),
        );
        let report = MergedReport {
            children,
            recipe: r.clone(),
            selection: scored.selection,
            holdout: scored.scores.map(|s| s.holdout),
            failed: scored.failure.clone(),
            holdout_non_finite_rows: nonzero(scored.holdout_non_finite),
        };
        if scored
            .scores
            .is_some_and(|s| select::better_by(self.cfg.metric, &s.selection, &bar))
        {
            *next = Some((scored, plan.deltas(&member)?, r));
        }
        Ok(Some(report))
    }

    /// Makes `next` (if any) the parent of the next generation and remembers generation `g`
    /// for the ensembles.
    fn advance(
        &mut self,
        g: u32,
        plan: Plan,
        children: Vec<Scored>,
        next: Option<Next>,
        gen_parent: Scores,
    ) -> Result<(), Error> {
        let this_lineage = self.lineage.clone();
        let this_parent = self.parent.clone();
        self.stale = if next.is_some() { 0 } else { self.stale + 1 };
        if let Some((scored, deltas, r)) = next {
            let (index, kind) = match &r.member {
                Member::Child(i) => (Some(*i), "child"),
                Member::Merged(_) => (None, "merged"),
                Member::Stretched { .. } => (None, "stretched"),
            };
            let lineage_next = self.lineage.descend(&deltas, r)?;
            self.run.sessions.descend(&deltas)?;
            if let Some(s) = scored.scores {
                let holdout = scored.record.holdout.as_ref().ok_or_else(|| {
                    invalid("internal", "the best candidate has no holdout predictions")
                })?;
                let significance = significance::significance(
                    (&self.original_holdout, &self.original),
                    (holdout, &s),
                    &self.run.labels,
                    significance::bootstrap_seed(self.cfg.split_seed),
                )?;
                self.best = Some(BestReport {
                    generation: g,
                    index,
                    kind: kind.into(),
                    lineage: lineage_next.recipes.clone(),
                    scores: s,
                    gain_vs_original: s.holdout.primary() - self.original.holdout.primary(),
                    gain_vs_generation_parent: s.holdout.primary() - gen_parent.holdout.primary(),
                    significance,
                    selection_p: significance::selection_p(
                        &self.original_selection,
                        &scored.record.selection,
                        &self.run.labels,
                    )?,
                    holdout_classes: holdout.class_stats(&self.run.labels)?,
                    tensors: Vec::new(),
                });
            }
            self.lineage = lineage_next;
            self.parent = scored;
        }
        self.last = Some(Generation {
            plan,
            lineage: this_lineage,
            parent: this_parent,
            children,
        });
        Ok(())
    }

    /// The four ensembles of the last generation's predictions (mean and greedy, without
    /// and with the parent).
    pub fn build_ensembles(&mut self) -> Result<&[EnsembleReport], Error> {
        if self.ensembles.is_none() {
            let last = self
                .last
                .as_ref()
                .ok_or_else(|| invalid("--generations", "no generation has run"))?;
            let t = Instant::now();
            let built = ensembles_of(
                last,
                &self.run.labels,
                self.cfg.mutation.children,
                (
                    &self.original_holdout,
                    &self.original_selection,
                    &self.original,
                ),
                significance::bootstrap_seed(self.cfg.split_seed),
                self.cfg.metric,
                self.cfg.custom_metric.as_ref(),
            )?;
            self.run.timings.ensembles = t.elapsed().as_secs_f64();
            self.ensembles = Some(built);
        }
        Ok(self.ensembles.as_ref().map_or(&[], |(e, _)| e.as_slice()))
    }

    /// True when a candidate whose selection gain over the original has McNemar p-value `p`
    /// may be written (see [`EvolveConfig::accept_p`]; 1 writes everything, p = 1 included).
    fn passes_gate(&self, p: Option<f64>) -> bool {
        self.cfg.accept_p >= 1.0 || p.is_none_or(|p| p < self.cfg.accept_p)
    }

    /// Why `file` was not written for `what`, whose selection p-value is `p`.
    fn not_significant(&self, file: &str, what: &str, p: Option<f64>) -> String {
        format!(
            "no {file}: the selection gain of the {what} over the original model is not significant (McNemar p = {:.3} ≥ {}, --accept-p); what was found is in the report",
            p.unwrap_or(1.0),
            self.cfg.accept_p
        )
    }

    /// Why no ensemble was written although one was asked for.
    fn no_ensemble(&self) -> String {
        let children = self.last.as_ref().map_or(&[][..], |g| &g.children[..]);
        let dropped = children.iter().filter(|c| c.dropped).count();
        let failed = children.iter().filter(|c| c.failure.is_some()).count();
        format!(
            "no ensemble.onnx: no child of the last generation was scored in full ({dropped} dropped by racing, {failed} failed)"
        )
    }

    /// Writes `best.onnx` (when a candidate beat the parent) and the chosen `ensemble.onnx`,
    /// as configured; returns what was written.
    pub fn export(&mut self) -> Result<&Outputs, Error> {
        if self.outputs.is_none() {
            self.build_ensembles()?;
            let t = Instant::now();
            // Independent files: writing and syncing them side by side overlaps their I/O.
            let (cfg, model) = (&self.cfg, &self.run.model);
            let best = self
                .best
                .as_ref()
                .filter(|b| self.passes_gate(b.selection_p))
                .map(|_| (&self.lineage, self.parent_hash.as_str()));
            let pick = self.ensembles.as_ref().and_then(|(e, _)| choose(cfg, e));
            let gated = pick
                .and_then(|p| self.ensembles.as_ref().map(|(e, _)| &e[p]))
                .filter(|e| !self.passes_gate(e.selection_p));
            let ens = match gated {
                None => self.ensembles.as_ref().zip(self.last.as_ref()).zip(pick),
                Some(_) => None,
            };
            let (best_out, ens_out) = rayon::join(
                || write_best(cfg, model, best),
                || write_ensemble(cfg, model, ens, &self.selection_text),
            );
            let mut outputs = Outputs {
                report: self.cfg.out.join(REPORT_FILE).display().to_string(),
                html: self.cfg.out.join(HTML_FILE).display().to_string(),
                best: best_out?,
                ..Default::default()
            };
            let mut notices = Vec::new();
            if let Some((n, kind)) = ens_out? {
                notices = n;
                outputs.ensemble = Some(self.cfg.out.join(ENSEMBLE_FILE).display().to_string());
                outputs.ensemble_kind = Some(kind);
            } else if self.cfg.export_ensemble {
                notices.push(match gated {
                    Some(e) => self.not_significant("ensemble.onnx", &e.name, e.selection_p),
                    None => self.no_ensemble(),
                });
            }
            if let Some(b) = self
                .best
                .as_ref()
                .filter(|b| !self.passes_gate(b.selection_p))
            {
                let what = format!("{} of generation {}", b.kind, b.generation);
                notices.push(self.not_significant("best.onnx", &what, b.selection_p));
            }
            self.run.timings.export = t.elapsed().as_secs_f64();
            self.outputs = Some((outputs, notices));
        }
        self.outputs
            .as_ref()
            .map(|(o, _)| o)
            .ok_or_else(|| invalid("internal", "no outputs"))
    }

    /// Runs what is left (ensembles, export), writes `report.json` and returns the report.
    pub fn finish(mut self) -> Result<Report, Error> {
        self.export()?;
        self.run.timings.total = self.start.elapsed().as_secs_f64();
        let (outputs, notices) = self.outputs.take().unwrap_or_default();
        let ensembles = self.ensembles.take().map(|(e, _)| e).unwrap_or_default();
        let stopped = self.stop_reason().unwrap_or(Stopped::Generations);
        let run = &self.run;
        let mut best = self.best;
        if let Some(b) = &mut best {
            b.tensors = TensorChange::of_lineage(&run.model, &self.lineage)?;
        }
        let report = Report {
            smd_onnx: env!("CARGO_PKG_VERSION").to_string(),
            runtime: run.runtime.describe(),
            model: self.cfg.model.display().to_string(),
            parent_hash: self.parent_hash,
            data: self.cfg.data.to_string(),
            output: run.predictor.output().to_string(),
            samples: SplitSizes {
                selection: run.split.selection.len(),
                holdout: run.split.holdout.len(),
            },
            settings: settings(&self.cfg, run.predictor.batch()),
            mutable: self.mutable,
            parent: self.original,
            parent_holdout_classes: self.original_holdout.class_stats(&run.labels)?,
            stopped,
            passes: self.passes,
            generations: self.generations,
            children: self.children,
            best,
            ensembles,
            outputs,
            notices,
            timings: run.timings.clone(),
            command: self.cfg.command.clone(),
        };
        // The page first: report.json, written last, marks a finished run. prepare_out
        // checked that no output is an input.
        crate::html::write(
            &self.cfg.out.join(HTML_FILE),
            &crate::html::evolve(&report),
            &[],
        )?;
        write_report(&self.cfg.out.join(REPORT_FILE), &report)?;
        Ok(report)
    }
}

/// Writes `best.onnx` for `best` (the lineage and the original's hash), if any and asked for.
fn write_best(
    cfg: &EvolveConfig,
    model: &Model,
    best: Option<(&Lineage, &str)>,
) -> Result<Option<String>, Error> {
    let path = cfg.out.join(BEST_FILE);
    if let (true, Some((lineage, parent_hash))) = (cfg.export_best, best) {
        let changes = lineage.changes(&[])?;
        let meta = recipe_meta(&lineage.recipes, parent_hash)?;
        crate::onnx::write_child_with_metadata(model, &changes, &meta, &path)?;
        return Ok(Some(path.display().to_string()));
    }
    if cfg.force {
        // A best model from an earlier run in this folder would now be misleading.
        remove_stale(&path)?;
    }
    Ok(None)
}

/// The ensemble to export: the one named, or the best on the selection split.
fn choose(cfg: &EvolveConfig, ensembles: &[EnsembleReport]) -> Option<usize> {
    match cfg.ensemble.name() {
        Some(name) => ensembles.iter().position(|e| e.name == name),
        None => {
            let sel: Vec<Option<Metrics>> =
                ensembles.iter().map(|e| Some(e.scores.selection)).collect();
            select::best_by(cfg.metric, &sel)
        }
    }
}

/// Writes ensemble `p` of the last generation; returns its notices and name.
fn write_ensemble(
    cfg: &EvolveConfig,
    model: &Model,
    built: Option<((&Built, &Generation), usize)>,
    selection_text: &str,
) -> Result<Option<(Vec<String>, String)>, Error> {
    let path = cfg.out.join(ENSEMBLE_FILE);
    if !cfg.export_ensemble {
        if cfg.force {
            remove_stale(&path)?;
        }
        return Ok(None);
    }
    let Some((((ensembles, choices), last), p)) = built else {
        return Ok(None);
    };
    let notices = export_ensemble(model, last, &choices[p], cfg.combine, selection_text, &path)?;
    Ok(Some((notices, ensembles[p].name.clone())))
}

/// Removes an output model of an earlier run in this folder, with its external data files
/// (an orphaned `.data` file would be misleading too). A file that is not a readable model
/// is removed alone.
fn remove_stale(p: &Path) -> Result<(), Error> {
    let mut files = vec![p.to_path_buf()];
    if let Ok(old) = Model::open(p) {
        let folder = p.parent().unwrap_or(Path::new(""));
        // Only its data files in this folder: never an input elsewhere.
        files.extend(
            old.input_paths()
                .into_iter()
                .filter(|f| f != p && f.parent() == Some(folder)),
        );
    }
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EvolveError::Io { path: f, source: e }.into()),
        }
    }
    Ok(())
}

/// Opens the runtime, data, journal and sessions of a run of `cfg` on `model`.
fn open_run(
    cfg: &EvolveConfig,
    model: Model,
    lineage: &Lineage,
    parent_hash: &str,
) -> Result<Run, Error> {
    let io = ModelIo::from_model(&model);
    let runtime = Runtime::new(&cfg.runtime)?;
    let data = cfg.data.open(&io)?;
    let split = Split::new(data.labels(), cfg.holdout, cfg.split_seed)?;
    let batch = match cfg.batch {
        Some(b) => b,
        None if cfg.race => race::batch(data.default_batch(), split.selection.len()),
        None => data.default_batch(),
    };
    let predictor = Predictor::new(&io, &data, cfg.output.as_deref(), batch)?;
    let labels = data.labels().clone();
    let budget = cfg.copy_budget.unwrap_or(DEFAULT_COPY_BUDGET);
    let parts = Part::both(data, &split, budget)?;
    let key = run_key(cfg, parent_hash, predictor.output(), batch)?;
    let journal = Journal::open(&cfg.out, &key, shard::JournalMode::of(cfg))?;
    // On a GPU the CPU idles while a pass runs: build the next session meanwhile. On a CPU the
    // pass already uses every core.
    let pipelined = cfg.pipelined.unwrap_or_else(|| runtime.device().is_gpu());
    let sessions = sessions::Sessions::new(
        &model,
        lineage,
        journal.dir().join(shard::scratch_name(cfg.role)),
        pipelined,
        predictor.session_suffix(),
    )?;
    Ok(Run {
        model,
        runtime,
        labels,
        parts,
        predictor,
        split,
        journal,
        sessions,
        timings: Timings::default(),
        metric: cfg.metric,
        custom: cfg.custom_metric.clone(),
        role: cfg.role,
    })
}

/// Checks and creates the output folder: it must be a folder, empty unless `--force` or
/// `--resume`, and none of its outputs may be an input.
fn prepare_out(cfg: &EvolveConfig, inputs: &[PathBuf]) -> Result<(), Error> {
    let shared = cfg.role != shard::Role::Whole;
    crate::output::prepare_out_dir(&cfg.out, cfg.force || cfg.resume || shared).map_err(
        |e| {
            match e {
        crate::output::OutputError::NotEmpty { path } => Error::from(EvolveError::Output {
            path,
            message:
                "is not empty (use --force to replace its outputs, or --resume to continue a run)"
                    .into(),
        }),
        e => e.into(),
    }
        },
    )?;
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    for name in OUTPUT_FILES {
        crate::output::ensure_not_input(&cfg.out.join(name), &inputs)?;
    }
    // Temporary files of a killed run (they can be model-sized). Shards write no outputs.
    if !matches!(cfg.role, shard::Role::Shard(_)) {
        crate::output::remove_temps(&cfg.out, Some(&OUTPUT_FILES))?;
    }
    Ok(())
}

/// Writes the report as pretty JSON, atomically.
fn write_report(path: &Path, report: &Report) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| EvolveError::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::output::write_atomic(path, |w| {
        w.write_all(&json).map_err(|e| {
            Error::from(EvolveError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        })
    })
}

/// Adds the passes `scored` candidates took: the rows of the `selection_rows` they were
/// scored on (all but for a raced child dropped early), and one pass over the holdout rows
/// for those whose holdout rows were scored.
fn count(passes: &mut Passes, scored: &[Scored], selection_rows: usize) {
    for s in scored {
        let rows = s.record.selection.rows.len();
        passes.add(rows, selection_rows, s.record.holdout.is_some());
    }
}

/// `Some(n)` unless `n` is 0 (the report leaves the field out).
fn nonzero(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
}

/// The 1/5 success rule of (1+λ)-ES: a bolder σ when more than a fifth of the `k` children
/// beat their parent, a more careful one otherwise; kept within [1e-3, 10] (relative σ).
fn adapt_sigma(sigma: f64, winners: usize, k: u32) -> f64 {
    const STEP: f64 = 1.5;
    let next = if winners as f64 > f64::from(k) / 5.0 {
        sigma * STEP
    } else {
        sigma / STEP
    };
    next.clamp(1e-3, 10.0)
}
