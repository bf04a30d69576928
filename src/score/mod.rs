//! Data sets (npz/npy, memory-mapped), the selection/holdout split, batching, predictions and
//! metrics.
//!
//! ```text
//! ModelIo::from_file ─┐
//! Dataset::open ──────┼─> Predictor::new ─> predict(&mut Session, &Dataset, rows) ─> Predictions
//! Split::new ─────────┘                                                   └─> metrics(&Labels)
//! ```

pub mod arrays;
pub mod custom;
pub mod dataset;
pub mod metrics;
pub mod npy;
pub mod predict;
pub mod source;
pub mod spec;
pub mod split;

use std::path::PathBuf;

pub use arrays::RawArray;
pub use custom::{CustomLabels, CustomMetric, CustomOutputs};
pub use dataset::{Dataset, InputArray, Labels};
pub use metrics::{ClassStats, Metric, Metrics, Predictions, ScoredAs};
pub use npy::DType;
pub use predict::Predictor;
pub use source::DataSource;
pub use spec::{Dim, ElemType, InputSpec, IoSpec, ModelIo, OutputSpec};
pub use split::{Split, SplitPart};

/// Errors from reading or validating a data set, or from scoring.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data is malformed or does not fit the model; the message names the array and input.
    #[error("{path}: {message}")]
    Invalid {
        /// The data file or folder.
        path: PathBuf,
        /// What is wrong, naming the array (and the model input).
        message: String,
    },
    /// The model's inputs/outputs cannot be read or scored.
    #[error("{path}: {message}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong, naming the input or output.
        message: String,
    },
    /// A bad argument.
    #[error("{arg} {message}")]
    Argument {
        /// The argument.
        arg: &'static str,
        /// What is wrong.
        message: String,
    },
    /// ONNX Runtime failed while running the model.
    #[error("{path}: inference failed: {message}")]
    Inference {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// A caller's metric ([`CustomMetric`]) failed.
    #[error("metric `{name}` failed: {message}")]
    Metric {
        /// The metric's name.
        name: String,
        /// Its error.
        message: String,
    },
    /// The model produced NaN or infinite outputs: the run failed.
    #[error("output `{output}` has NaN/Inf in {rows} samples (first: row {first})")]
    NonFinite {
        /// The scored output.
        output: String,
        /// Samples affected.
        rows: usize,
        /// The first affected data set row.
        first: usize,
    },
}
