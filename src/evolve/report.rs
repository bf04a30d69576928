//! The report of an evolution run (`report.json`), and its human summary.

use serde::Serialize;

use crate::mutate::Recipe;
use crate::runtime::RuntimeInfo;
use crate::score::Metrics;

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
}

/// One generation.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationReport {
    /// Generation number (from 0).
    pub generation: u32,
    /// Content hash identifying this generation's parent.
    pub parent_hash: String,
    /// The parent's scores.
    pub parent: Scores,
    /// The best child on the selection split, whether or not it beat the parent.
    pub best_child: Option<u32>,
    /// The merged candidate, when at least two children beat the parent.
    pub merged: Option<MergedReport>,
    /// What the next generation starts from: `child <i>`, `merged` or `parent`.
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
}

/// Settings that shaped the run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Children per generation.
    pub children: u32,
    /// Generations.
    pub generations: u32,
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
    /// Every generation.
    pub generations: Vec<GenerationReport>,
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

fn pct(m: &Metrics) -> String {
    match (m.accuracy, m.mse) {
        (Some(a), _) => format!("{:6.2}%", 100.0 * a),
        (None, Some(e)) => format!("{e:8.5}"),
        _ => "-".into(),
    }
}

fn nll(m: &Metrics) -> String {
    m.nll.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn delta(m: &Metrics, base: &Metrics) -> String {
    match (m.accuracy, base.accuracy, m.mse, base.mse) {
        (Some(a), Some(b), _, _) => format!("{:+.2}", 100.0 * (a - b)),
        (_, _, Some(a), Some(b)) => format!("{:+.5}", a - b),
        _ => "-".into(),
    }
}

impl Report {
    /// A holdout gain against the original model and, when they differ (later generations),
    /// against a generation's parent; in accuracy points, or as a change of MSE.
    fn gains(&self, vs_original: f64, vs_generation_parent: f64, gen_parent: &str) -> String {
        let text = |g: f64| {
            if self.parent.holdout.accuracy.is_some() {
                format!("{:+.2} points", 100.0 * g)
            } else {
                // The gain is in −MSE: a positive gain lowers the MSE.
                format!("MSE {:+.5}", -g)
            }
        };
        let mut s = format!("{} vs the original model", text(vs_original));
        if self.generations.len() > 1 {
            s.push_str(&format!("; {} vs {gen_parent}", text(vs_generation_parent)));
        }
        s
    }

    /// A summary table a person can read: parent, children, best, ensembles; selection and
    /// holdout; change against the parent on holdout.
    pub fn summary(&self) -> String {
        let metric = if self.parent.selection.accuracy.is_some() {
            "accuracy"
        } else {
            "MSE"
        };
        let mut s = String::new();
        let row = |s: &mut String, name: &str, sc: &Scores, base: &Metrics| {
            s.push_str(&format!(
                "{name:<22} {:>9} {:>9}  {:>9} {:>9}  {:>8}\n",
                pct(&sc.selection),
                nll(&sc.selection),
                pct(&sc.holdout),
                nll(&sc.holdout),
                delta(&sc.holdout, base)
            ));
        };
        s.push_str(&format!(
            "{} on {} ({} selection / {} holdout samples), {} children x {} generation(s), sigma {}\n\n",
            self.model, self.data, self.samples.selection, self.samples.holdout, self.settings.children, self.settings.generations, self.settings.sigma
        ));
        s.push_str(&format!(
            "{:<22} {:>9} {:>9}  {:>9} {:>9}  {:>8}\n",
            "model", "sel", "sel nll", "holdout", "hold nll", "Δ hold"
        ));
        s.push_str(&format!(
            "{:<22} {:>9} {:>9}  {:>9} {:>9}  {:>8}\n",
            "", metric, "", metric, "", "vs orig."
        ));
        let base = self.parent.holdout;
        row(&mut s, "parent", &self.parent, &base);
        // A child or merged candidate: scored, scored on selection only, or failed.
        let candidate = |s: &mut String,
                         name: &str,
                         sel: Option<Metrics>,
                         hold: Option<Metrics>,
                         failed: Option<&str>| {
            match (sel, hold, failed) {
                (Some(selection), Some(holdout), _) => {
                    row(s, name, &Scores { selection, holdout }, &base)
                }
                (Some(sel), None, None) => s.push_str(&format!(
                    "{name:<22} {:>9} {:>9}  (did not win on selection: holdout not scored)\n",
                    pct(&sel),
                    nll(&sel),
                )),
                (_, _, failed) => {
                    s.push_str(&format!("{name:<22} failed: {}\n", failed.unwrap_or("?")))
                }
            }
        };
        let last = self.generations.last().map_or(0, |g| g.generation);
        for c in self.children.iter().filter(|c| c.generation == last) {
            let name = format!(
                "child {}{}",
                c.index,
                if self.generations.len() > 1 {
                    format!(" (gen {})", c.generation)
                } else {
                    String::new()
                }
            );
            candidate(&mut s, &name, c.selection, c.holdout, c.failed.as_deref());
        }
        if let Some(m) = self.generations.last().and_then(|g| g.merged.as_ref()) {
            let list: Vec<String> = m.children.iter().map(u32::to_string).collect();
            let name = format!("merged ({})", list.join(","));
            candidate(&mut s, &name, m.selection, m.holdout, m.failed.as_deref());
        }
        for e in &self.ensembles {
            row(&mut s, &format!("ensemble {}", e.name), &e.scores, &base);
        }
        s.push('\n');
        match &self.best {
            Some(b) => {
                let what = match b.index {
                    Some(i) => format!("child {i} of generation {}", b.generation),
                    None => format!("the merged candidate of generation {}", b.generation),
                };
                let gen_parent = format!("the parent of generation {}", b.generation);
                s.push_str(&format!(
                    "Best: {what}: holdout {} ({}).\n",
                    pct(&b.scores.holdout).trim(),
                    self.gains(b.gain_vs_original, b.gain_vs_generation_parent, &gen_parent)
                ));
            }
            None => s.push_str("Best: no child beat the parent on the selection split; the parent is kept (no best.onnx).\n"),
        }
        if let (Some(kind), Some(e)) = (
            &self.outputs.ensemble_kind,
            self.ensembles
                .iter()
                .find(|e| Some(&e.name) == self.outputs.ensemble_kind.as_ref()),
        ) {
            let last = self.generations.last().map_or(0, |g| g.generation);
            let gen_parent = format!("the parent of generation {last}");
            s.push_str(&format!(
                "Ensemble exported: {kind} ({} member(s)): holdout {} ({}).\n",
                e.members.len(),
                pct(&e.scores.holdout).trim(),
                self.gains(e.gain_vs_original, e.gain_vs_generation_parent, &gen_parent)
            ));
        }
        for n in &self.notices {
            s.push_str(&format!("note: {n}\n"));
        }
        for (what, p) in [
            ("best model", &self.outputs.best),
            ("ensemble", &self.outputs.ensemble),
        ] {
            if let Some(p) = p {
                s.push_str(&format!("wrote {what}: {p}\n"));
            }
        }
        s.push_str(&format!("wrote report: {}\n", self.outputs.report));
        s
    }
}
