//! `smd-onnx runtime`.

use std::process::ExitCode;

/// Arguments of `smd-onnx runtime`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `smd-onnx runtime`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`runtime` is not implemented yet")
}
