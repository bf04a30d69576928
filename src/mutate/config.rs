//! Mutation settings and their validation.

use std::fmt;
use std::str::FromStr;

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

impl Mode {
    /// The mode's name (its parameters left out).
    pub fn kind(self) -> ModeName {
        match self {
            Mode::Partition => ModeName::Partition,
            Mode::Density(_) => ModeName::Density,
            Mode::Layer => ModeName::Layer,
        }
    }

    /// The density fraction (density mode only).
    pub fn density(self) -> Option<f64> {
        match self {
            Mode::Density(p) => Some(p),
            _ => None,
        }
    }

    /// The mode named `name`, with `density` present exactly when the mode takes one (as in a
    /// recipe); the error says which way it is wrong.
    pub fn from_parts(name: ModeName, density: Option<f64>) -> Result<Mode, &'static str> {
        // NaN only stands in for the missing fraction until the check below rejects it.
        let mode = name.with_density(density.unwrap_or(f64::NAN));
        match (mode.density(), density) {
            (Some(_), None) => Err("density mode without a density"),
            (None, Some(_)) => Err("a density is only valid in density mode"),
            _ => Ok(mode),
        }
    }
}

/// A decomposition mode without its parameters: the one list of modes. Recipes, report.json
/// and `--mode` all spell a mode as [`ModeName::name`] (serde and [`FromStr`] go through it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ModeName {
    /// [`Mode::Partition`].
    #[default]
    Partition,
    /// [`Mode::Density`].
    Density,
    /// [`Mode::Layer`].
    Layer,
}

impl ModeName {
    /// Every mode, in the order `--help` lists them (the order of [`ModeName::NAMES`]).
    pub const ALL: [ModeName; 3] = [ModeName::Partition, ModeName::Density, ModeName::Layer];

    /// Every mode's name, in the order of [`ModeName::ALL`].
    pub const NAMES: [&'static str; 3] = ["partition", "density", "layer"];

    /// The mode's name in recipes, report.json and on the command line.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// One line for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            ModeName::Partition => {
                "Disjoint subspaces: the children's mutations sum to one dense mutation"
            }
            ModeName::Density => {
                "Each child mutates its own random fraction (--density) of each tensor"
            }
            ModeName::Layer => "Whole tensors are assigned to children",
        }
    }

    /// The mode; `density` is density mode's fraction, which the other modes ignore.
    pub fn with_density(self, density: f64) -> Mode {
        match self {
            ModeName::Partition => Mode::Partition,
            ModeName::Density => Mode::Density(density),
            ModeName::Layer => Mode::Layer,
        }
    }
}

/// A name that is not one of [`ModeName::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}, expected one of: {names}", names = ModeName::NAMES.join(", "))]
pub struct UnknownMode(pub String);

impl FromStr for ModeName {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

impl fmt::Display for ModeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ModeName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ModeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ModeName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mode name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ModeName, E> {
                // The same message as a derived enum's.
                v.parse()
                    .map_err(|_| E::unknown_variant(v, &ModeName::NAMES))
            }
        }
        d.deserialize_str(Visitor)
    }
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

    #[test]
    fn mode_names_are_one_table() {
        for (i, m) in ModeName::ALL.into_iter().enumerate() {
            assert_eq!(m as usize, i, "ALL is in declaration order");
            assert_eq!(m.name().parse::<ModeName>(), Ok(m));
            assert_eq!(m.with_density(0.5).kind(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
            assert_eq!(serde_json::from_str::<ModeName>(&json).unwrap(), m);
        }
        assert_eq!(ModeName::default(), Mode::default().kind());
        let e = serde_json::from_str::<ModeName>("\"dense\"").unwrap_err();
        assert!(
            e.to_string().starts_with(
                "unknown variant `dense`, expected one of `partition`, `density`, `layer`"
            ),
            "{e}"
        );
        assert!("Partition".parse::<ModeName>().is_err());
        assert_eq!(
            Mode::from_parts(ModeName::Density, Some(0.3)),
            Ok(Mode::Density(0.3))
        );
        assert_eq!(Mode::from_parts(ModeName::Layer, None), Ok(Mode::Layer));
        assert!(Mode::from_parts(ModeName::Density, None).is_err());
        assert!(Mode::from_parts(ModeName::Partition, Some(0.3)).is_err());
    }

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
