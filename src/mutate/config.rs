//! Mutation settings and their validation.

use super::{MutateError, invalid};
use serde::{Deserialize, Serialize};

/// The largest number of children (subspace maps are stored as `u16`).
pub const MAX_CHILDREN: u32 = 65_535;

/// The largest noise scale (σ, or σ·std): normals are bounded by 5.77, so noise stays finite
/// in float32.
pub(crate) const MAX_SCALE: f64 = f32::MAX as f64 / 8.0;

/// How the dense mutation ε is decomposed into children.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Mode {
    /// Every mutable weight is assigned to exactly one of the subspaces (balanced within each
    /// tensor); the children's mutations are disjoint and sum to ε.
    #[default]
    Partition,
    /// Each subspace is its own random fraction (0, 1] of each tensor's elements
    /// (exactly `round(fraction · n)`); subspaces may overlap.
    Density(f64),
    /// Whole tensors are assigned to subspaces (balanced by tensor count).
    Layer,
}

/// What σ is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRule {
    /// Noise scale = σ × the tensor's standard deviation (see [`super::tensor_std`]).
    #[default]
    Relative,
    /// Noise scale = σ for every tensor.
    Absolute,
}

/// Whether the subspace assignment is redrawn each generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subspaces {
    /// A new assignment every generation.
    #[default]
    Dynamic,
    /// The same assignment in every generation (ε still changes).
    Static,
}

/// Mutation settings. Call [`Config::validate`] (done by `Plan::new`) before use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Decomposition mode.
    pub mode: Mode,
    /// Number of children k.
    pub children: u32,
    /// Noise scale σ (0 gives children identical to the parent).
    pub sigma: f64,
    /// What σ is relative to.
    pub scale: ScaleRule,
    /// Children in pairs (2m, 2m+1) on subspace m with +ε and −ε.
    pub antithetic: bool,
    /// The run's seed.
    pub seed: u64,
    /// Static or dynamic subspaces across generations.
    pub subspaces: Subspaces,
}

impl Default for Config {
    /// Partition, 16 children, σ = 0.1 relative, no antithetic, seed 0, dynamic subspaces.
    fn default() -> Self {
        Self {
            mode: Mode::Partition,
            children: 16,
            sigma: 0.1,
            scale: ScaleRule::Relative,
            antithetic: false,
            seed: 0,
            subspaces: Subspaces::Dynamic,
        }
    }
}

impl Config {
    /// Checks every argument; the error names it (`--children`, `--sigma`, `--density`,
    /// `--antithetic`). Layer mode's bound k ≤ number of tensors is checked by `Plan::new`.
    pub fn validate(&self) -> Result<(), MutateError> {
        if self.children == 0 || self.children > MAX_CHILDREN {
            return Err(invalid(
                "--children",
                format!(
                    "must be between 1 and {MAX_CHILDREN}, got {}",
                    self.children
                ),
            ));
        }
        if !self.sigma.is_finite() || self.sigma < 0.0 {
            return Err(invalid(
                "--sigma",
                format!("must be a finite number ≥ 0, got {}", self.sigma),
            ));
        }
        if self.scale == ScaleRule::Absolute && self.sigma > MAX_SCALE {
            return Err(invalid(
                "--sigma",
                format!("{} does not fit in float32 noise", self.sigma),
            ));
        }
        if let Mode::Density(p) = self.mode
            && !(p.is_finite() && p > 0.0 && p <= 1.0)
        {
            return Err(invalid(
                "--density",
                format!("must be a fraction in (0, 1], got {p}"),
            ));
        }
        if self.antithetic && !self.children.is_multiple_of(2) {
            return Err(invalid(
                "--antithetic",
                format!(
                    "needs an even number of children (pairs +ε/−ε), got {}",
                    self.children
                ),
            ));
        }
        Ok(())
    }

    /// Number of subspaces: k, or k/2 with antithetic pairs.
    pub fn subspaces(&self) -> u32 {
        if self.antithetic {
            self.children / 2
        } else {
            self.children
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: Config) -> String {
        c.validate()
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn validation_names_the_argument() {
        let d = Config::default();
        assert!(d.validate().is_ok());
        assert!(err(Config { children: 0, ..d }).starts_with("--children:"));
        assert!(
            err(Config {
                children: 65_536,
                ..d
            })
            .starts_with("--children:")
        );
        assert!(
            Config {
                children: 65_535,
                ..d
            }
            .validate()
            .is_ok()
        );
        assert!(
            err(Config {
                sigma: f64::NAN,
                ..d
            })
            .starts_with("--sigma:")
        );
        assert!(err(Config { sigma: -0.1, ..d }).starts_with("--sigma:"));
        assert!(
            err(Config {
                sigma: f64::INFINITY,
                ..d
            })
            .starts_with("--sigma:")
        );
        assert!(Config { sigma: 0.0, ..d }.validate().is_ok());
        let abs = Config {
            sigma: 1e300,
            scale: ScaleRule::Absolute,
            ..d
        };
        assert!(err(abs).starts_with("--sigma:"));
        for p in [0.0, -0.5, 1.5, f64::NAN] {
            let c = Config {
                mode: Mode::Density(p),
                ..d
            };
            assert!(err(c).starts_with("--density:"), "{p}");
        }
        assert!(
            Config {
                mode: Mode::Density(1.0),
                ..d
            }
            .validate()
            .is_ok()
        );
        let odd = Config {
            antithetic: true,
            children: 5,
            ..d
        };
        assert!(err(odd).starts_with("--antithetic:"));
        for e in [err(Config { children: 0, ..d }), err(odd)] {
            assert!(!e.contains('\n'));
        }
    }
}
