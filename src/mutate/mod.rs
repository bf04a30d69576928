//! The SMD algorithm: pure compute (no I/O, no ONNX Runtime). Recipes, subspaces, keyed RNG.
//!
//! A [`Config`] (mode, k, σ, scale rule, antithetic, seed, static/dynamic subspaces) and the
//! list of mutable tensors ([`TensorSpec`]: key, element count, std) give a [`Plan`] for one
//! generation. `plan.child(i)` returns child `i`'s sparse [`Delta`]s; [`apply`] adds them to the
//! parent's values. A [`Recipe`] records everything needed to regenerate a child exactly.
//!
//! Randomness: Philox4x32-10 keyed per (seed, purpose, generation, tensor key) via BLAKE3
//! (see `keys`); element `j`'s noise is a function of `j` alone, so any child is computed
//! without the others, in work proportional to what it changes, bit-identically on any
//! machine and thread count.

mod apply;
mod config;
mod keys;
mod perm;
mod philox;
mod plan;
mod radix;
mod recipe;
mod simd;

pub use apply::{apply, apply_all, tensor_std};
pub use config::{Config, MAX_CHILDREN, Mode, ScaleRule, Subspaces};
pub use plan::{Delta, Plan, TensorSpec};
pub use recipe::{Member, ModeName, RECIPE_FORMAT, Recipe};

/// Invalid mutation settings, tensors, deltas or recipes. Messages are one line and name the
/// argument or tensor.
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    /// An argument is out of range.
    #[error("{arg}: {msg}")]
    Invalid {
        /// The argument, e.g. `--children`.
        arg: &'static str,
        /// What is wrong with it.
        msg: String,
    },
    /// A mutable tensor cannot be planned (too large, duplicate key, undefined scale).
    #[error("tensor '{key}': {msg}")]
    Tensor {
        /// The tensor's key.
        key: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A delta does not fit the values it is applied to.
    #[error("delta for tensor #{tensor}: {msg}")]
    Delta {
        /// The delta's tensor index (into the plan's tensor list).
        tensor: usize,
        /// What is wrong.
        msg: String,
    },
    /// A recipe cannot be read or does not describe a valid child.
    #[error("recipe: {0}")]
    Recipe(String),
}

pub(crate) fn invalid(arg: &'static str, msg: impl Into<String>) -> MutateError {
    MutateError::Invalid {
        arg,
        msg: msg.into(),
    }
}

#[cfg(test)]
mod tests;
