//! The `smd-onnx` binary: parse arguments, run, print the error chain once, exit.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    restore_sigpipe();
    ExitCode::from(cli::main_with(std::env::args_os()))
}

/// Rust ignores SIGPIPE, so a write into a closed pipe (`smd-onnx score … | head`) fails with
/// EPIPE and `println!` panics. Like other Unix tools, die quietly of the signal instead (the
/// shell reports 141): every output (tables, JSON, progress, warnings) is covered at once.
/// Output files are written atomically, so such an exit leaves none half-written.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
