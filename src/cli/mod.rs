//! Command-line interface: clap structs, conversion into library configs, human output.

mod common;
mod ensemble;
mod evolve;
mod inspect;
mod mutate;
mod runtime;
mod score;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Gradient-free fine-tuning of pretrained ONNX models with Sparse Mutation Decompositions.
#[derive(Debug, Parser)]
#[command(name = "smd-onnx", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List a model's tensors (where they live, dtype, shape, mutable or why not) and facts.
    Inspect(inspect::Args),
    /// Score a model on a labelled data set with ONNX Runtime.
    Score(score::Args),
    /// Show (and fetch) the ONNX Runtime library and execution providers.
    Runtime(runtime::Args),
    /// Write sparse-mutation children of a model.
    Mutate(mutate::Args),
    /// Evolve a model: score children, pick the best, build ensembles, export.
    Evolve(evolve::Args),
    /// Combine models with the same interface into one drop-in ONNX graph.
    Ensemble(ensemble::Args),
}

/// Parses the command line and runs the chosen command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Score(a) => score::run(a),
        Command::Runtime(a) => runtime::run(a),
        Command::Mutate(a) => mutate::run(a),
        Command::Evolve(a) => evolve::run(a),
        Command::Ensemble(a) => ensemble::run(a),
    }
}
