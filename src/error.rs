//! The library's error type: one variant per module, each naming the file, tensor or argument.

/// Any error the library returns. Every message names what it is about (file, tensor, array,
/// argument) and fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, indexing or writing a model.
    #[error(transparent)]
    Model(#[from] crate::onnx::ModelError),
    /// Writing an output file or preparing an output folder.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// Finding, fetching or using ONNX Runtime.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// Reading or validating a data set, or scoring.
    #[error(transparent)]
    Data(#[from] crate::score::DataError),
    /// Invalid mutation settings.
    #[error(transparent)]
    Mutate(#[from] crate::mutate::MutateError),
    /// Building an ensemble graph.
    #[error(transparent)]
    Ensemble(#[from] crate::ensemble::EnsembleError),
    /// Reading or replaying a lineage.
    #[error(transparent)]
    Lineage(#[from] crate::lineage::LineageError),
    /// Running an evolution.
    #[error(transparent)]
    Evolve(#[from] crate::evolve::EvolveError),
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
