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

/// Runs the command line `args` (the program's name first) as the `smd-onnx` binary does and
/// returns its exit status: 0 done, 1 partial, 2 error (printed as one line on stderr). The
/// binary and the Python wheel's `smd-onnx` command (which runs it in-process) both call this.
pub fn main_with<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match outcome(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            2
        }
    }
}

/// [`main_with`] without printing the error: 0 done, 1 partial, or the error (exit code 2,
/// see [`one_line`]).
pub fn outcome<I, T>(args: I) -> anyhow::Result<u8>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match run(args) {
        Ok(code) if code == ExitCode::SUCCESS => Ok(0),
        Ok(_) => Ok(1),
        // Broken pipe (e.g. `smd-onnx inspect m.onnx | head`) is not an error worth reporting.
        Err(err)
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(0)
        }
        Err(err) => Err(err),
    }
}

/// `args` parsed for a front end that wants `command`: a usage error as the CLI words it.
fn parse_for<I, T>(args: I, command: &str) -> anyhow::Result<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map_err(|e| {
        // `usage_error` returns only errors (help and version exit).
        usage_error(e)
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("expected the `{command}` command"))
    })
}

/// The library configuration `smd-onnx evolve ARGS…` would run with (`args` starts with the
/// program's name, then `evolve`): front ends that run evolve themselves (the Python binding,
/// with its own observer and metric) get the CLI's options, defaults and checks.
#[allow(dead_code)] // Used through the library's `cli` feature, not by the binary.
pub fn evolve_config<I, T>(args: I) -> anyhow::Result<smd_onnx::evolve::EvolveConfig>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match parse_for(args, "evolve")?.command {
        Command::Evolve(a) => evolve::config(&a),
        _ => Err(anyhow::anyhow!("expected the `evolve` command")),
    }
}

/// Runs `smd-onnx score ARGS…` (`args` starts with the program's name, then `score`) on
/// `data` instead of `--data`'s file, as [`outcome`] does: the Python binding's numpy arrays.
#[allow(dead_code)] // Used through the library's `cli` feature, not by the binary.
pub fn score_with<I, T>(args: I, data: smd_onnx::score::DataSource) -> anyhow::Result<u8>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let Command::Score(mut a) = parse_for(args, "score")?.command else {
        return Err(anyhow::anyhow!("expected the `score` command"));
    };
    a.arrays = Some(data);
    Ok(u8::from(score::run(a)? != ExitCode::SUCCESS))
}

/// The error chain joined with ": ", on one line. A cause its parent's message already ends
/// with (errors shaped `"{path}: {source}"`) is not repeated; newlines are flattened so hostile
/// text cannot forge lines.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.ends_with(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg.replace(['\n', '\r'], " ")
}

/// Parses the command line `args` and runs the chosen command.
fn run<I, T>(args: I) -> anyhow::Result<ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
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
