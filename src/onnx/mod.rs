//! Model I/O: a wire-level tensor index over a memory-mapped model, typed messages where the
//! graph must change, dtypes, external data, the byte-faithful child writer, atomic writes.

#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod proto;

/// Errors from reading, indexing or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}
