//! Generations, selection, ensembles of predictions, the report.

/// Errors from an evolution run.
#[derive(Debug, thiserror::Error)]
pub enum EvolveError {
    /// The output folder cannot be used.
    #[error("{0}")]
    Output(String),
}
