//! `smd-onnx inspect`.

use std::process::ExitCode;

/// Arguments of `smd-onnx inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `smd-onnx inspect`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`inspect` is not implemented yet")
}
