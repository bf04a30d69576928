//! `smd-onnx evolve`.

use std::process::ExitCode;

/// Arguments of `smd-onnx evolve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `smd-onnx evolve`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`evolve` is not implemented yet")
}
