//! Ensembles of the last generation's predictions (mean and greedy, without and with the
//! parent) and the export of the chosen one as a drop-in ONNX graph.

use std::path::{Path, PathBuf};

use super::journal::Record;
use super::report::{EnsembleReport, GreedyStep, MemberRef, Scores};
use super::scoring::Scored;
use super::{invalid, select, significance};
use crate::ensemble::{self, Combine};
use crate::lineage::{Lineage, recipe_meta};
use crate::mutate::{self, Delta, Member, Plan, Recipe};
use crate::onnx::Model;
use crate::score::Predictions;
use crate::{Error, TensorData};

/// One generation's outcome: what ensembles are made of.
pub(super) struct Generation {
    pub plan: Plan,
    pub lineage: Lineage,
    pub parent: Scored,
    pub children: Vec<Scored>,
}

/// A member of an ensemble choice: the generation's parent (`None`) or child `i`.
pub(super) type Choice = Vec<(Option<u32>, f64)>;

/// The four ensembles of the last generation's predictions: mean and greedy, without and with
/// the parent; with their members (for export).
///
/// `original` is the original model's holdout and selection predictions and its scores, which
/// each ensemble's significance (bootstrap seed `seed`) and selection p-value are measured
/// against; greedy selection goes by `metric` (see [`select::better_by`]).
pub(super) fn ensembles_of(
    g: &Generation,
    labels: &crate::score::Labels,
    k: u32,
    original: (&Predictions, &Predictions, &Scores),
    seed: u64,
    metric: Option<crate::score::Metric>,
    custom: Option<&crate::score::CustomMetric>,
) -> Result<(Vec<EnsembleReport>, Vec<Choice>), Error> {
    let (original_holdout, original_selection, original_scores) = original;
    let original = (original_holdout, original_scores);
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
    // The ensembles' holdout predictions and what their reports need besides their
    // significance, which is measured for all four at once (one set of bootstrap draws).
    let mut built = Vec::new();
    let mut add = |name: &str, members: Choice, path: Vec<GreedyStep>| -> Result<(), Error> {
        let part = |f: &dyn Fn(&Record) -> Option<&Predictions>| -> Result<Predictions, Error> {
            let w = members
                .iter()
                .map(|&(who, w)| Ok((f(preds(who)).ok_or_else(unscored)?, w)))
                .collect::<Result<Vec<(&Predictions, f64)>, Error>>()?;
            Ok(Predictions::weighted_mean(&w)?)
        };
        let holdout = part(&|r| r.holdout.as_ref())?;
        let selection = part(&|r| Some(&r.selection))?;
        let scores = Scores {
            selection: selection.metrics_with(labels, custom)?,
            holdout: holdout.metrics_with(labels, custom)?,
        };
        let selection_p = significance::selection_p(original_selection, &selection, labels)?;
        let members_ref = members
            .iter()
            .map(|&(who, weight)| MemberRef::new(who, weight))
            .collect();
        built.push((
            name.to_string(),
            members_ref,
            path,
            holdout,
            scores,
            selection_p,
        ));
        choices.push(members);
        Ok(())
    };
    let children: Choice = ok.iter().map(|&i| (Some(i), 1.0)).collect();
    add("mean", children.clone(), Vec::new())?;
    let mut with_parent = children;
    with_parent.insert(0, (None, 1.0));
    add("mean+parent", with_parent, Vec::new())?;
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
        let steps = select::greedy_steps(cands.len());
        select::greedy_with(&cands, labels, steps, metric, custom)
    };
    // The two selections are independent: run them side by side.
    let (a, b) = rayon::join(|| greedy(&pools[0].1), || greedy(&pools[1].1));
    for ((name, pool), gr) in pools.iter().zip([a, b]) {
        let gr = gr?;
        let members: Choice = pool
            .iter()
            .zip(&gr.counts)
            .filter(|(_, n)| **n > 0)
            .map(|(&w, &n)| (w, f64::from(n)))
            .collect();
        let holdouts = pool
            .iter()
            .map(|&w| preds(w).holdout.as_ref().ok_or_else(unscored))
            .collect::<Result<Vec<_>, Error>>()?;
        let path = greedy_path(pool, &gr.path, &holdouts, labels)?;
        add(name, members, path)?;
    }
    let candidates: Vec<(&Predictions, &Scores)> = built
        .iter()
        .map(|(_, _, _, holdout, scores, _)| (holdout, scores))
        .collect();
    let found = significance::significance_many(original, &candidates, labels, seed)?;
    for ((name, members, path, holdout, scores, selection_p), significance) in
        built.into_iter().zip(found)
    {
        reports.push(EnsembleReport {
            name,
            members,
            holdout_classes: holdout.class_stats(labels)?,
            path,
            scores,
            gain_vs_original: scores.holdout.primary() - original.1.holdout.primary(),
            gain_vs_generation_parent: scores.holdout.primary() - parent_scores.holdout.primary(),
            significance,
            selection_p,
        });
    }
    Ok((reports, choices))
}

/// The steps of a greedy selection over `pool` with the running ensemble's holdout score at
/// each (for the report only: the holdout rows never take part in choosing).
fn greedy_path(
    pool: &[Option<u32>],
    steps: &[(usize, crate::score::Metrics)],
    holdouts: &[&Predictions],
    labels: &crate::score::Labels,
) -> Result<Vec<GreedyStep>, Error> {
    let Some(first) = holdouts.first() else {
        return Ok(Vec::new());
    };
    let regression = first.kind == crate::score::ScoredAs::Regression;
    fn values(p: &Predictions, regression: bool) -> &[f32] {
        if regression { &p.values } else { &p.probs }
    }
    // One running sum, one member added per step: the path costs one pass over the holdout
    // predictions per step, not one per member.
    let mut sum = vec![0.0f64; values(first, regression).len()];
    let mut out = Vec::with_capacity(steps.len());
    for (n, &(c, selection)) in steps.iter().enumerate() {
        let added = holdouts
            .get(c)
            .ok_or_else(|| invalid("internal", "greedy step"))?;
        for (s, &v) in sum.iter_mut().zip(values(added, regression)) {
            *s += f64::from(v);
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / (n + 1) as f64) as f32).collect();
        let (probs, values, kind) = if regression {
            (Vec::new(), mean, crate::score::ScoredAs::Regression)
        } else {
            (mean, Vec::new(), crate::score::ScoredAs::Probabilities)
        };
        let p = Predictions {
            rows: first.rows.clone(),
            classes: first.classes,
            probs,
            values,
            kind,
            non_finite_rows: 0,
            first_non_finite: None,
            output: first.output.clone(),
        };
        out.push(GreedyStep {
            added: MemberRef::new(pool.get(c).copied().flatten(), 1.0),
            selection: selection.primary(),
            holdout: p.metrics(labels)?.primary(),
        });
    }
    Ok(out)
}

/// Writes the drop-in ensemble of `members` (of generation `g`) to `path`; returns notices.
pub(super) fn export_ensemble(
    model: &Model,
    g: &Generation,
    members: &Choice,
    combine: Combine,
    selection: &str,
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
                    selection.to_string(),
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
        combine,
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
