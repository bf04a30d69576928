//! Integration tests: they run the `smd-onnx` binary.

mod any_model;
mod ensemble;
mod evolve;
mod inspect;
mod model_io;
mod mutate;
mod oracle;
mod reliability;
mod replay;
mod runtime;
mod score;
mod util;
