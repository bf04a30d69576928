//! smd-onnx: gradient-free fine-tuning of pretrained ONNX models with Sparse Mutation
//! Decompositions (Whitaker & Whitley, GECCO 2023).
//!
//! Data flows one way, one module per arrow:
//! model bytes ([`onnx`]) → mutation recipes ([`mutate`]) → ONNX Runtime sessions ([`runtime`]) →
//! predictions and metrics ([`score`]) → selection and ensembles ([`evolve`]) → exported graphs
//! ([`ensemble`]). [`lineage`] rebuilds any model smd-onnx wrote from its original and the
//! recipes stored with it. [`output`] is how every output file is written (atomically, never
//! over an input); [`buffer`] holds the memory-mapped and aligned byte buffers that model and
//! data files are read into. `ARCHITECTURE.md` in the repository describes each module and what it may
//! import.
//!
//! Evolving a model from Rust, with the CLI's defaults and a few changes:
//!
//! ```no_run
//! use smd_onnx::evolve::{Evolution, EvolveConfig, Silent};
//!
//! # fn main() -> smd_onnx::Result<()> {
//! let mut cfg = EvolveConfig::new("model.onnx", "val.npz", "runs/model");
//! cfg.mutation.children = 8;
//! cfg.generations = 3;
//! // Phase by phase (`smd_onnx::evolve::evolve` runs them all); an `Observer` other than
//! // `Silent` sees every candidate and can stop the run.
//! let mut observer = Silent;
//! let mut run = Evolution::new(cfg, &mut observer)?;
//! while run.generations_left() > 0 {
//!     let g = run.run_generation()?;
//!     println!("generation {}: kept {}", g.generation, g.kept);
//! }
//! let report = run.finish()?;
//! if let Some(best) = &report.best {
//!     println!("best: {:+.2} points on holdout", 100.0 * best.gain_vs_original);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `test-support`: scaffolding for tests, benchmarks and examples, off by default: the
//!   builders of [`onnx::build`] that the library itself never uses (typed-field and external
//!   tensors, `Constant` nodes, more attribute kinds), `score::arrays::write_npz` and
//!   `score::npy::write_npy`. This crate's own tests, benchmarks and examples turn it on through
//!   a dev-dependency on the crate itself.
//! - `cli`: the command-line interface as `cli::main_with` (the binary's own code), for
//!   front ends that run `smd-onnx` in-process, like the Python wheel's console command.

// The CLI's sources name the crate `smd_onnx::…`, as the binary sees it; inside the library
// (feature `cli`) that name must resolve too.
#[cfg(feature = "cli")]
extern crate self as smd_onnx;

pub mod buffer;
#[cfg(feature = "cli")]
pub mod cli;
pub mod ensemble;
pub mod error;
pub mod evolve;
pub mod html;
pub mod lineage;
pub mod mutate;
pub mod onnx;
pub mod output;
pub mod runtime;
pub mod score;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::{TensorData, TensorMut};
