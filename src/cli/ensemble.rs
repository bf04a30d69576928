//! `smd-onnx ensemble`.

use std::process::ExitCode;

/// Arguments of `smd-onnx ensemble`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `smd-onnx ensemble`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`ensemble` is not implemented yet")
}
