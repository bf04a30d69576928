//! Integration tests: they run the `smd-onnx` binary.

mod any_model;
mod ensemble;
mod evolve;
mod faults;
mod inspect;
mod metric;
mod model_io;
mod mutate;
mod noise;
mod options;
mod oracle;
mod prefix;
mod quantized;
mod race;
mod reliability;
mod replay;
mod report;
mod runtime;
mod score;
mod shard;
mod significance;
mod util;
