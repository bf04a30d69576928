//! smd-onnx: gradient-free fine-tuning of pretrained ONNX models with Sparse Mutation
//! Decompositions (Whitaker & Whitley, GECCO 2023).
//!
//! Data flows one way, one module per arrow:
//! model bytes ([`onnx`]) → mutation recipes ([`mutate`]) → ONNX Runtime sessions ([`runtime`]) →
//! predictions and metrics ([`score`]) → selection and ensembles ([`evolve`]) → exported graphs
//! ([`ensemble`]). [`lineage`] rebuilds any model smd-onnx wrote from its original and the
//! recipes stored with it. [`buffer`] holds the memory-mapped and aligned byte buffers that
//! model and data files are read into.

pub mod buffer;
pub mod ensemble;
pub mod error;
pub mod evolve;
pub mod lineage;
pub mod mutate;
pub mod onnx;
pub mod runtime;
pub mod score;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::{TensorData, TensorMut};
