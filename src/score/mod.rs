//! Data sets (npz/npy, memory-mapped), the selection/holdout split, batching, metrics.

/// Errors from reading or validating a data set, or from scoring.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
