//! Recipes: everything needed to regenerate a child's changes exactly.

use super::MutateError;
use super::config::{Config, Mode, ModeName, ScaleRule, Subspaces};
use super::plan::{Delta, Plan, TensorSpec};
use serde::{Deserialize, Serialize};

/// The most times a stretched candidate takes the merged step (a bound on hostile recipes).
const MAX_TIMES: u32 = 16;

/// The recipe format this build writes and reads.
pub const RECIPE_FORMAT: u32 = 1;

/// Which candidate of a generation a recipe describes. JSON: `{"child": 3}`,
/// `{"merged": [1, 4]}` or `{"stretched": {"children": [1, 4], "times": 2}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Member {
    /// One child.
    Child(u32),
    /// The merged candidate of these children (see `Plan::merged`).
    Merged(Vec<u32>),
    /// The merged candidate's step taken `times` times (a line search along the merged
    /// direction: `Plan::merged` with every value multiplied by `times`).
    Stretched {
        /// The children merged.
        children: Vec<u32>,
        /// How many times the merged step is taken.
        times: u32,
    },
}

/// A child's full description. With the parent's mutable tensor list (keys, sizes, stds, in
/// the same order: the one `selection` produces on the model with hash `parent`),
/// [`Recipe::deltas`] regenerates its changes bit for bit; the list is checked against the
/// recorded digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Recipe format version ([`RECIPE_FORMAT`]).
    pub format: u32,
    /// Content hash of the parent model.
    pub parent: String,
    /// The run's seed.
    pub seed: u64,
    /// Decomposition mode.
    pub mode: ModeName,
    /// Density fraction (density mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
    /// Number of children k.
    pub children: u32,
    /// σ.
    pub sigma: f64,
    /// What σ is relative to.
    pub scale: ScaleRule,
    /// Antithetic pairs.
    pub antithetic: bool,
    /// Static or dynamic subspaces.
    pub subspaces: Subspaces,
    /// How the mutable tensors were selected (e.g. the include/exclude patterns).
    pub selection: String,
    /// Generation number.
    pub generation: u32,
    /// Digest of the mutable tensor list ([`super::tensor_list_digest`]).
    pub tensors: String,
    /// The child, or the merged candidate.
    pub member: Member,
}

impl Recipe {
    /// The recipe of `member` of `plan` (its settings, generation and tensor list).
    pub fn new(
        plan: &Plan,
        parent: impl Into<String>,
        selection: impl Into<String>,
        member: Member,
    ) -> Self {
        let config = plan.config();
        let generation = plan.generation();
        Self {
            format: RECIPE_FORMAT,
            parent: parent.into(),
            seed: config.seed,
            mode: config.mode.kind(),
            density: config.mode.density(),
            children: config.children,
            sigma: config.sigma,
            scale: config.scale,
            antithetic: config.antithetic,
            subspaces: config.subspaces,
            selection: selection.into(),
            generation,
            tensors: plan.tensor_digest().to_string(),
            member,
        }
    }

    /// The plan of this recipe's generation over `tensors`, which must be the list it was made
    /// from (same digest).
    pub fn plan(&self, tensors: &[TensorSpec]) -> Result<Plan, MutateError> {
        let config = self.config()?;
        let plan = Plan::new(&config, tensors, self.generation)?;
        if plan.tensor_digest() != self.tensors {
            return Err(MutateError::Recipe(format!(
                "the mutable tensor list ({} tensors, digest {}) is not the one this recipe was \
                 made from (digest {}; selection: {})",
                tensors.len(),
                plan.tensor_digest(),
                self.tensors,
                self.selection
            )));
        }
        Ok(plan)
    }

    /// Regenerates this recipe's changes from the parent's mutable tensor list.
    pub fn deltas(&self, tensors: &[TensorSpec]) -> Result<Vec<Delta>, MutateError> {
        self.plan(tensors)?.deltas(&self.member)
    }

    /// The settings, validated, and the member checked against k.
    pub fn config(&self) -> Result<Config, MutateError> {
        let bad = |m: String| MutateError::Recipe(m);
        if self.format != RECIPE_FORMAT {
            return Err(bad(format!(
                "format {} is not supported (this build reads format {RECIPE_FORMAT})",
                self.format
            )));
        }
        let mode = Mode::from_parts(self.mode, self.density).map_err(|e| bad(e.into()))?;
        let c = Config {
            mode,
            children: self.children,
            sigma: self.sigma,
            scale: self.scale,
            antithetic: self.antithetic,
            seed: self.seed,
            subspaces: self.subspaces,
        };
        c.validate().map_err(|e| bad(e.to_string()))?;
        let members: &[u32] = match &self.member {
            Member::Child(i) => std::slice::from_ref(i),
            Member::Merged(l) => l,
            Member::Stretched { children, times } => {
                if !(1..=MAX_TIMES).contains(times) {
                    return Err(bad(format!(
                        "a stretched step is taken 1 to {MAX_TIMES} times, not {times}"
                    )));
                }
                children
            }
        };
        if let Some(i) = members.iter().find(|&&i| i >= self.children) {
            return Err(bad(format!(
                "child index {i} is out of range for {} children",
                self.children
            )));
        }
        Ok(c)
    }

    /// One-line JSON.
    pub fn to_json(&self) -> Result<String, MutateError> {
        serde_json::to_string(self).map_err(|e| MutateError::Recipe(e.to_string()))
    }

    /// Parses and checks a recipe (format, settings, member).
    pub fn from_json(s: &str) -> Result<Recipe, MutateError> {
        let r: Recipe = serde_json::from_str(s).map_err(|e| MutateError::Recipe(e.to_string()))?;
        r.config()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_checks() {
        let c = Config {
            mode: Mode::Density(0.3),
            children: 8,
            sigma: 0.1,
            scale: ScaleRule::Absolute,
            antithetic: true,
            seed: u64::MAX,
            subspaces: Subspaces::Static,
        };
        let specs = vec![TensorSpec {
            key: "w".into(),
            elements: 10,
            std: 1.0,
        }];
        let plan = Plan::new(&c, &specs, 4).unwrap();
        let r = Recipe::new(&plan, "abc", "default", Member::Merged(vec![1, 6]));
        let j = r.to_json().unwrap();
        assert!(!j.contains('\n'));
        let back = Recipe::from_json(&j).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.config().unwrap(), c);
        assert_eq!(back.deltas(&specs).unwrap(), plan.merged(&[1, 6]).unwrap());
        let mut other = specs.clone();
        other[0].std = 2.0;
        let e = back.deltas(&other).unwrap_err().to_string();
        assert!(e.starts_with("recipe: the mutable tensor list"), "{e}");
        let dplan = Plan::new(&Config::default(), &specs, 0).unwrap();
        let p = Recipe::new(&dplan, "h", "s", Member::Child(3));
        let pj = p.to_json().unwrap();
        assert!(pj.contains(r#""member":{"child":3}"#), "{pj}");
        assert!(!pj.contains("density"), "{pj}");

        for (from, to) in [
            (r#""format":1"#, r#""format":2"#),
            (r#""children":16"#, r#""children":0"#),
            (r#""child":3"#, r#""child":16"#),
            (r#""mode":"partition""#, r#""mode":"density""#),
            (r#""sigma":0.1"#, r#""sigma":-1"#),
            (r#""seed":0"#, r#""seed":0,"extra":1"#),
        ] {
            let e = Recipe::from_json(&pj.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("recipe: ") && !e.contains('\n'),
                "{from}: {e}"
            );
        }
        assert!(Recipe::from_json("{").is_err());
    }
}
