//! The report of an evolution run (`report.json`), and its human summary.

use serde::Serialize;

use crate::Error;
use crate::lineage::Lineage;
use crate::mutate::Recipe;
use crate::onnx::Model;
use crate::runtime::RuntimeInfo;
use crate::score::{ClassStats, Metrics};

/// Metrics on both parts of the split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    /// On the selection rows (used to choose).
    pub selection: Metrics,
    /// On the holdout rows (reported only).
    pub holdout: Metrics,
}

/// One scored child.
#[derive(Debug, Clone, Serialize)]
pub struct ChildReport {
    /// Its generation.
    pub generation: u32,
    /// Its index within the generation.
    pub index: u32,
    /// Everything needed to regenerate it.
    pub recipe: Recipe,
    /// Selection metrics (absent when it failed).
    pub selection: Option<Metrics>,
    /// Holdout metrics (absent when it failed).
    pub holdout: Option<Metrics>,
    /// Why it failed (e.g. NaN outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Holdout rows whose outputs were NaN/Inf: counted as wrong answers (NLL at its floor);
    /// it is chosen or not on the selection rows alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout_non_finite_rows: Option<usize>,
    /// Racing dropped it after this many selection rows: it could not, or clearly did not,
    /// beat its parent (no metrics: they would be of a part of the rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_after: Option<usize>,
}

/// The merged candidate of a generation: every child that beat the parent, applied together.
#[derive(Debug, Clone, Serialize)]
pub struct MergedReport {
    /// The children merged.
    pub children: Vec<u32>,
    /// Its recipe.
    pub recipe: Recipe,
    /// Its metrics on the selection rows (absent when it failed).
    pub selection: Option<Metrics>,
    /// Its metrics on the holdout rows: scored only when it won on the selection rows (it is
    /// then the next parent), so absent otherwise.
    pub holdout: Option<Metrics>,
    /// Why it failed (e.g. NaN outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Holdout rows whose outputs were NaN/Inf: counted as wrong answers (NLL at its floor);
    /// it is chosen or not on the selection rows alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout_non_finite_rows: Option<usize>,
}

/// One generation.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationReport {
    /// Generation number (from 0).
    pub generation: u32,
    /// Content hash identifying this generation's parent.
    pub parent_hash: String,
    /// σ of this generation's children.
    pub sigma: f64,
    /// The parent's scores.
    pub parent: Scores,
    /// The best child on the selection split, whether or not it beat the parent.
    pub best_child: Option<u32>,
    /// The merged candidate, when at least two children beat the parent.
    pub merged: Option<MergedReport>,
    /// With `--line-search`: the merged step taken twice, tried when the merged candidate won.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stretched: Option<MergedReport>,
    /// What the next generation starts from: `child <i>`, `merged`, `stretched` or `parent`.
    pub kept: String,
}

/// The model `evolve` ends with, when it is not the original parent.
#[derive(Debug, Clone, Serialize)]
pub struct BestReport {
    /// Generation it was made in.
    pub generation: u32,
    /// Child index, or null for a merged candidate.
    pub index: Option<u32>,
    /// `child` or `merged`.
    pub kind: String,
    /// Recipes from the original parent to this model, one per generation that changed it.
    pub lineage: Vec<Recipe>,
    /// Its scores.
    pub scores: Scores,
    /// Holdout accuracy (or −MSE) minus the original model's.
    pub gain_vs_original: f64,
    /// Holdout accuracy (or −MSE) minus that of the parent of the generation it was made in.
    pub gain_vs_generation_parent: f64,
    /// Whether its holdout gain over the original model is more than chance.
    pub significance: Significance,
    /// McNemar's exact p-value of its selection gain over the original model (what the export
    /// gate reads: written only when below `accept_p`; classification only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_p: Option<f64>,
    /// Per-class results on the holdout rows (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout_classes: Option<ClassStats>,
    /// Its mutable tensors that differ from the original model's (filled in when the run
    /// finishes).
    pub tensors: Vec<TensorChange>,
}

/// How much the best model changed one mutable tensor of the original.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorChange {
    /// The tensor's name (with its graph scope for a subgraph's tensor).
    pub name: String,
    /// Its elements.
    pub elements: u64,
    /// Elements whose value differs from the original's.
    pub changed: u64,
    /// ‖new − original‖₂ / ‖original‖₂ (null for a tensor of zeros).
    pub relative_change: Option<f64>,
}

impl TensorChange {
    /// The changes of `lineage`'s tensors that differ from `model`'s (the original).
    pub(super) fn of_lineage(model: &Model, lineage: &Lineage) -> Result<Vec<Self>, Error> {
        let mut out = Vec::new();
        for ((&t, new), _) in lineage
            .tensors
            .iter()
            .zip(&lineage.values)
            .zip(&lineage.changed)
            .filter(|(_, changed)| **changed)
        {
            let info = &model.tensors()[t];
            let old = model.read_values(info)?;
            let (mut changed, mut d2, mut o2) = (0u64, 0.0f64, 0.0f64);
            for i in 0..new.len().min(old.len()) {
                let (a, b) = (old.get_f64(i).unwrap_or(0.0), new.get_f64(i).unwrap_or(0.0));
                changed += u64::from(a.to_bits() != b.to_bits());
                d2 += (b - a) * (b - a);
                o2 += a * a;
            }
            out.push(TensorChange {
                name: info.key().to_string(),
                elements: new.len() as u64,
                changed,
                relative_change: (o2 > 0.0).then(|| (d2 / o2).sqrt()),
            });
        }
        Ok(out)
    }
}

/// A member of an ensemble of predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberRef {
    /// `child` or `parent`.
    pub kind: String,
    /// Child index (null for the parent).
    pub index: Option<u32>,
    /// Weight (a multiplicity for greedy selection).
    pub weight: f64,
}

impl MemberRef {
    /// Child `who`, or the parent when `None`, with `weight`.
    pub fn new(who: Option<u32>, weight: f64) -> Self {
        MemberRef {
            kind: if who.is_some() { "child" } else { "parent" }.into(),
            index: who,
            weight,
        }
    }
}

/// One step of greedy ensemble selection: the member added and the running ensemble's
/// accuracy (or −MSE) after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GreedyStep {
    /// The member added (weight 1: one more copy).
    pub added: MemberRef,
    /// On the selection rows (what greedy selection maximised).
    pub selection: f64,
    /// On the holdout rows (reported only).
    pub holdout: f64,
}

/// An ensemble of predictions (mean of the members' probabilities).
#[derive(Debug, Clone, Serialize)]
pub struct EnsembleReport {
    /// `mean`, `mean+parent`, `greedy` or `greedy+parent`.
    pub name: String,
    /// Members and weights.
    pub members: Vec<MemberRef>,
    /// Its scores.
    pub scores: Scores,
    /// Holdout accuracy (or −MSE) minus the original model's.
    pub gain_vs_original: f64,
    /// Holdout accuracy (or −MSE) minus that of the last generation's parent (whose children
    /// the ensembles combine).
    pub gain_vs_generation_parent: f64,
    /// Whether its holdout gain over the original model is more than chance.
    pub significance: Significance,
    /// McNemar's exact p-value of its selection gain over the original model (what the export
    /// gate reads: written only when below `accept_p`; classification only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_p: Option<f64>,
    /// Per-class results on the holdout rows (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout_classes: Option<ClassStats>,
    /// Greedy ensembles: every step of the selection, in order (empty for the means).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<GreedyStep>,
}

/// A holdout gain against the original model, tested on the same holdout rows (computed on
/// holdout only: it never influences selection). See `significance.rs` for the definitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Significance {
    /// Holdout accuracy (or −MSE) minus the original model's (`gain_vs_original`).
    pub gain: f64,
    /// 95% percentile interval of `gain` over paired bootstrap resamples of the holdout rows.
    pub ci95: [f64; 2],
    /// McNemar's exact two-sided p-value against the original (classification only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcnemar_p: Option<f64>,
    /// `[b, c]`: holdout rows the original gets right and this model wrong, and the reverse
    /// (classification only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discordant: Option<[u64; 2]>,
    /// Selection accuracy (or −MSE) minus the original model's.
    pub selection_gain: f64,
    /// `selection_gain − gain`: how much of the gain seen on the selection rows (where the
    /// model was chosen) did not carry over to the holdout rows.
    pub gap: f64,
    /// How the interval was drawn.
    pub bootstrap: Bootstrap,
}

/// The paired bootstrap behind [`Significance::ci95`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bootstrap {
    /// Resamples drawn.
    pub resamples: u32,
    /// The SplitMix64 seed of the draws (the split seed XOR `0x534D442D424F4F54`).
    pub seed: u64,
}

/// Forward passes a run spent: over the selection split (what budgets count) and over the
/// holdout split (for reporting only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Passes {
    /// Passes over the selection rows: one per candidate scored in full (journaled ones
    /// included), the fraction of the rows it was scored on for a raced child dropped early
    /// (`selection_rows` / the selection split's size; a whole number is written as one).
    #[serde(serialize_with = "whole_or_fraction")]
    pub selection: f64,
    /// Selection rows scored, over all candidates.
    pub selection_rows: u64,
    /// Passes over the holdout rows.
    pub holdout: u64,
}

impl Passes {
    /// Adds a candidate scored on `rows` of the `of` selection rows (and on the holdout rows
    /// when `holdout`).
    pub(super) fn add(&mut self, rows: usize, of: usize, holdout: bool) {
        self.selection_rows += rows as u64;
        self.selection = self.selection_rows as f64 / of.max(1) as f64;
        self.holdout += u64::from(holdout);
    }
}

/// Writes a whole number of passes as an integer (most runs), a fraction as a float.
fn whole_or_fraction<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && *v >= 0.0 && *v < 2f64.powi(53) {
        s.serialize_u64(*v as u64)
    } else {
        s.serialize_f64(*v)
    }
}

/// Why a run stopped starting generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stopped {
    /// Every generation asked for ran.
    Generations,
    /// The next generation's children did not fit in the budget.
    Budget,
    /// `patience` generations in a row kept their parent.
    Patience,
}

/// Settings that shaped the run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Children per generation.
    pub children: u32,
    /// Generations (the most that run).
    pub generations: u32,
    /// Forward passes over the selection split the run could spend (null: no limit).
    pub budget: Option<u64>,
    /// Generations in a row without a winner that stop the run (null: none).
    pub patience: Option<u32>,
    /// σ adapts between generations (`sigma` is where it starts).
    pub adapt_sigma: bool,
    /// A winning merged candidate's step is also tried twice.
    pub line_search: bool,
    /// Children raced against their parent (dropped early when clearly losing).
    pub race: bool,
    /// `best.onnx` and `ensemble.onnx` are written only when their selection gain over the
    /// original model has a McNemar p-value below this (1: always).
    pub accept_p: f64,
    /// What selection optimised (`--metric`); null: accuracy with the NLL as tie-break (MSE
    /// for regression).
    pub metric: Option<&'static str>,
    /// `partition`, `density` or `layer`.
    pub mode: String,
    /// Density fraction (density mode).
    pub density: Option<f64>,
    /// σ.
    pub sigma: f64,
    /// `relative` or `absolute`.
    pub scale: String,
    /// Antithetic pairs.
    pub antithetic: bool,
    /// `dynamic` or `static`.
    pub subspaces: String,
    /// Seed.
    pub seed: u64,
    /// Tensor selection.
    pub selection: String,
    /// Holdout fraction.
    pub holdout: f64,
    /// Split seed.
    pub split_seed: u64,
    /// Batch size.
    pub batch: usize,
}

/// Files written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outputs {
    /// The best model, when a candidate beat the parent.
    pub best: Option<String>,
    /// The drop-in ensemble model.
    pub ensemble: Option<String>,
    /// Which ensemble it holds.
    pub ensemble_kind: Option<String>,
    /// This report.
    pub report: String,
    /// The report as a page (`report.html`).
    pub html: String,
}

/// Seconds per phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Opening the model, data and runtime.
    pub load: f64,
    /// Scoring parents.
    pub parent: f64,
    /// Building and scoring children (and merged candidates).
    pub children: f64,
    /// Each candidate, in order scored (0 when taken from the journal).
    pub per_candidate: Vec<f64>,
    /// Ensembles of predictions.
    pub ensembles: f64,
    /// Writing the outputs.
    pub export: f64,
    /// Everything.
    pub total: f64,
    /// The shared prefix, when one was tried (see `evolve::prefix`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<SharedPrefix>,
}

/// Trying to compute the unmutated prefix of the graph once and score candidates on the rest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SharedPrefix {
    /// Candidates were scored through the split.
    pub used: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// The activations the prefix computes and the suffix reads.
    pub cut: Vec<String>,
    /// Nodes of the prefix.
    pub prefix_nodes: usize,
    /// Nodes of the suffix (the mutated nodes and the constants they read).
    pub suffix_nodes: usize,
    /// Seconds of the prefix pass over the selection and holdout rows.
    pub prefix_pass: f64,
    /// Seconds of the exactness check: the first batch through a full session and through
    /// the suffix's.
    pub check: f64,
    /// Seconds of the whole attempt.
    pub seconds: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// smd-onnx version.
    pub smd_onnx: String,
    /// The ONNX Runtime library, version, device and providers used.
    pub runtime: RuntimeInfo,
    /// The parent model.
    pub model: String,
    /// The parent's content hash.
    pub parent_hash: String,
    /// The data file.
    pub data: String,
    /// The scored output.
    pub output: String,
    /// Samples in each part of the split.
    pub samples: SplitSizes,
    /// Settings.
    pub settings: Settings,
    /// Mutable tensors and their elements.
    pub mutable: Mutable,
    /// The original parent's scores.
    pub parent: Scores,
    /// The original parent's per-class results on the holdout rows (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_holdout_classes: Option<ClassStats>,
    /// Every generation.
    pub generations: Vec<GenerationReport>,
    /// Why no further generation ran.
    pub stopped: Stopped,
    /// Forward passes spent.
    pub passes: Passes,
    /// Every child of every generation.
    pub children: Vec<ChildReport>,
    /// The model evolve ends with, or null when no candidate beat the parent.
    pub best: Option<BestReport>,
    /// Ensembles of the last generation's predictions.
    pub ensembles: Vec<EnsembleReport>,
    /// Files written.
    pub outputs: Outputs,
    /// Things the user should know.
    pub notices: Vec<String>,
    /// The command line that ran (when the caller said), for `report.html`. Not in
    /// `report.json`, which stays the same for the same run whatever its output folder.
    #[serde(skip)]
    pub command: Option<String>,
    /// Seconds per phase.
    pub timings: Timings,
}

/// Selection and holdout sizes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SplitSizes {
    /// Selection rows.
    pub selection: usize,
    /// Holdout rows.
    pub holdout: usize,
}

/// Mutable tensors.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mutable {
    /// Tensors.
    pub tensors: usize,
    /// Elements.
    pub elements: u64,
}
