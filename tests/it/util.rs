//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A path under the repository root.
#[allow(dead_code)]
pub fn repo(rel: &str) -> PathBuf {
    root().join(rel)
}

/// Runs the binary with `args` and returns its output.
#[allow(dead_code)]
pub fn smd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
        .args(args)
        .output()
        .expect("run smd-onnx")
}
