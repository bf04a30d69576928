//! Integration tests: they run the `smd-onnx` binary.

mod runtime;
mod score;
mod util;
