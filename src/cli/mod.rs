//! Command-line interface: clap structs, conversion into library configs, human output.

mod common;
mod ensemble;
mod evolve;
mod inspect;
mod mutate;
mod replay;
mod runtime;
mod scale;
mod score;
mod summary;

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
    /// Rebuild a model smd-onnx wrote (best.onnx, a child, a report's candidate) from the
    /// original model and its stored recipes, byte for byte.
    Replay(replay::Args),
    /// Evolve a model: score children, pick the best, build ensembles, export.
    Evolve(evolve::Args),
    /// Combine models with the same interface into one drop-in ONNX graph.
    Ensemble(ensemble::Args),
}

/// Parses the command line and runs the chosen command.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Score(a) => score::run(a),
        Command::Runtime(a) => runtime::run(a),
        Command::Mutate(a) => mutate::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Evolve(a) => evolve::run(a),
        Command::Ensemble(a) => ensemble::run(a),
    }
}

/// Help and version go to stdout as clap prints them; a usage error becomes one line (like
/// every other error), keeping clap's tips but not its usage block.
fn usage_error(e: clap::Error) -> anyhow::Result<ExitCode> {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .collect();
    let mut line = String::new();
    for p in parts {
        if !line.is_empty() {
            // "...were not provided:" is followed by the list it announces.
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(p);
    }
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    Err(anyhow::anyhow!("{line} (see --help)"))
}
