//! ONNX Runtime: find or fetch the library, the environment, execution providers.

/// Errors from finding, fetching or using ONNX Runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// ONNX Runtime reported an error.
    #[error("onnxruntime: {0}")]
    Ort(String),
}
