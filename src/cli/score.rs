//! `smd-onnx score`.

use std::process::ExitCode;

/// Arguments of `smd-onnx score`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `smd-onnx score`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`score` is not implemented yet")
}
