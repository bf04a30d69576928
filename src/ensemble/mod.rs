//! Drop-in ensemble export: one ONNX graph that runs every member and combines their outputs.

/// Errors from building an ensemble graph.
#[derive(Debug, thiserror::Error)]
pub enum EnsembleError {
    /// The members do not share an interface.
    #[error("{0}")]
    Interface(String),
}
