//! The `smd-onnx` binary: parse arguments, run, print the error chain once, exit.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    restore_sigpipe();
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // Broken pipe (e.g. `smd-onnx inspect m.onnx | head`) is not an error worth reporting.
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            // One line: the chain joined with ": ", newlines flattened so hostile text cannot forge lines.
            let msg = one_line(&err);
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
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

/// The error chain joined with ": ", on one line. A cause its parent's message already ends
/// with (errors shaped `"{path}: {source}"`) is not repeated.
fn one_line(err: &anyhow::Error) -> String {
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
