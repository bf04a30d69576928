//! Integration tests: they run the `smd-onnx` binary.

mod util;
