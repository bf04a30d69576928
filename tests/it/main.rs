//! Integration tests: they run the `smd-onnx` binary.

mod inspect;
mod model_io;
mod reliability;
mod runtime;
mod score;
mod util;
