//! `smd-onnx mutate`.

use std::process::ExitCode;

/// Arguments of `smd-onnx mutate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `smd-onnx mutate`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mutate` is not implemented yet")
}
