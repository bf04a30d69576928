//! Lineages: the recipes from an original model to a model smd-onnx made, and the exact
//! rebuilding of that model from them.
//!
//! A lineage is a list of [`Recipe`]s, one per generation that changed the model (`mutate`
//! writes lineages of one recipe; `evolve` one per generation that kept a candidate). Each
//! recipe's plan is computed over the mutable tensors of the model it was applied to (keys,
//! sizes, and the stds of *that* model's values), so a lineage is replayed in order, the stds
//! recomputed after each step, exactly as `evolve` computed them. Every model in a lineage is
//! identified by a hash chain: the original model's [`Model::content_hash`], then
//! `blake3(previous hash + "\n" + recipe JSON)` per recipe; each recipe records the hash of the
//! model it was applied to (`parent`), which [`rebuild`] checks step by step.
//!
//! Lineages are stored in a model's `metadata_props` (`smd_onnx.recipe`: a JSON list of
//! recipes; `smd_onnx.parent_hash`: the original model's hash; see [`recipe_meta`]) and in an
//! evolve `report.json` (`best.lineage`, and each child's and merged candidate's `recipe`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mutate::{self, Delta, MutateError, Recipe, Selection, TensorSpec};
use crate::onnx::Model;
use crate::{Error, TensorData};

/// Metadata key of the lineage: a JSON list of recipes.
pub const RECIPE_KEY: &str = "smd_onnx.recipe";
/// Metadata key of the original model's content hash.
pub const PARENT_HASH_KEY: &str = "smd_onnx.parent_hash";
/// Metadata key that marks an ensemble (several models in one graph: no single lineage).
pub const ENSEMBLE_KEY: &str = "smd_onnx.ensemble";

/// Errors from reading or replaying a lineage. One line each, naming the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    /// The file holding a lineage (a model's metadata, a report) cannot be used.
    #[error("{}: {what}", path.display())]
    Source {
        /// The model or report.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The first recipe was not made from this model.
    #[error(
        "{}: not the original model of this lineage: recipe 1 of {steps} ({member}) was made \
         from the model with hash {expected}, this model's hash is {found}",
        path.display()
    )]
    WrongOriginal {
        /// The model given as the original.
        path: PathBuf,
        /// Number of recipes in the lineage.
        steps: usize,
        /// Which candidate the first recipe describes, e.g. `generation 0, child 3`.
        member: String,
        /// The hash the recipe records.
        expected: String,
        /// The model's content hash.
        found: String,
    },
    /// A recipe after the first does not descend from the model the recipes before it give.
    #[error(
        "lineage recipe {step} of {steps} ({member}) was made from the model with hash \
         {expected}, but the recipes before it give {found}: the lineage is not one smd-onnx wrote"
    )]
    Broken {
        /// 1-based position of the recipe.
        step: usize,
        /// Number of recipes in the lineage.
        steps: usize,
        /// Which candidate the recipe describes.
        member: String,
        /// The hash the recipe records.
        expected: String,
        /// The hash of the lineage before it.
        found: String,
    },
    /// A recipe cannot be applied (its selection or tensor list does not fit the model).
    #[error("lineage recipe {step} of {steps} ({member}): {what}")]
    Step {
        /// 1-based position of the recipe.
        step: usize,
        /// Number of recipes in the lineage.
        steps: usize,
        /// Which candidate the recipe describes.
        member: String,
        /// What is wrong.
        what: String,
    },
}

/// `generation G, child I` or `generation G, merged children [..]`, for messages.
fn member_text(r: &Recipe) -> String {
    match &r.member {
        mutate::Member::Child(i) => format!("generation {}, child {i}", r.generation),
        mutate::Member::Merged(l) => format!("generation {}, merged children {l:?}", r.generation),
        mutate::Member::Stretched { children, times } => format!(
            "generation {}, merged children {children:?} taken {times} times",
            r.generation
        ),
    }
}

/// The hash of the model made by applying `recipe` to the model with hash `parent`.
pub fn descendant_hash(parent: &str, recipe: &Recipe) -> Result<String, MutateError> {
    // Identified by its parent's hash and the recipe that made it: cheap, and as unique as the
    // content (regeneration is exact).
    let json = recipe.to_json()?;
    Ok(blake3::hash(format!("{parent}\n{json}").as_bytes())
        .to_hex()
        .to_string())
}

/// The hash of the model at the end of `recipes`, starting from the model with hash
/// `original`. The recipes' `parent` fields are not checked (`rebuild` checks them).
pub fn lineage_hash(original: &str, recipes: &[Recipe]) -> Result<String, MutateError> {
    recipes
        .iter()
        .try_fold(original.to_string(), |h, r| descendant_hash(&h, r))
}

/// Checks that every recipe after the first was made from the model the ones before it give,
/// and that the first was made from `original` when it is given. Returns the final hash.
fn check_chain(recipes: &[Recipe], original: &str) -> Result<String, LineageError> {
    let steps = recipes.len();
    let mut hash = original.to_string();
    for (i, r) in recipes.iter().enumerate() {
        if r.parent != hash {
            return Err(LineageError::Broken {
                step: i + 1,
                steps,
                member: member_text(r),
                expected: r.parent.clone(),
                found: hash,
            });
        }
        hash = descendant_hash(&hash, r).map_err(|e| LineageError::Step {
            step: i + 1,
            steps,
            member: member_text(r),
            what: e.to_string(),
        })?;
    }
    Ok(hash)
}

/// Metadata entries that record how a model was made: its lineage ([`RECIPE_KEY`]) and the
/// original model's hash ([`PARENT_HASH_KEY`]).
pub fn recipe_meta(recipes: &[Recipe], parent_hash: &str) -> Result<Vec<(String, String)>, Error> {
    let list: Vec<serde_json::Value> = recipes
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    Ok(vec![
        (PARENT_HASH_KEY.to_string(), parent_hash.to_string()),
        (
            RECIPE_KEY.to_string(),
            serde_json::to_string(&list).map_err(|e| MutateError::Recipe(e.to_string()))?,
        ),
    ])
}

/// The mutable tensors of a model in a lineage (the current parent, for `evolve`), as the
/// planner and the writers see them.
#[derive(Clone)]
pub(crate) struct Lineage {
    /// Model tensor index of each mutable tensor.
    pub tensors: Vec<usize>,
    /// This model's values.
    pub values: Vec<TensorData>,
    /// Which tensors differ from the model file.
    pub changed: Vec<bool>,
    /// Content hash identifying this model (see the module documentation).
    pub hash: String,
    /// Recipes from the original model to this one.
    pub recipes: Vec<Recipe>,
}

impl Lineage {
    /// The lineage of the original model: its mutable tensors and their values, unchanged.
    pub fn original(tensors: Vec<usize>, values: Vec<TensorData>, hash: String) -> Lineage {
        Lineage {
            changed: vec![false; tensors.len()],
            tensors,
            values,
            hash,
            recipes: Vec::new(),
        }
    }

    /// The planner's view of this model's mutable tensors (keys, sizes, stds).
    pub fn specs(&self, model: &Model) -> Vec<TensorSpec> {
        self.tensors
            .iter()
            .zip(&self.values)
            .map(|(&t, v)| TensorSpec {
                key: model.tensors()[t].key().to_string(),
                elements: v.len(),
                std: mutate::tensor_std(v),
            })
            .collect()
    }

    /// Values of the tensors a candidate with `deltas` has that differ from the model file.
    pub fn changes(&self, deltas: &[Delta]) -> Result<Vec<(usize, TensorData)>, Error> {
        let mut touched = self.changed.clone();
        for d in deltas {
            if let Some(t) = touched.get_mut(d.tensor) {
                *t = true;
            }
        }
        let mut out = Vec::new();
        for (i, &t) in touched.iter().enumerate() {
            if !t {
                continue;
            }
            let mut v = self.values[i].clone();
            for d in deltas.iter().filter(|d| d.tensor == i) {
                mutate::apply(&mut v, d)?;
            }
            out.push((self.tensors[i], v));
        }
        Ok(out)
    }

    /// The lineage of a candidate made from this one with `deltas` and `recipe`.
    pub fn descend(&self, deltas: &[Delta], recipe: Recipe) -> Result<Lineage, Error> {
        let mut next = Lineage {
            tensors: self.tensors.clone(),
            values: self.values.clone(),
            changed: self.changed.clone(),
            hash: descendant_hash(&self.hash, &recipe)?,
            recipes: self.recipes.clone(),
        };
        for d in deltas {
            mutate::apply(&mut next.values[d.tensor], d)?;
            next.changed[d.tensor] = true;
        }
        next.recipes.push(recipe);
        Ok(next)
    }
}

/// A model rebuilt from its lineage: what [`crate::onnx::write_child_with_metadata`] needs.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The tensors that differ from the original model: model tensor index
    /// ([`Model::tensors`]) and values, in index order.
    pub changes: Vec<(usize, TensorData)>,
    /// The rebuilt model's lineage hash (see the module documentation).
    pub hash: String,
}

/// Rebuilds the model at the end of `recipes` from `original`, bit for bit: the mutable
/// tensors are selected with the first recipe's `selection` (see [`Selection::readings`]),
/// then each recipe is planned over the current values
/// (stds recomputed after each step), checked against its tensor-list digest and applied.
///
/// Errors: `original` is not the model the lineage starts from ([`LineageError::WrongOriginal`]),
/// a recipe does not descend from the previous one ([`LineageError::Broken`]), or its selection
/// or tensor list does not fit ([`LineageError::Step`]).
pub fn rebuild(original: &Model, recipes: &[Recipe]) -> Result<Rebuilt, Error> {
    let hash = original.content_hash()?;
    let steps = recipes.len();
    let Some(first) = recipes.first() else {
        return Ok(Rebuilt {
            changes: Vec::new(),
            hash,
        });
    };
    if first.parent != hash {
        return Err(LineageError::WrongOriginal {
            path: original.path().to_path_buf(),
            steps,
            member: member_text(first),
            expected: first.parent.clone(),
            found: hash,
        }
        .into());
    }
    // Checked before any work: a broken chain is cheap to detect.
    check_chain(recipes, &hash)?;
    let step_err = |i: usize, what: String| LineageError::Step {
        step: i + 1,
        steps,
        member: member_text(&recipes[i]),
        what,
    };
    // `evolve` selects once and keeps the tensor list for the whole run.
    if let Some(i) = recipes.iter().position(|r| r.selection != first.selection) {
        return Err(step_err(
            i,
            format!(
                "selection {:?} differs from the first recipe's {:?}",
                recipes[i].selection, first.selection
            ),
        )
        .into());
    }
    // The selection text does not escape its patterns: when it reads several ways, the
    // recipe's tensor-list digest picks the right one (else the first fails the check below).
    let readings = Selection::readings(&first.selection).map_err(|e| step_err(0, e.to_string()))?;
    let mut lineage = None;
    for sel in &readings {
        let tensors = sel.mutable_tensors(original);
        let values = tensors
            .iter()
            .map(|&t| original.read_values(&original.tensors()[t]))
            .collect::<Result<Vec<_>, _>>()?;
        let l = Lineage::original(tensors, values, hash.clone());
        let fits =
            readings.len() == 1 || mutate::tensor_list_digest(&l.specs(original)) == first.tensors;
        if fits || lineage.is_none() {
            lineage = Some(l);
        }
        if fits {
            break;
        }
    }
    let mut lineage = lineage.ok_or_else(|| step_err(0, "no selection".into()))?;
    for (i, r) in recipes.iter().enumerate() {
        let deltas = r
            .deltas(&lineage.specs(original))
            .map_err(|e| step_err(i, e.to_string()))?;
        lineage = lineage.descend(&deltas, r.clone())?;
    }
    Ok(Rebuilt {
        changes: lineage.changes(&[])?,
        hash: lineage.hash,
    })
}

/// Rebuilds the model at the end of `recipes` from `original` ([`rebuild`]) and writes it to
/// `out` as `evolve` writes `best.onnx` and `mutate` its children: the original's bytes with
/// the changed payloads and the lineage in `metadata_props` ([`recipe_meta`]). Atomic; the
/// original's files are never written. Returns the paths written, the model first.
pub fn write_rebuilt(
    original: &Model,
    recipes: &[Recipe],
    out: &Path,
) -> Result<Vec<PathBuf>, Error> {
    let rebuilt = rebuild(original, recipes)?;
    let meta = recipe_meta(recipes, &original.content_hash()?)?;
    Ok(crate::onnx::write_child_with_metadata(
        original,
        &rebuilt.changes,
        &meta,
        out,
    )?)
}

/// A lineage as stored in a file: the original model's hash and the recipes from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Content hash of the original model.
    pub original_hash: String,
    /// Recipes from the original model to the stored one.
    pub recipes: Vec<Recipe>,
}

/// The lineage in a model's `metadata_props` (a model `evolve`, `mutate` or `replay` wrote).
/// Refuses an ensemble (several models in one graph) and a model without a lineage.
pub fn from_model(model: &Model) -> Result<Stored, Error> {
    let bad = |what: String| LineageError::Source {
        path: model.path().to_path_buf(),
        what,
    };
    if model.metadata(ENSEMBLE_KEY).is_some() {
        return Err(bad(
            "is an ensemble (several models in one graph), not one model with a lineage: \
             rebuild its members from report.json (--child G:I)"
                .into(),
        )
        .into());
    }
    let (Some(list), Some(original_hash)) =
        (model.metadata(RECIPE_KEY), model.metadata(PARENT_HASH_KEY))
    else {
        return Err(bad(format!(
            "has no lineage in its metadata ({RECIPE_KEY} and {PARENT_HASH_KEY}): not a model \
             smd-onnx made"
        ))
        .into());
    };
    let recipes = parse_recipes(&list).map_err(|e| bad(format!("metadata {RECIPE_KEY}: {e}")))?;
    let stored = Stored {
        original_hash,
        recipes,
    };
    check_stored(&stored).map_err(|what| bad(format!("metadata: {what}")))?;
    Ok(stored)
}

/// Parses a JSON list of recipes and checks each (format, settings, member).
fn parse_recipes(json: &str) -> Result<Vec<Recipe>, String> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("not a JSON list of recipes: {e}"))?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            Recipe::from_json(&v.to_string()).map_err(|e| format!("recipe {}: {e}", i + 1))
        })
        .collect()
}

/// The first recipe must be made from the original; the chain must hold.
fn check_stored(s: &Stored) -> Result<(), String> {
    if let Some(first) = s.recipes.first()
        && first.parent != s.original_hash
    {
        return Err(format!(
            "the first recipe was made from the model with hash {}, but the original's hash is \
             recorded as {}",
            first.parent, s.original_hash
        ));
    }
    check_chain(&s.recipes, &s.original_hash)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Which candidate of an evolve report to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pick {
    /// The best model (`best.lineage`): what `best.onnx` holds.
    #[default]
    Best,
    /// Child `index` of generation `generation`.
    Child {
        /// The generation (from 0).
        generation: u32,
        /// The child's index.
        index: u32,
    },
    /// The merged candidate of generation `generation`.
    Merged {
        /// The generation (from 0).
        generation: u32,
    },
}

/// The parts of `report.json` a lineage is read from.
#[derive(Deserialize)]
struct ReportFile {
    parent_hash: String,
    generations: Vec<GenerationFile>,
    children: Vec<ChildFile>,
    best: Option<BestFile>,
}

#[derive(Deserialize)]
struct GenerationFile {
    generation: u32,
    parent_hash: String,
    merged: Option<MergedFile>,
}

#[derive(Deserialize)]
struct MergedFile {
    recipe: Recipe,
}

#[derive(Deserialize)]
struct ChildFile {
    generation: u32,
    index: u32,
    recipe: Recipe,
}

#[derive(Deserialize)]
struct BestFile {
    lineage: Vec<Recipe>,
}

/// The lineage of candidate `pick` in an evolve report (the text of `report.json`; `path` names
/// it in messages). A child's or merged candidate's lineage is its generation's parent's (the
/// recipes of `best.lineage` from earlier generations, checked against the generation's
/// recorded `parent_hash`) followed by its own recipe.
pub fn from_report(json: &[u8], path: &Path, pick: Pick) -> Result<Stored, Error> {
    let bad = |what: String| LineageError::Source {
        path: path.to_path_buf(),
        what,
    };
    let report: ReportFile =
        serde_json::from_slice(json).map_err(|e| bad(format!("not an evolve report.json: {e}")))?;
    let best = report.best.map(|b| b.lineage).unwrap_or_default();
    let recipes = match pick {
        Pick::Best => {
            if best.is_empty() {
                return Err(bad(
                    "the run kept no candidate (`best` is null): there is no best model; pick \
                     one with --child G:I or --merged G"
                        .into(),
                )
                .into());
            }
            best
        }
        Pick::Child { generation, .. } | Pick::Merged { generation } => {
            let Some(g) = report
                .generations
                .iter()
                .find(|g| g.generation == generation)
            else {
                return Err(bad(format!(
                    "no generation {generation} (the report has {})",
                    report.generations.len()
                ))
                .into());
            };
            let own = match pick {
                Pick::Child { index, .. } => report
                    .children
                    .iter()
                    .find(|c| c.generation == generation && c.index == index)
                    .map(|c| c.recipe.clone())
                    .ok_or_else(|| bad(format!("no child {index} in generation {generation}")))?,
                _ => g.merged.as_ref().map(|m| m.recipe.clone()).ok_or_else(|| {
                    bad(format!(
                        "generation {generation} has no merged candidate (fewer than two \
                         children beat its parent)"
                    ))
                })?,
            };
            // The parent of generation G is the best model's lineage up to generation G: a
            // run's lineage only ever grows by one recipe per generation that kept a candidate.
            let mut recipes: Vec<Recipe> = best
                .into_iter()
                .filter(|r| r.generation < generation)
                .collect();
            let parent = lineage_hash(&report.parent_hash, &recipes)
                .map_err(|e| bad(format!("best.lineage: {e}")))?;
            if parent != g.parent_hash {
                return Err(bad(format!(
                    "best.lineage before generation {generation} gives the parent hash {parent}, \
                     but the generation records {}",
                    g.parent_hash
                ))
                .into());
            }
            recipes.push(own);
            recipes
        }
    };
    let stored = Stored {
        original_hash: report.parent_hash,
        recipes,
    };
    check_stored(&stored).map_err(bad)?;
    Ok(stored)
}

/// True when `path` holds JSON (an evolve report) rather than an ONNX model: its first
/// non-blank byte is `{`, which no valid ONNX model starts with.
pub fn is_report(path: &Path) -> Result<bool, Error> {
    use std::io::Read;
    let io = |source| crate::onnx::ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 64];
    let n = f.read(&mut head).map_err(io)?;
    Ok(head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::{Config, Member, Plan};

    fn recipe(parent: &str, generation: u32, member: Member) -> Recipe {
        let specs = vec![TensorSpec {
            key: "w".into(),
            elements: 10,
            std: 1.0,
        }];
        let plan = Plan::new(&Config::default(), &specs, generation).unwrap();
        Recipe::new(&plan, parent, "default", member)
    }

    #[test]
    fn chain_hashes_and_checks() {
        let a = recipe("h0", 0, Member::Child(1));
        let h1 = descendant_hash("h0", &a).unwrap();
        let b = recipe(&h1, 2, Member::Merged(vec![0, 3]));
        let h2 = lineage_hash("h0", &[a.clone(), b.clone()]).unwrap();
        assert_eq!(h2, descendant_hash(&h1, &b).unwrap());
        assert_eq!(check_chain(&[a.clone(), b.clone()], "h0").unwrap(), h2);
        let e = check_chain(&[a.clone(), a.clone()], "h0").unwrap_err();
        assert!(
            matches!(
                e,
                LineageError::Broken {
                    step: 2,
                    steps: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("generation 0, child 1"), "{e}");
        // The metadata round trip keeps the exact recipes.
        let meta = recipe_meta(&[a.clone(), b.clone()], "h0").unwrap();
        assert_eq!(meta[0], (PARENT_HASH_KEY.to_string(), "h0".to_string()));
        assert_eq!(parse_recipes(&meta[1].1).unwrap(), vec![a, b]);
        for bad in ["", "{}", "[1]", r#"[{"format":1}]"#] {
            let e = parse_recipes(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn report_picks_lineages_and_checks_them() {
        let a = recipe("h0", 0, Member::Child(1));
        let h1 = descendant_hash("h0", &a).unwrap();
        let c = recipe(&h1, 1, Member::Child(2));
        let m = recipe(&h1, 1, Member::Merged(vec![0, 2]));
        let h2 = descendant_hash(&h1, &m).unwrap();
        let d = recipe(&h2, 2, Member::Child(0));
        let json = serde_json::json!({
            "parent_hash": "h0",
            "generations": [
                {"generation": 0, "parent_hash": "h0", "merged": null},
                {"generation": 1, "parent_hash": h1, "merged": {"recipe": m}},
                {"generation": 2, "parent_hash": h2, "merged": null},
            ],
            "children": [
                {"generation": 0, "index": 1, "recipe": a},
                {"generation": 1, "index": 2, "recipe": c},
                {"generation": 2, "index": 0, "recipe": d},
            ],
            "best": {"lineage": [a, m]},
        });
        let text = json.to_string();
        let p = Path::new("r.json");
        let get = |pick| from_report(text.as_bytes(), p, pick);
        assert_eq!(get(Pick::Best).unwrap().recipes, vec![a.clone(), m.clone()]);
        let child = |generation, index| Pick::Child { generation, index };
        assert_eq!(get(child(0, 1)).unwrap().recipes, vec![a.clone()]);
        assert_eq!(get(child(1, 2)).unwrap().recipes, vec![a.clone(), c]);
        assert_eq!(
            get(Pick::Merged { generation: 1 }).unwrap().recipes,
            vec![a.clone(), m.clone()]
        );
        assert_eq!(get(child(2, 0)).unwrap().recipes, vec![a, m, d]);
        for (pick, needle) in [
            (child(1, 0), "no child 0 in generation 1"),
            (child(5, 0), "no generation 5"),
            (Pick::Merged { generation: 0 }, "no merged candidate"),
        ] {
            let e = get(pick).unwrap_err().to_string();
            assert!(e.starts_with("r.json: ") && e.contains(needle), "{e}");
        }
        // A generation whose recorded parent is not the best lineage's prefix.
        let forged = text.replace(&h2, "ff");
        let e = from_report(forged.as_bytes(), p, child(2, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("records ff"), "{e}");
        let e = from_report(b"[]", p, Pick::Best).unwrap_err().to_string();
        assert!(e.starts_with("r.json: not an evolve report.json"), "{e}");
    }
}
