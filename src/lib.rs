//! smd-onnx: gradient-free fine-tuning of pretrained ONNX models with Sparse Mutation
//! Decompositions (Whitaker & Whitley, GECCO 2023).
//!
//! Data flows one way, one module per arrow:
//! model bytes ([`onnx`]) → mutation recipes ([`mutate`]) → ONNX Runtime sessions ([`runtime`]) →
//! predictions and metrics ([`score`]) → selection and ensembles ([`evolve`]) → exported graphs
//! ([`ensemble`]). [`lineage`] rebuilds any model smd-onnx wrote from its original and the
//! recipes stored with it. [`output`] is how every output file is written (atomically, never
//! over an input).
//!
//! # Features
//!
//! - `test-support`: scaffolding for tests, benchmarks and examples, off by default: the
//!   builders of [`onnx::build`] that the library itself never uses (typed-field and external
//!   tensors, `Constant` nodes, more attribute kinds), `score::arrays::write_npz` and
//!   `score::npy::write_npy`. This crate's own tests, benchmarks and examples turn it on through
//!   a dev-dependency on the crate itself.

pub mod ensemble;
pub mod error;
pub mod evolve;
pub mod lineage;
pub mod mutate;
pub mod onnx;
pub mod output;
pub mod runtime;
pub mod score;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::{TensorData, TensorMut};
