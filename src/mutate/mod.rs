//! The SMD algorithm: pure compute (no I/O, no ONNX Runtime). Recipes, subspaces, keyed RNG.

/// Invalid mutation settings.
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
}
