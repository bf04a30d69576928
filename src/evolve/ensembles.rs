//! Ensembles of the last generation's predictions (mean and greedy, without and with the
//! parent) and the export of the chosen one as a drop-in ONNX graph.

use std::path::{Path, PathBuf};

use super::journal::Record;
use super::report::{EnsembleReport, MemberRef, Scores};
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
/// against.
pub(super) fn ensembles_of(
    g: &Generation,
    labels: &crate::score::Labels,
    k: u32,
    original: (&Predictions, &Predictions, &Scores),
    seed: u64,
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
    let mut add = |name: &str, members: Choice| -> Result<(), Error> {
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
            selection: selection.metrics(labels)?,
            holdout: holdout.metrics(labels)?,
        };
        let selection_p = significance::selection_p(original_selection, &selection, labels)?;
        let significance = significance::significance(original, (&holdout, &scores), labels, seed)?;
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
            gain_vs_original: scores.holdout.primary() - original.1.holdout.primary(),
            gain_vs_generation_parent: scores.holdout.primary() - parent_scores.holdout.primary(),
            significance,
            selection_p,
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
