//! The SMD algorithm: pure compute (no I/O, no ONNX Runtime). Which tensors may change
//! ([`Selection`]), recipes, subspaces, keyed RNG.
//!
//! A [`Config`] (mode, k, σ, scale rule, antithetic, seed, static/dynamic subspaces) and the
//! list of mutable tensors ([`TensorSpec`]: key, element count, std from [`tensor_std`]) give a
//! [`Plan`] for one generation. `plan.child(i)` returns child `i`'s sparse [`Delta`]s;
//! [`apply`] adds them to the parent's values. A [`Recipe`] records everything needed to
//! regenerate a child exactly.
//!
//! # Design
//! - **Streams.** Every random stream is keyed by (seed, purpose, generation, tensor key):
//!   BLAKE3 in derive-key mode over a length-prefixed encoding (`keys`). Purposes: `eps` (the
//!   dense noise; always keyed by generation), `assign` (partition), `density/<s>` (subspace
//!   s's subset), `layer` (tensor dealing); the last three use no generation with static
//!   subspaces. Keying by the tensor's key, not its shape or position, means same-shaped
//!   tensors never share noise, and the list's order does not matter.
//! - **Noise.** Philox4x32-10 (checked against the Random123 known answers); element `j`
//!   uses block `j/4` and Box–Muller on two of its words (`philox`), so any element's ε is
//!   O(1) to compute alone. `ln`, `sin`, `cos` are our own f32 polynomials: bit-identical on
//!   every platform, unlike libm. ε = z · scale, scale = σ·std (relative) or σ (absolute),
//!   as f32.
//! - **Partition.** A keyed bijection π of `[0, n)` (Feistel network with cycle walking,
//!   `perm`); element `j` is in block ⌊((π(j)+1)·K − 1)/n⌋ of the K blocks
//!   `[⌊b·n/K⌋, ⌊(b+1)·n/K⌋)` (sizes differ by at most one), which is subspace
//!   `(block + offset) mod K` with a keyed per-tensor offset (so that small tensors' extra
//!   elements do not all land in the same child). Child `i`'s elements are π⁻¹ of one block:
//!   O(n/K) work, sorted by a radix sort.
//! - **Density.** Subspace `s` takes `π_s(0..round(P·n))` for its own keyed π_s.
//! - **Layer.** Non-empty tensors are ranked by a keyed hash of their key and dealt
//!   round-robin: subspace counts differ by at most one.
//! - **Antithetic.** K = k/2 subspaces; children 2m and 2m+1 own subspace m with +ε and −ε.
//! - **Std 0.** Under relative σ a constant tensor (std 0, see [`tensor_std`]) gets scale 0 and
//!   is never changed: it is usually structural (a mask, a fixed scale), and relative σ gives
//!   it no natural size. Absolute σ mutates it. Tensors with scale 0 get no `Delta`.
//! - **Merged.** `plan.merged(list)` applies each listed child's own signed δ once per
//!   element; an element owned by both a +ε and a −ε listed child cancels (left out).
//! - **Determinism.** Every output is a pure function of (config, tensor list, generation,
//!   arguments): independent of the rayon thread count, of chunking, of the CPU's vector
//!   width (AVX2 kernels are chosen at run time, without FMA), and of which other children
//!   are computed.

mod apply;
mod config;
mod keys;
mod perm;
mod philox;
mod plan;
mod radix;
mod recipe;
mod select;
mod simd;

pub use apply::{apply, apply_all, apply_to, child_tensors, tensor_std};
pub use config::{Config, MAX_CHILDREN, Mode, ModeName, ScaleRule, Subspaces, UnknownMode};
pub use plan::{Delta, Plan, TensorSpec, tensor_list_digest};
pub use recipe::{Member, RECIPE_FORMAT, Recipe};
pub use select::{Mutability, Selection, SelectionError};

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
